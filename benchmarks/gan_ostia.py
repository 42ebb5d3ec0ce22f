"""Benchmark of the ``gan`` method on the OSTIA monthly SST cube (iris-sample-data).

Cloud-shaped gaps (``masks.Cloud``, ~40% of the ocean pixels of every month)
are punched into the gap-free OSTIA analysis; the hidden ocean pixels are the
truth. Each method fills the gappy cube and is scored (MAE, RMSE in K) on the
hidden ocean pixels only, with train and fill wall times.

Rows: linear time interpolation, the DINEOF-style EOF reconstruction and the
EOF + interpolated residuals field that ``gan`` uses as guide, optionally
pyDINEOF (``--dineof``), and ``gan`` with the re-occlusion process
``cloud`` or ``empirical`` (the gappy cube's own gap patterns), with and
without the self-supervised L1 term, and with that term's hides at the data's
own gap share, with (``gan-cloud-recon-datacov``) and without
(``l1-only-datacov``) the adversarial terms.

Usage::

    python benchmarks/gan_ostia.py                       # defaults (about 6 x 12 min on 2 cores)
    # the best setting measured (docs/methods.md), on two cloud draws, alone on 2 cores:
    OMP_NUM_THREADS=2 python benchmarks/gan_ostia.py --dineof --rows l1-only-datacov \
        --time-budget 600 --option threads=2 --option eval_every=25 --option lr=3e-4 --seed 0
    # (and --seed 1; add --samples 8 to score the mean of 8 stochastic fills too)
    python benchmarks/gan_ostia.py --time-budget 120 --rows gan-cloud-recon
    python benchmarks/gan_ostia.py --dineof --json /tmp/gan_ostia.json
    # truth MAE of the generator every 100 steps up to 1000 (does validation track it?):
    python benchmarks/gan_ostia.py --rows gan-cloud-recon --trajectory 100 1000
    # on a shared machine, one thread per process avoids OpenMP/BLAS stalls:
    OMP_NUM_THREADS=1 python benchmarks/gan_ostia.py --dineof --time-budget 300

:func:`score` is reusable: ``score(truth, gappy, filled)`` -> ``{"mae", "rmse", "n"}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from typing import Any

import numpy as np
import xarray as xr

import gapfill  # noqa: F401  (the .gapfill accessor)

ROWS: dict[str, dict[str, Any]] = {
    "gan-cloud-recon": {"occlusion": "cloud"},
    "gan-cloud-norecon": {"occlusion": "cloud", "recon_weight": 0.0},
    "gan-empirical-recon": {"occlusion": "empirical"},
    "gan-empirical-norecon": {"occlusion": "empirical", "recon_weight": 0.0},
    # the self-supervised L1 term with hides at the data's own gap share (recon_coverage
    # None), with and without the adversarial terms
    "gan-cloud-recon-datacov": {"occlusion": "cloud", "recon_coverage": None},
    "l1-only-datacov": {"occlusion": "cloud", "recon_coverage": None, "adv_weight": 0.0},
}


def load_ostia() -> xr.DataArray:
    """The OSTIA monthly SST cube (K), land as NaN."""
    import iris_sample_data

    root = os.path.dirname(iris_sample_data.__file__)
    path = os.path.join(root, "sample_data", "ostia_monthly.nc")
    with xr.open_dataset(path) as ds:
        return ds["surface_temperature"].load()


def punch_clouds(truth: xr.DataArray, coverage: float = 0.4, seed: int = 0) -> xr.DataArray:
    """Hide cloud-shaped gaps (``masks.Cloud``) in ``truth``; returns the gappy cube."""
    from gapfill import masks

    cloud = masks.Cloud(coverage=coverage, seed=seed, periodic=(False, True))
    hidden = cloud.sample(truth.shape)
    return truth.where(~hidden)


def score(truth: Any, gappy: Any, filled: Any) -> dict[str, float]:
    """MAE and RMSE of ``filled`` on the pixels hidden in ``gappy`` but known in ``truth``.

    Parameters
    ----------
    truth, gappy, filled
        Arrays (or DataArrays) of the same shape; NaN in ``truth`` is land /
        never observed, NaN in ``gappy`` marks the gaps.

    Returns
    -------
    dict
        ``mae``, ``rmse`` (units of the data), ``n`` scored pixels and
        ``unfilled`` (scored pixels left NaN by the method, counted as missing).
    """
    t, g, f = (np.asarray(a, dtype=np.float64) for a in (truth, gappy, filled))
    sel = np.isfinite(t) & ~np.isfinite(g)
    err = f[sel] - t[sel]
    ok = np.isfinite(err)
    return {
        "mae": float(np.abs(err[ok]).mean()),
        "rmse": float(np.sqrt((err[ok] ** 2).mean())),
        "n": int(sel.sum()),
        "unfilled": int((~ok).sum()),
    }


def linear_time(gappy: xr.DataArray) -> np.ndarray:
    """Linear interpolation in time per pixel (nearest value at the ends)."""
    y = np.asarray(gappy.values, dtype=np.float64)
    t = np.arange(y.shape[0])
    flat = y.reshape(len(t), -1).copy()
    for j in range(flat.shape[1]):
        o = np.isfinite(flat[:, j])
        if o.any() and not o.all():
            flat[~o, j] = np.interp(t[~o], t[o], flat[o, j])
    return flat.reshape(y.shape)


def eof_guides(gappy: xr.DataArray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int, Any]:
    """The GAN's guides on their own: EOF, and EOF plus interpolated residuals.

    Modes and the interpolation width are chosen on held-out cloud-shaped
    pixels of ~5% of the observations (:func:`gapfill.methods.gan.validation_mask`),
    as ``gan`` does.
    """
    from gapfill import masks
    from gapfill.methods.gan import choose_eof_modes, choose_sigma, eof_reconstruction
    from gapfill.methods.gan import interpolate_residuals, validation_mask

    y = np.asarray(gappy.values, dtype=np.float64)[None]
    mean, std = np.nanmean(y), np.nanstd(y)
    z = (y - mean) / std
    missing = ~np.isfinite(z[0])
    hidden = masks.Cloud(coverage=0.4, seed=seed + 1).sample(y.shape[1:])
    val = validation_mask(hidden, missing, 0.05, np.random.default_rng(seed))[None]
    zv = np.where(val, np.nan, z)
    k = choose_eof_modes(zv, val, z)
    sigma = choose_sigma(zv, eof_reconstruction(zv, k), val, z)
    eof = eof_reconstruction(z, k)
    interp = eof if sigma is None else interpolate_residuals(z, eof, sigma)
    obs = np.isfinite(y[0])
    return (np.where(obs, y[0], eof[0] * std + mean), np.where(obs, y[0], interp[0] * std + mean),
            k, sigma)


def dineof(gappy: xr.DataArray, nev: int = 10) -> np.ndarray:
    """pyDINEOF's ``run_2D`` (kelvin, integer time steps, ocean mask)."""
    import pydineof

    da = gappy.rename(latitude="lat", longitude="lon").assign_coords(
        time=np.arange(gappy.sizes["time"])
    )
    ocean = np.isfinite(gappy).any("time").rename(latitude="lat", longitude="lon")
    ncv = min(nev + 15, gappy.sizes["time"] - 1)
    out = pydineof.run_2D(da, mask=ocean, nev=nev, ncv=ncv, seed=0)
    return np.asarray(out.transpose("time", "lat", "lon").values, dtype=np.float64)


