"""Read gappy cubes and write CF-compliant gap-filled products.

:func:`open` reads one NetCDF file, many (a glob pattern or a list, combined
by their coordinates) or a Zarr store (dask chunks = the store's chunks), always
read-only. :func:`write` writes a NetCDF file or a Zarr store with CF encoding
and provenance attributes, atomically: the data go to a temporary path next to
the target, which is renamed into place only once complete, so an interrupted
run never leaves a half-written product behind. A dask-backed product is
written region by region, resumably (:mod:`gapfill.zarr_regions`), with the
attributes and encodings of :mod:`gapfill.cf`.
"""

from __future__ import annotations

import builtins
import glob
import os
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from gapfill.atomic import TMP_MARK, move_into_place, remove
from gapfill.cf import Format, cf_encoding, prepare, regular_chunks
from gapfill.zarr_regions import write_regions

__all__ = ["format_from_path", "is_zarr_store", "open", "write"]

builtins_open = builtins.open  # ``open`` is this module's reader

_EXTENSIONS: dict[str, Format] = {".nc": "netcdf", ".nc4": "netcdf", ".zarr": "zarr"}
_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray", ".zmetadata")
_GLOB_CHARS = set("*?[")


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
    are written region by region along it, resumably: see
    :func:`gapfill.zarr_regions.write_regions`.

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
        See :func:`gapfill.zarr_regions.write_regions`.

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
        out = regular_chunks(out)
    encoding = cf_encoding(out, fmt)
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
