"""Natural video in and out of xarray: read, occlude, write and preview.

Videos are DataArrays with dims ``(time, y, x, channel)`` and float32 values
in ``[0, 1]``, so they go through :class:`gapfill.cube.Cube` like any other
cube with a channel dim. Decoding and encoding use PyAV (its wheel carries
FFmpeg); image frames are read and written with Pillow (a matplotlib
dependency). Every writer writes to a temporary file next to the target and
renames it into place, so an interrupted write leaves no half file.

>>> import gapfill.video as gv
>>> clip = gv.open("bikes.mp4", resize=(68, 160), max_frames=24)  # doctest: +SKIP
>>> occluded, mask = gv.occlude(clip, "raindrops", seed=0)  # doctest: +SKIP
>>> gv.preview(occluded, filled, clip, "check.mp4")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import uuid
import warnings
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from gapfill.atomic import replacing

from gapfill.dims import find_dims

__all__ = ["open", "open_masks", "occlude", "preview", "write_frames", "write_mp4"]

#: Suffixes read as image frames in a folder.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: Suffixes written as videos by :func:`preview` (anything else is an image strip).
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm")
#: Colour drawn where a value is missing (magenta: rare in natural video).
NAN_COLOR = (1.0, 0.0, 1.0)

# ----------------------------------------------------------------------------- reading
def open(  # noqa: A001 - mirrors xr.open_dataset / PIL.Image.open
    path: str | os.PathLike,
    *,
    resize: tuple[int, int] | None = None,
    crop: tuple[int, int, int, int] | None = None,
    stride: int = 1,
    max_frames: int | None = None,
    start: int = 0,
    grayscale: bool = False,
) -> xr.DataArray:
    """Read a video file or a folder of image frames into a DataArray.

    Parameters
    ----------
    path
        A video file PyAV can decode (mp4, avi, mkv, ...) or a folder of image
        frames (png, jpg, bmp, tif, webp), taken in natural sort order
        (``frame2.png`` before ``frame10.png``).
    resize
        ``(H, W)`` output frame size (bilinear, antialiased when shrinking).
    crop
        ``(y0, x0, H, W)`` window of the source frame, applied before ``resize``.
    stride
        Keep every ``stride``-th frame.
    max_frames
        Keep at most this many frames (decoding stops there).
    start
        Index of the first source frame to keep.
    grayscale
        Return one luminance channel instead of RGB.

    Returns
    -------
    xarray.DataArray
        float32 ``(time, y, x, channel)`` in ``[0, 1]``, named ``"video"``.
        ``time`` is the integer frame index in the source (so ``start`` and
        ``stride`` stay visible); for video files a ``seconds`` coordinate on
        ``time`` holds each frame's presentation time from the stream's time
        base. ``attrs``: ``source`` (path), ``fps`` of the returned sequence
        (source rate / ``stride``; video files only), ``source_fps``,
        ``stride``, ``start``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file has no video stream or cannot be decoded, the folder holds
        no image, frame sizes differ (without ``resize``), the crop leaves the
        frame, or no frame is left after ``start``/``stride``.
    """
    path = Path(path)
    stride, start = _check_int(stride, "stride", 1), _check_int(start, "start", 0)
    if max_frames is not None:
        max_frames = _check_int(max_frames, "max_frames", 1)
    resize = None if resize is None else _check_size(resize, "resize", 2)
    crop = None if crop is None else _check_crop(crop)
    if not path.exists():
        raise FileNotFoundError(f"no video file or frame folder at {str(path)!r}")
    reader = _read_folder if path.is_dir() else _read_video
    frames, index, seconds, meta = reader(path, start, stride, max_frames, grayscale, crop, resize)
    if not frames:
        total = meta.get("n_source_frames")
        raise ValueError(
            f"no frame left in {str(path)!r} with start={start}, stride={stride}: the source "
            f"has {total if total is not None else 'too few'} frames."
        )
    data = np.empty((len(frames), *frames[0].shape), dtype=np.float32)
    for i, frame in enumerate(frames):
        data[i] = _to_unit_float(frame)
        frames[i] = None  # free the uint8 copy as we go
    coords: dict[str, Any] = {
        "time": ("time", np.asarray(index, dtype=np.int64),
                 {"long_name": "frame index in the source"}),
        "channel": ("channel", ["gray"] if grayscale else ["red", "green", "blue"]),
    }
    if seconds is not None:
        coords["seconds"] = ("time", np.asarray(seconds, dtype=np.float64),
                             {"long_name": "presentation time", "units": "s"})
    attrs: dict[str, Any] = {"source": str(path), "stride": stride, "start": start}
    if meta.get("fps"):
        attrs["source_fps"] = float(meta["fps"])
        attrs["fps"] = float(meta["fps"]) / stride
    return xr.DataArray(data, dims=("time", "y", "x", "channel"), coords=coords,
                        name="video", attrs=attrs)


def _import_av():
    from gapfill.extras import require

    return require("av", "reading and writing video")


def _read_video(path, start, stride, max_frames, grayscale, crop, resize):
    av = _import_av()
    try:
        container = av.open(str(path))
    except (av.error.InvalidDataError, av.error.FFmpegError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(path)!r} is not a video PyAV/FFmpeg can read: {err}") from None
    frames: list[np.ndarray] = []
    index: list[int] = []
    seconds: list[float] = []
    try:
        if not container.streams.video:
            raise ValueError(f"{str(path)!r} has no video stream (streams: "
                             f"{[s.type for s in container.streams]})")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate) if stream.average_rate else None
        n = -1
        for n, frame in enumerate(container.decode(stream)):
            if n < start or (n - start) % stride:
                continue
            arr = frame.to_ndarray(format="gray" if grayscale else "rgb24")
            frames.append(_crop_resize(arr, crop, resize, f"frame {n} of {path}"))
            index.append(n)
            seconds.append(float(frame.time) if frame.time is not None
                           else (n / fps if fps else np.nan))
            if max_frames is not None and len(frames) >= max_frames:
                break
    except av.error.FFmpegError as err:
        raise ValueError(f"could not decode {str(path)!r}: {err}") from None
    finally:
        container.close()
    return frames, index, seconds, {"fps": fps, "n_source_frames": n + 1}


def _read_folder(path, start, stride, max_frames, grayscale, crop, resize):
    files = sorted(
        (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=_natural_key,
    )
    if not files:
        raise ValueError(f"no image frames ({', '.join(IMAGE_SUFFIXES)}) in folder {str(path)!r}")
    chosen = list(range(start, len(files), stride))[:max_frames]
    frames: list[np.ndarray] = []
    for n in chosen:
        arr = _crop_resize(_read_image(files[n], grayscale), crop, resize, str(files[n]))
        if frames and arr.shape != frames[0].shape:
            raise ValueError(
                f"frame {files[n].name} is {arr.shape[1]}x{arr.shape[0]} but "
                f"{files[chosen[0]].name} is {frames[0].shape[1]}x{frames[0].shape[0]}; "
                "pass resize=(H, W) to read frames of different sizes."
            )
        frames.append(arr)
    return frames, chosen, None, {"fps": None, "n_source_frames": len(files)}


def _read_image(path: Path, grayscale: bool) -> np.ndarray:
    """One image as uint8 or uint16 ``(H, W, C)``."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im).astype(np.uint16)
            arr = arr[..., None] if grayscale else np.repeat(arr[..., None], 3, axis=-1)
        else:
            arr = np.asarray(im.convert("L" if grayscale else "RGB"))
            arr = arr[..., None] if grayscale else arr
    return arr


