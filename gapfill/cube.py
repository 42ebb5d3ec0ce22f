"""The tensor core: one place that turns an xarray cube into method inputs and back.

A :class:`Cube` wraps a DataArray with dims (time, y, x) and an optional
channel dim. It checks the data, computes per-channel normalisation statistics
from the observed pixels, hands methods normalised float32 arrays laid out as
``(channel, time, y, x)`` with NaN where a value is missing (whole cube, one
window, or a batch of random windows; only the needed part of a dask-backed
array is loaded), and maps results back to xarray with the original dims
order and coords.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import xarray as xr

from gapfill import timeaxis
from gapfill.dims import Dims, find_dims
from gapfill.packing import unpack


@dataclass
class Coords:
    """Coordinates of the array being filled, for methods that use them as inputs.

    Attributes
    ----------
    time_of_year
        ``(T,)`` fraction of the year in ``[0, 1)``, or ``None`` when the time
        axis is not a datetime axis.
    y, x
        ``(H,)`` and ``(W,)`` coordinate values (e.g. latitude, longitude).
    time
        ``(T,)`` increasing time positions in days (see :func:`gapfill.timeaxis.days`),
        or ``None`` when the time axis has no coordinate (frames equally spaced).
        Methods that use time distances (interpolation, temporal smoothing) use it.
    """

    time_of_year: np.ndarray | None
    y: np.ndarray
    x: np.ndarray
    time: np.ndarray | None = None

    def isel(self, t: slice, y: slice, x: slice) -> Coords:
        """The coordinates of a window."""
        toy = None if self.time_of_year is None else self.time_of_year[t]
        days = None if self.time is None else self.time[t]
        return Coords(toy, self.y[y], self.x[x], days)



@dataclass
class Normaliser:
    """Per-channel affine normalisation ``(x - mean) / std``."""

    mean: np.ndarray
    std: np.ndarray

    def _shape(self, ndim: int) -> tuple[int, ...]:
        return (-1,) + (1,) * (ndim - 1)

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """Normalise a ``(C, ...)`` array to float32."""
        shape = self._shape(x.ndim)
        return ((x - self.mean.reshape(shape)) / self.std.reshape(shape)).astype(np.float32)

    def denormalise(self, z: np.ndarray) -> np.ndarray:
        """Undo :meth:`normalise` (float64 result)."""
        shape = self._shape(z.ndim)
        return z.astype(np.float64) * self.std.reshape(shape) + self.mean.reshape(shape)

    def scale_error(self, e: np.ndarray) -> np.ndarray:
        """Turn a one-sigma error in normalised units into data units."""
        return e.astype(np.float64) * self.std.reshape(self._shape(e.ndim))


def _is_dask(da: xr.DataArray) -> bool:
    return da.chunks is not None


def check_dtype(da: xr.DataArray) -> xr.DataArray:
    """Return ``da`` as floating point, or raise if it cannot hold gaps.

    Packing attrs of undecoded data (``_FillValue``, ``missing_value``,
    ``valid_range``, ``scale_factor``, ``add_offset``) are applied first (see
    :func:`gapfill.packing.unpack`). Other integer data are converted to
    float64 with a warning; booleans, strings and objects are refused.
    """
    da = unpack(da)
    if np.issubdtype(da.dtype, np.floating):
        return da
    if np.issubdtype(da.dtype, np.integer):
        warnings.warn(
            f"variable {da.name!r} has integer dtype {da.dtype} and no _FillValue, "
            "missing_value or scale_factor attribute; converting to float64 with every value "
            "observed. If some values mark missing data, set da.attrs['_FillValue'] (or open "
            "the file with mask_and_scale=True).",
            stacklevel=3,
        )
        return da.astype(np.float64)
    raise ValueError(
        f"variable {da.name!r} has dtype {da.dtype}; gap filling needs floating-point data "
        "with NaN where values are missing. Convert it with da.astype('float32')."
    )


def check_coords(da: xr.DataArray, dims: Dims) -> None:
    """Raise if a spatial dimension is shorter than 2 or a coordinate holds NaN/NaT.

    A single frame is allowed here: methods that learn along time refuse it
    when fitting (:attr:`gapfill.methods.Method.needs_time`).
    """
    for role, name in (("time", dims.time), ("y", dims.y), ("x", dims.x)):
        n = da.sizes[name]
        if n < (1 if role == "time" else 2):
            raise ValueError(
                f"dimension {name!r} ({role}) has length {n}; gap filling needs at least 2 "
                f"{'frames' if role == 'time' else 'points'} along it."
            )
        if name in da.coords and _has_bad_values(da[name].values):
            raise ValueError(
                f"coordinate {name!r} holds NaN/NaT or inf values; fix or drop those "
                f"entries first (e.g. da.isel({name}=np.isfinite(da.{name})))."
            )


def _has_bad_values(values: np.ndarray) -> bool:
    if values.dtype.kind in "mM":
        return bool(np.isnat(values).any())
    if values.dtype.kind in "fc":
        return not bool(np.isfinite(values).all())
    return False


def _block_stats(
    block: np.ndarray, hide: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Count, mean and sum of squared deviations of each channel's finite values; infs."""
    x = np.asarray(block).reshape(block.shape[0], -1)
    infs = int(np.isinf(x).sum())
    ok = np.isfinite(x)
    if hide is not None:
        ok &= ~np.broadcast_to(np.asarray(hide), block.shape).reshape(ok.shape)
    n = ok.sum(1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, x, 0).sum(1, dtype=np.float64) / np.maximum(n, 1)
    m2 = (np.where(ok, x - mean[:, None], 0.0) ** 2).sum(1)
    return n, mean, m2, infs


