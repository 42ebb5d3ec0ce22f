"""Write videos and frames, and side-by-side previews, atomically."""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import xarray as xr

from gapfill.atomic import replacing
from gapfill.dims import find_dims
from gapfill.extras import require
from gapfill.video.base import (
    NAN_COLOR,
    VIDEO_SUFFIXES,
    _import_av,
    _video_array,
)


# ----------------------------------------------------------------------------- writing
def write_mp4(
    da: xr.DataArray,
    path: str | os.PathLike,
    fps: float | None = None,
    *,
    crf: int = 18,
    codec: str = "libx264",
    value_range: tuple[float, float] = (0.0, 1.0),
    nan_color: tuple[float, float, float] = NAN_COLOR,
) -> Path:
    """Encode a video DataArray as an mp4 (or any container PyAV knows by suffix).

    Parameters
    ----------
    da
        ``(time, y, x[, channel])`` with 1 or 3 channels; may be dask-backed
        (frames are loaded one at a time).
    path
        Output file; written to a temporary file, then renamed.
    fps
        Frame rate; default ``da.attrs["fps"]`` or 25.
    crf
        x264 quality (0 = lossless, 18 = visually lossless, 23 = default).
    codec
        FFmpeg encoder; ``"mpeg4"`` is used when libx264 is unavailable.
    value_range
        Values mapped to black and white.
    nan_color
        RGB in ``[0, 1]`` drawn where any channel is NaN.

    Returns
    -------
    pathlib.Path
        The written file. Frames with an odd height or width are encoded as
        yuv444p (fewer players support it); even sizes use yuv420p.
    """
    av = _import_av()
    frames = _rgb_frames(da, value_range, nan_color)
    fps = float(fps or da.attrs.get("fps") or 25.0)
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    first = next(frames)
    h, w = first.shape[:2]
    try:
        av.codec.Codec(codec, "w")
    except Exception:  # codec missing from this FFmpeg build
        warnings.warn(f"encoder {codec!r} is not available; using 'mpeg4'", stacklevel=2)
        codec = "mpeg4"
    with replacing(path) as tmp:
        container = av.open(str(tmp), mode="w")
        try:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = w, h
            stream.pix_fmt = "yuv420p" if (h % 2 == 0 and w % 2 == 0) else "yuv444p"
            if codec == "mpeg4":
                stream.pix_fmt = "yuv420p"
                stream.options = {"qscale": "2"}
            elif codec.startswith("libx26"):
                stream.options = {"crf": str(int(crf))}
            for i, frame in enumerate(_chain(first, frames)):
                video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
                video_frame.pts = i
                for packet in stream.encode(video_frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()
    return Path(path)


def write_frames(
    da: xr.DataArray,
    folder: str | os.PathLike,
    *,
    prefix: str = "frame_",
    value_range: tuple[float, float] = (0.0, 1.0),
    nan_color: tuple[float, float, float] = NAN_COLOR,
) -> Path:
    """Write each frame as an 8-bit PNG ``<prefix>000000.png`` in ``folder``.

    The frames are written to a temporary sibling folder first; a new
    ``folder`` is created by renaming it, an existing one gets each file
    replaced atomically (other files in it are left alone).

    Parameters
    ----------
    da
        ``(time, y, x[, channel])`` with 1 or 3 channels.
    folder
        Output folder.
    prefix
        File name prefix.
    value_range
        Values mapped to black and white.
    nan_color
        RGB in ``[0, 1]`` drawn where any channel is NaN.

    Returns
    -------
    pathlib.Path
        ``folder``.
    """
    Image = require("PIL.Image", "writing image frames")

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{str(folder)!r} exists and is not a folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    n_t = da.sizes[find_dims(da).time]
    digits = max(6, len(str(n_t - 1)))
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        names = []
        for i, frame in enumerate(_rgb_frames(da, value_range, nan_color, keep_gray=True)):
            name = f"{prefix}{i:0{digits}d}.png"
            Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame).save(tmp / name)
            names.append(name)
        if not folder.exists():
            os.replace(tmp, folder)
        else:
            for name in names:
                os.replace(tmp / name, folder / name)
    finally:
        if tmp.exists():
            for p in tmp.iterdir():
                p.unlink()
            tmp.rmdir()
    return folder


