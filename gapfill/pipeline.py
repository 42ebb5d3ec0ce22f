"""Run a validated recipe: open → (punch) → fit → score → fill → write → CSV + figure.

A video recipe (a video input, see :mod:`gapfill.recipe`) takes the same path
up to the fill; it then writes the filled video, its PNG frames, a side-by-side
preview, an image strip and per-frame MAE/RMSE/PSNR/SSIM on the punched pixels
(:mod:`gapfill.video_outputs`). Gaps are punched and scored by
:mod:`gapfill.punching`; the product is written by :mod:`gapfill.io`.

>>> from gapfill import recipe, pipeline
>>> result = pipeline.run(recipe.load("recipes/ostia_sst.yaml"))   # doctest: +SKIP
"""

from __future__ import annotations

import glob
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import yaml
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import gapfill  # noqa: F401  (registers the .gapfill accessors)
from gapfill import cluster, ddp, guard, io, methods, preflight, zarr_regions
from gapfill.dims import find_dims
from gapfill.figures import diagnostics_figure
from gapfill.fingerprint import changes, fingerprint
from gapfill.punching import punch, punched_scores, scores_table, write_scores_csv
from gapfill.recipe import Recipe, RecipeError, open_input, side_outputs
from gapfill.resume import RunCache
from gapfill.timeaxis import TimeOrderWarning
from gapfill.video_outputs import write_video_outputs

__all__ = ["RunResult", "resume_key", "run", "train"]

log = logging.getLogger("gapfill")


@dataclass
class RunResult:
    """What a run wrote and how well it filled.

    Attributes
    ----------
    output, csv, figure, model, frames, preview
        Written paths (``None`` when not asked for); ``frames`` and ``preview``
        only for video recipes.
    holdout
        Scores on held-out observed pixels (empty without a hold-out).
    punched
        Scores on the punched pixels against the true values (empty without ``punch``).
    seconds
        Wall time of the run.
    """

    output: Path
    csv: Path | None = None
    figure: Path | None = None
    model: Path | None = None
    frames: Path | None = None
    preview: Path | None = None
    holdout: dict[str, float] = field(default_factory=dict)
    punched: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


@contextmanager
def _stages(n: int, progress: bool) -> Iterator[Any]:
    """A tqdm bar over the run's stages on a terminal; plain log lines otherwise."""
    with tqdm(total=n, disable=not progress, unit="step", leave=False, file=sys.stderr) as bar:
        if progress:
            with logging_redirect_tqdm(loggers=[log]):
                yield bar
        else:
            yield bar


def run(
    recipe: Recipe,
    *,
    command: str | None = None,
    progress: bool | None = None,
    start_cluster: bool = True,
) -> RunResult:
    """Run a recipe end to end.

    A dask-backed input (a Zarr store, many files, or ``input.chunks``) is
    filled chunk by chunk on the cluster of the recipe's ``compute`` section
    (started here and closed at the end unless ``start_cluster`` is false) and
    written region by region along time, resumably: run the same recipe again
    after an interruption and only the missing regions are written (see
    :func:`gapfill.zarr_regions.write_regions`).

    Parameters
    ----------
    recipe
        A validated recipe (:func:`gapfill.recipe.load`).
    command
        The command recorded in the product's ``history`` (default: this process's).
    progress
        Show a progress bar; default: only when stderr is a terminal.
    start_cluster
        Start the ``compute`` cluster for a dask-backed input; false runs on
        whatever dask scheduler is active.

    Returns
    -------
    RunResult

    Raises
    ------
    gapfill.recipe.RecipeError
        If the input does not match the recipe (variable, dims, time range).
    """
    with ExitStack() as stack:
        ds = open_input(recipe)
        preflight.check(recipe, ds)
        stack.enter_context(guard.exclusive(recipe.output.path))
        leftovers = list(side_outputs(recipe).values())
        if recipe.output.format != "video":
            leftovers.append(zarr_regions.partial_path(recipe.output.path, recipe.output.format))
        guard.clean_leftovers(leftovers)
        # preflight said it once: not again from every step that reads the cube
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore", TimeOrderWarning)
        lazy = ds[recipe.input.variable].chunks is not None
        if start_cluster and lazy:
            stack.enter_context(cluster.session(recipe.compute))
        elif start_cluster and recipe.compute.kind not in ("threads", "none"):
            log.info("input in memory (no dask chunks): no dask cluster started")
        return _run(recipe, ds, command=command, progress=progress)


