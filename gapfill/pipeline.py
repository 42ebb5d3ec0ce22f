"""Run a validated recipe: open → (punch) → fit → score → fill → write → CSV + figure.

>>> from gapfill import recipe, pipeline
>>> result = pipeline.run(recipe.load("recipes/ostia_sst.yaml"))   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from gapfill.recipe import PunchConfig, Recipe, open_input, side_outputs

__all__ = ["RunResult", "punch", "punched_scores", "run"]

log = logging.getLogger("gapfill")


@dataclass
class RunResult:
    """What a run wrote and how well it filled.

    Attributes
    ----------
    output, csv, figure
        Written paths (``None`` when not asked for).
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
    holdout: dict[str, float] = field(default_factory=dict)
    punched: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def punch(
    da: xr.DataArray, cfg: PunchConfig, dims: dict[str, str] | None = None
) -> tuple[xr.DataArray, xr.DataArray]:
    """Hide synthetic gaps in ``da``.

    Returns
    -------
    gappy
        ``da`` with NaN at the punched pixels.
    hidden
        Boolean DataArray, True at the punched pixels that held a value.
    """
    from gapfill import masks
    from gapfill.dims import find_dims

    core = find_dims(da, dims).core
    shape = tuple(da.sizes[d] for d in core)
    process = masks.make(cfg.process, coverage=cfg.coverage, seed=cfg.seed, **cfg.options)
    mask = xr.DataArray(process.sample(shape, np.random.default_rng(cfg.seed)), dims=core)
    hidden = (mask & np.isfinite(da)).transpose(*da.dims)
    return da.where(~hidden), hidden


def punched_scores(
    filled: xr.DataArray, truth: xr.DataArray, hidden: xr.DataArray, time_dim: str
) -> tuple[dict[str, float], pd.DataFrame, np.ndarray]:
    """MAE, RMSE, bias of ``filled`` against ``truth`` at the punched pixels.

    Returns
    -------
    summary
        ``n``, ``mae``, ``rmse``, ``bias`` and ``unfilled`` (punched pixels left NaN).
    table
        The same per time step (index: time as text), with an ``all`` row last.
    errors
        1-D array of filled − truth at every filled punched pixel.
    """
    err = np.asarray((filled - truth).transpose(time_dim, ...).values, dtype=np.float64)
    hid = np.asarray(hidden.transpose(time_dim, ...).values, dtype=bool)
    ok = hid & np.isfinite(err)
    errors = err[ok]
    summary = _stats(errors)
    summary["unfilled"] = int((hid & ~np.isfinite(err)).sum())
    rows = {}
    times = filled[time_dim].values if time_dim in filled.coords else np.arange(err.shape[0])
    for i, t in enumerate(times):
        e = err[i][ok[i]]
        if e.size:
            rows[str(t)] = _stats(e)
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["n", "mae", "rmse", "bias"])
    table.loc["all"] = [summary[k] for k in ("n", "mae", "rmse", "bias")]
    table.index.name = "time"
    return summary, table, errors


def _stats(e: np.ndarray) -> dict[str, float]:
    if not e.size:
        return {"n": 0, "mae": float("nan"), "rmse": float("nan"), "bias": float("nan")}
    return {
        "n": int(e.size),
        "mae": float(np.abs(e).mean()),
        "rmse": float(np.sqrt((e**2).mean())),
        "bias": float(e.mean()),
    }


