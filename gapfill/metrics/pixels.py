"""Pixel scores of a fill against the truth on the hidden pixels; error summaries.

:func:`mae`, :func:`rmse`, :func:`psnr`, :func:`ssim` and :func:`score` compare
``filled`` with ``truth`` on the hidden pixels (see :mod:`gapfill.metrics`);
:func:`error_summary` gives the count, MAE, RMSE and bias of a set of errors
(the hold-out scores of a fill use it).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import xarray as xr

from gapfill.dims import find_dims

__all__ = ["error_summary", "mae", "psnr", "rmse", "score", "ssim"]

Average = Literal["frame", "pixel"]
ArrayLike = Any  # xr.DataArray | xr.Dataset | np.ndarray


def error_summary(errors: np.ndarray) -> dict[str, float]:
    """Count, MAE, RMSE and bias (mean) of ``errors`` (fill minus truth); NaN when empty."""
    e = np.asarray(errors)
    if not e.size:
        return {"n": 0, "mae": float("nan"), "rmse": float("nan"), "bias": float("nan")}
    return {
        "n": int(e.size),
        "mae": float(np.abs(e).mean()),
        "rmse": float(np.sqrt((e**2).mean())),
        "bias": float(e.mean()),
    }


# =============================================================================== pixel scores
def _video_values(x: ArrayLike, what: str) -> np.ndarray:
    """``x`` as an ``(T, H, W, C)`` array (no copy for float numpy input)."""
    from gapfill.video.base import _video_array

    if isinstance(x, (xr.DataArray, xr.Dataset)):
        da = _video_array(x)
        dims = find_dims(da)
        order = dims.core + ((dims.channel,) if dims.channel else ())
        arr = np.asarray(da.transpose(*order).values)
    else:
        arr = np.asarray(x)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise ValueError(f"{what} must be (time, y, x[, channel]), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    return arr


def _mask_values(mask: ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray:
    """``mask`` as a boolean array broadcastable to the ``(T, H, W, C)`` ``shape``."""
    if mask is None:
        return np.ones(shape[:3] + (1,), dtype=bool)
    if isinstance(mask, xr.DataArray):
        arr = np.asarray(mask.transpose(*find_dims(mask).core, ...).values)
    else:
        arr = np.asarray(mask)
    if arr.dtype != bool:
        raise ValueError(f"mask must be boolean (True = hidden), got dtype {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[..., None]
    try:
        np.broadcast_shapes(arr.shape, shape)
    except ValueError:
        raise ValueError(f"mask of shape {arr.shape} does not match the data {shape}") from None
    return arr


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(x, sigma=(sigma, sigma, 0), truncate=3.5, mode="reflect")


def _ssim_map(x: np.ndarray, y: np.ndarray, data_range: float, sigma: float) -> np.ndarray:
    """SSIM map (Wang et al. 2004, Gaussian window) of two ``(H, W, C)`` images."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = _gaussian(x, sigma), _gaussian(y, sigma)
    sxx = _gaussian(x * x, sigma) - mx * mx
    syy = _gaussian(y * y, sigma) - my * my
    sxy = _gaussian(x * y, sigma) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def _fill_nan(x: np.ndarray) -> np.ndarray:
    """Replace non-finite values by the channel's mean (for filtering only)."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return x
    mean = np.nanmean(np.where(bad, np.nan, x), axis=(0, 1), keepdims=True)
    return np.where(bad, np.nan_to_num(mean), x)


def _frame_sums(
    truth: ArrayLike,
    filled: ArrayLike,
    mask: ArrayLike | None,
    data_range: float,
    with_ssim: bool,
    sigma: float = 1.5,
) -> dict[str, np.ndarray]:
    """Per-frame counts and sums of |error|, error**2 and SSIM over hidden pixels."""
    t_arr, f_arr = _video_values(truth, "truth"), _video_values(filled, "filled")
    if t_arr.shape != f_arr.shape:
        raise ValueError(f"truth {t_arr.shape} and filled {f_arr.shape} differ in shape")
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    m_arr = _mask_values(mask, t_arr.shape)
    n_t = t_arr.shape[0]
    out = {k: np.zeros(n_t) for k in ("n", "abs", "sq", "ssim")}
    unfilled = 0
    for t in range(n_t):
        x = t_arr[t].astype(np.float64)
        y = f_arr[t].astype(np.float64)
        hidden = np.broadcast_to(m_arr[t if m_arr.shape[0] > 1 else 0], x.shape)
        valid = hidden & np.isfinite(x) & np.isfinite(y)
        unfilled += int((hidden & np.isfinite(x) & ~np.isfinite(y)).sum())
        n = int(valid.sum())
        out["n"][t] = n
        if n == 0:
            continue
        err = (y - x)[valid]
        out["abs"][t] = np.abs(err).sum()
        out["sq"][t] = (err * err).sum()
        if with_ssim:
            out["ssim"][t] = _ssim_map(_fill_nan(x), _fill_nan(y), data_range, sigma)[valid].sum()
    if unfilled:
        warnings.warn(f"{unfilled} hidden values are NaN in filled (not filled); they are "
                      "left out of the scores.", stacklevel=3)
    return out


def _reduce(values: np.ndarray, n: np.ndarray, per_frame: bool) -> float | np.ndarray:
    values = np.where(n > 0, values, np.nan)
    if per_frame:
        return values
    if not (n > 0).any():
        warnings.warn("no hidden pixel to score: the result is NaN", stacklevel=3)
        return float("nan")
    return float(np.mean(values[n > 0]))


def _psnr(mse: np.ndarray, data_range: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


def _check_average(average: str) -> None:
    if average not in ("frame", "pixel"):
        raise ValueError(f"average must be 'frame' or 'pixel', got {average!r}")


def _score_one(
    name: str, s: dict[str, np.ndarray], data_range: float, average: str, per_frame: bool
) -> float | np.ndarray:
    _check_average(average)
    n = s["n"]
    if average == "pixel" and not per_frame:
        total = n.sum()
        if total == 0:
            warnings.warn("no hidden pixel to score: the result is NaN", stacklevel=3)
            return float("nan")
        pooled = {k: np.array([s[k].sum() / total]) for k in ("abs", "sq", "ssim")}
        return float(_metric(name, pooled, data_range)[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        means = {k: s[k] / np.where(n > 0, n, 1) for k in ("abs", "sq", "ssim")}
    return _reduce(_metric(name, means, data_range), n, per_frame)


def _metric(name: str, means: dict[str, np.ndarray], data_range: float) -> np.ndarray:
    if name == "mae":
        return means["abs"]
    if name == "rmse":
        return np.sqrt(means["sq"])
    if name == "psnr":
        return _psnr(means["sq"], data_range)
    return means["ssim"]


def mae(
    truth: ArrayLike,
    filled: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    average: Average = "frame",
    per_frame: bool = False,
) -> float | np.ndarray:
    """Mean absolute error on the hidden pixels.

    Parameters
    ----------
    truth, filled
        DataArrays (dims in any order; a Dataset gives its data variable) or
        arrays ``(T, H, W[, C])``.
    mask
        Boolean ``(T, H, W)`` (or ``(T, H, W, C)``), ``True`` = hidden; ``None``
        scores every pixel.
    average
        ``"frame"``: mean of the per-frame scores; ``"pixel"``: pooled over all
        hidden pixels.
    per_frame
        Return the ``(T,)`` per-frame scores (NaN for frames with no hidden pixel).
    """
    return _score_one("mae", _frame_sums(truth, filled, mask, 1.0, False), 1.0, average, per_frame)


def rmse(
    truth: ArrayLike,
    filled: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    average: Average = "frame",
    per_frame: bool = False,
) -> float | np.ndarray:
    """Root mean square error on the hidden pixels (parameters as :func:`mae`)."""
    return _score_one("rmse", _frame_sums(truth, filled, mask, 1.0, False), 1.0, average, per_frame)


def psnr(
    truth: ArrayLike,
    filled: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    data_range: float = 1.0,
    average: Average = "frame",
    per_frame: bool = False,
) -> float | np.ndarray:
    """Peak signal-to-noise ratio ``10 log10(data_range**2 / MSE)`` in dB on the hidden pixels.

    ``data_range`` is 1 for videos in ``[0, 1]``; give the field's range
    (e.g. ``truth.max() - truth.min()``) for geophysical data. A perfect fill
    gives ``inf``. Other parameters as :func:`mae`.
    """
    s = _frame_sums(truth, filled, mask, data_range, False)
    return _score_one("psnr", s, data_range, average, per_frame)


def ssim(
    truth: ArrayLike,
    filled: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    data_range: float = 1.0,
    sigma: float = 1.5,
    average: Average = "frame",
    per_frame: bool = False,
) -> float | np.ndarray:
    """Structural similarity on the hidden pixels.

    The SSIM map (Wang et al. 2004: Gaussian window of ``sigma`` = 1.5 px
    truncated at 3.5 sigma, K1 = 0.01, K2 = 0.03, no sample-covariance
    correction, reflected borders) of each frame and channel is averaged over
    the hidden pixels and the channels. NaN in the images are replaced by the
    channel mean before filtering (and left out of the average). Other
    parameters as :func:`psnr`.
    """
    s = _frame_sums(truth, filled, mask, data_range, True, sigma=sigma)
    return _score_one("ssim", s, data_range, average, per_frame)


def score(
    truth: ArrayLike,
    filled: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    data_range: float = 1.0,
    average: Average = "frame",
) -> dict[str, float]:
    """MAE, RMSE, PSNR and SSIM on the hidden pixels in one pass.

    Returns
    -------
    dict
        ``{"mae", "rmse", "psnr", "ssim", "n_hidden"}`` (``n_hidden`` counts
        scored values, channels included).
    """
    s = _frame_sums(truth, filled, mask, data_range, True)
    out: dict[str, float] = {
        name: _score_one(name, s, data_range, average, False)  # type: ignore[misc]
        for name in ("mae", "rmse", "psnr", "ssim")
    }
    out["n_hidden"] = int(s["n"].sum())
    return out


