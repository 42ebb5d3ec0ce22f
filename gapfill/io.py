"""Read gappy cubes and write CF-compliant gap-filled products.

:func:`open` reads one NetCDF file, many (a glob pattern or a list, combined
by their coordinates) or a Zarr store (dask chunks = the store's chunks), always
read-only. :func:`write` writes a NetCDF file or a Zarr store with CF encoding
and provenance attributes, atomically: the data go to a temporary path next to
the target, which is renamed into place only once complete, so an interrupted
run never leaves a half-written product behind.
"""

from __future__ import annotations

import builtins
import glob
import logging
import os
import shlex
import shutil
import sys
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

log = logging.getLogger("gapfill")

__all__ = [
    "CONVENTIONS", "format_from_path", "is_zarr_store", "open", "partial_path", "progress_path",
    "write", "write_regions",
]

builtins_open = builtins.open  # ``open`` is this module's reader

#: The ``Conventions`` attribute of every product.
CONVENTIONS = "CF-1.10, ACDD-1.3"

Format = Literal["netcdf", "zarr"]
_EXTENSIONS: dict[str, Format] = {".nc": "netcdf", ".nc4": "netcdf", ".zarr": "zarr"}
_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray", ".zmetadata")
_GLOB_CHARS = set("*?[")
#: Encoding keys kept from the input for datetime/timedelta variables (CF time units).
_TIME_ENCODING = ("units", "calendar", "dtype")


# -- reading ---------------------------------------------------------------------------
def open(  # noqa: A001 - mirrors xr.open_dataset; used as gapfill.io.open
    paths_or_store: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    variable: str | None = None,
    chunks: Mapping[str, int] | str | None = None,
    engine: str | None = None,
) -> xr.Dataset:
    """Open NetCDF file(s) or a Zarr store read-only as a Dataset.

    Parameters
    ----------
    paths_or_store
        A NetCDF file; a glob pattern (``"sst_*.nc"``) or a list of files,
        opened with :func:`xarray.open_mfdataset` and combined by coordinates;
        or a Zarr store (a ``*.zarr`` path or a directory holding Zarr metadata).
    variable
        If given, check that the dataset has this data variable.
    chunks
        Dask chunks. ``None`` keeps a single NetCDF file lazily loaded without
        dask, and gives Zarr stores and multi-file inputs dask chunks equal to
        the on-disk chunks (``chunks={}``).
    engine
        xarray backend (``"netcdf4"``, ``"h5netcdf"``, ``"zarr"``, ...); guessed
        when ``None``.

    Raises
    ------
    FileNotFoundError
        If a file, pattern or store does not exist.
    ValueError
        If the data cannot be read as NetCDF or Zarr, or ``variable`` is absent.
    """
    paths = _expand(paths_or_store)
    label = _label(paths_or_store)
    try:
        if len(paths) == 1 and (engine == "zarr" or (engine is None and _is_zarr(paths[0]))):
            with warnings.catch_warnings():  # stores without consolidated metadata are fine
                warnings.filterwarnings("ignore", message="Failed to open Zarr store with consol")
                ds = xr.open_zarr(paths[0], chunks={} if chunks is None else chunks)
        elif len(paths) == 1:
            ds = xr.open_dataset(paths[0], chunks=chunks, engine=engine)
        else:
            ds = xr.open_mfdataset(
                paths,
                combine="by_coords",
                chunks={} if chunks is None else chunks,
                engine=engine,
                data_vars="minimal",
                coords="minimal",
                compat="override",
                join="outer",
            )
    except FileNotFoundError:
        raise
    except (ValueError, OSError, TypeError, KeyError) as err:
        raise ValueError(
            f"cannot read {label} as NetCDF or Zarr: {_first_line(err)}"
        ) from err
    if variable is not None and variable not in ds.data_vars:
        ds.close()
        raise ValueError(
            f"variable {variable!r} not found in {label}; its data variables are "
            f"{sorted(map(str, ds.data_vars))}"
        )
    return ds


def _expand(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Turn a path, glob pattern or list into a list of existing paths."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise FileNotFoundError("no input files given (empty list)")
    out: list[str] = []
    for item in items:
        text = os.fspath(item)
        if "://" in text:  # remote store/URL: let the backend report problems
            out.append(text)
        elif _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(os.path.expanduser(text)))
            if not matches:
                raise FileNotFoundError(f"no files match the pattern {text!r}")
            out.extend(matches)
        else:
            path = os.path.expanduser(text)
            if not os.path.exists(path):
                raise FileNotFoundError(f"file not found: {text}")
            out.append(path)
    return out