def resume_key(recipe: Recipe) -> str:
    """What identifies a run for resuming: the recipe (without ``output.overwrite`` and
    ``compute``, method options included) and a fingerprint of its input files and of its
    ``method.model`` (:func:`gapfill.fingerprint.fingerprint`), as JSON text."""
    data = recipe.model_dump(mode="json")
    data.pop("compute", None)
    data["output"].pop("overwrite", None)
    given = [recipe.input.path] if isinstance(recipe.input.path, str) else recipe.input.path
    inputs = [m for item in given for m in (sorted(glob.glob(item)) or [item])]
    identity = {
        "recipe": yaml.safe_dump(data, sort_keys=True),
        "input": fingerprint(inputs),
        "model": fingerprint([recipe.method.model]) if recipe.method.model else None,
    }
    return json.dumps(identity, sort_keys=True)


def _check_resume(recipe: Recipe, key: str) -> None:
    """Refuse to resume a partial product of another run (or discard it with overwrite)."""
    partial = zarr_regions.partial_path(recipe.output.path, recipe.output.format)
    if not partial.exists():
        return
    stored = zarr_regions.stored_run(partial)
    if stored == key:
        return
    why = _what_changed(stored, key)
    if recipe.output.overwrite:
        log.warning("%s: %s; starting over (output.overwrite is true)", partial, why)
        zarr_regions.discard_partial(partial)
        RunCache(partial, key).clear()
        return
    n = len(zarr_regions.written_regions(partial))
    raise RecipeError(
        f"output.path: {str(partial)!r} holds {n} region(s) of an interrupted run, but {why}; "
        "resuming would mix the two. Start over with --overwrite (output.overwrite: true), "
        "or undo the change to resume"
    )


def _what_changed(stored: str | None, key: str) -> str:
    """The difference between two :func:`resume_key` values, in words."""
    try:
        old = json.loads(stored) if stored else None
    except ValueError:
        old = None
    if not isinstance(old, dict) or set(old) != {"recipe", "input", "model"}:
        return "it does not say which recipe and input it was written from"
    new = json.loads(key)
    what = changes(old["input"], new["input"]) + changes(old["model"] or {}, new["model"] or {})
    if old["recipe"] != new["recipe"]:
        what.insert(0, "the recipe changed")
    return "; ".join(what) or "the run changed"


