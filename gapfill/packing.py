"""Packed (scaled integer) variables: unpack what arrives undecoded, pack the product back.

Data opened with ``mask_and_scale=False`` (or from a reader that does not apply
CF packing) carry their packing in the attrs: ``_FillValue``, ``missing_value``,
``valid_range``/``valid_min``/``valid_max`` (in packed units) and
``scale_factor``/``add_offset``. :func:`unpack` applies them so that fill
values become NaN, never observations. :func:`packing_of` reads the packing of
a variable, decoded (from its encoding) or not (from its attrs), and
:meth:`Packing.encoding` gives the NetCDF encoding that writes a filled
product back in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["PACKING_ATTRS", "Packing", "is_undecoded", "packing_of", "unpack"]

#: The CF attributes that describe packing and missing values.
PACKING_ATTRS = (
    "_FillValue", "missing_value", "valid_range", "valid_min", "valid_max", "scale_factor",
    "add_offset", "_Unsigned",
)


@dataclass(frozen=True)
class Packing:
    """How a variable is stored: ``stored * scale_factor + add_offset``, fill value aside.

    Attributes
    ----------
    dtype
        The stored dtype (e.g. ``int16``).
    scale_factor, add_offset
        The CF packing (1 and 0 when absent).
    fill_value
        The stored value that marks a missing value, or ``None``.
    """

    dtype: np.dtype
    scale_factor: float = 1.0
    add_offset: float = 0.0
    fill_value: Any = None

    def encoding(self) -> dict[str, Any]:
        """The ``to_netcdf``/``to_zarr`` encoding that stores a float variable this way."""
        enc: dict[str, Any] = {"dtype": np.dtype(self.dtype)}
        if self.scale_factor != 1.0:
            enc["scale_factor"] = self.scale_factor
        if self.add_offset != 0.0:
            enc["add_offset"] = self.add_offset
        if self.fill_value is not None:
            enc["_FillValue"] = self.fill_value
        elif np.issubdtype(self.dtype, np.integer):
            enc["_FillValue"] = np.iinfo(self.dtype).min  # a filled product still has land
        return enc


def is_undecoded(da: xr.DataArray) -> bool:
    """Whether ``da`` carries packing or missing-value attrs that were not applied."""
    return any(k in da.attrs for k in PACKING_ATTRS)


def packing_of(da: xr.DataArray) -> Packing | None:
    """The packing of ``da``: from its attrs when undecoded, else from its encoding.

    ``None`` when the variable is stored as floats without scaling.
    """
    src = da.attrs if is_undecoded(da) else da.encoding
    dtype = np.dtype(da.dtype if src is da.attrs else src.get("dtype", da.dtype))
    scale = float(src.get("scale_factor", 1.0))
    offset = float(src.get("add_offset", 0.0))
    fill = src.get("_FillValue", src.get("missing_value"))
    if np.ndim(fill) > 0:
        fill = np.asarray(fill).reshape(-1)[0]
    if not np.issubdtype(dtype, np.integer) and scale == 1.0 and offset == 0.0:
        return None
    fill = None if fill is None else np.asarray(fill).astype(dtype).item()
    return Packing(dtype, scale, offset, fill)


def unpack(da: xr.DataArray) -> xr.DataArray:
    """Apply the packing attrs of an undecoded variable: missing values to NaN, then scale.

    Values equal to ``_FillValue`` or ``missing_value``, or outside
    ``valid_range``/``valid_min``/``valid_max`` (all in stored units), become
    NaN; the rest are ``stored * scale_factor + add_offset`` in the type of
    ``scale_factor``/``add_offset`` (CF), or without them float32 for 8- and
    16-bit integers, float64 otherwise. The packing attrs are dropped from the result. A
    variable without them is returned unchanged. Lazy (dask) input stays lazy.
    """
    if not is_undecoded(da):
        return da
    attrs = dict(da.attrs)
    raw = da
    if str(attrs.get("_Unsigned", "")).lower() == "true" and raw.dtype.kind == "i":
        raw = raw.astype(raw.dtype.str.replace("i", "u"))
    bad = xr.zeros_like(raw, dtype=bool)
    for key in ("_FillValue", "missing_value"):
        if key in attrs:
            for value in np.atleast_1d(attrs[key]):
                bad = bad | (raw == value) if np.isfinite(value) else bad | raw.isnull()
    valid = attrs.get("valid_range")
    low = valid[0] if valid is not None else attrs.get("valid_min")
    high = valid[1] if valid is not None else attrs.get("valid_max")
    if low is not None:
        bad = bad | (raw < low)
    if high is not None:
        bad = bad | (raw > high)
    scale = attrs.get("scale_factor", 1.0)
    offset = attrs.get("add_offset", 0.0)
    out = raw.astype(_unpacked_dtype(raw.dtype, attrs))
    if scale != 1.0:
        out = out * np.asarray(scale, dtype=out.dtype)
    if offset != 0.0:
        out = out + np.asarray(offset, dtype=out.dtype)
    out = out.where(~bad)
    out.attrs = {k: v for k, v in attrs.items() if k not in PACKING_ATTRS}
    out.encoding = dict(da.encoding)
    out.name = da.name
    return out


def _unpacked_dtype(stored: np.dtype, attrs: dict[str, Any]) -> np.dtype:
    """The float type of unpacked values (CF: the type of ``scale_factor``/``add_offset``)."""
    given = [np.asarray(attrs[k]).dtype for k in ("scale_factor", "add_offset") if k in attrs]
    if given:
        return np.result_type(*given, np.float32)
    if stored.kind in "iu" and stored.itemsize <= 2:
        return np.dtype(np.float32)
    return np.result_type(stored, np.float32) if stored.kind == "f" else np.dtype(np.float64)