class Cube:
    """A checked, normalised view of a gappy (time, y, x[, channel]) DataArray.

    Parameters
    ----------
    da
        Floating-point data, NaN where missing. May be dask-backed.
    dims
        Optional overrides of the detected dims (see :func:`gapfill.dims.find_dims`).
    hide
        Optional boolean mask, broadcastable to ``(C, T, H, W)``, of observed
        pixels to treat as missing (a diagnostics hold-out).
    normaliser
        Statistics to use (a fitted model's); computed from the data when ``None``.
    check_values
        Scan the values for inf and all-NaN (one pass over the data). Only
        skipped when a ``normaliser`` is given, to keep a dask-backed fill lazy.

    Raises
    ------
    ValueError
        For data that cannot be filled: no time axis, a dim shorter than 2,
        non-float dtype, NaN coordinates, duplicate times, inf values or no
        observed value.

    Notes
    -----
    An out-of-order time axis is sorted (with a
    :class:`~gapfill.timeaxis.TimeOrderWarning`): ``da`` and every array the
    cube hands out are in increasing time, and ``time_order`` holds the
    permutation applied (``None`` when the times were in order), for
    :func:`gapfill.timeaxis.restore_order`.
    """

    def __init__(
        self,
        da: xr.DataArray,
        dims: Mapping[str, str] | Dims | None = None,
        hide: np.ndarray | None = None,
        normaliser: Normaliser | None = None,
        check_values: bool = True,
    ) -> None:
        if not isinstance(da, xr.DataArray):
            raise TypeError(f"expected an xarray.DataArray, got {type(da).__name__}")
        self.dims = dims if isinstance(dims, Dims) else find_dims(da, dims)
        check_coords(da, self.dims)
        self.original = da
        da, self.time_order = timeaxis.sort_time(da, self.dims.time)
        da = check_dtype(da)
        order = ((self.dims.channel,) if self.dims.channel else ()) + self.dims.core
        self.da = da.transpose(*order)
        self.hide = None if hide is None else np.broadcast_to(hide, self.shape)
        if normaliser is not None and not check_values:
            self.normaliser = normaliser
            return
        counts, infs, mean, std = self._stats()
        if infs:
            raise ValueError(
                f"variable {da.name!r} holds {infs} infinite values; replace them with NaN "
                "(da.where(np.isfinite(da))) if they mark missing data."
            )
        if counts.sum() == 0:
            raise ValueError(
                f"variable {da.name!r} has no observed (finite) value: it is all NaN. Check the "
                "variable name, the _FillValue decoding and the selected region/time range."
            )
        if (counts == 0).any():
            raise ValueError(
                f"channel(s) {np.flatnonzero(counts == 0).tolist()} of {da.name!r} have no "
                "observed value; drop them before filling."
            )
        if normaliser is None:
            std = np.where(std > 0, std, 1.0)
            normaliser = Normaliser(mean.astype(np.float64), std.astype(np.float64))
        self.normaliser = normaliser

    def with_hide(self, hide: np.ndarray | None) -> Cube:
        """The same cube with ``hide`` (observed pixels treated as missing), same statistics."""
        other = object.__new__(Cube)
        other.__dict__.update(self.__dict__)
        other.hide = None if hide is None else np.broadcast_to(hide, self.shape)
        return other

    # -- shape and metadata ---------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(C, T, H, W)``."""
        s = self.da.shape
        return s if len(s) == 4 else (1, *s)

    @property
    def is_lazy(self) -> bool:
        """Whether the data are dask-backed."""
        return _is_dask(self.da)

    @property
    def name(self) -> str:
        """The variable's name (``"data"`` when it has none)."""
        return str(self.da.name) if self.da.name is not None else "data"

    def coords(self) -> Coords:
        """Time positions (days), time of year and y/x coordinate values of the whole cube."""
        _, t, h, w = self.shape
        tname = self.dims.time
        toy = days = None
        if tname in self.da.coords:
            values = self.da[tname].values
            toy = timeaxis.time_of_year(values)
            toy = None if toy is None else toy.astype(np.float32)
            if timeaxis.is_dated(values) or values.dtype.kind in "iuf":
                days = timeaxis.days(values, self.da[tname].attrs.get("units"))
        y = self._coord_values(self.dims.y, h)
        x = self._coord_values(self.dims.x, w)
        return Coords(toy, y, x, days)

    def _coord_values(self, name: str, n: int) -> np.ndarray:
        if name in self.da.coords and np.issubdtype(self.da[name].dtype, np.number):
            return self.da[name].values.astype(np.float32)
        return np.arange(n, dtype=np.float32)

    def _stats(self) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
        """Per channel: observed count, number of infs, mean and std, in one pass.

        Each block (a dask chunk, or a slab of frames in memory) gives its count,
        mean and sum of squared deviations; they are merged exactly (Chan et al.),
        so memory stays at one block and the statistics match to round-off.
        """
        import dask

        data = self.da.data
        data = data if data.ndim == 4 else data[None]
        hide = self.hide
        if _is_dask(self.da):
            blocks = data.rechunk({0: -1}).to_delayed(optimize_graph=False).reshape(-1)
            if hide is None:
                parts = [dask.delayed(_block_stats)(b) for b in blocks]
            else:
                import dask.array as dsa

                h = dsa.asarray(hide).rechunk(data.rechunk({0: -1}).chunks)
                hb = h.to_delayed(optimize_graph=False).reshape(-1)
                parts = [dask.delayed(_block_stats)(b, m) for b, m in zip(blocks, hb)]
            stats = dask.compute(*parts)
        else:
            step = max(1, 2**24 // max(1, int(np.prod(data.shape[2:])) * data.shape[0]))
            stats = [
                _block_stats(data[:, t0 : t0 + step],
                             None if hide is None else hide[:, t0 : t0 + step])
                for t0 in range(0, data.shape[1], step)
            ]
        count = np.zeros(data.shape[0])
        mean = np.zeros(data.shape[0])
        m2 = np.zeros(data.shape[0])
        infs = 0
        for n_b, mean_b, m2_b, inf_b in stats:
            total = count + n_b
            delta = mean_b - mean
            with np.errstate(invalid="ignore", divide="ignore"):
                w = np.where(total > 0, n_b / np.maximum(total, 1), 0.0)
            mean = mean + delta * w
            m2 = m2 + m2_b + delta**2 * count * w
            count = total
            infs += int(inf_b)
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.sqrt(np.where(count > 0, m2 / np.maximum(count, 1), 0.0))
        return count.astype(np.int64), infs, np.where(count > 0, mean, 0.0), std

    # -- data access ----------------------------------------------------------------
    def _prepare(self, raw: np.ndarray, index: tuple[slice, ...]) -> np.ndarray:
        raw = raw if raw.ndim == 4 else raw[None]
        z = self.normaliser.normalise(raw)
        if self.hide is not None:
            z[np.asarray(self.hide[(slice(None), *index)])] = np.nan  # a dask hold-out: its window
        return z

    def values(self) -> np.ndarray:
        """The whole cube, normalised float32 ``(C, T, H, W)``, NaN where missing."""
        return self._prepare(np.asarray(self.da.values), (slice(None),) * 3)

    def window(self, t0: int, y0: int, x0: int, size: tuple[int, int, int]) -> np.ndarray:
        """One ``(C, T, H, W)`` window starting at ``(t0, y0, x0)``, clipped to the cube."""
        index = tuple(slice(o, o + s) for o, s in zip((t0, y0, x0), size))
        sel = dict(zip(self.dims.core, index))
        return self._prepare(np.asarray(self.da.isel(sel).values), index)

    def window_size(self, size: tuple[int, int, int]) -> tuple[int, int, int]:
        """``size`` clipped to the cube's ``(T, H, W)``."""
        return tuple(min(s, n) for s, n in zip(size, self.shape[1:]))  # type: ignore[return-value]

    def sample_windows(
        self,
        n: int,
        size: tuple[int, int, int],
        rng: np.random.Generator,
        min_observed: float = 0.05,
        per_read: int = 8,
        read_tile: int = 512,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` random windows with at least ``min_observed`` of their pixels observed.

        The cube is read one tile at a time (``size[0]`` frames by at most
        ``read_tile`` × ``read_tile`` pixels, at a random place) and up to
        ``per_read`` windows are cut from each tile: a dask-backed store is read
        in whole chunks anyway, so this reads about ``n / per_read`` tiles, never
        the cube.

        Returns
        -------
        values
            ``(n, C, T, H, W)`` normalised float32, NaN where missing. ``size``
            is clipped to the cube, so a tiny cube gives smaller windows.
        offsets
            ``(n, 3)`` int array of each window's ``(t0, y0, x0)``.

        Raises
        ------
        ValueError
            If no window with enough observed pixels is found.
        """
        size = self.window_size(size)
        t, h, w = self.shape[1:]
        tile = (size[0], min(h, max(size[1], read_tile)), min(w, max(size[2], read_tile)))
        out: list[np.ndarray] = []
        offsets: list[tuple[int, int, int]] = []
        reads = 0
        while len(out) < n:
            reads += 1
            if reads > 10 * (n // per_read + 1) + 20:
                raise ValueError(
                    f"no observed pixel in the training windows: fewer than "
                    f"{min_observed:.0%} of the pixels are observed in random "
                    f"{size} windows. Use larger windows or a region with observations."
                )
            start = [int(rng.integers(0, n_ - s + 1)) for n_, s in zip((t, h, w), tile)]
            block = self.window(*start, size=tile)
            for _ in range(per_read):
                dy = int(rng.integers(0, tile[1] - size[1] + 1))
                dx = int(rng.integers(0, tile[2] - size[2] + 1))
                win = block[:, :, dy : dy + size[1], dx : dx + size[2]]
                if np.isfinite(win).mean() >= min_observed:
                    out.append(np.array(win))
                    offsets.append((start[0], start[1] + dy, start[2] + dx))
                    if len(out) == n:
                        break
        return np.stack(out), np.asarray(offsets, dtype=np.int64)

    @property
    def never_observed(self) -> np.ndarray:
        """``(C, H, W)`` pixels with no observation at any time (land, outside the swath)."""
        return ~self.observed_any()

    def observed_any(self) -> np.ndarray:
        """``(C, H, W)`` pixels observed at least once (before any hold-out)."""
        da = self.da if self.dims.channel else self.da.expand_dims("_c")
        return np.asarray(np.isfinite(da).any(self.dims.time).values)

    def missing_pattern(self) -> np.ndarray:
        """``(T, H, W)`` missing pixels (any channel, hold-out included), for Empirical masks."""
        da = self.da if self.dims.channel else self.da.expand_dims("_c")
        miss = np.asarray(
            (~np.isfinite(da)).any("_c" if not self.dims.channel else self.dims.channel).values
        )
        if self.hide is not None:
            miss = miss | np.asarray(self.hide.any(0))
        return miss

    # -- back to xarray ---------------------------------------------------------------
    def to_dataarray(self, arr: np.ndarray, name: str | None = None) -> xr.DataArray:
        """Wrap a ``(C, T, H, W)`` array like the original data (dims order, coords)."""
        data = arr if self.dims.channel else arr[0]
        out = xr.DataArray(data, dims=self.da.dims, coords=self.da.coords, name=name or self.name)
        return out.transpose(*self.original.dims)
