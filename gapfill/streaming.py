"""Fitting on cubes too big for memory: a few passes over a dask-backed cube, block by block.

``Method.fit_streaming`` is used instead of ``Method.fit`` when the cube is
dask-backed and larger than :data:`IN_MEMORY_FIT_BYTES` (or when asked with
``fit(..., streaming_fit=True)``), for the methods that define it. This module
holds the passes of the methods that need the whole cube:

``climatology``
    Per-pixel count, sum and sum of squares in one dask reduction: the same
    statistics as the in-memory fit (to round-off).
``gan``
    Trains on ``fit_blocks`` sub-cubes (twice the training window along each
    axis) read from the cube a tile at a time; validation, guides and the
    training windows come from those blocks.
``eof``
    DINEOF needs hundreds of passes over the data (every iteration is an SVD
    of the whole gap-filled matrix), far too many for a cube on disk. The
    streaming fit keeps DINEOF where it matters and makes three passes:

    1. DINEOF itself (``gapfill.methods.eof``, unchanged: cross-validated
       number of modes, temporal filter, noise estimate) on a regular spatial
       subsample that fits in :data:`SUBSAMPLE_ENTRIES` values (every
       ``stride``-th pixel along y and x). It gives the temporal EOFs ``V``
       (T × k): with T small, the time modes of a basin-scale field are well
       determined by a few thousand pixels.
    2. One blockwise pass over the whole cube accumulating ``Xᵀ V`` (the
       projection of each pixel's observations on the temporal EOFs), the
       observation counts and sums, and the observed mask packed in bits.
    3. In memory, pixel batch by pixel batch: each pixel's spatial-EOF
       weights are the least-squares fit of its own observations on ``V``
       (``(Vᵀ diag(o_p) V + Λ) w_p = Vᵀ x_p + Λ w0_p``), the fixed point of
       DINEOF's iteration for fixed ``V``, with a Gaussian prior centred on the
       subsample's weights at the nearest subsample pixel (``Λ = σ² / τ²``:
       noise variance over the weights' variance), so pixels seen a few
       times borrow from their neighbourhood.

    Filling is unchanged (per-frame projection on the spatial EOFs). With
    ``stride = 1`` step 1 is the in-memory DINEOF and steps 2–3 re-estimate
    the spatial EOFs from the same temporal ones; the two fits fill alike
    (``tests/test_scale.py`` checks it).

Memory is bounded by a data block plus ``C·H·W × k`` accumulators and
``C·H·W·T`` bits, never by the cube.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import dask.array as dsa

    from gapfill.cube import Cube
    from gapfill.methods.base import Method

#: Cubes (as normalised float32) above this size are fitted by streaming when dask-backed.
IN_MEMORY_FIT_BYTES = 2**28
#: Size (values) of the spatial subsample the streaming EOF fit runs DINEOF on.
SUBSAMPLE_ENTRIES = 2**22
#: Pixels per batch of the per-pixel least-squares solves.
SOLVE_BATCH = 8192

__all__ = [
    "IN_MEMORY_FIT_BYTES", "SUBSAMPLE_ENTRIES", "fit", "fit_climatology", "fit_eof", "supports",
    "use_streaming",
]


def supports(method: Method) -> bool:
    """Whether ``method`` has a streaming fit (overrides ``Method.fit_streaming``)."""
    return method.has_streaming_fit()


def use_streaming(method: Method, cube: Cube, streaming: bool | None = None) -> bool:
    """Whether to fit ``method`` by streaming: ``streaming`` if given, else big and dask-backed.

    Raises
    ------
    ValueError
        If ``streaming`` is True for an in-memory cube or a method without a streaming fit.
    """
    if streaming is None:
        nbytes = 4 * math.prod(cube.shape)
        return cube.is_lazy and supports(method) and nbytes > IN_MEMORY_FIT_BYTES
    if streaming and not cube.is_lazy:
        raise ValueError("streaming_fit=True needs a dask-backed cube (da.chunk(...))")
    if streaming and not supports(method):
        raise ValueError(
            f"method {method.name!r} has no streaming fit (Method.fit_streaming); fit an "
            "in-memory cube, or one that fits in memory, instead"
        )
    return bool(streaming)


def fit(method: Method, cube: Cube, rng: np.random.Generator) -> None:
    """Fit ``method`` on the dask-backed ``cube`` in a few blockwise passes."""
    method.fit_streaming(cube, rng)


def normalised(cube: Cube) -> dsa.Array:
    """The cube as a normalised dask ``(C, T, H, W)`` float32 array, NaN = missing or held out."""
    import dask.array as dsa

    data = cube.da.data
    data = data if data.ndim == 4 else data[None]
    shape = (-1, 1, 1, 1)
    mean = cube.normaliser.mean.reshape(shape)
    std = cube.normaliser.std.reshape(shape)
    z = ((data - mean) / std).astype(np.float32)
    if cube.hide is not None:
        z = dsa.where(cube.hide, np.float32(np.nan), z)
    return z


# -- climatology -----------------------------------------------------------------------------
def fit_climatology(method: Any, cube: Cube) -> None:
    """Per-pixel count, sum and sum of squares of ``cube`` in one dask reduction."""
    import dask
    import dask.array as dsa

    z = normalised(cube)
    obs = dsa.isfinite(z)
    x = dsa.where(obs, z, 0).astype(np.float64)
    count, total, sq = dask.compute(obs.sum(1), x.sum(1), (x**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        std = np.sqrt(np.maximum(sq / count - np.nan_to_num(mean) ** 2, 0.0))
    seen = count >= 2
    typical = np.array(
        [np.median(std[c][seen[c]]) if seen[c].any() else 1.0 for c in range(z.shape[0])]
    )
    std = np.where(seen, std, typical[:, None, None])
    method.load_state_dict(
        {"mean": mean.astype(np.float32), "std": np.maximum(std, 1e-6).astype(np.float32)}
    )
    method.fit_info = {"observed_pixels": int((count > 0).sum()), "streaming": True}


# -- eof ---------------------------------------------------------------------------------------
def subsample_stride(shape: tuple[int, int, int, int], entries: int | None = None) -> int:
    """Smallest stride along y and x whose subsample holds at most ``entries`` values."""
    entries = SUBSAMPLE_ENTRIES if entries is None else entries
    n_chan, n_time, height, width = shape
    stride = 1
    while n_chan * n_time * math.ceil(height / stride) * math.ceil(width / stride) > entries:
        stride += 1
    return stride


def fit_eof(method: Any, cube: Cube, rng: np.random.Generator) -> None:
    """DINEOF on a spatial subsample, then every pixel's least-squares fit on its temporal EOFs."""
    import dask

    n_chan, n_time, height, width = cube.shape
    z = normalised(cube)
    stride = subsample_stride(cube.shape)

    # 1. DINEOF on the subsample (one read of the cube, keeping 1/stride² of it).
    sub = np.asarray(dask.compute(z[:, :, ::stride, ::stride])[0])
    res = method.fit_array(sub, rng, cube.coords().time)
    sub_state = method.state_dict()
    info = dict(method.fit_info)
    V = res.V.astype(np.float64)  # (T, k) orthonormal temporal EOFs
    k = V.shape[1]
    hs, ws = sub.shape[2:]
    s_sub = np.sqrt(np.asarray(sub_state["prior_var"]) * n_time)
    w_sub = np.asarray(sub_state["U"], dtype=np.float64) * s_sub  # (C·hs·ws, k)
    fitted_sub = np.asarray(sub_state["fitted"], dtype=bool)
    noise_var = float(np.asarray(sub_state["noise_var"]).reshape(-1)[0])
    tau2 = np.maximum((w_sub[fitted_sub] ** 2).mean(0), 1e-12) if fitted_sub.any() else np.ones(k)
    lam = noise_var / tau2  # (k,) prior precision relative to the noise

    # 2. One blockwise pass: Xᵀ V, counts, sums and the observed bits.
    acc = _project_pass(z, V.astype(np.float32))
    count, total, xv, bits = acc["count"], acc["total"], acc["xv"], acc["bits"]
    fitted = count > 0
    if not fitted.any():
        raise ValueError("eof: no observed value to fit")
    chan_count = count.reshape(n_chan, -1).sum(1)
    chan_mean = total.reshape(n_chan, -1).sum(1) / np.maximum(chan_count, 1)
    mean = np.repeat(chan_mean, height * width)
    if method.options.center == "pixel":
        mean = np.where(fitted, total / np.maximum(count, 1), mean)

    # Prior centre: the subsample weights at the nearest subsample pixel.
    iy = np.minimum(np.rint(np.arange(height) / stride).astype(int), hs - 1)
    ix = np.minimum(np.rint(np.arange(width) / stride).astype(int), ws - 1)
    near = (
        np.arange(n_chan)[:, None, None] * hs * ws + iy[None, :, None] * ws + ix[None, None, :]
    ).reshape(-1)

    # 3. Per-pixel least squares on V, batch by batch.
    VV = (V[:, :, None] * V[:, None, :]).reshape(n_time, k * k)
    W = np.zeros((n_chan * height * width, k))
    for r0 in range(0, W.shape[0], SOLVE_BATCH):
        rows = slice(r0, min(W.shape[0], r0 + SOLVE_BATCH))
        observed = np.concatenate(
            [np.unpackbits(b[:, rows], axis=0, count=n) for b, n in zip(bits, acc["frames"])],
            axis=0,
        ).astype(np.float64)  # (T, R)
        M = (observed.T @ VV).reshape(-1, k, k) + np.diag(lam)
        ov = observed.T @ V  # Σ_obs v_t per pixel
        rhs = xv[rows] - mean[rows, None] * ov + lam * w_sub[near[rows]]
        W[rows] = np.linalg.solve(M, rhs[..., None])[..., 0]
    W[~fitted] = 0.0
    s_full = np.linalg.norm(W, axis=0)
    U = W / np.where(s_full > 0, s_full, 1.0)
    state = {
        "U": U.astype(np.float32),
        "prior_var": (s_full**2 / n_time).astype(np.float64),
        "mean": mean.astype(np.float32),
        "fitted": fitted,
        "noise_var": np.array(sub_state["noise_var"], copy=True),  # eof.py's own format
        "grid": np.asarray([n_chan, height, width], dtype=np.int64),
    }
    method.load_state_dict(state)
    info["streaming"] = {
        "stride": stride,
        "subsample": [int(hs), int(ws)],
        "subsample_modes": int(k),
        "passes": 3,
    }
    method.fit_info = info