def is_zarr_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory holding Zarr (v2 or v3) metadata."""
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, m)) for m in _ZARR_MARKERS
    )


def _is_zarr(path: str) -> bool:
    if path.rstrip("/").endswith(".zarr"):
        return True
    return is_zarr_store(path)


def _label(paths: Any) -> str:
    if isinstance(paths, (str, os.PathLike)):
        return repr(os.fspath(paths))
    items = [os.fspath(p) for p in paths]
    return repr(items[0]) if len(items) == 1 else f"{len(items)} files ({items[0]!r}, ...)"


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


# -- writing ---------------------------------------------------------------------------
def format_from_path(path: str | os.PathLike, format: str | None = None) -> Format:  # noqa: A002
    """The output format: ``format`` if given, else from the extension.

    Raises
    ------
    ValueError
        If ``format`` is unknown or the extension is not ``.nc``, ``.nc4`` or ``.zarr``.
    """
    if format is not None:
        fmt = format.lower()
        if fmt not in ("netcdf", "zarr"):
            raise ValueError(f"unknown output format {format!r}; use 'netcdf' or 'zarr'")
        return fmt  # type: ignore[return-value]
    suffix = Path(os.fspath(path).rstrip("/")).suffix.lower()
    if suffix not in _EXTENSIONS:
        raise ValueError(
            f"cannot tell the output format of {os.fspath(path)!r} from its extension; "
            "use .nc/.nc4 (NetCDF) or .zarr (Zarr), or pass format='netcdf'/'zarr'"
        )
    return _EXTENSIONS[suffix]


def write(
    ds: xr.Dataset | xr.DataArray,
    path: str | os.PathLike,
    *,
    format: str | None = None,  # noqa: A002 - the natural name
    overwrite: bool = False,
    history_command: str | None = None,
    title: str | None = None,
    source: str | None = None,
    region_dim: str | None = None,
    resume_key: str = "",
    finish: Callable[[xr.Dataset], Mapping[str, Any]] | None = None,
) -> Path:
    """Write a product as NetCDF or Zarr, atomically, with CF encoding and provenance.

    With ``region_dim`` (e.g. the time dim) and a dask-backed product, the data
    are written region by region along it, resumably: see :func:`write_regions`.

    Parameters
    ----------
    ds
        The product (e.g. the output of ``da.gapfill.fill``).
    path
        Target file (``.nc``/``.nc4``) or store (``.zarr``). Missing parent
        directories are created.
    format
        ``"netcdf"`` or ``"zarr"``; from the extension when ``None``.
    overwrite
        Replace an existing ``path``; without it an existing path is refused.
    history_command
        The command recorded in the ``history`` attribute (default: this
        process's command line).
    title, source
        Global attributes; defaults are derived from the data.
    region_dim, resume_key, finish
        See :func:`write_regions`.

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    ValueError
        If ``path`` is one of the files the data were read from, or the format
        is unknown.
    """
    if isinstance(ds, xr.DataArray):
        ds = ds.to_dataset(name=ds.name or "data")
    path = Path(os.fspath(path).rstrip("/")).expanduser()
    fmt = format_from_path(path, format)
    _refuse_input(ds, path)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(
            f"output {str(path)!r} already exists; pass overwrite=True "
            "(command line: --overwrite) to replace it"
        )
    if path.is_dir() and not is_zarr_store(path):
        raise ValueError(
            f"output {str(path)!r} is a directory that is not a Zarr store; refusing to "
            "replace it. Choose another output path."
        )
    out = prepare(ds, history_command=history_command, title=title, source=source)
    if region_dim is not None and any(v.chunks is not None for v in out.data_vars.values()):
        return write_regions(out, path, fmt, region_dim, resume_key, finish)
    if fmt == "zarr":
        out = _regular_chunks(out)
    encoding = _encoding(out, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        if fmt == "netcdf":
            out.to_netcdf(tmp, encoding=encoding, engine="netcdf4")
        else:
            with warnings.catch_warnings():
                # consolidated metadata: not in the Zarr 3 spec yet, but what xarray reads fast
                warnings.filterwarnings("ignore", message="Consolidated metadata")
                out.to_zarr(tmp, mode="w-", encoding=encoding, consolidated=True)
        _move_into_place(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    return path


#: Suffix of the store a resumable write fills before it is renamed into place.
PARTIAL_SUFFIX = ".partial"
#: Suffix of the directory, next to the partial store, holding one marker per finished region.
PROGRESS_SUFFIX = ".progress"
#: Attribute of the partial store identifying the run it belongs to.
RESUME_ATTR = "gapfill_resume_key"


def partial_path(path: str | os.PathLike, fmt: Format) -> Path:
    """The store a resumable write of ``path`` fills: ``<path>.partial`` (``.partial.zarr``
    for NetCDF, which is converted from it at the end)."""
    path = Path(os.fspath(path).rstrip("/"))
    suffix = PARTIAL_SUFFIX if fmt == "zarr" else f"{PARTIAL_SUFFIX}.zarr"
    return path.with_name(path.name + suffix)


def progress_path(partial: Path) -> Path:
    """The directory of region markers of a partial store."""
    return partial.with_name(partial.name + PROGRESS_SUFFIX)


def write_regions(
    out: xr.Dataset,
    path: Path,
    fmt: Format,
    dim: str,
    resume_key: str = "",
    finish: Callable[[xr.Dataset], Mapping[str, Any]] | None = None,
) -> Path:
    """Write a prepared, dask-backed product region by region along ``dim``, resumably.

    1. The template (coordinates, attributes, empty arrays) is written to
       :func:`partial_path` with ``compute=False``, with a key identifying the run
       (``resume_key``, e.g. the recipe, plus the product's variables, shapes and
       chunks).
    2. Every region (one chunk along ``dim``) is written with ``to_zarr(region=...)``;
       when it is on disk a marker file ``<partial>.progress/<start>-<stop>``
       records it (outside the store, which stays a clean Zarr hierarchy). All missing regions go to dask in one ``compute``, so what the
       regions share (e.g. a scan over time) is computed once.
    3. When all regions are there, ``finish`` (if given) gets the written data
       (lazily, from the store) and returns attributes to add (e.g. scores of
       the written values); the attributes are refreshed, the metadata
       consolidated and the store renamed to ``path`` (a NetCDF product is
       converted from the store, into a temporary file renamed into place).

    Started again after an interruption with the same key, it finds the partial
    store and writes only the regions without a marker; a partial store with
    another key (another recipe or data) is discarded and started afresh.
    """
    import zarr

    out = _regular_chunks(out)
    encoding = _encoding(out, "zarr")
    key = _resume_key(out, resume_key)
    partial = partial_path(path, fmt)
    progress = progress_path(partial)
    if partial.exists() and _stored_key(partial) != key:
        log.warning("%s belongs to another run (recipe or data changed): starting afresh", partial)
        _remove(partial)
    if not partial.exists():
        _remove(progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not partial.exists():  # the template, complete or not at all
        template = out.copy()
        template.attrs[RESUME_ATTR] = key
        tmp = partial.with_name(f"{partial.name}.tmp-{uuid.uuid4().hex[:12]}")
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Consolidated metadata")
                template.to_zarr(tmp, mode="w-", compute=False, encoding=encoding,
                                 consolidated=False)
            os.replace(tmp, partial)
        finally:
            _remove(tmp)
    progress.mkdir(exist_ok=True)
    bounds = _regions(out, dim)
    done = {p.name for p in progress.iterdir()}
    todo = [(a, b) for a, b in bounds if f"{a}-{b}" not in done]
    if len(todo) < len(bounds):
        log.info("resuming %s: %d of %d regions already written", partial,
                 len(bounds) - len(todo), len(bounds))
    regional = [n for n, v in out.data_vars.items() if dim in v.dims]
    parts = out[regional].drop_vars(list(out.coords))
    tasks = []
    import dask

    for a, b in todo:
        sl = {dim: slice(a, b)}
        written = parts.isel(sl).to_zarr(partial, region=sl, compute=False, consolidated=False)
        tasks.append(dask.delayed(_mark_region, pure=False)(written, str(progress), f"{a}-{b}"))
    if tasks:
        dask.compute(*tasks)
    attrs = dict(out.attrs)
    if finish is not None:
        with xr.open_zarr(partial, chunks={}, consolidated=False) as written:
            attrs.update(finish(written))
    group = zarr.open_group(str(partial), mode="r+")
    group.attrs.clear()
    group.attrs.update(_json_attrs(attrs))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        zarr.consolidate_metadata(str(partial))
    if fmt == "zarr":
        _move_into_place(partial, path)
        _remove(progress)
        return path
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        with xr.open_zarr(partial, chunks={}) as ds:
            ds = _drop_encodings(ds)
            ds.to_netcdf(tmp, encoding=_encoding(ds, "netcdf"), engine="netcdf4")
        _move_into_place(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    _remove(partial)
    _remove(progress)
    return path


def _regions(ds: xr.Dataset, dim: str) -> list[tuple[int, int]]:
    """``(start, stop)`` of each chunk along ``dim`` (the first dask variable's chunks)."""
    for var in ds.data_vars.values():
        if var.chunks is not None and dim in var.dims:
            sizes = var.chunks[var.dims.index(dim)]
            edges = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
            return list(zip(edges[:-1].tolist(), edges[1:].tolist()))
    return [(0, ds.sizes[dim])]


def _mark_region(_: Any, progress: str, name: str) -> str:
    """Record that a region is on disk (runs after its write, inside the dask graph)."""
    _after_region(name)
    marker = os.path.join(progress, name)
    with builtins_open(marker + ".tmp", "w") as f:
        f.write("done\n")
    os.replace(marker + ".tmp", marker)
    return name


def _after_region(name: str) -> None:
    """Hook called before each region's marker is written (tests inject failures here)."""


def _resume_key(ds: xr.Dataset, extra: str) -> str:
    import hashlib
    import json

    shape = {
        str(n): [list(v.dims), list(v.shape), str(v.dtype), [list(c) for c in (v.chunks or ())]]
        for n, v in ds.data_vars.items()
    }
    text = json.dumps({"vars": shape, "extra": extra}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _stored_key(store: Path) -> str | None:
    try:
        import zarr

        return zarr.open_group(str(store), mode="r").attrs.get(RESUME_ATTR)
    except Exception:  # unreadable or half-written template: start afresh
        return None


def _json_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes as zarr stores them (numpy scalars and arrays as plain values)."""
    out = {}
    for k, v in attrs.items():
        if isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


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
    out = _drop_encodings(ds)
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


def _drop_encodings(ds: xr.Dataset) -> xr.Dataset:
    """A shallow copy without the encodings read from a file, except CF time units/calendars."""
    out = ds.copy(deep=False)
    for var in out.variables.values():
        var.encoding = {
            k: v for k, v in var.encoding.items() if k in _TIME_ENCODING and _is_time(var)
        }
    return out


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
    from importlib.metadata import PackageNotFoundError, version

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


def _encoding(ds: xr.Dataset, fmt: Format) -> dict[str, dict[str, Any]]:
    """CF encoding: compressed data vars, NaN fill for floats, no fill on coords/bounds/flags."""
    bounds = {ds[c].attrs["bounds"] for c in ds.variables if "bounds" in ds[c].attrs}
    enc: dict[str, dict[str, Any]] = {}
    for name, var in ds.variables.items():
        e: dict[str, Any] = dict(var.encoding)  # CF time units/calendar kept by prepare()
        kind = var.dtype.kind
        if name in ds.coords or name in bounds:
            e["_FillValue"] = None
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


def _regular_chunks(ds: xr.Dataset) -> xr.Dataset:
    """Rechunk dask variables whose chunks Zarr cannot store (uneven inner chunks)."""
    for name, var in list(ds.variables.items()):
        if var.chunks is None:
            continue
        if any(len(set(c[:-1])) > 1 or (len(c) > 1 and c[-1] > c[0]) for c in var.chunks):
            ds[name] = var.chunk({d: max(c) for d, c in zip(var.dims, var.chunks)})
    return ds


def _refuse_input(ds: xr.Dataset, path: Path) -> None:
    """Raise if ``path`` is a file the data were read from (inputs are never modified)."""
    sources = {ds.encoding.get("source")}
    sources |= {v.encoding.get("source") for v in ds.variables.values()}
    for src in filter(None, sources):
        try:
            same = Path(src).resolve() == path.resolve() or (
                path.exists() and os.path.samefile(src, path)
            )
        except OSError:
            same = False
        if same:
            raise ValueError(
                f"output {str(path)!r} is the input file; gapfill never modifies its input. "
                "Choose another output path."
            )


def _move_into_place(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``; an existing ``path`` is replaced (restored on failure)."""
    if not (path.exists() or path.is_symlink()):
        os.replace(tmp, path)
        return
    if tmp.is_file() and path.is_file():
        os.replace(tmp, path)  # atomic on POSIX
        return
    old = path.with_name(f"{path.name}.old-{uuid.uuid4().hex[:12]}")
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
