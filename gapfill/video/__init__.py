"""Natural video in and out of xarray: read, occlude, write and preview.

Videos are DataArrays with dims ``(time, y, x, channel)`` and float32 values
in ``[0, 1]``, so they go through :class:`gapfill.cube.Cube` like any other
cube with a channel dim. Decoding and encoding use PyAV (its wheel carries
FFmpeg); image frames are read and written with Pillow (both come with
the ``video`` extra). Every writer writes to a temporary file next to the target and
renames it into place, so an interrupted write leaves no half file.

>>> import gapfill.video as gv
>>> clip = gv.open("bikes.mp4", resize=(68, 160), max_frames=24)  # doctest: +SKIP
>>> occluded, mask = gv.occlude(clip, "raindrops", seed=0)  # doctest: +SKIP
>>> gv.preview(occluded, filled, clip, "check.mp4")  # doctest: +SKIP
"""

from gapfill.video.base import IMAGE_SUFFIXES, NAN_COLOR, VIDEO_SUFFIXES
from gapfill.video.read import occlude, open, open_masks
from gapfill.video.write import preview, write_frames, write_mp4

__all__ = [
    "IMAGE_SUFFIXES", "NAN_COLOR", "VIDEO_SUFFIXES", "occlude", "open", "open_masks", "preview",
    "write_frames", "write_mp4",
]