def _project_pass(z: dsa.Array, V: np.ndarray) -> dict[str, Any]:
    """Accumulate, over the time blocks of ``z`` (C, T, H, W), per pixel (``C·H·W`` rows):
    the count and sum of observations, ``Σ_t x_t v_t`` (rows × k) and the observed bits
    (one ``(ceil(T_b/8), C·H·W)`` uint8 array per time block, ``frames`` long)."""
    import dask

    z = z.rechunk({0: -1, 2: -1, 3: -1})  # whole frames: one block per time chunk
    n_chan, n_time, height, width = z.shape
    t0 = np.concatenate([[0], np.cumsum(z.chunks[1])[:-1]]).astype(int)
    blocks = z.to_delayed(optimize_graph=False).reshape(-1)
    part = dask.delayed(_project_block, pure=True)
    n_pix = n_chan * height * width
    out: dict[str, Any] = {
        "count": np.zeros(n_pix, dtype=np.int64),
        "total": np.zeros(n_pix),
        "xv": np.zeros((n_pix, V.shape[1])),
        "bits": [],
        "frames": [int(n) for n in z.chunks[1]],
    }
    batch = max(1, _parallelism())
    for b0 in range(0, len(blocks), batch):
        ids = range(b0, min(len(blocks), b0 + batch))
        results = dask.compute(
            *[part(blocks[i], V[t0[i] : t0[i] + z.chunks[1][i]]) for i in ids]
        )
        for count, total, xv, bits in results:
            out["count"] += count
            out["total"] += total
            out["xv"] += xv
            out["bits"].append(bits)
    return out


def _project_block(z: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, ...]:
    obs = np.isfinite(z)
    x = np.where(obs, z, np.float32(0))
    n_chan, n_t, height, width = z.shape
    flat = x.transpose(0, 2, 3, 1).reshape(-1, n_t)  # (C·H·W, T_b), rows as eof's matrix
    mask = obs.transpose(1, 0, 2, 3).reshape(n_t, -1)  # (T_b, C·H·W)
    return (
        mask.sum(0).astype(np.int64),
        flat.sum(1, dtype=np.float64),
        flat @ V,  # float32: a sum over the block's few frames
        np.packbits(mask, axis=0),
    )


def _parallelism() -> int:
    """Blocks computed at once: the distributed cluster's threads, else the local cores."""
    import os

    try:
        from distributed import get_client

        return max(1, sum(get_client().nthreads().values()))
    except (ImportError, ValueError):
        return os.cpu_count() or 1
