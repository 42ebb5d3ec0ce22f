"""Classical gap fillers on OSTIA SST with cloud-shaped held-out gaps.

Scores ``eof``, ``linear`` and ``climatology`` from gapfill and pyDINEOF's
``run_2D`` on the same gaps (MAE/RMSE/bias in K on the hidden ocean pixels),
with wall time (fit + fill) and peak traced memory, and prints a markdown table.

Run from the repository root::

    python benchmarks/classical_ostia.py --coverage 0.4 --seed 0

BLAS is limited to one thread unless ``OMP_NUM_THREADS`` is set: the matrices
are small, and on a shared machine extra BLAS threads slow both DINEOFs down
several-fold and make timings noise.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy is imported

import argparse
import contextlib
import io
import sys
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
import xarray as xr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import load_ostia, punch_clouds, score


def run_gapfill(name: str, gappy: xr.DataArray, seed: int, **options) -> tuple[xr.DataArray, dict]:
    """Fit and fill ``gappy`` with a gapfill method; returns the filled field and fit_info."""
    from gapfill import methods
    from gapfill.cube import Cube

    cube = Cube(gappy)
    method = methods.get(name)(**options)
    rng = np.random.default_rng(seed)
    method.fit(cube, rng)
    result = method.fill(cube.values(), rng)
    out = cube.normaliser.denormalise(result.values)
    raw = gappy.transpose(*cube.da.dims).values[None]
    out = np.where(np.isfinite(raw), raw, out)
    info = dict(method.fit_info)
    if result.error is not None:
        info["error"] = cube.to_dataarray(cube.normaliser.scale_error(result.error))
    return cube.to_dataarray(out), info


def run_pydineof(
    gappy: xr.DataArray, seed: int, nev: int = 5, ncv: int = 11
) -> tuple[xr.DataArray, dict]:
    """pyDINEOF ``run_2D`` in kelvin with integer time steps (its printing silenced).

    ``ncv`` must exceed ``nev + 5`` (so run_2D's own defaults, 5 and 10, raise).
    """
    from pydineof import run_2D

    data = gappy.assign_coords(time=np.arange(gappy.sizes["time"]))
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        out = run_2D(data, nev=nev, ncv=ncv, seed=seed)
    modes = [ln for ln in log.getvalue().splitlines() if "Number of optimal EOF modes" in ln]
    out = out.assign_coords(time=gappy["time"]).transpose(*gappy.dims)
    return out, {"modes": int(modes[-1].split(":")[-1]) if modes else None}


def error_calibration(
    truth: xr.DataArray, gappy: xr.DataArray, filled: xr.DataArray, error: xr.DataArray
) -> tuple[float, float]:
    """RMSE / RMS(predicted σ), and the share of errors within ±σ, on the scored pixels."""
    t, f, e = (np.asarray(a.transpose(*gappy.dims).values, float) for a in (truth, filled, error))
    scored = np.isfinite(t) & gappy.isnull().values & gappy.notnull().any("time").values
    d, e = (f - t)[scored], e[scored]
    return float(np.sqrt(np.mean(d**2) / np.mean(e**2))), float(np.mean(np.abs(d) <= e))


def measure(fn: Callable[[], tuple[xr.DataArray, dict]], memory: bool) -> tuple:
    """Run ``fn``; return its result, wall seconds and peak traced MiB (or NaN)."""
    if memory:
        tracemalloc.start()
    t0 = time.perf_counter()
    filled, info = fn()
    wall = time.perf_counter() - t0
    peak = np.nan
    if memory:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return filled, info, wall, peak


def run_all(
    truth: xr.DataArray, coverage: float, seed: int, nev: list[int], repeat: int, memory: bool
) -> tuple[xr.DataArray, list[dict]]:
    """All methods on one cloud draw: the gappy field and one result row per method."""
    gappy = punch_clouds(truth, coverage, seed)
    runs: dict[str, Callable[[], tuple[xr.DataArray, dict]]] = {
        "eof": lambda: run_gapfill("eof", gappy, seed),
        "eof (alpha=0: no filter)": lambda: run_gapfill("eof", gappy, seed, alpha=0.0),
        "eof (center=pixel)": lambda: run_gapfill("eof", gappy, seed, center="pixel"),
        "linear": lambda: run_gapfill("linear", gappy, seed),
        "climatology": lambda: run_gapfill("climatology", gappy, seed),
    }
    for n in nev:
        runs[f"pyDINEOF (nev={n})"] = lambda n=n: run_pydineof(gappy, seed, nev=n, ncv=n + 6)
    rows = []
    for label, fn in runs.items():
        walls = []
        for _ in range(repeat):
            filled, info, wall, _ = measure(fn, memory=False)
            walls.append(wall)
        peak = measure(fn, memory=True)[3] if memory else np.nan
        row = {"method": label, "modes": info.get("modes"), **score(truth, gappy, filled)}
        row.update(wall=float(np.median(walls)), peak=peak, calib=None)
        if "error" in info:
            row["calib"] = error_calibration(truth, gappy, filled, info["error"])
        rows.append(row)
    return gappy, rows


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--coverage", type=float, default=0.4, help="share of pixels hidden per frame")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="cloud draws (averaged)")
    p.add_argument("--nev", type=int, nargs="+", default=[5, 10], help="pyDINEOF max modes to try")
    p.add_argument("--no-memory", action="store_true", help="skip the tracemalloc pass")
    p.add_argument("--repeat", type=int, default=3, help="timing runs (the median is reported)")
    args = p.parse_args(argv)

    truth = load_ostia()
    ocean = np.isfinite(truth).any("time")
    n_ocean = int(ocean.sum()) * truth.sizes["time"]
    table: dict[str, list[dict]] = {}
    hidden = []
    for seed in args.seeds:
        gappy, rows = run_all(truth, args.coverage, seed, args.nev, args.repeat, not args.no_memory)
        hidden.append(float((np.isfinite(truth) & gappy.isnull()).sum()) / n_ocean)
        for row in rows:
            table.setdefault(row["method"], []).append(row)

    first = next(iter(table.values()))
    print(
        f"OSTIA monthly SST 54×18×432, Cloud(coverage={args.coverage}), seeds {args.seeds}: "
        f"{np.mean(hidden):.1%} of ocean pixels hidden, {np.mean([r['n'] for r in first]):.0f} "
        f"scored per draw ({np.mean([r['never_observed'] for r in first]):.0f} at never-observed "
        f"locations left out); OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
        f"means over draws, wall = median of {args.repeat} runs (fit + fill)\n"
    )
    print(
        "| method | modes | MAE (K) | RMSE (K) | bias (K) | unfilled | wall (s) | peak mem (MiB) "
        "| RMSE/RMS(σ) | within ±1σ |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, rows in table.items():
        modes = ",".join(str(r["modes"]) for r in rows if r["modes"] is not None)
        keys = ("mae", "rmse", "bias", "wall", "peak")
        mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
        unfilled = sum(r["unfilled"] for r in rows)
        calib = [r["calib"] for r in rows if r["calib"] is not None]
        cal = "| – | –"
        if calib:
            cal = f"| {np.mean([c[0] for c in calib]):.2f} | {np.mean([c[1] for c in calib]):.0%}"
        print(
            f"| {label} | {modes} | {mean['mae']:.4f} | {mean['rmse']:.4f} | {mean['bias']:+.4f} "
            f"| {unfilled} | {mean['wall']:.2f} | {mean['peak']:.1f} {cal} |"
        )


if __name__ == "__main__":
    main()
