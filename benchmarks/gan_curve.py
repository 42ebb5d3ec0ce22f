"""``gan``'s error in the punched gaps along training, next to its validation error.

One case of :mod:`gan_benchmark` (the same data and punched gaps), ``gan`` fitted on
every observed pixel with the default options (and any ``--option``). Every
``--every``-th validation of the training loop also fills the whole training input
with the generator in place (the averaged weights) on training's guide and scores
the punched gaps: the guide alone, half the correction and the whole correction.
The validation error is training's own (on its validation pixels, normalised
units, at the best of :data:`gapfill.methods.gan_train.CORRECTION_GAINS`); the gaps'
errors are in the data's units.

Usage::

    python benchmarks/gan_curve.py --case ostia --threads 1      # ~10 min
    python benchmarks/gan_curve.py --case a1b --every 3 --option time_budget=300
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import add_gan_option_arguments, gan_options  # noqa: E402
from gan_benchmark import load_case  # noqa: E402

SHARES = (0.0, 0.5, 1.0)


def curve(case: str, seed: int, every: int, options: dict) -> list[dict[str, float]]:
    """A row per scored validation: step, seconds, validation MAE, gaps' MAE per share."""
    from gapfill.cube import Cube
    from gapfill.methods import gan_train
    from gapfill.methods.gan import GAN

    truth, gappy, hidden, is_video = load_case(case, seed)
    if is_video:
        raise ValueError("the learning curve is measured on the cubes, not on video")
    cube = Cube(gappy)
    true = np.asarray(truth.values, np.float64).reshape(-1)
    scored = np.asarray(hidden).reshape(-1) & np.isfinite(true)
    rows: list[dict[str, float]] = []
    validate = gan_train.GANTrainer.validate
    started = time.monotonic()
    calls = 0

    def scoring(trainer: gan_train.GANTrainer) -> float | None:
        nonlocal calls
        mae = validate(trainer)
        calls += 1
        if (calls - 1) % every:
            return mae
        d = trainer.data
        guide = d.guides[0][0]
        out = trainer.m._fill(d.x[0], guide, d.extras[0], 1, 0)

        def back(z: np.ndarray) -> np.ndarray:
            return np.asarray(cube.normaliser.denormalise(z), np.float64).reshape(-1)[scored]

        g, f = back(guide[:out.shape[0]]), back(out)
        row = {"step": trainer.loop.step, "seconds": time.monotonic() - started,
               "val_mae": mae}
        row.update({f"gaps_{s:g}": float(np.abs(g + s * (f - g) - true[scored]).mean())
                    for s in SHARES})
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        return mae

    gan_train.GANTrainer.validate = scoring
    try:
        GAN(**{"seed": seed, "progress": "off", **options}).fit(
            cube, np.random.default_rng(seed))
    finally:
        gan_train.GANTrainer.validate = validate
    return rows


def main(argv: list[str] | None = None) -> None:
    """Print the curve as a markdown table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", default="ostia")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=int, default=3, help="score every n-th validation")
    add_gan_option_arguments(p)
    args = p.parse_args(argv)
    options = gan_options(args)
    rows = curve(args.case, args.seed, args.every, options)
    print("| step | seconds | validation MAE | gaps: guide | share 0.5 | share 1 |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['step']} | {r['seconds']:.0f} | {r['val_mae']:.4f} | {r['gaps_0']:.4f} "
              f"| {r['gaps_0.5']:.4f} | {r['gaps_1']:.4f} |")


if __name__ == "__main__":
    main()