def _run(
    recipe: Recipe, ds: xr.Dataset, *, command: str | None, progress: bool | None
) -> RunResult:
    start = time.perf_counter()
    progress = sys.stderr.isatty() if progress is None else progress
    name = recipe.input.variable
    dims = _input_dims(recipe)
    targets = side_outputs(recipe)
    result = RunResult(output=targets["output.path"])
    steps = 5 + bool(recipe.punch) + bool(recipe.holdout.fraction)
    steps += bool(recipe.output.diagnostics_csv) + bool(recipe.output.figures)
    steps += ("output.frames" in targets) + ("output.preview" in targets)

    with _stages(steps, progress) as bar:

        def step(text: str) -> None:
            bar.set_description(text)
            log.info(text)

        step(f"opened {_short(recipe.input.path)}")
        da = ds[name]
        lazy = da.chunks is not None
        time_dim = find_dims(da, dims).time
        log.info("input %s %s%s", name, dict(da.sizes),
                 f", dask chunks {dict(zip(da.dims, map(max, da.chunks)))}" if lazy else "")
        bar.update()

        truth = hidden = None
        if recipe.punch is not None:
            step(f"punching gaps from the masks in {_short(recipe.punch.mask)}"
                 if recipe.punch.mask is not None else
                 f"punching {recipe.punch.process} gaps (coverage {recipe.punch.coverage:.0%})")
            truth = da
            gappy, hidden = punch(da, recipe.punch, dims)
            gappy.encoding = dict(da.encoding)  # the input's storage, for output.packing
            ds = ds.assign({name: gappy})
            n_hidden = int(hidden.sum())
            n_valid = int(np.isfinite(truth).sum())
            log.info("punched %d of %d valid pixels (%.1f%%)", n_hidden, n_valid,
                     100.0 * n_hidden / max(n_valid, 1))
            bar.update()

        # A resumable (region-by-region) run keeps its fit and scores until it is complete.
        key = resume_key(recipe) if lazy else ""
        if lazy:
            _check_resume(recipe, key)
        cache = _run_cache(recipe, da, key) if lazy else None
        cached = None
        if cache is not None and recipe.method.model is None:
            cached = cache.load_model()
        if recipe.method.model is not None:
            step(f"loading {recipe.method.model}")
            model = preflight.load_model(recipe, name)
        elif cached is not None:
            step(f"reusing the {recipe.method.name} fit of the interrupted run")
            model = cached
        else:
            step(f"fitting {recipe.method.name}")
            model = _fit(recipe, ds, name, dims)
            if cache is not None:
                cache.save_model(model)
            if "output.model" in targets:
                model.save(targets["output.model"])
                result.model = targets["output.model"]
                log.info("saved the model to %s", result.model)
        bar.update()

        diag = None
        if model.holdout.fraction > 0:
            step("scoring held-out pixels")
            t0 = time.perf_counter()
            diag = cache.load_diagnostics() if cache is not None else None
            if diag is None:
                diag = ds[name].gapfill.score(model, seed=recipe.fill.seed)
                if cache is not None:
                    cache.save_diagnostics(diag)
            result.holdout = dict(diag.summary)
            log.info("held-out %s (%.1f s)", _fmt(result.holdout, da.attrs.get("units")),
                     time.perf_counter() - t0)
            bar.update()

        step("filling" + (" (lazily, chunk by chunk, while writing)" if lazy else ""))
        out = ds.gapfill.fill(
            model, samples=recipe.fill.samples, diagnostics=diag if diag is not None else False,
            fill_never_observed=recipe.fill.fill_never_observed, seed=recipe.fill.seed,
            keep_packing=recipe.output.packing == "input",
        )
        if recipe.output.format == "video":
            bar.update()
            write_video_outputs(recipe, ds[name], out[name], truth, hidden, diag, targets, result,
                         step, bar)
            result.seconds = time.perf_counter() - start
            log.info("done in %.1f s: %s", result.seconds, result.output)
            return result
        punched_table = None
        punched_errors = None

        def punched(product: xr.Dataset) -> dict[str, Any]:
            nonlocal punched_table, punched_errors
            if truth is None or hidden is None:
                return {}
            result.punched, punched_table, punched_errors = punched_scores(
                product[name], truth, hidden, time_dim
            )
            log.info("punched pixels vs truth %s", _fmt(result.punched, da.attrs.get("units")))
            attrs = {f"gapfill_punched_{k}": v for k, v in result.punched.items()}
            attrs["gapfill_punch"] = recipe.punch.model_dump_json()
            return attrs

        if not lazy:
            log.info("filled %d pixels", int((out[f"{name}_flag"] == 1).sum()))
            out.attrs.update(punched(out))
        out.attrs["gapfill_recipe"] = recipe.to_yaml()
        bar.update()

        path = targets["output.path"]
        step(f"writing {path}" + (" region by region" if lazy else ""))
        t0 = time.perf_counter()
        io.write(
            out, path, format=recipe.output.format,
            overwrite=recipe.output.overwrite, history_command=command, title=recipe.output.title,
            region_dim=time_dim if lazy else None, resume_key=key,
            finish=punched if lazy else None,
        )
        log.info("wrote %s in %.1f s", path, time.perf_counter() - t0)
        if lazy:  # from the written product: the fill is not computed twice
            out = io.open(path, chunks={})
            log.info("filled %d pixels", int((out[f"{name}_flag"] == 1).sum()))
        bar.update()

        write_scores_csv(targets, scores_table(diag, punched_table), result, step, bar)

        if "output.figures" in targets:
            path = targets["output.figures"]
            step(f"drawing {path}")
            errors = diag.errors if diag is not None else np.array([])
            sigma = diag.predicted_error if diag is not None else None
            diagnostics_figure(out, name, errors, path, punched_errors=punched_errors,
                               predicted_error=sigma)
            result.figure = path
            bar.update()
        if lazy:
            out.close()
        if cache is not None:  # the product is complete
            cache.clear()

    result.seconds = time.perf_counter() - start
    log.info("done in %.1f s: %s", result.seconds, result.output)
    return result


