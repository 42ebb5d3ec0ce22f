"""How honest are the error figures? Calibration of ``<name>_error`` and of the hold-out MAE.

Four real cubes get gaps punched in (so the truth under them is known):

- ``ostia``: OSTIA monthly SST (iris-sample-data, 54 × 18 × 432), 40 % drifting clouds;
- ``a1b``: HadCM3 A1B air temperature (iris-sample-data, 240 yearly means × 37 × 49), 50 % large
  drifting clouds (length scale 12 px);
- ``pacific``: the eofs package's NDJFM Pacific SST anomaly (50 × 18 × 30), 40 % clouds;
- ``hgt``: the eofs package's DJF 500 hPa geopotential height (65 × 29 × 49, m), 40 % clouds.

Each method is fitted with its defaults (hold-out 10 %, ``auto`` process; the learned
methods with the short training budgets of :data:`OPTIONS`) and filled; the table gives,
per cube and method: the true MAE in the punched gaps, the hold-out MAE the product
reports, their ratio (target 0.85–1.15), and the share of the true errors within 1σ and
2σ of ``<name>_error`` (targets 63–73 % and 92–98 %), with the hold-out's own shares and
the standard errors of the ratio and of the two shares (``±`` columns, a block bootstrap
over stretches of time: :func:`block_bootstrap`). ``*`` marks a figure outside its target
band. ``scale`` and ``trans`` are the model's hold-out scale (``gapfill_holdout_scale``) and
the scored fill's transfer (``gapfill_holdout_transfer``): the reported hold-out MAE is the
scored one times both; ``draws``, how many validation draws the error model pooled
(``info["validation_draws"]``); ``ctl`` and ``slope``, the factor a one-draw error model
was rescaled by and the weight given to ``linear``'s draws in it
(``info["validation_control"]``, ``info["validation_control_slope"]``), and ``1σ/ctl`` and
``2σ/ctl`` the true shares with σ not rescaled by it; ``gain``, the factor for the
observations the validation fill lacks (``info["observation_gain"]``), and ``1σ/gain`` and
``2σ/gain`` the true shares with σ not multiplied by it.

Run::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/calibration.py
    python benchmarks/calibration.py --methods eof linear climatology --seeds 0 1 2
    python benchmarks/calibration.py --methods combcn gan --seeds 0
    python benchmarks/calibration.py --cubes pacific hgt --methods regem --option length=null
    python benchmarks/calibration.py --methods tgfnet stgconvnet flowfill --seeds 0
    python benchmarks/calibration.py --cubes ostia --methods flowfill --seeds 2 --by-distance

Run with seeds 0–6, the means over seeds and the runs out of band per cube and method are
in ``docs/product.md`` ("How calibrated it is"), single runs and the alternatives measured
in ``docs/benchmarks.md`` ("The error model and the hold-out"). The figures of one run are
uncertain: the punched gaps and the hold-out are a few drifting patches each, and the ``±``
columns (ratio 0.05–0.12, 1σ share 1–3 points) are as large as the room the bands leave, so
a calibrated method misses a band in some runs by chance alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import xarray as xr

sys.path.insert(0, os.path.dirname(__file__))
from common import load_ostia, parse_options  # noqa: E402

import gapfill  # noqa: E402, F401  (registers the accessor)
from gapfill import errors, masks  # noqa: E402
from gapfill.diagnostics import time_block_draws  # noqa: E402

#: Options of the learned methods: a short training budget on 2 CPU cores.
OPTIONS = {
    "combcn": {"time_budget": 60.0, "progress": "off"},
    "tgfnet": {"time_budget": 60.0, "progress": "off"},
    "stgconvnet": {"time_budget": 60.0, "progress": "off"},
    "flowfill": {"time_budget": 60.0, "progress": "off"},
    "gan": {"time_budget": 120.0, "progress": "off"},
}


def _load(path: str, name: str) -> xr.DataArray:
    with xr.open_dataset(path) as ds:
        da = ds[name].load()
    da = da.rename({"latitude": "lat", "longitude": "lon"})
    return da.drop_vars([c for c in da.coords if c not in da.dims])


def load_a1b() -> xr.DataArray:
    """A1B air temperature over North America (240 × 37 × 49, K)."""
    import iris_sample_data

    root = os.path.join(os.path.dirname(iris_sample_data.__file__), "sample_data")
    return _load(os.path.join(root, "A1B_north_america.nc"), "air_temperature")


def load_pacific() -> xr.DataArray:
    """NDJFM Pacific SST anomaly from the eofs examples (50 × 18 × 30, K, land NaN)."""
    import eofs

    root = os.path.join(os.path.dirname(eofs.__file__), "examples", "example_data")
    return _load(os.path.join(root, "sst_ndjfm_anom.nc"), "sst")


def load_hgt() -> xr.DataArray:
    """DJF 500 hPa geopotential height from the eofs examples (65 × 29 × 49, m)."""
    import eofs

    root = os.path.join(os.path.dirname(eofs.__file__), "examples", "example_data")
    with xr.open_dataset(os.path.join(root, "hgt_djf.nc")) as ds:
        da = ds["z"].isel(pressure=0, drop=True).load()
    da.attrs["units"] = "m"
    da = da.rename({"latitude": "lat", "longitude": "lon"})
    return da.drop_vars([c for c in da.coords if c not in da.dims])


CUBES = {
    "ostia": (load_ostia, {"coverage": 0.4, "periodic": (False, True)}),
    "a1b": (load_a1b, {"coverage": 0.5, "length_scale": 12.0, "velocity": (1.0, 2.0)}),
    "pacific": (load_pacific, {"coverage": 0.4, "length_scale": 4.0}),
    "hgt": (load_hgt, {"coverage": 0.4, "length_scale": 4.0}),
}


def block_bootstrap(
    n_time: int,
    holdout_time: np.ndarray,
    holdout_abs: np.ndarray,
    gap_time: np.ndarray,
    gap_abs: np.ndarray,
    gap_sigma: np.ndarray,
    seed: int = 0,
) -> dict[str, float]:
    """Standard errors of the ratio and of the shares within 1σ and 2σ.

    The ``n_time`` steps are cut into stretches, which are drawn with replacement
    (:func:`gapfill.diagnostics.time_block_draws`, as for the product's ``mae_se``: the
    punched gaps and the hold-out are a few drifting patches each, so their pixels are not
    independent); the hold-out errors (at steps ``holdout_time``)
    and the errors in the punched gaps (at ``gap_time``, with their predicted sigma)
    of the same stretches are pooled in each resample.
    """
    block, draw = time_block_draws(n_time, seed)

    def sums(t: np.ndarray, w: np.ndarray) -> np.ndarray:
        return np.bincount(block[t], weights=w.astype(np.float64), minlength=draw.shape[1])

    h_sum, h_n = sums(holdout_time, holdout_abs), sums(holdout_time, np.ones(holdout_abs.size))
    g_n = sums(gap_time, np.ones(gap_abs.size))
    g_sum = sums(gap_time, gap_abs)
    g_one = sums(gap_time, gap_abs <= gap_sigma)
    g_two = sums(gap_time, gap_abs <= 2 * gap_sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = g_n[draw].sum(1)
        ratio = (h_sum[draw].sum(1) / h_n[draw].sum(1)) / (g_sum[draw].sum(1) / n)
        one, two = g_one[draw].sum(1) / n, g_two[draw].sum(1) / n
    return {"ratio_se": float(np.nanstd(ratio)), "within_1sigma_se": float(np.nanstd(one)),
            "within_2sigma_se": float(np.nanstd(two))}


def punched(cube: str, seed: int) -> tuple[xr.DataArray, np.ndarray, xr.DataArray]:
    """The cube's truth, the gaps punched into it (clouds of ``seed``) and the gappy cube."""
    load, punch = CUBES[cube]
    truth = load()
    hidden = masks.Cloud(seed=seed, **punch).sample(truth.shape)
    return truth, hidden, truth.where(~hidden)


