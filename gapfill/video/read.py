"""Read videos (files or frame folders) and masks into DataArrays; occlude them."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from gapfill.dims import find_dims
from gapfill.extras import require
from gapfill.video.base import (
    IMAGE_SUFFIXES,
    _check_crop,
    _check_int,
    _check_size,
    _import_av,
)


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
    Image = require("PIL.Image", "reading image frames")

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
    Image = require("PIL.Image", "reading image frames")

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