def run_gan(
    gappy: xr.DataArray, options: dict[str, Any], seed: int = 0, samples: int = 1
) -> tuple[np.ndarray, dict]:
    """Fit ``gan`` on the gappy cube and fill it; returns the filled cube (K) and timings.

    With ``samples > 1`` the info also has ``filled_mean``: the mean of that many
    stochastic fills (dropout kept on), and ``mean_fill_s``.
    """
    from gapfill.cube import Cube
    from gapfill.methods.gan import GAN

    rng = np.random.default_rng(seed)
    cube = Cube(gappy)
    method = GAN(**{"seed": seed, **options})
    t0 = time.perf_counter()
    method.fit(cube, rng)
    t1 = time.perf_counter()
    res = method.fill(cube.values(), rng, coords=cube.coords())
    t2 = time.perf_counter()
    filled = cube.normaliser.denormalise(res.values)[0]
    info = {"train_s": t1 - t0, "fill_s": t2 - t1, **method.fit_info}
    if samples > 1:
        res = method.fill(cube.values(), rng, samples=samples, coords=cube.coords())
        info["filled_mean"] = cube.normaliser.denormalise(res.values)[0]
        info["mean_fill_s"] = time.perf_counter() - t2
    return filled, info


def gan_trajectory(
    truth: xr.DataArray, gappy: xr.DataArray, options: dict[str, Any], every: int, total: int,
    workdir: str, seed: int = 0,
) -> list[dict[str, Any]]:
    """Score the generator against the truth every ``every`` steps of one training run.

    Trains in segments that resume from checkpoints (``resume=True``, early stopping
    off) and, after each, fills with the generator *of that step* (not the best one
    kept by validation) and scores it; the row also has the run's validation MAE at
    that step. Shows whether the self-supervised validation tracks the error in the
    real gaps.
    """
    import torch

    from gapfill.cube import Cube
    from gapfill.methods.gan import GAN
    from gapfill.training import CheckpointManager

    cube = Cube(gappy)
    rows = []
    for steps in range(every, total + 1, every):
        method = GAN(**{"seed": seed, **options, "steps": steps, "time_budget": None,
                        "checkpoint_dir": workdir, "checkpoint_every": every, "resume": True,
                        "early_stopping_patience": None, "eval_every": every})
        method.fit(cube, np.random.default_rng(seed))
        ckpt = torch.load(CheckpointManager(workdir).latest(), weights_only=True)
        method.generator.load_state_dict(ckpt["G"])  # this step's weights, not the best
        res = method.fill(cube.values(), np.random.default_rng(seed), coords=cube.coords())
        with open(os.path.join(workdir, "log.csv")) as f:  # the run's log: step, ..., val_mae
            logged = {int(r["step"]): r["val_mae"] for r in csv.DictReader(f)}
        row = {"step": int(ckpt["step"]), "val_mae": float(logged[int(ckpt["step"])]),
               **score(truth, gappy, cube.normaliser.denormalise(res.values)[0])}
        rows.append(row)
        print(f"step {row['step']:5d}  val MAE {row['val_mae']:.4f}  truth MAE {row['mae']:.4f} K",
              flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--time-budget", type=float, default=None, help="seconds per gan fit")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--option", action="append", default=[], metavar="KEY=JSON",
                   help="extra gan option for every row, e.g. --option lr=2e-4")
    p.add_argument("--coverage", type=float, default=0.4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dineof", action="store_true", help="add a pyDINEOF row")
    p.add_argument("--samples", type=int, default=1,
                   help="also score the mean of this many stochastic gan fills")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--trajectory", type=int, nargs=2, metavar=("EVERY", "TOTAL"), default=None,
                   help="instead of the table: score each row's generator against the truth "
                        "every EVERY steps up to TOTAL (checkpoints in --workdir)")
    p.add_argument("--workdir", default="/tmp/gan_ostia_trajectory")
    args = p.parse_args(argv)

    truth = load_ostia()
    gappy = punch_clouds(truth, args.coverage, args.seed)
    extra: dict[str, Any] = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.option)}
    if args.time_budget is not None:
        extra["time_budget"] = args.time_budget
    if args.steps is not None:
        extra["steps"] = args.steps
    ocean = np.isfinite(truth.values)
    hidden_share = float((ocean & ~np.isfinite(gappy.values)).sum() / ocean.sum())
    print(f"OSTIA {dict(truth.sizes)}; cloud gaps hide {hidden_share:.1%} of ocean pixels",
          flush=True)

    if args.trajectory:
        import shutil

        traj = {}
        for name in args.rows:
            workdir = os.path.join(args.workdir, name)
            shutil.rmtree(workdir, ignore_errors=True)
            print(name, flush=True)
            traj[name] = gan_trajectory(truth, gappy, {**ROWS[name], **extra},
                                        *args.trajectory, workdir, args.seed)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "extra_options": extra, "trajectory": traj}, f,
                          indent=1)
        return 0

    results: list[dict[str, Any]] = []

    def add(name: str, filled: np.ndarray, train_s: float, fill_s: float, **info: Any) -> None:
        row = {"method": name, **score(truth, gappy, filled), "train_s": train_s, "fill_s": fill_s}
        row.update(info)
        results.append(row)
        print(f"{name:24s} MAE {row['mae']:.4f} K  RMSE {row['rmse']:.4f} K  "
              f"train {train_s:7.1f} s  fill {fill_s:5.1f} s", flush=True)

    t0 = time.perf_counter()
    lin = linear_time(gappy)
    add("linear (time)", lin, 0.0, time.perf_counter() - t0)
    t0 = time.perf_counter()
    filled = gappy.gapfill.fill(gappy.gapfill.fit("eof", holdout=0.0, seed=args.seed))
    add("eof method (DINEOF)", np.asarray(filled[gappy.name].values, dtype=np.float64), 0.0,
        time.perf_counter() - t0)
    t0 = time.perf_counter()
    eof, interp, k, sigma = eof_guides(gappy, args.seed)
    dt = time.perf_counter() - t0
    add(f"gan guide: eof (k={k})", eof, 0.0, dt)
    add(f"gan guide: eof + residual interp {sigma}", interp, 0.0, dt)
    if args.dineof:
        for nev in (5, 10):
            t0 = time.perf_counter()
            add(f"pyDINEOF (nev={nev})", dineof(gappy, nev), 0.0, time.perf_counter() - t0)
    for name in args.rows:
        filled, info = run_gan(gappy, {**ROWS[name], **extra}, args.seed, args.samples)
        keep = {k: info.get(k) for k in ("steps", "stopped_by", "best_step", "best_val_mae",
                                          "guide_val_mae", "guide_modes")}
        add(name, filled, info["train_s"], info["fill_s"], **keep)
        if args.samples > 1:
            add(f"{name}, mean of {args.samples} fills", info["filled_mean"], info["train_s"],
                info["mean_fill_s"])

    print("\n| method | MAE (K) | RMSE (K) | train (s) | fill (s) |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['method']} | {r['mae']:.4f} | {r['rmse']:.4f} | {r['train_s']:.0f} | "
              f"{r['fill_s']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "extra_options": extra, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