#: Bins of distance (pixels) to the nearest observation for ``--by-distance``.
DISTANCE_BINS = (0, 1.5, 2.5, 4.5, 8.5, 16.5, np.inf)


def by_distance(observed: np.ndarray, err: np.ndarray, sig: np.ndarray,
                where: np.ndarray) -> list[tuple[float, float, int, float, float, float, float]]:
    """Per bin of :data:`DISTANCE_BINS`: its edges, the count, the MAE, the root mean square
    σ and the shares of ``err`` within 1σ and 2σ, at the ``where`` pixels."""
    distance = errors.space_distance(observed, cap=10**6)
    rows = []
    for lo, hi in zip(DISTANCE_BINS[:-1], DISTANCE_BINS[1:]):
        sel = where & (distance >= lo) & (distance < hi)
        if sel.any():
            one, two = errors.within_shares(err[sel], sig[sel])
            rows.append((lo, hi, int(sel.sum()), float(err[sel].mean()),
                         float(np.sqrt((sig[sel] ** 2).mean())), one, two))
    return rows


def run(cube: str, method: str, seed: int, options: dict | None = None,
        distances: bool = False) -> dict[str, float]:
    """Punch, fit, fill and score one method on one cube (``options`` over its defaults
    and :data:`OPTIONS`); with ``distances``, also :func:`by_distance`."""
    truth, hidden, gappy = punched(cube, seed)
    scored = hidden & np.isfinite(truth.values) & np.isfinite(gappy.values).any(0)
    t0 = time.perf_counter()
    model = gappy.gapfill.fit(method, seed=seed, **{**OPTIONS.get(method, {}), **(options or {})})
    fit_s = time.perf_counter() - t0
    diagnostics = gappy.gapfill.score(model, seed=seed)
    out = gappy.gapfill.fill(model, diagnostics=diagnostics)
    name = gappy.name
    abs_error = np.abs(out[name].values - truth.values)
    sigma = out[f"{name}_error"].values
    ok = scored & np.isfinite(abs_error) & np.isfinite(sigma)
    err, sig = abs_error[ok], sigma[ok]
    one, two = errors.within_shares(err, sig)
    control = float(model.info.get("validation_control", 1.0))
    one_plain, two_plain = errors.within_shares(err, sig / control)
    gain = float(model.info.get("observation_gain", 1.0))
    one_gain, two_gain = errors.within_shares(err, sig / gain)
    a = out.attrs
    true_mae = float(err.mean())
    spread = block_bootstrap(truth.shape[0], np.asarray(diagnostics.time_index),
                             np.abs(np.asarray(diagnostics.errors)), np.nonzero(ok)[0], err, sig,
                             seed=seed)
    return {
        "true_mae": true_mae,
        "holdout_mae": float(a["gapfill_holdout_mae"]),
        "ratio": float(a["gapfill_holdout_mae"]) / true_mae,
        "within_1sigma": one,
        "within_2sigma": two,
        "holdout_1sigma": float(a.get("gapfill_holdout_within_1sigma", np.nan)),
        "holdout_2sigma": float(a.get("gapfill_holdout_within_2sigma", np.nan)),
        "holdout_process": model.holdout.process,
        "fit_s": fit_s,
        "calibration_s": float(model.info.get("calibration_seconds", np.nan)),
        "scale": float(a.get("gapfill_holdout_scale", np.nan)),
        "transfer": float(a.get("gapfill_holdout_transfer", np.nan)),
        "draws": int(model.info.get("validation_draws", 1)),
        "control": control,
        "within_1sigma_plain": one_plain,
        "within_2sigma_plain": two_plain,
        "control_slope": float(model.info.get("validation_control_slope", 0.0)),
        "gain": gain,
        "within_1sigma_gain": one_gain,
        "within_2sigma_gain": two_gain,
        "by_distance": (by_distance(np.isfinite(gappy.values), abs_error, sigma, ok)
                        if distances else []),
        **spread,
    }


