"""Overlapping-window inference with smooth blending, for models with a fixed window.

A network trained on ``T x H x W`` windows fills a cube of any size by running
on overlapping windows and averaging their outputs with a weight that tapers
towards each window's edges (a trapezoid smoothed into a cosine ramp), so no
tile seams appear. Every pixel is covered; windows are clipped to the cube, so
a cube smaller than one window is a single (smaller) window.

Example
-------
>>> out = fill_windows(x, lambda b: b * 0 + 1, size=(24, 64, 64))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import product

import numpy as np

WindowFn = Callable[[np.ndarray], np.ndarray]


def window_starts(n: int, size: int, overlap: float) -> list[int]:
    """Start indices of windows of ``size`` covering ``range(n)`` with ``overlap``.

    Parameters
    ----------
    n
        Length of the axis.
    size
        Window length (clipped to ``n``).
    overlap
        Fraction of ``size`` shared by neighbouring windows, in ``[0, 1)``.

    Returns
    -------
    list of int
        Increasing starts; the last window ends exactly at ``n``.
    """
    size = min(size, n)
    if size >= n:
        return [0]
    stride = max(1, size - int(round(overlap * size)))
    starts = list(range(0, n - size + 1, stride))
    if starts[-1] != n - size:
        starts.append(n - size)
    return starts


def count_windows(shape: tuple[int, ...], size: tuple[int, ...], overlap: float) -> int:
    """How many windows :func:`fill_windows` runs on an array of trailing ``shape``."""
    return int(np.prod([len(window_starts(n, k, overlap)) for n, k in zip(shape, size)]))


def taper(size: int, overlap: float) -> np.ndarray:
    """Blending weight along one axis: a cosine ramp over the overlap, flat in the middle.

    Strictly positive everywhere, so a pixel seen by a single window keeps it.
    """
    ramp = max(1, int(round(overlap * size)))
    i = np.arange(size, dtype=np.float64) + 0.5
    lin = np.minimum(1.0, np.minimum(i, size - i) / ramp)
    return 0.5 - 0.5 * np.cos(np.pi * lin)


def fill_windows(
    x: np.ndarray,
    fn: WindowFn,
    size: Sequence[int],
    overlap: float | Sequence[float] = 0.5,
    batch_size: int = 8,
) -> np.ndarray:
    """Apply ``fn`` on overlapping windows of ``x`` and blend the outputs smoothly.

    Parameters
    ----------
    x
        ``(C, T, H, W)`` array (NaN where missing is fine: ``fn`` gets it as is).
    fn
        Maps a batch ``(n, C, t, h, w)`` to ``(n, C_out, t, h, w)`` (numpy in, numpy out).
        Windows of one call all have the same shape.
    size
        Window ``(T, H, W)``; clipped to the shape of ``x``.
    overlap
        Overlap fraction (one, or one per axis) between neighbouring windows.
    batch_size
        Windows per call of ``fn``.

    Returns
    -------
    numpy.ndarray
        ``(C_out, T, H, W)`` float32: the weighted average of the window outputs.
    """
    if x.ndim != 4:
        raise ValueError(f"expected a (C, T, H, W) array, got shape {x.shape}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    dims = x.shape[1:]
    size = tuple(min(int(s), n) for s, n in zip(size, dims))
    if any(s < 1 for s in size):
        raise ValueError(f"window size must be positive, got {size}")
    ov = (overlap,) * 3 if np.isscalar(overlap) else tuple(overlap)  # type: ignore[arg-type]
    if len(ov) != 3 or not all(0 <= o < 1 for o in ov):
        raise ValueError(f"overlap must be in [0, 1) (one value or one per axis), got {overlap}")
    starts = list(product(*(window_starts(n, s, o) for n, s, o in zip(dims, size, ov))))
    tapers = [taper(s, o) if len(window_starts(n, s, o)) > 1 else np.ones(s)
              for n, s, o in zip(dims, size, ov)]
    weight = tapers[0][:, None, None] * tapers[1][None, :, None] * tapers[2][None, None, :]

    acc: np.ndarray | None = None
    wsum = np.zeros(dims, dtype=np.float64)
    for b in range(0, len(starts), batch_size):
        chunk = starts[b : b + batch_size]
        batch = np.stack([_crop(x, s0, size) for s0 in chunk])
        out = np.asarray(fn(batch))
        if out.ndim != 5 or out.shape[0] != len(chunk) or out.shape[2:] != size:
            raise ValueError(
                f"fn returned shape {out.shape} for a batch of shape {batch.shape}; expected "
                f"({len(chunk)}, C_out, {size[0]}, {size[1]}, {size[2]})"
            )
        if acc is None:
            acc = np.zeros((out.shape[1], *dims), dtype=np.float64)
        for o, (t0, y0, x0) in zip(out, chunk):
            sl = (slice(t0, t0 + size[0]), slice(y0, y0 + size[1]), slice(x0, x0 + size[2]))
            acc[(slice(None), *sl)] += o * weight
            wsum[sl] += weight
    assert acc is not None
    return (acc / wsum).astype(np.float32)


def _crop(x: np.ndarray, start: tuple[int, int, int], size: tuple[int, int, int]) -> np.ndarray:
    t0, y0, x0 = start
    return x[:, t0 : t0 + size[0], y0 : y0 + size[1], x0 : x0 + size[2]]
