"""Is the hold-out MAE's standard error (``gapfill_holdout_mae_se``) the size it says?

For each cube of ``benchmarks/calibration.py`` and each method, the gaps are punched once
(clouds of ``--punch``) and the method is fitted with several seeds (``--seeds``): each
seed draws another hold-out (and other validation pixels). Printed per cube and method:

- the mean hold-out MAE over the seeds, and its spread over them (standard deviation,
  ``sd``);
- ``se``: the root mean square of the standard errors the products report (a block
  bootstrap over stretches of time, :func:`gapfill.diagnostics.block_bootstrap_se`);
- ``sd/se``: about 1 when the standard error is the size of the hold-out's real spread;
- the true MAE in the punched gaps (mean over the seeds), and in how many runs it lies
  within one and two reported standard errors of the hold-out MAE (the hold-out predicts
  the error in the real gaps only as well as it is unbiased, and those gaps are a sample
  too, so this share is lower than the hold-out's own coverage).

Run::

    OMP_NUM_THREADS=1 python benchmarks/holdout_se.py
    python benchmarks/holdout_se.py --cubes ostia --methods eof --seeds 0 1 2 3
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from calibration import OPTIONS, punched  # noqa: E402

import gapfill  # noqa: E402, F401  (registers the accessor)


def runs(cube: str, method: str, punch: int, seeds: list[int]) -> dict[str, np.ndarray]:
    """Hold-out MAE, its reported standard error and the true MAE for each fit seed."""
    truth, hidden, gappy = punched(cube, punch)
    scored = hidden & np.isfinite(truth.values) & np.isfinite(gappy.values).any(0)
    out: dict[str, list[float]] = {"holdout": [], "se": [], "true": []}
    for seed in seeds:
        model = gappy.gapfill.fit(method, seed=seed, **OPTIONS.get(method, {}))
        filled = gappy.gapfill.fill(model)
        a = filled.attrs
        err = np.abs(filled[gappy.name].values - truth.values)[scored]
        out["holdout"].append(float(a["gapfill_holdout_mae"]))
        out["se"].append(float(a["gapfill_holdout_mae_se"]))
        out["true"].append(float(np.nanmean(err)))
    return {k: np.asarray(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cubes", nargs="+", default=["ostia", "a1b", "pacific", "hgt"])
    parser.add_argument("--methods", nargs="+", default=["eof", "linear", "climatology"])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(10)))
    parser.add_argument("--punch", type=int, default=0)
    args = parser.parse_args()
    print(f"{'cube':8} {'method':12} {'hold-out':>9} {'sd':>7} {'se':>7} {'sd/se':>6} "
          f"{'true':>8} {'in 1se':>6} {'in 2se':>6}")
    for cube in args.cubes:
        for method in args.methods:
            r = runs(cube, method, args.punch, args.seeds)
            sd = float(np.std(r["holdout"], ddof=1))
            se = float(np.sqrt(np.nanmean(r["se"] ** 2)))
            miss = np.abs(r["holdout"] - r["true"])
            print(f"{cube:8} {method:12} {r['holdout'].mean():9.4f} {sd:7.4f} {se:7.4f} "
                  f"{sd / se:6.2f} {r['true'].mean():8.4f} "
                  f"{int((miss <= r['se']).sum()):>3}/{len(miss):<2} "
                  f"{int((miss <= 2 * r['se']).sum()):>3}/{len(miss):<2}", flush=True)


if __name__ == "__main__":
    main()
