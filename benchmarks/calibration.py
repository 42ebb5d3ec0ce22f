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
band.

Run::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/calibration.py
    python benchmarks/calibration.py --methods eof linear climatology --seeds 0 1 2
    python benchmarks/calibration.py --methods combcn gan --seeds 0
    python benchmarks/calibration.py --cubes pacific hgt --methods regem --option ridge=validate
    python benchmarks/calibration.py --methods tgfnet stgconvnet flowfill --seeds 0

Measured on a 2-core machine with ``OMP_NUM_THREADS=1`` (``--methods eof linear
climatology --seeds 0 1 2``, and ``combcn`` from the runs below)::

    cube     method       seed  true MAE  hold-out   ratio   in 1σ   in 2σ
    ostia    eof             0    0.4410    0.4507   1.02   71.7%   94.9%
    ostia    eof             1    0.4412    0.4324   0.98   71.9%   94.6%
    ostia    eof             2    0.4016    0.3770   0.94   70.0%   94.0%
    ostia    linear          0    0.9629    0.8156   0.85*  72.3%   94.8%
    ostia    linear          1    0.8490    0.7225   0.85   72.6%   94.0%
    ostia    linear          2    0.7275    0.8094   1.11   71.1%   92.7%
    ostia    climatology     0    0.9666    0.9405   0.97   69.5%   95.5%
    ostia    climatology     1    0.8502    0.8989   1.06   72.7%   95.3%
    ostia    climatology     2    0.8046    0.9740   1.21*  68.1%   92.8%
    a1b      eof             0    0.4788    0.4398   0.92   67.4%   93.7%
    a1b      eof             1    0.4558    0.3959   0.87   65.3%   93.0%
    a1b      eof             2    0.4737    0.5144   1.09   66.2%   93.0%
    a1b      linear          0    0.8158    0.8785   1.08   66.8%   91.0%*
    a1b      linear          1    0.8752    0.7703   0.88   72.8%   93.3%
    a1b      linear          2    0.8453    0.8816   1.04   68.6%   92.4%
    a1b      climatology     0    1.7038    1.7578   1.03   61.4%*  89.4%*
    a1b      climatology     1    1.5147    1.5412   1.02   69.7%   93.5%
    a1b      climatology     2    1.6310    1.7443   1.07   64.2%   93.3%
    pacific  eof             0    0.3216    0.3211   1.00   66.2%   93.1%
    pacific  eof             1    0.3122    0.3400   1.09   69.4%   94.6%
    pacific  eof             2    0.2813    0.2773   0.99   68.8%   94.8%
    pacific  linear          0    0.4351    0.4996   1.15   71.0%   95.1%
    pacific  linear          1    0.4350    0.5704   1.31*  70.8%   95.3%
    pacific  linear          2    0.4321    0.4885   1.13   71.1%   96.0%
    pacific  climatology     0    0.4190    0.4784   1.14   67.9%   95.3%
    pacific  climatology     1    0.4316    0.4705   1.09   67.2%   94.9%
    pacific  climatology     2    0.4079    0.4531   1.11   70.4%   94.7%
    ostia    combcn          0    0.8141    0.7962   0.98   73.9%*  96.2%
    a1b      combcn          0    0.8215    0.8306   1.01   70.0%   92.2%
    pacific  combcn          0    0.3636    0.3714   1.02   75.0%*  96.6%

``gan`` (``--methods gan --cubes ostia a1b pacific --seeds 0 1``, 120 s each, one thread,
beside one other run, on a 2-core CPU with AVX-512 BF16,
bfloat16 steps; the guide and the share of the correction chosen by ``fit`` on its
validation pixels weighted by distance, :meth:`gapfill.methods.gan.GAN.tune`)::

    cube     method       seed  true MAE  hold-out   ratio   in 1σ   in 2σ   h 1σ   h 2σ
    ostia    gan             0    0.2621    0.3520   1.34*  78.7%*  96.8%   66.6%  90.4%
    ostia    gan             1    0.3052    0.3431   1.12   70.2%   93.8%   66.2%  92.0%
    a1b      gan             0    0.4625    0.4489   0.97   67.8%   93.1%   71.4%  94.0%
    a1b      gan             1    0.3883    0.3711   0.96   69.1%   94.0%   69.4%  93.9%
    pacific  gan             0    0.2536    0.2666   1.05   66.4%   90.8%*  63.2%  91.8%
    pacific  gan             1    0.2295    0.2668   1.16*  68.0%   93.1%   66.6%  90.1%

