"""Does a method's fill gain from the hold-out's observations, which its product has?

The hold-out MAE is scored in a fill with the hold-out hidden; the product is filled with
every observation. For each cube of ``benchmarks/calibration.py`` (gaps punched with clouds
of the seed) and each method, this fits the method as ``calibration.py`` does and prints the
true MAE in the punched gaps of the product (A) and of the fill with the model's hold-out
hidden (B), and the hold-out MAE in that fill (C). ``B / A`` is what the hold-out's tenth
of the observations is worth to the fill; ``C / B`` how well the hold-out predicts the
error of the fill it is scored in. ``A / B`` is the true factor that the model's hold-out
scale (``model.info["holdout_scale"]``, printed last) estimates on its validation pixels.

Run::

    OMP_NUM_THREADS=1 python benchmarks/holdout_density.py --cubes ostia hgt --seeds 0
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from calibration import CUBES, OPTIONS, punched  # noqa: E402

import gapfill  # noqa: E402, F401  (registers the accessor)
from gapfill.diagnostics import holdout_mask  # noqa: E402


def run(cube: str, method: str, seed: int) -> dict[str, float]:
    """A, B and C (see the module docstring) for one cube, method and seed."""
    truth, hidden, gappy = punched(cube, seed)
    model = gappy.gapfill.fit(method, seed=seed, **OPTIONS.get(method, {}))
    observed = np.isfinite(gappy.values)
    hold = holdout_mask(observed[None], model.holdout, ~observed)[0]
    name = gappy.name
    product = gappy.gapfill.fill(model, diagnostics=False)[name].values
    scored = gappy.where(~hold).gapfill.fill(model, diagnostics=False)[name].values
    t = truth.values
    gaps = hidden & np.isfinite(t) & np.isfinite(product) & np.isfinite(scored)
    a = float(np.abs(product - t)[gaps].mean())
    b = float(np.abs(scored - t)[gaps].mean())
    c = float(np.abs(scored - t)[hold & np.isfinite(scored)].mean())
    return {"A": a, "B": b, "C": c, "scale": float(model.info["holdout_scale"])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cubes", nargs="+", default=["ostia", "hgt"], choices=list(CUBES))
    parser.add_argument("--methods", nargs="+", default=["gan", "eof"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    args = parser.parse_args(argv)
    print(f"{'cube':8} {'method':8} {'seed':>4} {'A product':>10} {'B scored':>10} "
          f"{'B / A':>6} {'C hold-out':>10} {'C / B':>6} {'A / B':>6} {'scale':>6}", flush=True)
    for cube in args.cubes:
        for method in args.methods:
            for seed in args.seeds:
                r = run(cube, method, seed)
                print(f"{cube:8} {method:8} {seed:4d} {r['A']:10.4f} {r['B']:10.4f} "
                      f"{r['B'] / r['A']:6.3f} {r['C']:10.4f} {r['C'] / r['B']:6.3f} "
                      f"{r['A'] / r['B']:6.3f} {r['scale']:6.3f}", flush=True)


if __name__ == "__main__":
    main()
