"""Scale benchmark: gap filling a year of global daily 0.25° SST on a small machine.

A synthetic SST-like cube (365 × 720 × 1440 float32 for ``--size full``, 1.5 GB; land and
drifting cloud gaps) is generated chunk by chunk into a Zarr store chunked by time, never
whole in memory. Each case runs in its own process, measured from outside: wall time and
the peak resident memory of its whole process tree (psutil, sampled every 0.1 s; dask
workers included).

* ``io``: the I/O floor: open the store and write the cube back to Zarr with plain
  xarray/dask on the same dask cluster, nothing else;
* ``linear``, ``eof``: ``gapfill run`` of a recipe on the store (10% hold-out scored, fill,
  resumable region-by-region Zarr write, diagnostics CSV; no figure); ``linear0``, ``eof0``:
  the same without a hold-out (scoring is one more full fill);
* ``gan``, ``gan0``: ``gapfill train`` (``--gan-budget`` seconds; a cube over 256 MiB is
  fitted on sampled blocks, never loaded) then ``gapfill run`` with the saved model
  (``method.model``), filled time chunk by time chunk (``time_halo``);
* ``pydineof``: pyDINEOF's ``run_2D`` on the largest spatial block of the cube (all
  times) that finishes within ``--pydineof-budget`` seconds, tried from small to large.

Run from the repository root (not a test; ``--size small`` takes a couple of minutes)::

    python benchmarks/scale.py --size small
    nohup python benchmarks/scale.py --size full > /tmp/scale_full.log 2>&1 &

gapfill runs use the recipe's default ``compute: local`` cluster (one in-process worker of
``--workers`` threads); the I/O floor uses the same cluster. BLAS is limited to one thread
per process (dask provides the parallelism).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the driver's BLAS; workers get 1 from dask
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZES = {"small": (120, 180, 360), "mid": (365, 360, 720), "full": (365, 720, 1440)}
CHUNK_DAYS = 8
ROOT = Path(__file__).resolve().parents[1]


# -- the synthetic cube ------------------------------------------------------------------------
def land_mask(height: int, width: int, seed: int = 0) -> np.ndarray:
    """About 30% land in smooth continents (a thresholded smooth random field), polar caps."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.standard_normal((height, width)), height / 12, mode="wrap")
    land = field > np.quantile(field, 0.7)
    lat = np.linspace(-90, 90, height)
    land[np.abs(lat) > 78] = True
    return land