and the other learned methods (``--methods combcn tgfnet stgconvnet flowfill --seeds 0
--cubes ostia a1b pacific``, 60 s each, one thread, beside one other run; ``combcn``'s rows
are in the first table)::

    cube     method       seed  true MAE  hold-out   ratio   in 1σ   in 2σ   h 1σ   h 2σ
    ostia    tgfnet          0    0.8671    0.7903   0.91   72.4%   95.0%   71.0%  94.0%
    ostia    stgconvnet      0    0.9103    0.8508   0.93   72.6%   95.1%   72.5%  93.7%
    ostia    flowfill        0    0.7252    0.6691   0.92   71.0%   92.7%   73.6%  93.6%
    a1b      tgfnet          0    0.8190    0.8305   1.01   70.5%   92.3%   73.4%  95.8%
    a1b      stgconvnet      0    1.0669    1.1097   1.04   66.1%   92.6%   66.8%  93.2%
    a1b      flowfill        0    0.8199    0.8478   1.03   70.7%   92.3%   73.1%  95.2%
    pacific  tgfnet          0    0.3587    0.3642   1.02   75.0%*  96.6%   70.6%  94.2%
    pacific  stgconvnet      0    0.4662    0.4656   1.00   69.9%   96.1%   66.2%  92.8%
    pacific  flowfill        0    0.4627    0.4535   0.98   67.0%   92.6%   70.1%  94.9%

and on the Pacific anomaly at two more seeds (``--methods combcn tgfnet --cubes pacific --seeds
1 2``, 60 s each, one thread)::

    cube     method       seed  true MAE  hold-out   ratio   in 1σ   in 2σ   h 1σ   h 2σ
    pacific  combcn          1    0.3231    0.4025   1.25*  69.4%   95.2%   66.1%  92.1%
    pacific  combcn          2    0.3162    0.3148   1.00   66.6%   93.8%   72.3%  96.1%
    pacific  tgfnet          1    0.3392    0.3963   1.17*  70.0%   95.0%   71.6%  94.0%
    pacific  tgfnet          2    0.3085    0.3406   1.10   65.6%   92.5%   63.7%  94.1%

Over seeds 0 to 6 (``--methods eof linear climatology --seeds 0 1 2 3 4 5 6``) the ratio
was within its band in 57 of 63 runs, the 1σ share in 56 and the 2σ share in 59 (both
shares in 54; with ``eof``'s error model learned from a fit that chose its own number of
modes, not the product's, 57, 54 and 60, and both in 53; without the features that tell a
pixel next to an observation from the others, ``space_beyond_adjacent`` and
``time_beyond_adjacent``: 44, 59 and 43).

``regem`` on the two of these grids it takes (``--cubes pacific a1b --methods regem --seeds
0 1 2``, one thread, the A1B runs two side by side; on the Pacific anomaly, with its 1250
validation pixels, the error model pools four validation draws)::

    cube     method       seed  true MAE  hold-out   ratio   in 1σ   in 2σ
    pacific  regem           0    0.2566    0.2575   1.00   70.0%   94.1%
    pacific  regem           1    0.2420    0.2532   1.05   68.4%   93.9%
    pacific  regem           2    0.2300    0.2266   0.99   72.6%   96.0%
    a1b      regem           0    0.3459    0.3517   1.02   66.5%   93.7%
    a1b      regem           1    0.3235    0.2980   0.92   62.5%*  91.9%*
    a1b      regem           2    0.3360    0.3977   1.18*  64.7%   93.0%

