"""The two ridges of ``regem``: the EM fit's and the fill's, on real cubes.

For each cube of :func:`gan_benchmark.load_case` small enough for ``regem`` (``pacific``,
``a1b``, ``hgt``), gaps are punched in (the truth under them is known) and a validation
set is hidden too: in a random 30% of the frames, the observed pixels under the gaps of
another frame (the data's own gap shapes). ``regem`` is fitted on the rest with each EM
ridge and with ``ridge=None`` (20 over the observations per pixel, the last row), without
localisation (``length=None``), then fills with each fill ridge. The table gives the MAE
on the validation pixels (what a user could choose on) and in the punched gaps (the
truth), in the cube's units. ``<`` marks ``ridge=None`` with ``fill_ridge=0.02``.

Run::

    python benchmarks/regem_ridges.py                      # pacific, a1b, hgt; ~10 min
    python benchmarks/regem_ridges.py --cases pacific --seeds 0 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from gan_benchmark import load_case
from threadpoolctl import threadpool_limits

from gapfill.methods.regem import RegEM

FIT_RIDGES = (0.05, 0.1, 0.2, 0.4, 0.8)
FILL_RIDGES = (0.01, 0.02, 0.05, 0.12)


def validation_hide(x: np.ndarray, rng: np.random.Generator, share: float = 0.3) -> np.ndarray:
    """Observed pixels of ``x`` (T, H, W) under another frame's gaps, in ``share`` of the frames."""
    observed = np.isfinite(x)
    n = len(x)
    hide = np.zeros_like(observed)
    for t in np.flatnonzero(rng.random(n) < share):
        other = (t + int(rng.integers(1, n))) % n
        hide[t] = ~observed[other] & observed[t] & observed.any(0)
    return hide


def run(case: str, seed: int) -> None:
    """Print the table of one cube and seed."""
    truth, gappy, hidden, _ = load_case(case, seed)
    raw = gappy.values.astype(np.float64)
    mean, std = np.nanmean(raw), np.nanstd(raw)
    x = (raw - mean) / std
    val = validation_hide(x, np.random.default_rng([seed, 7]))
    fit_input = np.where(val, np.nan, x)[None]
    target = (truth.values - mean) / std
    known = np.isfinite(target)
    units = truth.attrs.get("units", "")
    print(f"\n[{case}, seed {seed}] {dict(truth.sizes)}; {int(val.sum())} validation pixels; "
          f"MAE in {units}: validation / punched gaps")
    print(f"{'EM ridge':>9} {'fit s':>6}  " + "  ".join(f"fill {r:<13}" for r in FILL_RIDGES))
    for fit_ridge in (*FIT_RIDGES, None):  # None: the default, last
        method = RegEM(ridge=fit_ridge, length=None, fill_ridge=0.02)
        start = time.perf_counter()
        method.fit_array(fit_input, np.random.default_rng(seed))
        seconds = time.perf_counter() - start
        cells = []
        for fill_ridge in FILL_RIDGES:
            method.options.fill_ridge = fill_ridge
            filled = method.fill(fit_input, np.random.default_rng(seed)).values[0]
            err = np.abs(filled - target) * std
            default = fit_ridge is None and fill_ridge == 0.02
            mark = "<" if default else " "
            cells.append(f"{err[val & known].mean():.4f} / {err[hidden & known].mean():.4f}{mark}")
        used = method.fit_info["ridge"]
        label = f"{used:.3g}" + ("<" if fit_ridge is None else "")
        print(f"{label:>9} {seconds:>6.0f}  " + "  ".join(cells), flush=True)


def main() -> None:
    """Run the cubes and seeds asked for."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["pacific", "a1b", "hgt"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads")
    args = parser.parse_args()
    with threadpool_limits(args.threads):
        for case in args.cases:
            for seed in args.seeds:
                run(case, seed)


if __name__ == "__main__":
    main()
