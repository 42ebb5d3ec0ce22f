"""Synthetic gaps punched into a run's input, and the scores of the fill on them.

:func:`punch` hides gaps drawn from an occlusion process (or the user's mask
video) in a cube whose truth is known; :func:`punched_scores` (a cube) and
:func:`video_scores` (a video) score the fill on the punched pixels;
:func:`scores_table` puts those per time step beside the hold-out's, which
:func:`write_scores_csv` writes to ``output.diagnostics_csv``.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import dask.array as dsa
import numpy as np
import pandas as pd
import xarray as xr

from gapfill import masks, metrics
from gapfill.atomic import replacing
from gapfill.diagnostics import block_rng, time_blocks
from gapfill.dims import find_dims
from gapfill.metrics import error_summary
from gapfill.recipe import PunchConfig
from gapfill.video import open_masks

if TYPE_CHECKING:
    from gapfill.pipeline import RunResult

__all__ = [
    "MAX_HISTOGRAM_ERRORS", "punch", "punched_scores", "scores_table", "video_scores",
    "write_scores_csv",
]


def punch(
    da: xr.DataArray, cfg: PunchConfig, dims: dict[str, str] | None = None
) -> tuple[xr.DataArray, xr.DataArray]:
    """Hide synthetic gaps in ``da``.

    With ``cfg.mask`` (video inputs) the gaps are the user's mask video or
    folder (white = missing, see :func:`gapfill.video.open_masks`), shared by
    all channels.

    Returns
    -------
    gappy
        ``da`` with NaN at the punched pixels.
    hidden
        Boolean DataArray, True at the punched pixels that held a value.
    """
    if cfg.mask is not None:
        user = open_masks(cfg.mask, like=da).variable  # dims and sizes of da's core
        hidden = (user & np.isfinite(da)).transpose(*da.dims)
        return da.where(~hidden), hidden
    core = find_dims(da, dims).core
    shape = tuple(da.sizes[d] for d in core)
    process = masks.make(cfg.process, coverage=cfg.coverage, seed=cfg.seed, **cfg.options)
    blocks = time_blocks(*shape)

    def draw(index: int, n_time: int) -> np.ndarray:
        return process.sample((n_time, *shape[1:]), block_rng(cfg.seed, index))

    if da.chunks is None:
        mask_data: Any = np.concatenate(
            [draw(i, b.stop - b.start) for i, b in enumerate(blocks)], axis=0
        )
    else:  # one lazy draw per time block (the same draw as in memory)
        mask_data = dsa.concatenate([
            dsa.from_delayed(dask.delayed(draw)(i, b.stop - b.start),
                             (b.stop - b.start, *shape[1:]), dtype=bool)
            for i, b in enumerate(blocks)
        ]).rechunk(da.transpose(*core).chunks)
    mask = xr.DataArray(mask_data, dims=core)
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
    if filled.chunks is not None or truth.chunks is not None or hidden.chunks is not None:
        return _punched_scores_lazy(filled, truth, hidden, time_dim)
    err = np.asarray((filled - truth).transpose(time_dim, ...).values, dtype=np.float64)
    hid = np.asarray(hidden.transpose(time_dim, ...).values, dtype=bool)
    ok = hid & np.isfinite(err)
    errors = err[ok]
    summary = error_summary(errors)
    summary["unfilled"] = int((hid & ~np.isfinite(err)).sum())
    rows = {}
    times = filled[time_dim].values if time_dim in filled.coords else np.arange(err.shape[0])
    for i, t in enumerate(times):
        e = err[i][ok[i]]
        if e.size:
            rows[str(t)] = error_summary(e)
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["n", "mae", "rmse", "bias"])
    table.loc["all"] = [summary[k] for k in ("n", "mae", "rmse", "bias")]
    table.index.name = "time"
    return summary, table, errors


#: Most errors a dask-backed run keeps for the histogram (from evenly spaced frames).
MAX_HISTOGRAM_ERRORS = 2_000_000


def _punched_scores_lazy(
    filled: xr.DataArray, truth: xr.DataArray, hidden: xr.DataArray, time_dim: str
) -> tuple[dict[str, float], pd.DataFrame, np.ndarray]:
    """:func:`punched_scores` by per-time dask reductions; the error sample comes from
    evenly spaced frames (at most ``MAX_HISTOGRAM_ERRORS`` values)."""
    err = (filled - truth).astype(np.float64)
    ok = hidden & np.isfinite(err)
    other = [d for d in err.dims if d != time_dim]
    e = err.where(ok)
    parts = {
        "n": ok.sum(other), "abs": abs(e).sum(other), "sq": (e**2).sum(other),
        "sum": e.sum(other),
    }
    unfilled = (hidden & ~np.isfinite(err)).sum()
    sums, unfilled = dask.compute({k: v.data for k, v in parts.items()}, unfilled.data)
    n = np.asarray(sums["n"], dtype=np.int64)
    total = int(n.sum())
    nan = float("nan")
    summary: dict[str, float] = {
        "n": total,
        "mae": float(sums["abs"].sum() / total) if total else nan,
        "rmse": float(np.sqrt(sums["sq"].sum() / total)) if total else nan,
        "bias": float(sums["sum"].sum() / total) if total else nan,
        "unfilled": int(unfilled),
    }
    times = filled[time_dim].values if time_dim in filled.coords else np.arange(len(n))
    rows = {
        str(t): {"n": int(k), "mae": sums["abs"][i] / k, "rmse": np.sqrt(sums["sq"][i] / k),
                 "bias": sums["sum"][i] / k}
        for i, (t, k) in enumerate(zip(times, n)) if k
    }
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["n", "mae", "rmse", "bias"])
    table.loc["all"] = [summary[k] for k in ("n", "mae", "rmse", "bias")]
    table.index.name = "time"
    per_frame = max(1, total // max(1, len(n)))
    n_frames = int(np.clip(MAX_HISTOGRAM_ERRORS // per_frame, 1, len(n)))
    frames = np.unique(np.linspace(0, len(n) - 1, n_frames).round().astype(int))
    sample = e.isel({time_dim: frames}).values
    return summary, table, sample[np.isfinite(sample)]


def video_scores(
    truth: xr.DataArray, filled: xr.DataArray, hidden: xr.DataArray
) -> tuple[dict[str, float], pd.DataFrame]:
    """MAE, RMSE, PSNR and SSIM of a filled video on the punched pixels (values in [0, 1]).

    Returns
    -------
    summary
        ``n`` (scored values, channels included), ``mae``, ``rmse``, ``psnr``,
        ``ssim``: averages over the frames with punched pixels
        (:func:`gapfill.metrics.score`).
    table
        The same per frame (index: the frame's ``time`` label), an ``all`` row last.
    """
    tdim = find_dims(truth).time
    shown = filled.clip(0.0, 1.0)
    with warnings.catch_warnings():  # unfilled values are left out (and logged by the caller)
        warnings.simplefilter("ignore", UserWarning)
        summary = metrics.score(truth, shown, hidden)
        per = {name: np.asarray(fn(truth, shown, hidden, per_frame=True))
               for name, fn in (("mae", metrics.mae), ("rmse", metrics.rmse),
                                ("psnr", metrics.psnr), ("ssim", metrics.ssim))}
    summary = {"n": summary.pop("n_hidden"), **summary}
    counts = hidden.sum([d for d in hidden.dims if d != tdim]).values
    labels = truth[tdim].values if tdim in truth.coords else np.arange(len(counts))
    table = pd.DataFrame({"n": counts.astype(int), **per},
                         index=[str(t) for t in labels])
    table = table[table["n"] > 0]
    table.loc["all"] = [summary[k] for k in ("n", "mae", "rmse", "psnr", "ssim")]
    table.index.name = "time"
    return summary, table


def scores_table(diag: Any, punched: pd.DataFrame | None) -> pd.DataFrame:
    """The CSV table of a run: hold-out scores and punched scores per time step, ``all`` last."""
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


def write_scores_csv(
    targets: dict[str, Path], table: pd.DataFrame, result: RunResult, step: Any, bar: Any
) -> None:
    """Write ``table`` to ``output.diagnostics_csv`` when the recipe asks for it."""
    if "output.diagnostics_csv" not in targets:
        return
    path = targets["output.diagnostics_csv"]
    step(f"writing {path}")
    with replacing(path) as tmp:
        table.to_csv(tmp, float_format="%.6g")
    result.csv = path
    bar.update()