def sst_chunk(t0: int, n_time: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """SST (K) of frames ``t0 .. t0+n_time``: climatology, seasonal cycle, ENSO-like and
    travelling large-scale modes, mesoscale noise; float32 ``(T, H, W)``."""
    from scipy.ndimage import gaussian_filter

    lat = np.deg2rad(np.linspace(-89.875, 89.875, height))[None, :, None]
    lon = np.deg2rad(np.linspace(-179.875, 179.875, width))[None, None, :]
    t = np.arange(t0, t0 + n_time)[:, None, None]
    year = 2 * np.pi * t / 365.25
    field = 271.4 + 29.0 * np.cos(lat) ** 2
    field = field + 3.0 * np.sin(year) * np.sin(lat) * np.abs(np.sin(lat)) ** 0.5
    enso = np.exp(-((np.rad2deg(lat) / 12) ** 2) - ((np.rad2deg(lon) + 120) / 45) ** 2)
    field = field + 1.5 * np.sin(2 * np.pi * t / 300) * enso
    field = field + 0.6 * np.cos(lat) * np.sin(3 * lon - 2 * np.pi * t / 60)
    field = field + 0.4 * np.cos(2 * lat) * np.cos(5 * lon + 2 * np.pi * t / 45 + lat)
    rng = np.random.default_rng([seed, t0])
    noise = gaussian_filter(rng.standard_normal((n_time, height, width)), (1, 3, 3), mode="wrap")
    field = field + (0.3 / max(noise.std(), 1e-9)) * noise
    return np.maximum(field, 271.35).astype(np.float32)


def generate(path: Path, shape: tuple[int, int, int], seed: int = 0) -> None:
    """Write the gappy cube to a Zarr store chunked by time, one chunk at a time."""
    import dask.array as dsa
    import pandas as pd
    import xarray as xr

    from gapfill.masks import Cloud

    n_time, height, width = shape
    lat = np.linspace(-89.875, 89.875, height)
    lon = np.linspace(-179.875, 179.875, width)
    time_ = pd.date_range("2020-01-01", periods=n_time, freq="D")
    template = xr.Dataset(
        {"analysed_sst": (("time", "lat", "lon"),
                          dsa.zeros(shape, chunks=(CHUNK_DAYS, height, width), dtype=np.float32),
                          {"units": "K", "standard_name": "sea_surface_temperature",
                           "long_name": "synthetic L3 SST"})},
        coords={"time": time_,
                "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
                "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"})},
        attrs={"title": "synthetic gappy global daily SST (gapfill scale benchmark)"},
    )
    tmp = path.with_name(path.name + ".tmp")
    template.to_zarr(tmp, mode="w", compute=False, consolidated=True)
    land = land_mask(height, width, seed)
    clouds = Cloud(coverage=0.55, length_scale=6 * width / 1440 + 2, periodic=(False, True),
                   coverage_spread=0.1)
    for t0 in range(0, n_time, CHUNK_DAYS):
        n = min(CHUNK_DAYS, n_time - t0)
        sst = sst_chunk(t0, n, height, width, seed)
        hidden = clouds.sample((n, height, width), np.random.default_rng([seed, 1, t0]))
        sst[hidden | land[None]] = np.nan
        region = {"time": slice(t0, t0 + n)}
        ds = xr.Dataset({"analysed_sst": (("time", "lat", "lon"), sst)})
        ds.to_zarr(tmp, region=region, consolidated=True)
    os.replace(tmp, path)


# -- the cases (each in its own process) ------------------------------------------------------
def recipe_for(
    work: Path, method: str, workers: int, options: dict, holdout: float,
    model: Path | None = None,
) -> Path:
    import yaml

    tag = f"{method}_holdout{holdout:g}" + ("_saved" if model else "")
    method_section: dict = {"name": method, "options": options}
    if model is not None:
        method_section["model"] = str(model)
    recipe = {
        "description": f"scale benchmark: {tag}",
        "input": {"path": str(work / "sst.zarr"), "variable": "analysed_sst"},
        "method": method_section,
        "holdout": {"fraction": holdout, "process": "cloud", "seed": 0},
        "output": {"path": str(work / f"filled_{tag}.zarr"), "figures": False,
                   "diagnostics_csv": True, "overwrite": True},
        "compute": {"kind": "local", "threads_per_worker": workers},
    }
    path = work / f"recipe_{tag}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def case_io(work: Path, workers: int) -> dict:
    """The I/O floor: read the cube and write it back to Zarr, plain xarray/dask."""
    import shutil

    import xarray as xr
    from distributed import Client, LocalCluster

    out = work / "copy.zarr"
    shutil.rmtree(out, ignore_errors=True)
    with LocalCluster(n_workers=1, threads_per_worker=workers, processes=False,
                      dashboard_address=":0") as cluster:
        with Client(cluster):
            ds = xr.open_zarr(work / "sst.zarr", chunks={})
            ds.to_zarr(out, mode="w", consolidated=True)
    shutil.rmtree(out, ignore_errors=True)
    return {}


def case_pydineof(work: Path, height: int, width: int) -> dict:
    """pyDINEOF on the first ``height × width`` block (all times); its CV picks the modes."""
    import contextlib
    import io

    import xarray as xr
    from pydineof import run_2D

    da = xr.open_zarr(work / "sst.zarr")["analysed_sst"]
    y0 = (da.sizes["lat"] - height) // 2  # centred on the equator: mostly ocean
    block = da.isel(lat=slice(y0, y0 + height), lon=slice(0, width)).load()
    block = block.assign_coords(time=np.arange(block.sizes["time"]))
    mask = block.notnull().any("time")
    log = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(log):
        run_2D(block, mask=mask, nev=10, ncv=16, seed=0)
    return {"pixels": int(mask.sum()), "seconds_inside": round(time.perf_counter() - t0, 1)}