@contextmanager
def _stages(n: int, progress: bool) -> Iterator[Any]:
    """A tqdm bar over the run's stages on a terminal; plain log lines otherwise."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    with tqdm(total=n, disable=not progress, unit="step", leave=False, file=sys.stderr) as bar:
        if progress:
            with logging_redirect_tqdm(loggers=[log]):
                yield bar
        else:
            yield bar


def run(recipe: Recipe, *, command: str | None = None, progress: bool | None = None) -> RunResult:
    """Run a recipe end to end.

    Parameters
    ----------
    recipe
        A validated recipe (:func:`gapfill.recipe.load`).
    command
        The command recorded in the product's ``history`` (default: this process's).
    progress
        Show a progress bar; default: only when stderr is a terminal.

    Returns
    -------
    RunResult

    Raises
    ------
    gapfill.recipe.RecipeError
        If the input does not match the recipe (variable, dims, time range).
    """
    import gapfill  # noqa: F401  (registers the .gapfill accessors)
    from gapfill import io
    from gapfill.dims import find_dims

    start = time.perf_counter()
    progress = sys.stderr.isatty() if progress is None else progress
    name = recipe.input.variable
    dims = recipe.input.dims.model_dump(exclude_none=True) if recipe.input.dims else None
    targets = side_outputs(recipe)
    result = RunResult(output=targets["output.path"])
    steps = 5 + bool(recipe.punch) + bool(recipe.holdout.fraction)
    steps += bool(recipe.output.diagnostics_csv) + bool(recipe.output.figures)

    with _stages(steps, progress) as bar:

        def step(text: str) -> None:
            bar.set_description(text)
            log.info(text)

        step(f"opening {_short(recipe.input.path)}")
        ds = open_input(recipe)
        da = ds[name]
        time_dim = find_dims(da, dims).time
        log.info("input %s %s", name, dict(da.sizes))
        bar.update()

        truth = hidden = None
        if recipe.punch is not None:
            step(f"punching {recipe.punch.process} gaps (coverage {recipe.punch.coverage:.0%})")
            truth = da
            gappy, hidden = punch(da, recipe.punch, dims)
            ds = ds.assign({name: gappy})
            n_hidden = int(hidden.sum())
            n_valid = int(np.isfinite(truth).sum())
            log.info("punched %d of %d valid pixels (%.1f%%)", n_hidden, n_valid,
                     100.0 * n_hidden / max(n_valid, 1))
            bar.update()

        m, h = recipe.method, recipe.holdout
        step(f"fitting {m.name}")
        t0 = time.perf_counter()
        model = ds.gapfill.fit(
            m.name, variable=name, dims=dims, holdout=h.fraction, holdout_process=h.process,
            seed=h.seed, **m.options,
        )
        log.info("fitted %s in %.1f s", m.name, time.perf_counter() - t0)
        log.debug("%r", model)
        bar.update()

        diag = None
        if h.fraction > 0:
            step("scoring held-out pixels")
            diag = ds[name].gapfill.score(model, seed=recipe.fill.seed)
            result.holdout = dict(diag.summary)
            log.info("held-out %s", _fmt(result.holdout, da.attrs.get("units")))
            bar.update()

        step("filling")
        out = ds.gapfill.fill(
            model, samples=recipe.fill.samples, diagnostics=diag if diag is not None else False,
            fill_never_observed=recipe.fill.fill_never_observed, seed=recipe.fill.seed,
        )
        flag = out[f"{name}_flag"]
        log.info("filled %d pixels", int((flag == 1).sum()))
        punched_table = None
        punched_errors = None
        if truth is not None and hidden is not None:
            result.punched, punched_table, punched_errors = punched_scores(
                out[name], truth, hidden, time_dim
            )
            log.info("punched pixels vs truth %s", _fmt(result.punched, da.attrs.get("units")))
            for key, value in result.punched.items():
                out.attrs[f"gapfill_punched_{key}"] = value
            out.attrs["gapfill_punch"] = recipe.punch.model_dump_json()
        out.attrs["gapfill_recipe"] = recipe.to_yaml()
        bar.update()

        step(f"writing {targets['output.path']}")
        io.write(
            out, targets["output.path"], format=recipe.output.format,
            overwrite=recipe.output.overwrite, history_command=command, title=recipe.output.title,
        )
        bar.update()

        if "output.diagnostics_csv" in targets:
            path = targets["output.diagnostics_csv"]
            step(f"writing {path}")
            _write_csv(_table(diag, punched_table), path)
            result.csv = path
            bar.update()

        if "output.figures" in targets:
            from gapfill.figures import diagnostics_figure

            path = targets["output.figures"]
            step(f"drawing {path}")
            errors = diag.errors if diag is not None else np.array([])
            diagnostics_figure(out, name, errors, path, punched_errors=punched_errors)
            result.figure = path
            bar.update()

    result.seconds = time.perf_counter() - start
    log.info("done in %.1f s: %s", result.seconds, result.output)
    return result


def _table(diag: Any, punched: pd.DataFrame | None) -> pd.DataFrame:
    parts = []
    if diag is not None:
        parts.append(diag.to_dataframe()[["n", "mae", "rmse", "bias"]].add_prefix("holdout_"))
    if punched is not None:
        parts.append(punched.add_prefix("punched_"))
    if not parts:
        return pd.DataFrame(columns=["holdout_n", "holdout_mae", "holdout_rmse", "holdout_bias"])
    table = pd.concat(parts, axis=1, join="outer")
    rows = [i for i in table.index if i != "all"] + (["all"] if "all" in table.index else [])
    table = table.loc[rows]
    for col in table.columns:
        if col.endswith("_n"):
            table[col] = table[col].fillna(0).astype(int)
    table.index = [re.sub(r"\.0+$", "", str(i)) for i in table.index]
    table.index.name = "time"
    return table


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        table.to_csv(tmp, float_format="%.6g")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fmt(stats: dict[str, float], units: str | None) -> str:
    u = f" {units}" if units else ""
    nan = float("nan")
    mae, rmse, bias = (stats.get(k, nan) for k in ("mae", "rmse", "bias"))
    return f"MAE {mae:.4g}{u}, RMSE {rmse:.4g}{u}, bias {bias:+.3g}{u} (n={stats.get('n', 0)})"


def _short(path: str | list[str]) -> str:
    if isinstance(path, list):
        return f"{len(path)} inputs" if len(path) > 1 else _short(path[0])
    return os.path.basename(path.rstrip("/")) or path
