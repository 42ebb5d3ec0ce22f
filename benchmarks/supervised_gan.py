"""How much could ``gan``'s own network gain over its guide with the true values? An oracle.

For each case of :mod:`gan_benchmark` (the same data and punched gaps), ``gan`` is fitted
on the gappy cube with ``supervision="paired"``: the same guide, generator and training
loop as an unsupervised fit, but its L1 loss compares the fill with the *true* values under
the punched gaps. The frames are split in two folds: the first and the second half, or
(``--block B``) alternate blocks of ``B`` frames, as in :mod:`correction_oracle`. The true
values of one fold are given (the other fold's are NaN, so its gaps carry no loss), the
fitted generator fills the other fold, and then the folds swap. The whole correction
(share 1) and the guide alone are scored on the punched gaps of the fold not given, and so
is the share training chose on its validation pixels (observed pixels hidden from the
input, as in an unsupervised fit).

No method has those values: the MAE of share 1 says what this network can learn about the
guide's error in the gaps when it is shown that error on real gaps of the same cube, and
bounds nothing (a longer fit, another network or another split may do better). It is the
network counterpart of :mod:`correction_oracle`, whose corrector sees only local features.
The adversarial terms are off (``adv_weight=0``): the question is the error. With
``--guide eof`` the guide is the DINEOF fill, which leaves room: a control of what the
network learns where there is something to learn.

Usage::

    python benchmarks/supervised_gan.py --steps 5000                # A1B, its regem guide
    python benchmarks/supervised_gan.py --guide eof --time-budget 900  # A1B, the DINEOF fill
    python benchmarks/supervised_gan.py --cases ostia [--block 5] --time-budget 600

A short cube gives each fold too few frames to learn from (OSTIA's halves, 27 frames: see
docs/benchmarks.md, "A learned correction of the guide").
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from correction_oracle import fold_of, normalised_case  # noqa: E402
from gan_benchmark import _threads, at_share  # noqa: E402

from gapfill.cube import Cube  # noqa: E402
from gapfill.methods.gan import GAN  # noqa: E402


def fold_fit(cube: Cube, truth: np.ndarray, given: np.ndarray, seed: int,
             options: dict) -> tuple[GAN, float]:
    """``gan`` fitted on ``cube`` with the true values (normalised ``(C, T, H, W)``
    ``truth``) of the frames where ``given`` (``(T,)``) is true; returns it and the
    fit's seconds."""
    clean = np.where(given[None, :, None, None], truth, np.nan).astype(np.float32)
    method = GAN(**{"seed": seed, "progress": "off", "supervision": "paired",
                    "adv_weight": 0.0, **options})
    start = time.perf_counter()
    with _threads(method, cube):
        method.fit(cube, np.random.default_rng(seed), clean=clean)
    return method, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="a1b")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-budget", type=float, default=600.0,
                        help="each fold's time_budget (s); the fit's reserve for what "
                             "da.gapfill.fit does after training is counted in it")
    parser.add_argument("--steps", type=int, default=0,
                        help="train this many steps (early stopping still applies) with no "
                             "time_budget instead")
    parser.add_argument("--block", type=int, default=0,
                        help="frames per block of the folds; 0: the two halves of the frames")
    parser.add_argument("--guide", default="auto",
                        help="gan's guide option (eof: the DINEOF fill, a control with room)")
    args = parser.parse_args(argv)
    rows = []
    for case in args.cases.split(","):
        gappy, cube, x, truth, hid, std, _ = normalised_case(case, args.seed)
        n_time = x.shape[1]
        first = fold_of(np.arange(n_time), n_time, args.block) == 0
        print(f"[{case}] {dict(gappy.sizes)}, {hid.sum()} punched pixels", flush=True)
        errors: dict[str, list[np.ndarray]] = {"guide": [], "share 1": [], "chosen": []}
        for fold, given in enumerate((first, ~first)):
            method, seconds = fold_fit(cube, truth, given, args.seed,
                                       {"time_budget": None if args.steps else args.time_budget,
                                        "steps": args.steps or 5000, "guide": args.guide})
            at = hid & ~given[:, None, None]  # the punched gaps of the frames not given
            chosen = float(method._meta.get("correction_gain", 1.0))
            with _threads(method, cube):
                guide = method._guide(x)[:, at]
                with at_share(method, 1.0):
                    whole_fill = method.fill(x, np.random.default_rng(args.seed),
                                             coords=cube.coords()).values[:, at]
            part = {"guide": guide, "share 1": whole_fill,
                    "chosen": guide + chosen * (whole_fill - guide)}
            for key, value in part.items():
                errors[key].append(np.abs(value - truth[:, at]) * std)
            info = method.fit_info
            print(f"[{case}] fold {fold + 1} of 2 given: "
                  f"{info.get('steps', 0)} steps in {info.get('train_seconds', 0):.0f} s "
                  f"(fit {seconds:.0f} s), guide {method._meta['guide']['kind']}, "
                  f"chosen share {chosen:g}; on the other "
                  + ", ".join(f"{k} {float(np.mean(v[-1])):.4f}" for k, v in errors.items()),
                  flush=True)
        maes = {k: float(np.mean(np.concatenate(v, axis=-1))) for k, v in errors.items()}
        rows.append((case, maes))
        print(f"[{case}] both folds: " + ", ".join(f"{k} {v:.4f}" for k, v in maes.items()),
              flush=True)
    print("\n| case | guide | share 1 (oracle) | change | training's share | change |")
    print("|---|---:|---:|---:|---:|---:|")
    for case, m in rows:
        g = m["guide"]
        print(f"| {case} | {g:.4f} | {m['share 1']:.4f} | {m['share 1'] / g - 1:+.1%} "
              f"| {m['chosen']:.4f} | {m['chosen'] / g - 1:+.1%} |")


if __name__ == "__main__":
    main()
