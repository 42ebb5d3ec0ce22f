"""Linear interpolation in time, with a spatial fill where time cannot reach.

Each pixel is interpolated linearly in time between its observations, using
the time coordinate's values (a missing month or an irregular axis weighs
the neighbours by their distance in days; frames without a time coordinate
are taken as equally spaced). Before a pixel's first or after its last
observation, the value comes from a normalised convolution of the frame's
known (observed or time-interpolated) values at growing Gaussian scales; a
frame with nothing known uses the pixel's nearest observation in time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.ndimage

from gapfill import timeaxis
from gapfill.methods.base import Chunking, Coords, FillResult, Method, Options, TimeEdges

if TYPE_CHECKING:
    from gapfill.cube import Cube


@dataclass
class LinearOptions(Options):
    """Options of the ``"linear"`` method.

    Attributes
    ----------
    sigma
        Gaussian scale (pixels) of the first spatial fill pass; it doubles at
        each pass until every reachable pixel is filled.
    """

    sigma: float = 1.0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the option when a value is out of range."""
        if not (self.sigma > 0 and np.isfinite(self.sigma)):
            raise ValueError("linear option 'sigma' must be > 0")


def interp_time(
    x: np.ndarray,
    before: tuple[np.ndarray, np.ndarray] | None = None,
    after: tuple[np.ndarray, np.ndarray] | None = None,
    start: int = 0,
    times: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate a ``(T, N)`` array linearly in time along axis 0 between finite values.

    ``before``/``after`` are optional ``(values, time indices)`` of each
    column's nearest observation before/after ``x`` (NaN where none), and
    ``start`` the time index of ``x``'s first row: a time chunk of a longer
    series then gets exactly the values of the whole-series interpolation.
    ``times`` are the time positions of the whole series (indexed by time
    index, increasing); the interpolation weights are their distances. Without
    them the rows are equally spaced.

    Returns
    -------
    filled
        ``(T, N)``: observations, interpolated values between them, NaN outside.
    nearest
        ``(T, N)``: the nearest observation in time where ``filled`` is NaN
        (NaN for columns with no observation).
    """
    n_time, n = x.shape
    if times is not None and timeaxis.is_regular(times):
        times = None  # equal steps: index distances give the same weights
    pos = None if times is None else np.asarray(times, dtype=np.float64)
    prev, v_prev = _edge(n, -1, x.dtype, before)
    nxt, v_next = _edge(n, _NONE, x.dtype, after)
    obs = np.isfinite(x)
    # Two sweeps over time, carrying each column's last/next observation (a value is NaN
    # where there is none, and NaN propagates): no gathers, a few passes over the data.
    prevs = np.empty((n_time, n), dtype=np.int64)
    vprevs = np.empty_like(x)
    for i in range(n_time):
        np.copyto(prev, start + i, where=obs[i])
        np.copyto(v_prev, x[i], where=obs[i])
        prevs[i], vprevs[i] = prev, v_prev
    filled = np.empty((n_time, n), dtype=np.result_type(x.dtype, np.float64))
    nearest = np.empty_like(filled)
    span, step, diff = np.empty(n, np.int64), np.empty(n, np.int64), np.empty_like(v_next)
    for i in range(n_time - 1, -1, -1):
        np.copyto(nxt, start + i, where=obs[i])
        np.copyto(v_next, x[i], where=obs[i])
        p, vp = prevs[i], vprevs[i]
        if pos is None:
            np.maximum(np.subtract(nxt, p, out=span), 1, out=span)
            np.subtract(start + i, p, out=step)
            np.divide(step, span, out=filled[i])  # the weight of the next observation
        else:  # irregular steps: weights from the time positions
            last = pos.size - 1
            t_prev = pos[np.clip(p, 0, last)]
            width = pos[np.minimum(nxt, last)] - t_prev
            filled[i] = 0.0
            np.divide(pos[start + i] - t_prev, width, out=filled[i], where=width > 0)
        filled[i] *= np.subtract(v_next, vp, out=diff)
        filled[i] += vp  # NaN without an observation before or after
        np.copyto(nearest[i], v_next)
        np.copyto(nearest[i], vp, where=p >= 0)
    return filled, nearest


def _edge(
    n: int, none: int, dtype: np.dtype, edge: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Starting index and value of a sweep: the edge observation, or ``none`` and NaN."""
    index = np.full(n, none, dtype=np.int64)
    value = np.full(n, np.nan, dtype=dtype)
    if edge is not None:
        has = np.isfinite(edge[1])
        index[has] = edge[1][has].astype(np.int64)
        value[has] = edge[0][has].astype(dtype)
    return index, value


#: "No observation after": larger than any time index.
_NONE = np.iinfo(np.int64).max // 4


#: Side (pixels) of the tiles :func:`spatial_fill` filters separately.
SPATIAL_TILE = 128
#: Gaussian kernels are cut at this many standard deviations (scipy's default).
_TRUNCATE = 4.0


def spatial_fill(x: np.ndarray, targets: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Fill NaN ``targets`` of ``(..., H, W)`` frames by normalised Gaussian convolution.

    Passes at scales ``sigma, 2·sigma, ...`` fill the targets still missing
    with the Gaussian-weighted mean of the known values; targets with no known
    value in their frame stay NaN. Each pass filters only the tiles of
    ``SPATIAL_TILE`` pixels that still hold targets, each with a margin of the
    kernel's radius: the same values as filtering the whole frames.
    """
    out = x.copy()
    frames = out.reshape(-1, *x.shape[-2:])  # a view: filled in place
    known = np.isfinite(frames)
    todo = targets.reshape(frames.shape) & ~known
    height, width = frames.shape[1:]
    s = sigma
    while s <= 4 * max(height, width):
        regions = _regions_with_targets(todo, int(_TRUNCATE * s + 0.5))
        if not regions:
            break
        for (inner, crop), active in regions:
            k = known[active, crop[0], crop[1]]
            blur = {"sigma": (0, s, s), "mode": "nearest", "truncate": _TRUNCATE}
            w = scipy.ndimage.gaussian_filter(k.astype(np.float64), **blur)
            v = scipy.ndimage.gaussian_filter(
                np.where(k, frames[active, crop[0], crop[1]], 0.0).astype(np.float64), **blur
            )
            inside = (slice(None), *(slice(i.start - c.start, i.stop - c.start)
                                     for i, c in zip(inner, crop)))
            w, v = w[inside], v[inside]
            sub = frames[active, inner[0], inner[1]]
            left = todo[active, inner[0], inner[1]]
            ok = left & (w > 1e-8)
            sub[ok] = (v[ok] / w[ok]).astype(out.dtype)
            left &= ~ok
            frames[active, inner[0], inner[1]] = sub
            todo[active, inner[0], inner[1]] = left
        s *= 2
    return out


def _regions_with_targets(
    todo: np.ndarray, radius: int
) -> list[tuple[tuple[tuple[slice, slice], tuple[slice, slice]], np.ndarray]]:
    """Tiles of ``todo`` (``(F, H, W)``) holding targets: ``((tile, tile + radius), frames)``.

    Where the tiles' margins would cost more than filtering the frames whole,
    one region covers the whole frames.
    """
    _, height, width = todo.shape
    whole = (slice(0, height), slice(0, width))
    tile = SPATIAL_TILE
    regions, area = [], 0
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            inner = (slice(y0, min(y0 + tile, height)), slice(x0, min(x0 + tile, width)))
            active = np.flatnonzero(todo[:, inner[0], inner[1]].any((1, 2)))
            if active.size:
                crop = tuple(slice(max(i.start - radius, 0), min(i.stop + radius, size))
                             for i, size in zip(inner, (height, width)))
                regions.append(((inner, crop), active))
                rows, cols = (c.stop - c.start for c in crop)
                area += active.size * rows * cols
    frames = np.flatnonzero(todo.any((1, 2)))
    if len(regions) > 1 and area >= frames.size * height * width:
        return [((whole, whole), frames)]
    return regions


class Linear(Method):
    """Linear interpolation along time per pixel; spatial fill at the series' ends."""

    name = "linear"
    Options = LinearOptions
    needs_time = False  # a single frame gets the spatial fill
    holdout_draws = 4  # nothing to fit: more draws cost only fills
    refit_with_validation = True

    def fit(self, cube: Cube, rng: np.random.Generator) -> None:
        """Nothing to learn."""

    def chunking(self) -> Chunking:
        """Any chunks along time (the nearest observations outside a chunk come as
        :class:`TimeEdges`, so the result is exact); whole frames, for the spatial fill."""
        return Chunking(whole=("y", "x"), time_edges=True)

    def fill(
        self,
        x: np.ndarray,
        rng: np.random.Generator,
        samples: int = 1,
        coords: Coords | None = None,
    ) -> FillResult:
        """Fill ``x`` (``(C, T, H, W)``, NaN = missing); no error estimate."""
        return self.fill_chunk(x, rng, samples, coords)

    def fill_chunk(
        self,
        x: np.ndarray,
        rng: np.random.Generator,
        samples: int = 1,
        coords: Coords | None = None,
        edges: TimeEdges | None = None,
    ) -> FillResult:
        """Fill a time chunk of a longer series, given its :class:`TimeEdges`."""
        n_chan, n_time, height, width = x.shape
        flat = x.transpose(1, 0, 2, 3).reshape(n_time, -1)
        before = after = None
        start = 0
        times = None if coords is None else coords.time
        if edges is not None:
            start, times = edges.start, edges.times
            before = (edges.before_value.reshape(-1), edges.before_index.reshape(-1))
            after = (edges.after_value.reshape(-1), edges.after_index.reshape(-1))
        filled, nearest = interp_time(flat, before, after, start, times)
        shape = (n_time, n_chan, height, width)
        filled = filled.reshape(shape).transpose(1, 0, 2, 3)
        nearest = nearest.reshape(shape).transpose(1, 0, 2, 3)
        ever = np.isfinite(x).any(1, keepdims=True)
        if n_time == 1 and edges is None:  # a single frame: every gap gets the spatial fill
            ever = np.ones_like(ever)
        if edges is not None:
            outside = np.isfinite(edges.before_index) | np.isfinite(edges.after_index)
            ever = ever | outside[:, None]
        targets = np.broadcast_to(ever, x.shape) & ~np.isfinite(filled)
        if targets.any():
            filled = spatial_fill(filled, targets, self.options.sigma)
            filled = np.where(np.isfinite(filled), filled, nearest)
        return FillResult(filled.astype(np.float32), None)