def _mark(value: float, low: float, high: float) -> str:
    return " " if low <= value <= high else "*"


def main(argv: list[str] | None = None) -> None:
    """Print the calibration table (``*`` marks a figure outside its target band)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cubes", nargs="+", default=list(CUBES), choices=list(CUBES))
    parser.add_argument("--methods", nargs="+", default=["eof", "linear", "climatology", "combcn"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of every method run, e.g. --option ridge=validate "
                             "(the value is read as JSON, else as text)")
    parser.add_argument("--by-distance", action="store_true",
                        help="also print each run's MAE, σ and shares within 1σ and 2σ by "
                             "distance to the nearest observation")
    args = parser.parse_args(argv)
    options = parse_options(args.option)
    print(f"{'cube':8} {'method':12} {'seed':>4} {'true MAE':>9} {'hold-out':>9} {'ratio':>7} "
          f"{'in 1σ':>7} {'in 2σ':>7} {'h 1σ':>6} {'h 2σ':>6} {'± ratio':>7} {'± 1σ':>6} "
          f"{'± 2σ':>6} {'process':>10} {'fit s':>7} {'cal s':>6} {'scale':>6} {'trans':>6} "
          f"{'draws':>5} {'ctl':>5} {'slope':>5} {'1σ/ctl':>6} {'2σ/ctl':>6} {'gain':>5} "
          f"{'1σ/gain':>7} {'2σ/gain':>7}")
    for cube in args.cubes:
        for method in args.methods:
            for seed in args.seeds:
                try:
                    r = run(cube, method, seed, options, distances=args.by_distance)
                except ValueError as err:  # a method's size limit (regem's max_pixels)
                    if "max_pixels" not in str(err):
                        raise
                    print(f"{cube:8} {method:12} {seed:>4}  not run: {err}", flush=True)
                    continue
                print(
                    f"{cube:8} {method:12} {seed:>4} {r['true_mae']:9.4f} {r['holdout_mae']:9.4f} "
                    f"{r['ratio']:6.2f}{_mark(r['ratio'], 0.85, 1.15)} "
                    f"{r['within_1sigma']:6.1%}{_mark(r['within_1sigma'], 0.63, 0.73)} "
                    f"{r['within_2sigma']:6.1%}{_mark(r['within_2sigma'], 0.92, 0.98)} "
                    f"{r['holdout_1sigma']:6.1%} {r['holdout_2sigma']:6.1%} "
                    f"{r['ratio_se']:7.2f} {r['within_1sigma_se']:6.1%} "
                    f"{r['within_2sigma_se']:6.1%} "
                    f"{r['holdout_process']:>10} {r['fit_s']:7.1f} {r['calibration_s']:6.2f} "
                    f"{r['scale']:6.3f} {r['transfer']:6.3f} {r['draws']:5d} {r['control']:5.3f} "
                    f"{r['control_slope']:5.2f} {r['within_1sigma_plain']:6.1%} "
                    f"{r['within_2sigma_plain']:6.1%} {r['gain']:5.3f} "
                    f"{r['within_1sigma_gain']:7.1%} {r['within_2sigma_gain']:7.1%}",
                    flush=True,
                )
                if args.by_distance:
                    for lo, hi, n, mae, sig, one, two in r["by_distance"]:
                        print(f"    {lo:4.1f}–{hi:<4.1f} px  n {n:7d}  MAE {mae:9.4f}  "
                              f"rms σ {sig:9.4f}  in 1σ {one:6.1%}  in 2σ {two:6.1%}",
                              flush=True)


if __name__ == "__main__":
    main()