def _natural_key(p: Path) -> list:
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", p.name)]


def _to_unit_float(arr: np.ndarray) -> np.ndarray:
    scale = 65535.0 if arr.dtype == np.uint16 else 255.0 if arr.dtype == np.uint8 else 1.0
    return arr.astype(np.float32) / np.float32(scale)


def _crop_resize(arr, crop, resize, what: str) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[..., None]
    if crop is not None:
        y0, x0, h, w = crop
        if y0 + h > arr.shape[0] or x0 + w > arr.shape[1]:
            raise ValueError(
                f"crop={crop} (y0, x0, H, W) leaves {what}, which is {arr.shape[0]}x{arr.shape[1]}"
            )
        arr = arr[y0 : y0 + h, x0 : x0 + w]
    if resize is not None and tuple(arr.shape[:2]) != tuple(resize):
        arr = _resize(arr, resize)
    return np.ascontiguousarray(arr)


def _resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an ``(H, W, C)`` array (uint8 stays uint8; else float32)."""
    from PIL import Image

    h, w = size
    if arr.dtype == np.uint8 and arr.shape[-1] in (1, 3):
        im = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
        out = np.asarray(im.resize((w, h), Image.Resampling.BILINEAR))
        return out[..., None] if out.ndim == 2 else out
    dtype = arr.dtype
    chans = [
        np.asarray(Image.fromarray(arr[..., c].astype(np.float32), mode="F")
                   .resize((w, h), Image.Resampling.BILINEAR))
        for c in range(arr.shape[-1])
    ]
    out = np.stack(chans, axis=-1)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        out = np.clip(np.rint(out), info.min, info.max).astype(dtype)
    return out


def open_masks(
    path: str | os.PathLike,
    like: xr.DataArray | None = None,
    *,
    threshold: float = 0.5,
) -> xr.DataArray:
    """Read user-given occlusion masks (white = missing) as a boolean DataArray.

    Parameters
    ----------
    path
        A mask video or a folder of mask images (read like :func:`open`, as
        luminance). Images holding only the values 0 and 1 (label masks) count
        any non-zero pixel as missing.
    like
        Optional video or cube the masks belong to: the masks are resized to its
        ``(y, x)`` size (bilinear on the binary mask, then ``> 0.5``), take its
        dim names and coords, a single mask frame is repeated over its time
        axis, and extra mask frames are dropped with a warning.
    threshold
        Luminance in ``[0, 1]`` above which a pixel is missing.

    Returns
    -------
    xarray.DataArray
        bool ``(time, y, x)``, ``True`` = missing, named ``"mask"``.

    Raises
    ------
    ValueError
        If the masks have fewer frames than ``like`` (and more than one).
    """
    raw = open(path, grayscale=True)
    values = raw.values[..., 0]
    if np.all((values == 0) | (values == np.float32(1 / 255))) and values.max() > 0:
        mask = values > 0  # a 0/1 label image
    else:
        mask = values > threshold
    if like is None:
        return xr.DataArray(mask, dims=("time", "y", "x"), coords={"time": raw["time"]},
                            name="mask", attrs={"source": str(path)})
    dims = find_dims(like)
    n_t, n_y, n_x = (like.sizes[d] for d in dims.core)
    if mask.shape[1:] != (n_y, n_x):
        mask = np.stack([_resize(m[..., None].astype(np.float32), (n_y, n_x))[..., 0] > 0.5
                         for m in mask])
    if mask.shape[0] == 1:
        mask = np.repeat(mask, n_t, axis=0)
    elif mask.shape[0] < n_t:
        raise ValueError(f"{str(path)!r} holds {mask.shape[0]} mask frames but the video has "
                         f"{n_t}; give one mask per frame or a single mask for all frames.")
    elif mask.shape[0] > n_t:
        warnings.warn(f"{str(path)!r} holds {mask.shape[0]} mask frames; using the first {n_t} "
                      "to match the video.", stacklevel=2)
        mask = mask[:n_t]
    coords = {d: like[d] for d in dims.core if d in like.coords}
    return xr.DataArray(mask, dims=dims.core, coords=coords, name="mask",
                        attrs={"source": str(path)})


# ----------------------------------------------------------------------------- occlusion
def occlude(
    da: xr.DataArray,
    process: Any,
    seed: int | None = None,
    **options: Any,
) -> tuple[xr.DataArray, xr.DataArray]:
    """Hide pixels of a video with an occlusion process; one mask for all channels.

    Parameters
    ----------
    da
        Video or cube, dims (time, y, x[, channel]) in any order.
    process
        A :mod:`gapfill.masks` process (anything with ``sample((T, H, W), rng)``),
        or its registry name (``"raindrops"``, ``"moving_bar"``, ...), built with
        ``masks.make(process, seed=seed, **options)``.
    seed
        Seed of the draw; ``None`` uses the process's own generator.
    **options
        Process parameters (``coverage=...``), only with a name.

    Returns
    -------
    occluded
        ``da`` with NaN at hidden pixels (in every channel).
    mask
        bool ``(time, y, x)``, ``True`` = hidden, with ``da``'s coords and the
        process ``repr`` in ``attrs["process"]``.
    """
    from gapfill import masks

    if isinstance(process, str):
        process = masks.make(process, seed=seed, **options)
    elif options:
        raise TypeError(f"options {sorted(options)} only apply when process is a name")
    if not callable(getattr(process, "sample", None)):
        raise TypeError(f"process must be a gapfill.masks process or a name, got {process!r}")
    dims = find_dims(da)
    shape = tuple(da.sizes[d] for d in dims.core)
    rng = None if seed is None else np.random.default_rng(seed)
    hidden = np.asarray(process.sample(shape, rng), dtype=bool)
    if hidden.shape != shape:
        raise ValueError(f"{process!r} returned a mask of shape {hidden.shape}, expected {shape}")
    coords = {d: da[d] for d in dims.core if d in da.coords}
    mask = xr.DataArray(hidden, dims=dims.core, coords=coords, name="mask",
                        attrs={"process": repr(process)})
    occluded = da.where(~mask).transpose(*da.dims)
    occluded.attrs = dict(da.attrs)
    return occluded, mask


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
    from PIL import Image

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
    from PIL import Image

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
def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_size(value: Sequence[int], name: str, n: int) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value)
    except TypeError:
        raise ValueError(f"{name} must be {n} positive integers, got {value!r}") from None
    if len(out) != n or min(out) < 1 or out != tuple(value):
        raise ValueError(f"{name} must be {n} positive integers, got {value!r}")
    return out


def _check_crop(crop: Sequence[int]) -> tuple[int, int, int, int]:
    try:
        y0, x0, h, w = (int(v) for v in crop)
    except (TypeError, ValueError):
        raise ValueError(f"crop must be (y0, x0, H, W), got {crop!r}") from None
    if min(y0, x0) < 0 or min(h, w) < 1:
        raise ValueError(
            f"crop must be (y0, x0, H, W) with y0, x0 >= 0 and H, W >= 1, got {crop!r}"
        )
    return y0, x0, h, w


def _video_array(v: xr.DataArray | xr.Dataset) -> xr.DataArray:
    """The video in ``v``; for a Dataset, its one variable that is not a flag or error."""
    if isinstance(v, xr.DataArray):
        return v
    if not isinstance(v, xr.Dataset):
        raise TypeError(f"expected an xarray DataArray or Dataset, got {type(v).__name__}")
    names = [
        n for n, var in v.data_vars.items()
        if var.attrs.get("standard_name") != "status_flag"
        and "standard_error" not in str(var.attrs.get("standard_name", ""))
        and not str(n).endswith(("_flag", "_error"))
    ]
    if len(names) != 1:
        raise ValueError(f"cannot tell which variable of the Dataset is the video among "
                         f"{list(v.data_vars)}; pass a DataArray, e.g. ds[{names[0]!r}]"
                         if names else f"no video variable in the Dataset {list(v.data_vars)}")
    return v[names[0]]


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
    from PIL import Image

    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"unknown output format {path.suffix!r}; use .mp4 or .png")
    return fmt
