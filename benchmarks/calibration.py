"""How honest are the error figures? Calibration of ``<name>_error`` and of the hold-out MAE.

Three real cubes get gaps punched in (so the truth under them is known):

- ``ostia``: OSTIA monthly SST (iris-sample-data, 54 × 18 × 432), 40 % drifting clouds;
- ``a1b``: HadCM3 A1B air temperature (iris-sample-data, 240 × 37 × 49), 50 % large
  drifting clouds (length scale 12 px);
- ``pacific``: the eofs package's NDJFM Pacific SST anomaly (50 × 18 × 30), 40 % clouds.

Each method is fitted with its defaults (hold-out 10 %, ``auto`` process) and filled; the
table gives, per cube and method: the true MAE in the punched gaps, the hold-out MAE the
product reports, their ratio (target 0.85–1.15), and the share of the true errors within
1σ and 2σ of ``<name>_error`` (targets 63–73 % and 92–98 %), with the hold-out's own shares.

Run::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/calibration.py
    python benchmarks/calibration.py --methods eof linear --cubes ostia --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import xarray as xr

sys.path.insert(0, os.path.dirname(__file__))
from common import load_ostia  # noqa: E402

import gapfill  # noqa: E402
from gapfill import errors, masks  # noqa: E402

#: Options of the learned methods: a short training budget on 2 CPU cores.
OPTIONS = {
    "combcn": {"time_budget": 60.0, "progress": "off"},
    "tgfnet": {"time_budget": 60.0, "progress": "off"},
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


CUBES = {
    "ostia": (load_ostia, {"coverage": 0.4, "periodic": (False, True)}),
    "a1b": (load_a1b, {"coverage": 0.5, "length_scale": 12.0, "velocity": (1.0, 2.0)}),
    "pacific": (load_pacific, {"coverage": 0.4, "length_scale": 4.0}),
}


def run(cube: str, method: str, seed: int) -> dict[str, float]:
    """Punch, fit, fill and score one method on one cube."""
    load, punch = CUBES[cube]
    truth = load()
    hidden = masks.Cloud(seed=seed, **punch).sample(truth.shape)
    gappy = truth.where(~hidden)
    scored = hidden & np.isfinite(truth.values) & np.isfinite(gappy.values).any(0)
    t0 = time.perf_counter()
    model = gappy.gapfill.fit(method, seed=seed, **OPTIONS.get(method, {}))
    fit_s = time.perf_counter() - t0
    out = gappy.gapfill.fill(model)
    name = gappy.name
    err = np.abs(out[name].values - truth.values)[scored]
    sigma = out[f"{name}_error"].values[scored]
    ok = np.isfinite(err) & np.isfinite(sigma)
    one, two = errors.within_shares(err[ok], sigma[ok])
    a = out.attrs
    true_mae = float(err[ok].mean())
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
    }


def _mark(value: float, low: float, high: float) -> str:
    return " " if low <= value <= high else "*"


def main(argv: list[str] | None = None) -> None:
    """Print the calibration table (``*`` marks a figure outside its target band)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cubes", nargs="+", default=list(CUBES), choices=list(CUBES))
    parser.add_argument("--methods", nargs="+", default=["eof", "linear", "climatology", "combcn"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    args = parser.parse_args(argv)
    print(f"{'cube':8} {'method':12} {'seed':>4} {'true MAE':>9} {'hold-out':>9} {'ratio':>7} "
          f"{'in 1σ':>7} {'in 2σ':>7} {'h 1σ':>6} {'h 2σ':>6} {'process':>10} {'fit s':>7} {'cal s':>6}")
    for cube in args.cubes:
        for method in args.methods:
            for seed in args.seeds:
                r = run(cube, method, seed)
                print(
                    f"{cube:8} {method:12} {seed:>4} {r['true_mae']:9.4f} {r['holdout_mae']:9.4f} "
                    f"{r['ratio']:6.2f}{_mark(r['ratio'], 0.85, 1.15)} "
                    f"{r['within_1sigma']:6.1%}{_mark(r['within_1sigma'], 0.63, 0.73)} "
                    f"{r['within_2sigma']:6.1%}{_mark(r['within_2sigma'], 0.92, 0.98)} "
                    f"{r['holdout_1sigma']:6.1%} {r['holdout_2sigma']:6.1%} "
                    f"{r['holdout_process']:>10} {r['fit_s']:7.1f} {r['calibration_s']:6.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