def _run_cache(recipe: Recipe, da: xr.DataArray, key: str) -> Any:
    """The fit/score cache of a resumable run of ``recipe`` (:func:`resume_key` ``key``)
    on ``da``."""
    partial = zarr_regions.partial_path(recipe.output.path, recipe.output.format)
    key = key + f"\ninput: {dict(da.sizes)} {da.dtype} {da.chunks}\n"
    return RunCache(partial, key)


def train(recipe: Recipe) -> Path:
    """Fit the recipe's method and save the model (``gapfill train``); fill nothing.

    Under ``torchrun`` (``WORLD_SIZE > 1``) every process runs this: methods that
    support it train data-parallel with DistributedDataParallel, and rank 0
    alone writes the model (see :mod:`gapfill.ddp`). The input is read
    and punched exactly as ``gapfill run`` does, so a later run with
    ``method.model`` set fills the same cube with the same hold-out.

    Returns
    -------
    Path
        The saved model (``output.model``, default ``<product>_model.pt``).
    """
    method = methods.get(recipe.method.name)
    if ddp.world_size_from_env() > 1 and not method.distributed:
        supported = [n for n in methods.available() if methods.get(n).distributed]
        raise ValueError(
            f"method {recipe.method.name!r} does not train data-parallel; run `gapfill train` "
            f"without torchrun, or use one of {supported}"
        )
    ctx = ddp.init_from_env()
    path = side_outputs(recipe, "train")["output.model"]
    name = recipe.input.variable
    dims = _input_dims(recipe)
    ds = open_input(recipe)
    if recipe.punch is not None:
        gappy, _ = punch(ds[name], recipe.punch, dims)
        ds = ds.assign({name: gappy})
    if ctx.enabled:
        log.info("training %s on %d processes (%s), rank %d", recipe.method.name,
                 ctx.world_size, ctx.backend, ctx.rank)
    model = _fit(recipe, ds, name, dims)
    if ctx.is_main:
        model.save(path)
        log.info("saved the model to %s", path)
    return path


def _fit(recipe: Recipe, ds: xr.Dataset, name: str, dims: dict | None) -> Any:
    """The recipe's method fitted to ``ds[name]`` (with the recipe's hold-out)."""
    m, h = recipe.method, recipe.holdout
    t0 = time.perf_counter()
    model = ds.gapfill.fit(
        m.name, variable=name, dims=dims, holdout=h.fraction, holdout_process=h.process,
        seed=h.seed, options=m.options,
    )
    log.info("fitted %s in %.1f s", m.name, time.perf_counter() - t0)
    log.debug("%r", model)
    return model


def _input_dims(recipe: Recipe) -> dict | None:
    """The recipe's ``input.dims`` as keyword arguments (``None``: detected)."""
    return recipe.input.dims.model_dump(exclude_none=True) if recipe.input.dims else None


def _fmt(stats: dict[str, float], units: str | None) -> str:
    u = f" {units}" if units else ""
    nan = float("nan")
    mae, rmse, bias = (stats.get(k, nan) for k in ("mae", "rmse", "bias"))
    se = stats.get("mae_se", nan)
    pm = f" ± {se:.2g}" if np.isfinite(se) else ""
    return (f"MAE {mae:.4g}{pm}{u}, RMSE {rmse:.4g}{u}, bias {bias:+.3g}{u} "
            f"(n={stats.get('n', 0)})")


def _short(path: str | list[str]) -> str:
    if isinstance(path, list):
        return f"{len(path)} inputs" if len(path) > 1 else _short(path[0])
    return os.path.basename(path.rstrip("/")) or path
