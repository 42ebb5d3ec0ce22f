"""``gan`` fitted with several seeds: each fit's correction, and their average.

For one case of :mod:`gan_benchmark` (the same data and punched gaps), ``gan`` is
fitted through ``da.gapfill.fit`` (default options, its hold-out and validation
pixels kept out) once per ``--seeds`` value, and each fit fills the cube with its
guide alone and with its whole correction. In the punched gaps the script prints
each fit's MAE at several shares of its correction, the same for the average of the
fits (guides averaged, corrections averaged), the correlation of the fits'
corrections with each other and with the error of the averaged guide, and the
least-squares share of each correction against that error. If the fits' corrections
erred independently, the average would score well below each fit.

Usage::

    python benchmarks/gan_seeds.py --case ostia --seeds 0,1 --threads 1   # ~20 min
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import add_gan_option_arguments, gan_options  # noqa: E402
from gan_benchmark import _threads, at_share, load_case  # noqa: E402

SHARES = (0.25, 0.5, 0.625, 0.75, 1.0)


def guide_and_correction(gappy, seed: int, options: dict) -> tuple[np.ndarray, np.ndarray, float]:
    """One fit's guide and whole correction (data units, the cube's ``(C, T, H, W)``) and
    the share ``fit`` chose."""
    from gapfill.cube import Cube

    method = gappy.gapfill.fit("gan", seed=seed, **{"progress": "off", **options}).method
    cube = Cube(gappy)
    x = cube.values()
    fills = []
    for share in (0.0, 1.0):
        with at_share(method, share), _threads(method, cube):
            z = method.fill(x, np.random.default_rng(seed), coords=cube.coords()).values
        fills.append(np.asarray(cube.normaliser.denormalise(np.where(np.isfinite(x), x, z))))
    return fills[0], fills[1] - fills[0], float(method.fit_info.get("correction_gain", 1.0))


def main(argv: list[str] | None = None) -> None:
    """Print the fits' and the average's MAE per share, and the correlations."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", default="ostia")
    p.add_argument("--seed", type=int, default=0, help="seed of the punched gaps")
    p.add_argument("--seeds", default="0,1", help="seeds of the fits")
    add_gan_option_arguments(p)
    args = p.parse_args(argv)
    options = gan_options(args)
    truth, gappy, hidden, is_video = load_case(args.case, args.seed)
    if is_video:
        raise ValueError("the seeds are compared on the cubes, not on video")
    true = np.asarray(truth.values, np.float64).reshape(-1)
    scored = np.asarray(hidden).reshape(-1) & np.isfinite(true)
    t = true[scored]
    guides, corrections, chosen = [], [], []
    for seed in (int(s) for s in args.seeds.split(",")):
        g, c, share = guide_and_correction(gappy, seed, options)
        guides.append(g.reshape(-1)[scored])
        corrections.append(c.reshape(-1)[scored])
        chosen.append(share)
    rows = [(f"fit, seed {s}", g, c, f"{share:g}")
            for s, g, c, share in zip(args.seeds.split(","), guides, corrections, chosen)]
    rows.append(("average", np.mean(guides, 0), np.mean(corrections, 0), "–"))
    print("| fill | `fit`'s share | guide | " + " | ".join(f"share {s:g}" for s in SHARES)
          + " | least-squares share | correlation with the guide's error |")
    print("| --- | ---: | ---: |" + " ---: |" * (len(SHARES) + 2))
    error = t - rows[-1][1]
    for name, g, c, share in rows:
        cells = [f"{np.abs(g + s * c - t).mean():.4f}" for s in SHARES]
        ls = float((c * error).sum() / max((c * c).sum(), 1e-30))
        r = float(np.corrcoef(c, error)[0, 1])
        print(f"| {name} | {share} | {np.abs(g - t).mean():.4f} | " + " | ".join(cells)
              + f" | {ls:.2f} | {r:.2f} |")
    if len(corrections) > 1:
        r = np.corrcoef(np.stack(corrections))[np.triu_indices(len(corrections), 1)]
        print(f"\ncorrelation of the fits' corrections: {', '.join(f'{v:.2f}' for v in r)}")


if __name__ == "__main__":
    main()
