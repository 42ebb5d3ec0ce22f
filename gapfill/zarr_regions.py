"""Write a dask-backed product region by region into a Zarr store, resumably.

:func:`write_regions` (what :func:`gapfill.io.write` does with ``region_dim``)
fills a partial store next to the target (:func:`partial_path`), records each
region written with a marker file (:func:`written_regions`), and after an
interruption writes only the missing regions; the store (or the NetCDF file
converted from it) is moved into place only once complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr
import zarr

from gapfill.atomic import TMP_MARK, move_into_place, remove, replacing
from gapfill.cf import Format, cf_encoding, drop_encodings, regular_chunks

log = logging.getLogger("gapfill")

__all__ = [
    "PARTIAL_SUFFIX", "PROGRESS_SUFFIX", "RUN_FILE", "ResumeMismatchError", "discard_partial",
    "partial_path", "progress_path", "stored_run", "write_regions", "written_regions",
]


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
    out = regular_chunks(out)
    encoding = cf_encoding(out, "zarr")
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
            ds = drop_encodings(ds)
            ds.to_netcdf(tmp, encoding=cf_encoding(ds, "netcdf"), engine="netcdf4")
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
    with open(marker + ".tmp", "w") as f:
        f.write("done\n")
    os.replace(marker + ".tmp", marker)
    return name


def _after_region(name: str) -> None:
    """Hook called before each region's marker is written (tests inject failures here)."""


def _product_key(ds: xr.Dataset) -> str:
    """A hash of the product's variables, dims, shapes, dtypes and chunks."""
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