def measure(cmd: list[str], timeout: float | None = None, env: dict | None = None) -> dict:
    """Run ``cmd``; wall time and peak RSS of its process tree (psutil sampling)."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    peak = 0
    timed_out = False
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            rss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, rss)
        except psutil.Error:
            pass
        if timeout is not None and time.perf_counter() - start > timeout:
            for p in [root, *root.children(recursive=True)]:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            timed_out = True
            break
        time.sleep(0.1)
    out = proc.communicate()[0]
    return {"seconds": round(time.perf_counter() - start, 1), "peak_rss_gb": round(peak / 2**30, 2),
            "returncode": proc.returncode, "timed_out": timed_out, "log_tail": out[-3000:]}


def stage_times(log: str) -> dict[str, float]:
    """Seconds of the fit, the hold-out scoring and the fill + write, from a run's log."""
    import re

    out = {}
    for name, pattern in (("fit", r"fitted \w+ in ([\d.]+) s"),
                          ("score", r"held-out .*\(([\d.]+) s\)"),
                          ("fill+write", r"wrote .* in ([\d.]+) s")):
        m = re.search(pattern, log)
        if m:
            out[name] = float(m.group(1))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/gapfill_scale"))
    p.add_argument("--cases", default="io,linear,linear0,eof,eof0,gan,gan0,pydineof",
                   help="io, linear, eof, gan (10%% hold-out scored), linear0, eof0, gan0 (no "
                        "hold-out), pydineof; gan rows: `gapfill train` then `gapfill run` with "
                        "the saved model")
    p.add_argument("--gan-budget", type=float, default=300, help="gan training seconds")
    p.add_argument("--workers", type=int, default=2, help="dask worker threads")
    p.add_argument("--pydineof-budget", type=float, default=1800, help="seconds per pyDINEOF try")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--block", type=int, nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    shape = SIZES[args.size]
    work = args.workdir / args.size
    if args.case:  # inside a measured subprocess
        info = (case_io(work, args.workers) if args.case == "io"
                else case_pydineof(work, *args.block))
        print("RESULT " + json.dumps(info))
        return

    work.mkdir(parents=True, exist_ok=True)
    store = work / "sst.zarr"
    if not store.exists():
        t0 = time.perf_counter()
        generate(store, shape)
        print(f"generated {store} {shape} in {time.perf_counter() - t0:.0f} s", flush=True)
    gb = math.prod(shape) * 4 / 2**30
    results: dict[str, dict] = {}
    me = [sys.executable, os.path.abspath(__file__), "--size", args.size, "--workdir",
          str(args.workdir), "--workers", str(args.workers)]
    gapfill_cmd = [sys.executable, "-m", "gapfill", "run"]
    for case in args.cases.split(","):
        if case == "io":
            results["I/O floor (xarray read + Zarr write)"] = measure([*me, "--case", "io"])
        elif case.rstrip("0") in ("linear", "eof"):
            method = case.rstrip("0")
            holdout = 0.0 if case.endswith("0") else 0.1
            options = {"max_modes": 20} if method == "eof" else {}
            recipe = recipe_for(work, method, args.workers, options, holdout)
            r = measure([*gapfill_cmd, str(recipe)])
            r["note"] = f"hold-out {holdout:.0%}" + (" (scored: one more fill)" if holdout else "")
            stages = stage_times(r["log_tail"])
            if stages:
                r["note"] += "; " + ", ".join(f"{k} {v:g} s" for k, v in stages.items())
            results[f"gapfill run {method}, hold-out {holdout:g}"] = r
        elif case.rstrip("0") == "gan":
            holdout = 0.0 if case.endswith("0") else 0.1
            # time_halo: time chunks + 16 frames each side (memory bounded by a chunk)
            options = {"time_budget": args.gan_budget, "threads": args.workers,
                       "progress": "log", "eval_every": 25, "seed": 0, "time_halo": 16}
            # One dask thread: torch parallelises inside a chunk (threads), and two chunks
            # filled at once would hold two chunks' windows and guides.
            recipe = recipe_for(work, "gan", 1, options, holdout)
            r = measure([sys.executable, "-m", "gapfill", "train", str(recipe), "--overwrite"])
            r["note"] = f"hold-out {holdout:.0%}; training windows sampled from the store"
            results[f"gapfill train gan, hold-out {holdout:g}"] = r
            model = work / f"filled_gan_holdout{holdout:g}_model.pt"  # train's default path
            recipe = recipe_for(work, "gan", 1, options, holdout, model=model)
            r = measure([*gapfill_cmd, str(recipe)])
            r["note"] = f"hold-out {holdout:.0%}, saved model" + (
                " (scored: one more fill)" if holdout else "")
            stages = stage_times(r["log_tail"])
            if stages:
                r["note"] += "; " + ", ".join(f"{k} {v:g} s" for k, v in stages.items())
            results[f"gapfill run gan (trained), hold-out {holdout:g}"] = r
        elif case == "pydineof":
            results.update(run_pydineof_growing(me, shape, args.pydineof_budget))
        print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "log_tail"}
                          for k, v in results.items()}), flush=True)
    floor = results.get("I/O floor (xarray read + Zarr write)", {}).get("seconds")
    lines = [
        f"cube {shape[0]} × {shape[1]} × {shape[2]} float32 ({gb:.2f} GiB), Zarr chunks of "
        f"{CHUNK_DAYS} days, a dask LocalCluster of {args.workers} threads (the recipe default, "
        f"processes: false), {os.cpu_count()} CPU cores",
        "",
        "| case | wall time (s) | × I/O floor | peak RSS, process tree (GB) | note |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name, r in results.items():
        ratio = f"{r['seconds'] / floor:.2f}" if floor and r.get("returncode") == 0 else ""
        if name.startswith("pyDINEOF"):
            ratio = ""  # a part of the cube: not comparable with the floor
        note = r.get("note", "")
        if r.get("returncode") not in (0, None):
            note = (f"FAILED (rc {r['returncode']}"
                    f"{', timeout' if r.get('timed_out') else ''}) {note}")
        lines.append(f"| {name} | {r['seconds']} | {ratio} | {r['peak_rss_gb']} | {note} |")
    table = "\n".join(lines)
    print(table)
    (work / "results.md").write_text(table + "\n")
    (work / "results.json").write_text(json.dumps(results, indent=1))
    for name, r in results.items():
        if r.get("returncode") not in (0, None):
            print(f"--- {name} log tail ---\n{r['log_tail']}")


def run_pydineof_growing(me: list[str], shape: tuple[int, int, int], budget: float) -> dict:
    """pyDINEOF on growing spatial blocks (all times) until one fails, exceeds ``budget``
    or would need more than half the available memory (about 8 copies of its float32
    matrix, measured on the small cube)."""
    import psutil

    n_time, height, width = shape
    out = {}
    fractions = [1 / 64, 1 / 16, 1 / 4, 1.0]
    for frac in fractions:
        side = math.sqrt(frac)
        h, w = max(8, int(height * side)), max(8, int(width * side))
        need = 8 * 4 * n_time * h * w
        if need > psutil.virtual_memory().available / 2:
            out[f"pyDINEOF run_2D, {frac:.3g} of the grid"] = {
                "seconds": "", "peak_rss_gb": "", "returncode": None,
                "note": f"skipped: would need about {need / 2**30:.1f} GB (half the free memory "
                        "is the limit on this shared machine)"}
            break
        r = measure([*me, "--case", "pydineof", "--block", str(h), str(w)], timeout=budget)
        info = next((json.loads(line[7:]) for line in r["log_tail"].splitlines()
                     if line.startswith("RESULT ")), {})
        r["note"] = f"{shape[0]} × {h} × {w} ({frac:.3g} of the grid, {info.get('pixels', '?')} " \
                    "ocean pixels)"
        out[f"pyDINEOF run_2D, {frac:.3g} of the grid"] = r
        if r["returncode"] != 0:
            break
    return out


if __name__ == "__main__":
    main()
