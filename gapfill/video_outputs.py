"""The outputs of a video recipe, once its video is filled.

The filled video as mp4, its PNG frames, a side-by-side preview (occluded |
filled | original), the per-frame scores on the punched pixels
(:func:`gapfill.punching.video_scores`) and an image strip as the figure.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from gapfill import video
from gapfill.dims import find_dims
from gapfill.punching import scores_table, video_scores, write_scores_csv
from gapfill.recipe import Recipe

if TYPE_CHECKING:
    from gapfill.pipeline import RunResult

__all__ = ["write_video_outputs"]

log = logging.getLogger("gapfill")


def write_video_outputs(
    recipe: Recipe,
    gappy: xr.DataArray,
    filled: xr.DataArray,
    truth: xr.DataArray | None,
    hidden: xr.DataArray | None,
    diag: Any,
    targets: dict[str, Path],
    result: RunResult,
    step: Any,
    bar: Any,
) -> None:
    """The outputs of a video recipe: mp4, PNG frames, preview, CSV of scores, image strip.

    ``filled`` comes straight from ``fill`` (observed pixels are the input's, bit
    for bit); values are clipped to [0, 1] only when encoded and when scored.
    """
    fps = gappy.attrs.get("fps") or (truth.attrs.get("fps") if truth is not None else None)
    left = ~np.isfinite(filled)
    if bool(left.any()):
        log.warning("%d values are left unfilled (never observed, and %s); they are drawn "
                    "magenta and left out of the scores", int(left.sum()),
                    "the method does not fill those" if recipe.fill.fill_never_observed
                    else "fill.fill_never_observed is false")
    path = targets["output.path"]
    step(f"writing {path}")
    video.write_mp4(filled, path, fps=fps)
    bar.update()

    if "output.frames" in targets:
        folder = targets["output.frames"]
        step(f"writing PNG frames to {folder}/")
        video.write_frames(filled, folder)
        n_frames = filled.sizes[find_dims(filled).time]
        for old in folder.glob("frame_*.png"):  # frames left from a longer earlier run
            digits = old.stem[len("frame_"):]
            if digits.isdigit() and int(digits) >= n_frames:
                old.unlink()
        result.frames = folder
        bar.update()

    if "output.preview" in targets:
        path = targets["output.preview"]
        step(f"writing the preview {path} (occluded | filled | original)")
        video.preview(gappy, filled, truth, path, fps=fps)
        result.preview = path
        bar.update()

    table = None
    if truth is not None and hidden is not None:
        result.punched, table = video_scores(truth, filled, hidden)
        log.info("punched pixels vs original: MAE %.4f, RMSE %.4f, PSNR %.2f dB, SSIM %.3f "
                 "(n=%d)", *(result.punched[k] for k in ("mae", "rmse", "psnr", "ssim", "n")))

    write_scores_csv(targets, scores_table(diag, table), result, step, bar)

    if "output.figures" in targets:
        path = targets["output.figures"]
        step(f"drawing {path}")
        video.preview(gappy, filled, truth, path)
        result.figure = path
        bar.update()