def preview(
    occluded: xr.DataArray | xr.Dataset,
    filled: xr.DataArray | xr.Dataset,
    original: xr.DataArray | xr.Dataset | None,
    path: str | os.PathLike,
    *,
    fps: float | None = None,
    n_frames: int = 6,
    gap: int = 4,
    value_range: tuple[float, float] = (0.0, 1.0),
    nan_color: tuple[float, float, float] = NAN_COLOR,
) -> Path:
    """Write a side-by-side ``occluded | filled | original`` comparison.

    Parameters
    ----------
    occluded, filled, original
        Videos of the same ``(time, y, x)`` size; ``original`` may be ``None``
        (two panels). A Dataset (the output of ``da.gapfill.fill``) contributes
        its filled variable. Gray videos are shown as gray.
    path
        ``.mp4`` (or another video suffix): a video of all frames. Anything
        else (``.png``): one image with ``n_frames`` evenly spaced frames as rows.
    fps
        Video frame rate; default the ``fps`` attribute of one input, or 25.
    n_frames
        Rows of an image strip.
    gap
        White pixels between panels (and rows).
    value_range
        Values mapped to black and white.
    nan_color
        RGB drawn at missing values (visible in the occluded panel).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    Image = require("PIL.Image", "writing image frames")

    panels = [_video_array(v) for v in (occluded, filled, original) if v is not None]
    shapes = {tuple(p.sizes[d] for d in find_dims(p).core) for p in panels}
    if len(shapes) != 1:
        raise ValueError(f"preview needs videos of one (time, y, x) size, got {sorted(shapes)}")
    n_t, h, w = shapes.pop()
    path = Path(path)
    fps = fps or next((p.attrs["fps"] for p in panels if p.attrs.get("fps")), None)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        width = len(panels) * w + (len(panels) - 1) * gap
        pad_w, pad_h = width % 2, h % 2  # keep yuv420p (plays everywhere)
        canvas = np.full((n_t, h + pad_h, width + pad_w, 3), 255, dtype=np.uint8)
        for k, frames in enumerate(_rgb_frames(p, value_range, nan_color) for p in panels):
            x0 = k * (w + gap)
            for t, frame in enumerate(frames):
                canvas[t, :h, x0 : x0 + w] = frame
        video = xr.DataArray(canvas.astype(np.float32) / 255, dims=("time", "y", "x", "channel"))
        return write_mp4(video, path, fps=fps)
    rows = np.unique(np.linspace(0, n_t - 1, min(n_frames, n_t)).round().astype(int))
    width = len(panels) * w + (len(panels) - 1) * gap
    height = len(rows) * h + (len(rows) - 1) * gap
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    for k, p in enumerate(panels):
        tname = find_dims(p).time
        sub = p.isel({tname: rows})
        for r, frame in enumerate(_rgb_frames(sub, value_range, nan_color)):
            canvas[r * (h + gap) : r * (h + gap) + h, k * (w + gap) : k * (w + gap) + w] = frame
    with replacing(path) as tmp:
        Image.fromarray(canvas).save(tmp, format=_pil_format(path))
    return path


# ----------------------------------------------------------------------------- helpers
def _rgb_frames(
    da: xr.DataArray | xr.Dataset,
    value_range: tuple[float, float],
    nan_color: tuple[float, float, float],
    keep_gray: bool = False,
) -> Iterator[np.ndarray]:
    """Yield ``(H, W, 3)`` (or ``(H, W, 1)`` with ``keep_gray``) uint8 frames."""
    da = _video_array(da)
    dims = find_dims(da)
    order = dims.core + ((dims.channel,) if dims.channel else ())
    da = da.transpose(*order)
    n_c = da.sizes[dims.channel] if dims.channel else 1
    if n_c not in (1, 3):
        raise ValueError(f"a video needs 1 or 3 channels, got {n_c} along {dims.channel!r}")
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    if da.sizes[dims.time] == 0:
        raise ValueError("the video has no frame to write")
    colour = np.clip(np.round(np.asarray(nan_color, dtype=np.float64) * 255), 0, 255)
    for t in range(da.sizes[dims.time]):
        x = np.asarray(da.isel({dims.time: t}).values, dtype=np.float32)
        x = x[..., None] if x.ndim == 2 else x
        missing = ~np.isfinite(x).all(-1)
        scaled = np.clip(np.round((np.nan_to_num(x) - lo) / (hi - lo) * 255), 0, 255)
        scaled = scaled.astype(np.uint8)
        if n_c == 1 and not (keep_gray and not missing.any()):
            scaled = np.repeat(scaled, 3, axis=-1)
        if missing.any():
            scaled[missing] = colour.astype(np.uint8)
        yield scaled


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def _pil_format(path: Path) -> str:
    Image = require("PIL.Image", "writing image frames")

    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"unknown output format {path.suffix!r}; use .mp4 or .png")
    return fmt
