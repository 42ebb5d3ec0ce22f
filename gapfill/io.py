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
import json
import logging
import os
import re
import shlex
import sys
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from gapfill.atomic import TMP_MARK, move_into_place, remove, replacing

log = logging.getLogger("gapfill")

__all__ = [
    "CONVENTIONS", "ResumeMismatchError", "discard_partial", "format_from_path", "is_zarr_store",
    "open", "partial_path", "progress_path", "stored_run", "write", "write_regions",
    "written_regions",
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
        return write_regions(out, path, fmt, region_dim, resume_key, finish, overwrite)
    if fmt == "zarr":
        out = _regular_chunks(out)
    encoding = _encoding(out, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{uuid.uuid4().hex[:12]}")
    try:
        if fmt == "netcdf":
            out.to_netcdf(tmp, encoding=encoding, engine="netcdf4")
        else:
            with warnings.catch_warnings():
                # consolidated metadata: not in the Zarr 3 spec yet, but what xarray reads fast
                warnings.filterwarnings("ignore", message="Consolidated metadata")
                out.to_zarr(tmp, mode="w-", encoding=encoding, consolidated=True)
        move_into_place(tmp, path)
    except BaseException:
        remove(tmp)
        raise
    return path


#: Suffix of the store a resumable write fills before it is renamed into place.
PARTIAL_SUFFIX = ".partial"
#: Suffix of the directory, next to the partial store, holding one marker per finished region.
PROGRESS_SUFFIX = ".progress"
#: File of the progress directory holding what identifies the run that writes the partial store.
RUN_FILE = "run.json"


class ResumeMismatchError(FileExistsError):
    """A partial store left by an interrupted run that is not this one."""


def partial_path(path: str | os.PathLike, fmt: Format) -> Path:
    """The store a resumable write of ``path`` fills: ``<path>.partial`` (``.partial.zarr``
    for NetCDF, which is converted from it at the end)."""
    path = Path(os.fspath(path).rstrip("/"))
    suffix = PARTIAL_SUFFIX if fmt == "zarr" else f"{PARTIAL_SUFFIX}.zarr"
    return path.with_name(path.name + suffix)


def progress_path(partial: Path) -> Path:
    """The directory of region markers of a partial store."""
    return partial.with_name(partial.name + PROGRESS_SUFFIX)


def written_regions(partial: Path) -> set[str]:
    """The regions (``"<start>-<stop>"``) a partial store holds, from their markers."""
    progress = progress_path(partial)
    if not progress.is_dir():
        return set()
    return {p.name for p in progress.iterdir() if _REGION_NAME.fullmatch(p.name)}


def stored_run(partial: Path) -> str | None:
    """The ``resume_key`` of the run that wrote ``partial`` (``None``: no partial store, or
    one whose identity is unknown)."""
    if not partial.exists():
        return None
    doc = _read_identity(partial)
    return None if doc is None else doc.get("run")


def discard_partial(partial: Path) -> None:
    """Remove a partial store and its region markers."""
    remove(partial)
    remove(progress_path(partial))


def write_regions(
    out: xr.Dataset,
    path: Path,
    fmt: Format,
    dim: str,
    resume_key: str = "",
    finish: Callable[[xr.Dataset], Mapping[str, Any]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a prepared, dask-backed product region by region along ``dim``, resumably.

    1. What identifies the run (``resume_key``, e.g. the recipe and a fingerprint
       of the input, plus the product's variables, shapes and chunks) is written
       to ``<partial>.progress/run.json``; then the template goes to
       :func:`partial_path`: every coordinate and every variable that does not
       run along ``dim`` with its values, the others empty (``compute=False``).
    2. Every region (one chunk along ``dim``) of every variable along ``dim``
       (coordinates included) is written with ``to_zarr(region=...)``; when it is
       on disk a marker file ``<partial>.progress/<start>-<stop>`` records it
       (outside the store, which stays a clean Zarr hierarchy). All missing
       regions go to dask in one ``compute``, so what the regions share (e.g. a
       scan over time) is computed once.
    3. When all regions are there, ``finish`` (if given) gets the written data
       (lazily, from the store) and returns attributes to add (e.g. scores of
       the written values); the attributes are set, the metadata consolidated
       and the store put at ``path`` (a NetCDF product is converted from the
       store into a temporary file renamed into place; the partial store is
       removed only then).

    Started again after an interruption with the same identity, it writes only
    the regions without a marker; a kill at any step loses no written region.
    A partial store of another run (recipe, input or product changed) is
    refused, or discarded when ``overwrite`` is true.

    Raises
    ------
    ResumeMismatchError
        If a partial store of another run is there and ``overwrite`` is false.
    """
    import zarr

    out = _regular_chunks(out)
    encoding = _encoding(out, "zarr")
    identity = {"run": resume_key, "product": _product_key(out)}
    partial = partial_path(path, fmt)
    progress = progress_path(partial)
    if partial.exists() and _read_identity(partial) != identity:
        why = _mismatch(_read_identity(partial), identity)
        if not overwrite:
            raise ResumeMismatchError(
                f"{str(partial)!r} holds regions of an interrupted run, but {why}; resuming "
                "would mix them. Start over with overwrite (command line: --overwrite), or "
                "undo the change to resume"
            )
        log.warning("%s: %s; starting over", partial, why)
        discard_partial(partial)
    if not partial.exists():
        remove(progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    regional = [str(n) for n, v in out.variables.items() if dim in v.dims]
    fixed = [str(n) for n in out.variables if n not in regional]
    if not partial.exists():  # the identity, then the template, complete or not at all
        progress.mkdir()
        with replacing(progress / RUN_FILE) as tmp:
            tmp.write_text(json.dumps(identity, sort_keys=True))
        template = out.copy()
        for name in fixed:  # written with the template (only dask arrays are deferred)
            template.variables[name].load()
        tmp = partial.with_name(f"{partial.name}{TMP_MARK}{uuid.uuid4().hex[:12]}")
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Consolidated metadata")
                template.to_zarr(tmp, mode="w-", compute=False, encoding=encoding,
                                 consolidated=False)
            os.replace(tmp, partial)
        finally:
            remove(tmp)
    bounds = _regions(out, dim)
    done = written_regions(partial)
    todo = [(a, b) for a, b in bounds if f"{a}-{b}" not in done]
    if len(todo) < len(bounds):
        log.info("resuming %s: %d of %d regions already written", partial,
                 len(bounds) - len(todo), len(bounds))
    parts = out.drop_vars(fixed)  # every variable along ``dim``, coordinates included
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
    # The identity lives outside the store: setting the final attributes (in one write)
    # and consolidating never make the written regions unrecognisable.
    zarr.open_group(str(partial), mode="r+").attrs.put(_json_attrs(attrs))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        zarr.consolidate_metadata(str(partial))
    if fmt == "zarr":
        move_into_place(partial, path)
        remove(progress)
        return path
    tmp = path.with_name(f"{path.name}{TMP_MARK}{uuid.uuid4().hex[:12]}")
    try:
        with xr.open_zarr(partial, chunks={}) as ds:
            ds = _drop_encodings(ds)
            ds.to_netcdf(tmp, encoding=_encoding(ds, "netcdf"), engine="netcdf4")
        move_into_place(tmp, path)
    except BaseException:
        remove(tmp)
        raise
    discard_partial(partial)
    return path


_REGION_NAME = re.compile(r"\d+-\d+")


def _read_identity(partial: Path) -> dict[str, Any] | None:
    try:
        return json.loads((progress_path(partial) / RUN_FILE).read_text())
    except (OSError, ValueError):  # none (an older or half-created partial store)
        return None


def _mismatch(stored: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """Why a partial store is not this run's, in words."""
    if stored is None:
        return "it does not say which run wrote it"
    if stored.get("product") != new.get("product"):
        return "the product's variables, shapes or chunks differ"
    return "the recipe or the input changed"


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


def _product_key(ds: xr.Dataset) -> str:
    """A hash of the product's variables, dims, shapes, dtypes and chunks."""
    import hashlib

    shape = {
        str(n): [list(v.dims), list(v.shape), str(v.dtype), [list(c) for c in (v.chunks or ())]]
        for n, v in ds.variables.items()
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:32]


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
