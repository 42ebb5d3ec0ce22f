"""The CF side of a written product: provenance attributes and variable encodings.

:func:`prepare` gives a product its global attributes (:func:`cf_global_attrs`:
``Conventions``, ``title``, ``source``, ``history``, ``date_created``) and drops
the encodings read from the input; :func:`cf_encoding` is the encoding a product
is written with (compression, NaN fill values, no fill on coordinates and flags,
Zarr chunks).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

import numpy as np
import xarray as xr

__all__ = [
    "API_HISTORY", "CONVENTIONS", "Format", "cf_encoding", "cf_global_attrs", "drop_encodings",
    "prepare", "regular_chunks",
]

#: The ``Conventions`` attribute of every product.
CONVENTIONS = "CF-1.10, ACDD-1.3"

Format = Literal["netcdf", "zarr"]
#: Encoding keys kept from the input for datetime/timedelta variables (CF time units).
_TIME_ENCODING = ("units", "calendar", "dtype")


def prepare(
    ds: xr.Dataset,
    *,
    history_command: str | None = None,
    title: str | None = None,
    source: str | None = None,
    now: datetime | None = None,
) -> xr.Dataset:
    """A shallow copy of ``ds`` with product attrs and cleaned encodings (nothing is loaded).

    Sets the global attrs of :func:`cf_global_attrs`. Encodings read from the
    input (compression, packing, chunk sizes, ``_FillValue``) are dropped;
    only CF time units and calendars are kept.
    """
    out = drop_encodings(ds)
    out.attrs = cf_global_attrs(
        out, history_command=history_command, title=title, source=source, now=now
    )
    out.encoding = {}
    return out


#: Ends the ``history`` line of a product made from Python (``da.gapfill.fill``); a
#: later :func:`prepare` (``gapfill run`` writing that product) replaces the line.
API_HISTORY = "(gapfill Python API)"


def cf_global_attrs(
    ds: xr.Dataset,
    *,
    history_command: str | None = None,
    title: str | None = None,
    source: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The global attrs of a gap-filled product: ``ds.attrs`` plus provenance.

    Sets ``Conventions`` (replacing the input's), ``title``, ``source``,
    ``date_created`` and prepends ``"<ISO time> <command>"`` to ``history``
    (newest first), in that order ahead of the other attrs. The same attrs
    whether the product comes from ``gapfill run`` or ``da.gapfill.fill``.
    """
    now = now or datetime.now(timezone.utc)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    attrs = dict(ds.attrs)
    attrs["Conventions"] = CONVENTIONS
    attrs["title"] = title or attrs.get("title") or _default_title(ds)
    attrs["source"] = source or _default_source(attrs)
    command = history_command if history_command is not None else _command_line()
    old = str(attrs.get("history", "")).strip()
    if old.split("\n", 1)[0].endswith(API_HISTORY) and not command.endswith(API_HISTORY):
        old = old.split("\n", 1)[1] if "\n" in old else ""
    attrs["history"] = f"{stamp} {command}" + (f"\n{old}" if old else "")
    attrs["date_created"] = stamp
    first = ("Conventions", "title", "source", "history", "date_created")
    return {k: attrs[k] for k in first} | {k: v for k, v in attrs.items() if k not in first}


def drop_encodings(ds: xr.Dataset) -> xr.Dataset:
    """A shallow copy without the encodings read from a file, except CF time units/calendars
    and the packing ``fill(keep_packing=True)`` gave a product variable (no ``source``)."""
    out = ds.copy(deep=False)
    for var in out.variables.values():
        asked = "source" not in var.encoding and "dtype" in var.encoding
        var.encoding = {
            k: v for k, v in var.encoding.items()
            if (k in _TIME_ENCODING and _is_time(var)) or (asked and k in _PACKING_ENCODING)
        }
    return out


#: Encoding keys of a packed variable (see :mod:`gapfill.packing`).
_PACKING_ENCODING = ("dtype", "scale_factor", "add_offset", "_FillValue")


def _is_time(var: xr.Variable) -> bool:
    return var.dtype.kind in "mM" or (
        var.dtype == object and "calendar" in var.encoding
    )


def _default_title(ds: xr.Dataset) -> str:
    method = ds.attrs.get("gapfill_method")
    names = [
        str(ds[v].attrs.get("long_name") or ds[v].attrs.get("standard_name") or v).replace("_", " ")
        for v in ds.data_vars
        if "ancillary_variables" in ds[v].attrs
    ]
    what = ", ".join(names) if names else "data"
    return f"Gap-filled {what}" + (f" ({method} method)" if method else "")


def _default_source(attrs: Mapping[str, Any]) -> str:
    try:
        ver = version("gapfill")
    except PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        ver = "unknown"
    method = attrs.get("gapfill_method")
    ours = f"gap-filled with gapfill {ver}" + (f" (method {method})" if method else "")
    original = str(attrs.get("source", "")).strip()
    if not original or ours in original:
        return original or ours
    return f"{original}; {ours}"


def _command_line() -> str:
    argv = [os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    return shlex.join(argv)


def cf_encoding(ds: xr.Dataset, fmt: Format) -> dict[str, dict[str, Any]]:
    """CF encoding: compressed data vars, NaN fill for floats, no fill on coords/bounds/flags."""
    bounds = {ds[c].attrs["bounds"] for c in ds.variables if "bounds" in ds[c].attrs}
    enc: dict[str, dict[str, Any]] = {}
    for name, var in ds.variables.items():
        e: dict[str, Any] = dict(var.encoding)  # CF time units/calendar kept by prepare()
        kind = var.dtype.kind
        packed = np.dtype(e.get("dtype", var.dtype)).kind in "iu" and kind == "f"
        if name in ds.coords or name in bounds:
            e["_FillValue"] = None
        elif packed:  # stored as scaled integers: the packing's own fill value
            pass
        elif kind == "f":
            e["_FillValue"] = np.nan
        elif kind in "iub":
            e["_FillValue"] = None  # flags and integer grid-mapping containers: no fill
        if fmt == "netcdf" and name in ds.data_vars and var.ndim > 0 and kind in "fiumb":
            e.update(zlib=True, complevel=4, shuffle=True)
        if fmt == "zarr" and var.chunks is not None:
            e["chunks"] = tuple(max(c) for c in var.chunks)
        enc[str(name)] = e
    return enc


def regular_chunks(ds: xr.Dataset) -> xr.Dataset:
    """Rechunk dask variables whose chunks Zarr cannot store (uneven inner chunks)."""
    for name, var in list(ds.variables.items()):
        if var.chunks is None:
            continue
        if any(len(set(c[:-1])) > 1 or (len(c) > 1 and c[-1] > c[0]) for c in var.chunks):
            ds[name] = var.chunk({d: max(c) for d, c in zip(var.dims, var.chunks)})
    return ds
