"""How ``regem``'s fill improves with its EM iterations, on real cubes.

For each cube (``pacific``, ``a1b``, ``hgt`` of :func:`gan_benchmark.load_case`), gaps are
punched in and a validation set is hidden as in ``benchmarks/regem_ridges.py``; ``regem``
(without localisation: ``length=None``, ``ridge=None``, ``fill_ridge=0.02``) is fitted on
the rest with no convergence test, ``--iterations`` E-steps from DINEOF, and after each
round (three E-steps of SQUAREM; one E-step with ``--plain``) the fill with those moments
is scored: MAE on the validation pixels and in the punched gaps (the cube's units), with
the RMS change of the imputed values in that round (what ``tol`` compares). ``<`` marks
where the defaults stop (``tol``, ``max_iter``).

Run::

    python benchmarks/regem_iterations.py                          # ~30 min on 2 cores
    python benchmarks/regem_iterations.py --plain                  # EM without SQUAREM
    python benchmarks/regem_iterations.py --cases hgt --iterations 100 --every-observation

``--every-observation`` hides no validation pixels: the fit sees every observation, as the
rows of ``benchmarks/gan_benchmark.py`` do.
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
from gan_benchmark import load_case
from regem_ridges import validation_hide
from threadpoolctl import threadpool_limits

from gapfill.methods import regem as regem_module
from gapfill.methods.regem import RegEM, RegEMOptions

#: The options measured: no localisation, nothing validated.
UNLOCALISED = {"length": None, "ridge": None, "fill_ridge": 0.02}

#: Steps printed in plain EM (all steps are scored up to 10, then these; every round of
#: SQUAREM is).
SHOWN = (12, 15, 20, 25, 30, 40, 50, 60, 80, 100, 150, 200)


def run(case: str, seed: int, iterations: int, validation: bool = True,
        accelerate: bool = True) -> None:
    """Print the table of one cube and seed."""
    truth, gappy, hidden, _ = load_case(case, seed)
    raw = gappy.values.astype(np.float64)
    mean, std = np.nanmean(raw), np.nanstd(raw)
    x = (raw - mean) / std
    val = validation_hide(x, np.random.default_rng([seed, 7]))
    if not validation:
        val[:] = False
    fit_input = np.where(val, np.nan, x)[None]
    target = (truth.values - mean) / std
    known = np.isfinite(target)
    scores: dict[int, tuple[float, float, float] | None] = {}
    method = RegEM(tol=1e-12, max_iter=iterations, **UNLOCALISED)
    grid = np.asarray(fit_input.shape)[[0, 2, 3]]
    fitted = np.isfinite(fit_input).any(1).reshape(-1)

    defaults = RegEMOptions()
    stopped: list[int] = []  # where the defaults stop: the first change below tol, or max_iter

    def score(steps: int, mu: np.ndarray, cov: np.ndarray, change: float) -> None:
        if not stopped and (change < defaults.tol or steps == defaults.max_iter):
            stopped.append(steps)
        if (not accelerate and steps > 10 and steps not in SHOWN
                and steps not in (iterations, *stopped)):
            scores[steps] = None  # not scored
            return
        probe = RegEM(**UNLOCALISED)
        probe.load_state_dict({"grid": grid, "fitted": fitted, "mean": mu, "cov": cov})
        err = np.abs(probe.fill(fit_input, np.random.default_rng(seed)).values[0] - target)
        on_val = float(err[val & known].mean() * std) if val.any() else np.nan
        scores[steps] = (change, on_val, float(err[hidden & known].mean() * std))

    em = regem_module.regem
    regem_module.regem = functools.partial(em, trace=score, accelerate=accelerate)
    start = time.perf_counter()
    try:
        method.fit_array(fit_input, np.random.default_rng(seed))
    finally:
        regem_module.regem = em
    seconds = time.perf_counter() - start
    units = truth.attrs.get("units", "")
    kind = "SQUAREM" if accelerate else "plain EM"
    print(f"\n[{case}, seed {seed}, {kind}] {dict(truth.sizes)}; "
          f"ridge {method.fit_info['ridge']}; "
          f"{iterations} E-steps in {seconds:.0f} s (with the scoring); MAE in {units}")
    print(f"{'E-steps':>7} {'change':>8} {'validation':>11} {'punched':>9}")
    for steps, row in sorted(scores.items()):
        if row is None:
            continue
        change, on_val, in_gaps = row
        mark = "<" if steps in stopped else " "
        print(f"{steps:>7} {change:>8.5f} {on_val:>11.4f} {in_gaps:>9.4f}{mark}", flush=True)


def main() -> None:
    """Run the cubes and seeds asked for."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["pacific", "a1b", "hgt"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--every-observation", action="store_true",
                        help="no validation pixels: fit on every observation")
    parser.add_argument("--plain", action="store_true", help="EM without SQUAREM")
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads")
    args = parser.parse_args()
    with threadpool_limits(args.threads):
        for case in args.cases:
            for seed in args.seeds:
                run(case, seed, args.iterations, not args.every_observation,
                    not args.plain)


if __name__ == "__main__":
    main()
