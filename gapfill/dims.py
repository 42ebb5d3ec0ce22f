"""Find the time, y, x (and optional channel) dimensions of a DataArray.

Dims are recognised from CF metadata (``axis``, ``standard_name``, ``units``)
or common names; a ``dims=`` mapping overrides the guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import xarray as xr

_NAMES = {
    "time": ("time", "t", "times", "date", "frame"),
    "y": ("lat", "latitude", "y", "nav_lat", "rlat", "j", "row", "rows"),
    "x": ("lon", "longitude", "x", "nav_lon", "rlon", "i", "col", "cols"),
}
_AXIS = {"time": "T", "y": "Y", "x": "X"}
_STANDARD_NAMES = {
    "time": ("time",),
    "y": ("latitude", "projection_y_coordinate", "grid_latitude"),
    "x": ("longitude", "projection_x_coordinate", "grid_longitude"),
}
_UNITS = {"y": ("degrees_north", "degree_north", "degrees_n"), "x": ("degrees_east", "degree_east")}


@dataclass(frozen=True)
class Dims:
    """Names of the dimensions of a cube; ``channel`` is ``None`` for a single field."""

    time: str
    y: str
    x: str
    channel: str | None = None

    @property
    def core(self) -> tuple[str, str, str]:
        """``(time, y, x)``."""
        return (self.time, self.y, self.x)

    def as_dict(self) -> dict[str, str | None]:
        """The dims as a plain dict (for saving)."""
        return {"time": self.time, "y": self.y, "x": self.x, "channel": self.channel}


def _matches(da: xr.DataArray, dim: str, role: str) -> bool:
    if dim.lower() in _NAMES[role]:
        return True
    if dim not in da.coords:
        return False
    attrs = da[dim].attrs
    if str(attrs.get("axis", "")).upper() == _AXIS[role]:
        return True
    if attrs.get("standard_name") in _STANDARD_NAMES[role]:
        return True
    if role in _UNITS and str(attrs.get("units", "")).lower() in _UNITS[role]:
        return True
    return role == "time" and np.issubdtype(da[dim].dtype, np.datetime64)


#: Why a 2-D field without time is refused by most methods, and what to do.
SINGLE_FRAME = (
    "the data has dims {dims} and no time axis: a single frame. Methods that learn along "
    "time need several frames of the same grid (eof: EOFs of many frames; climatology: "
    "each pixel's mean over time; the trained methods: sequences of frames). Fill a single "
    "frame spatially with method='linear' (da.gapfill.fit('linear')), or stack frames along "
    "a time dim (xr.concat(frames, 'time'))."
)


def is_single_frame(da: xr.DataArray, dims: Mapping[str, str] | None = None) -> bool:
    """Whether ``da`` is one 2-D frame: two dims, none of them a time axis."""
    if da.ndim != 2 or (dims or {}).get("time"):
        return False
    return not any(_matches(da, str(d), "time") for d in da.dims)


def find_dims(da: xr.DataArray, dims: Mapping[str, str] | None = None) -> Dims:
    """Identify the time, y, x and channel dimensions of ``da``.

    Parameters
    ----------
    da
        The data, with dims in any order.
    dims
        Optional overrides, e.g. ``{"time": "t", "y": "row", "x": "col"}``.

    Raises
    ------
    ValueError
        If a role cannot be found, or more than one dimension is left over.
    """
    given = dict(dims or {})
    bad = set(given) - {"time", "y", "x", "channel"}
    if bad:
        raise ValueError(f"dims= takes the keys time, y, x, channel; got {sorted(bad)}")
    for role, name in given.items():
        if name is not None and name not in da.dims:
            raise ValueError(f"dims={{{role!r}: {name!r}}} but the data has dims {da.dims}")
    found: dict[str, str] = {k: v for k, v in given.items() if v is not None}
    for role in ("time", "y", "x"):
        if role in found:
            continue
        candidates = [
            d for d in da.dims if d not in found.values() and _matches(da, str(d), role)
        ]
        if not candidates:
            if role == "time" and da.ndim == 2:
                raise ValueError(SINGLE_FRAME.format(dims=tuple(map(str, da.dims))))
            hint = (
                "gap filling needs a time axis: "
                if role == "time"
                else f"no {role} (spatial) dimension found: "
            )
            raise ValueError(
                f"{hint}the data has dims {tuple(map(str, da.dims))}. Name the dims with "
                "dims={'time': ..., 'y': ..., 'x': ...} or give the coordinate CF attrs "
                "(axis='T'/'Y'/'X')."
            )
        found[role] = str(candidates[0])
    rest = [str(d) for d in da.dims if d not in found.values()]
    if "channel" not in found:
        if len(rest) > 1:
            raise ValueError(
                f"the data has dims {tuple(map(str, da.dims))}: after time={found['time']!r}, "
                f"y={found['y']!r}, x={found['x']!r} more than one dim is left ({rest}). Select "
                "a single level (da.isel(...)) or name one extra dim as dims={'channel': ...}."
            )
        found["channel"] = rest[0] if rest else None
    return Dims(found["time"], found["y"], found["x"], found.get("channel"))
