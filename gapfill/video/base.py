"""Constants and argument checks shared by the video readers and writers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import xarray as xr

from gapfill.extras import require

#: Suffixes read as image frames in a folder.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: Suffixes written as videos by :func:`preview` (anything else is an image strip).
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm")
#: Colour drawn where a value is missing (magenta: rare in natural video).
NAN_COLOR = (1.0, 0.0, 1.0)


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


def _import_av():
    return require("av", "reading and writing video")
