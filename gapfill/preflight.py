"""Checks of a recipe against its input and this machine, before any work.

``gapfill validate`` runs them, and so does ``gapfill run`` before it fits:
every problem they find would otherwise surface only after the fit (minutes
or hours later). Each problem names its recipe key:

- ``output.path`` (and the side outputs): their directory can be written;
- ``output.format``: NetCDF stores every variable's dtype (not ``float16``);
- ``input``: the time, y and x coordinates are finite (no NaN/NaT); no time
  occurs twice, and times out of order are reported (the fill sorts them, see
  :mod:`gapfill.timeaxis`);
- ``method.model``: the saved model loads and matches the recipe and input;
- ``method.options``: a rough estimate of the memory the deep methods take
  (windows, batches, widths, guide pools) fits in this machine's memory.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["check", "machine_memory", "memory_estimate"]

log = logging.getLogger("gapfill")

#: Dtypes a NetCDF-4 file stores (``float16`` and complex numbers are not among them).
NETCDF_KINDS = {"f": (4, 8), "i": (1, 2, 4, 8), "u": (1, 2, 4, 8), "b": (1,), "M": (8,),
                "m": (8,), "S": None, "U": None, "O": None}
#: Activations kept per voxel and channel of a training window (forward and backward passes
#: through a few dozen layers): the factor of the estimate.
ACTIVATION_FACTOR = 32


def check(recipe: Any, ds: Any) -> None:
    """Raise :class:`gapfill.recipe.RecipeError` listing every problem found.

    Parameters
    ----------
    recipe
        A validated :class:`gapfill.recipe.Recipe`.
    ds
        Its input, from :func:`gapfill.recipe.open_input` (nothing is computed
        but the coordinates).
    """
    from gapfill.recipe import RecipeError

    problems: list[str] = []
    for fn in (_writable, _dtypes, _coords, _time, _model, _memory):
        try:
            problem = fn(recipe, ds)
        except RecipeError as err:
            problem = str(err)
        if problem:
            problems.append(problem)
    if len(problems) == 1:
        raise RecipeError(problems[0])
    if problems:
        raise RecipeError(f"{len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))


def _writable(recipe: Any, ds: Any) -> str | None:
    from gapfill.recipe import side_outputs

    for key, path in side_outputs(recipe).items():
        folder = path.parent
        while not folder.exists():  # the directories the run would create
            folder = folder.parent
        if not folder.is_dir():
            return f"{key}: cannot create {str(path)!r}: {str(folder)!r} is not a directory"
        try:  # a probe file: permissions, read-only mounts and quotas all say no here
            fd, probe = tempfile.mkstemp(prefix=".gapfill-probe-", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            return (f"{key}: cannot write {str(path)!r}: {str(folder)!r} is not writable "
                    f"({err.strerror})")
    return None


def _dtypes(recipe: Any, ds: Any) -> str | None:
    if recipe.output.format != "netcdf":
        return None
    for name, var in ds.variables.items():
        sizes = NETCDF_KINDS.get(var.dtype.kind, ())
        if sizes is not None and var.dtype.itemsize not in sizes:
            return (f"output.path: NetCDF cannot store {name!r} ({var.dtype}); write Zarr "
                    "(output.path ending in .zarr) or convert the input (e.g. to float32)")
    return None


def _coords(recipe: Any, ds: Any) -> str | None:
    from gapfill.cube import check_coords
    from gapfill.dims import find_dims

    if recipe.input.is_video:
        return None
    da = ds[recipe.input.variable]
    try:
        check_coords(da, find_dims(da, _dims(recipe)))
    except ValueError as err:
        return f"input.path: {err}"
    return None


def _time(recipe: Any, ds: Any) -> str | None:
    from gapfill import timeaxis
    from gapfill.dims import find_dims

    if recipe.input.is_video:
        return None
    da = ds[recipe.input.variable]
    name = find_dims(da, _dims(recipe)).time
    if name not in da.coords:
        return None
    try:
        order = timeaxis.check_order(da[name].values, name)
    except ValueError as err:
        return f"input.path: {err}"
    if order is not None:
        log.warning("input: the %r coordinate is not in increasing order; the fill sorts it "
                    "and writes the product in the input's order", name)
    return None


def _model(recipe: Any, ds: Any) -> str | None:
    if recipe.method.model is None:
        return None
    from gapfill.dims import find_dims

    try:
        model = load_model(recipe, recipe.input.variable)
    except (ValueError, OSError) as err:
        text = str(err)
        return text if text.startswith("method.model") else (
            f"method.model: cannot load {recipe.method.model!r}: {text}")
    da = ds[recipe.input.variable]
    found = find_dims(da, _dims(recipe))
    shape = model.info.get("shape")
    if shape and len(shape) == 4 and tuple(shape[2:]) != (da.sizes[found.y], da.sizes[found.x]):
        return (f"method.model: {recipe.method.model!r} was fitted on a {shape[2]} x {shape[3]} "
                f"grid; the input's is {da.sizes[found.y]} x {da.sizes[found.x]}")
    return None


def _memory(recipe: Any, ds: Any) -> str | None:
    if recipe.input.is_video:
        da = ds[recipe.input.variable]
        shape = (da.sizes.get("channel", 1), *(da.sizes[d] for d in ("time", "y", "x")))
        chunk = None
    else:
        from gapfill.dims import find_dims

        da = ds[recipe.input.variable]
        d = find_dims(da, _dims(recipe))
        shape = (da.sizes[d.channel] if d.channel else 1, da.sizes[d.time], da.sizes[d.y],
                 da.sizes[d.x])
        chunk = None if da.chunks is None else tuple(
            max(da.chunks[da.dims.index(n)]) for n in (d.time, d.y, d.x))
    need = memory_estimate(recipe.method.name, recipe.method.options, shape, chunk)
    have = machine_memory()
    if need is None or have is None or need["total"] <= have:
        return None
    parts = ", ".join(f"{k} {_gib(v)}" for k, v in need.items() if k != "total" and v >= 2**28)
    return (f"method.options: the {recipe.method.name} method would need about "
            f"{_gib(need['total'])} of memory ({parts}); this machine has {_gib(have)}. "
            "Lower window, batch_size, width or guide_pool")


def memory_estimate(
    method: str,
    options: dict[str, Any],
    shape: tuple[int, int, int, int],
    chunk: tuple[int, int, int] | None = None,
) -> dict[str, float] | None:
    """A rough upper estimate of the memory (bytes) a deep method takes, by part.

    Counts the data the method holds (the cube in memory, or ``fit_blocks``
    chunks of a dask-backed one, times the ``guide_pool``), the training
    activations (``batch_size`` windows × ``width`` channels ×
    :data:`ACTIVATION_FACTOR`), the parameters with their gradients and Adam
    moments, and the fill batches. Windows are clipped to the cube.

    Parameters
    ----------
    method, options
        The recipe's ``method.name`` and ``method.options``.
    shape
        ``(C, T, H, W)`` of the input.
    chunk
        ``(T, H, W)`` of one dask chunk of a dask-backed input (``None``: in memory).

    Returns
    -------
    dict or None
        ``data``, ``training``, ``parameters``, ``fill`` and ``total``, in
        bytes; ``None`` for methods without windows or networks.
    """
    from gapfill import methods

    opts = methods.get(method)(**options).options
    window = getattr(opts, "window", None)
    if window is None or not hasattr(opts, "batch_size"):
        return None
    c, cube = shape[0], shape[1:]
    clip = lambda w: float(np.prod([min(int(a), n) for a, n in zip(w, cube)]))  # noqa: E731
    width = getattr(opts, "width", 32)
    width = float(16 if width is None else width)  # None: gan picks 8 or 16 by the device
    layers = 4 + 2 * float(getattr(opts, "n_down", 2)) + 2 * float(getattr(opts, "n_res_blocks", 2))
    held = float(np.prod(cube)) if chunk is None else float(np.prod(chunk)) * float(
        getattr(opts, "fit_blocks", 1))
    pool = float(getattr(opts, "guide_pool", 0)) if getattr(opts, "guide", "none") != "none" else 0
    word = 4.0
    part = {
        "data": held * c * word * (3 + pool),
        "training": float(opts.batch_size) * clip(window) * (c + width) * ACTIVATION_FACTOR * word,
        "parameters": width**2 * 27 * layers * word * 4,
        "fill": float(getattr(opts, "fill_batch_size", 1)) * clip(
            getattr(opts, "fill_window", window)) * (c + width) * 8 * word,
    }
    part["total"] = sum(part.values())
    return part


#: Where Linux control groups (v2, v1) give the memory limit of a container or batch job.
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def machine_memory() -> int | None:
    """The memory this process may use, in bytes: the machine's physical memory, or the
    container's or batch job's cgroup limit when lower (``None`` if unknown)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None
    for path in CGROUP_LIMITS:
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def _dims(recipe: Any) -> dict | None:
    return recipe.input.dims.model_dump(exclude_none=True) if recipe.input.dims else None


def load_model(recipe: Any, name: str) -> Any:
    """The saved model of ``method.model``, checked against the recipe."""
    from gapfill.fitted import load

    path = recipe.method.model
    model = load(path)
    if model.name != recipe.method.name:
        raise ValueError(
            f"method.model: {path!r} holds a {model.name!r} model but method.name is "
            f"{recipe.method.name!r}; make them agree"
        )
    if model.variable != name:
        raise ValueError(
            f"method.model: {path!r} was fitted on {model.variable!r}, not on input.variable "
            f"{name!r}"
        )
    h = recipe.holdout
    if (h.fraction, h.process, h.seed) != (
        model.holdout.fraction, model.holdout.process, model.holdout.seed
    ):
        log.warning("the saved model's hold-out (%s) replaces the recipe's holdout section",
                    model.holdout)
    return model