The 500 hPa height is an out-of-sample check: none of the error model's settings were chosen
on it (``OMP_NUM_THREADS=1 python benchmarks/calibration.py --cubes hgt --methods eof linear
climatology regem --seeds 0 1 2``; MAE in m)::

    cube     method       seed  true MAE  hold-out   ratio   in 1σ   in 2σ
    hgt      eof             0   12.1996   11.4620   0.94   74.3%*  95.8%
    hgt      eof             1   13.6536   13.5375   0.99   67.7%   92.4%
    hgt      eof             2   13.7731   15.0423   1.09   68.3%   93.7%
    hgt      linear          0   40.4102   43.0768   1.07   67.1%   94.4%
    hgt      linear          1   38.8260   41.4310   1.07   74.1%*  96.7%
    hgt      linear          2   43.9819   38.9296   0.89   67.5%   93.6%
    hgt      climatology     0   34.1100   36.1368   1.06   67.0%   94.3%
    hgt      climatology     1   34.3966   35.2742   1.03   67.7%   93.2%
    hgt      climatology     2   37.1301   34.0301   0.92   65.5%   93.6%
    hgt      regem           0    8.6250    9.0109   1.04   71.9%   95.0%
    hgt      regem           1    9.2370    9.0135   0.98   65.7%   91.1%*
    hgt      regem           2    8.9844   10.7564   1.20*  66.5%   93.2%

``regem`` with its ridge chosen on hidden observations (``--cubes pacific hgt --methods
regem --seeds 0 1 2 --option ridge=validate``, one thread, two runs side by side)::

    pacific  regem           0    0.2548    0.2581   1.01   71.0%   94.5%
    pacific  regem           1    0.2414    0.2539   1.05   69.2%   94.3%
    pacific  regem           2    0.2307    0.2274   0.99   73.0%   96.0%
    hgt      regem           0    7.7588    7.9410   1.02   79.1%*  96.9%
    hgt      regem           1    8.3031    7.8352   0.94   73.2%*  94.2%
    hgt      regem           2    8.1070    9.4750   1.17*  78.1%*  96.7%
    a1b      regem           0    0.3456    0.3516   1.02   66.7%   93.8%   (--cubes a1b --seeds 0)

The A1B row was measured without the error model's two beyond-adjacent features. On the
height, ``gan`` (``--cubes hgt --methods gan --seeds 0 1``, 120 s, one thread)::

    hgt      gan             0    8.3219    9.0004   1.08   75.0%*  95.6%
    hgt      gan             1    9.2401   10.3430   1.12   65.5%   90.1%*

The figures of one run are uncertain: the punched gaps and the hold-out are a few drifting
patches each. The standard errors of ``--methods eof linear climatology --seeds 0``::

    cube     method       ± ratio   ± 1σ   ± 2σ
    ostia    eof             0.10   2.0%   0.6%
    ostia    linear          0.10   2.0%   1.3%
    ostia    climatology     0.07   3.4%   0.9%
    a1b      eof             0.10   1.0%   0.5%
    a1b      linear          0.10   2.6%   3.0%
    a1b      climatology     0.12   8.9%   5.8%
    pacific  eof             0.09   2.2%   0.9%
    pacific  linear          0.12   1.7%   0.8%
    pacific  climatology     0.12   2.2%   1.1%

A band of ±0.15 around a ratio of 1, or of ±5 points around 68 % within 1σ, is one to two
standard errors wide, so a calibrated method misses it in some runs by chance alone.
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


def run(cube: str, method: str, seed: int, options: dict | None = None) -> dict[str, float]:
    """Punch, fit, fill and score one method on one cube (``options`` over its defaults
    and :data:`OPTIONS`)."""
    load, punch = CUBES[cube]
    truth = load()
    hidden = masks.Cloud(seed=seed, **punch).sample(truth.shape)
    gappy = truth.where(~hidden)
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
    args = parser.parse_args(argv)
    options = parse_options(args.option)
    print(f"{'cube':8} {'method':12} {'seed':>4} {'true MAE':>9} {'hold-out':>9} {'ratio':>7} "
          f"{'in 1σ':>7} {'in 2σ':>7} {'h 1σ':>6} {'h 2σ':>6} {'± ratio':>7} {'± 1σ':>6} "
          f"{'± 2σ':>6} {'process':>10} {'fit s':>7} {'cal s':>6}")
    for cube in args.cubes:
        for method in args.methods:
            for seed in args.seeds:
                try:
                    r = run(cube, method, seed, options)
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
                    f"{r['holdout_process']:>10} {r['fit_s']:7.1f} {r['calibration_s']:6.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
