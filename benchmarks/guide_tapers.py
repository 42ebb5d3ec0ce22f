"""The EOF guides with their modes tapered: ``eof`` and ``eof_interp`` at each taper.

For each case of :mod:`gan_benchmark` (the same data and punched gaps) one DINEOF
fit on every observed pixel (modes chosen by its cross-validation, as the guide's
are) is filled at each taper of ``EOFOptions.taper`` (mode ``j`` of ``k`` weighted
``1 - taper·j/k``); each fill alone (``eof``) and with its residuals interpolated
by Laplace's equation (``eof_interp``, :func:`gapfill.guides.harmonic_interpolation`)
is scored in the punched gaps. The data are normalised as the guides see them
(one mean and standard deviation), and MAE is given back in the data's units.

Usage::

    python benchmarks/guide_tapers.py                       # the four cubes, seed 0, ~1 min
    python benchmarks/guide_tapers.py --cases ostia,a1b --seed 1 --tapers 0,0.5,1
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gan_benchmark import load_case  # noqa: E402


def tapered_guides(case: str, seed: int, tapers: list[float]) -> dict[str, object]:
    """MAE in the punched gaps of ``eof`` and ``eof_interp`` at each taper, and the modes."""
    from gapfill.guides import eof_guides, harmonic_interpolation

    truth, gappy, hidden, is_video = load_case(case, seed)
    if is_video:
        raise ValueError("the EOF tapers are measured on the cubes, not on video")
    x = gappy.values[None].astype(np.float32)
    mean, std = float(np.nanmean(x)), float(np.nanstd(x))
    xn = (x - mean) / std
    scored = hidden[None] & np.isfinite(truth.values[None])
    true = truth.values[None][scored]

    def mae(field: np.ndarray) -> float:
        return float(np.abs(field[scored] * std + mean - true).mean())

    fields, modes = eof_guides(xn, None, tuple(tapers))
    return {
        "modes": modes,
        "eof": [mae(f) for f in fields],
        "eof_interp": [mae(harmonic_interpolation(xn, f, 0.0)) for f in fields],
    }


def main(argv: list[str] | None = None) -> None:
    """Print a markdown table: a row per case, ``eof`` and ``eof_interp`` per taper."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="ostia,a1b,pacific,hgt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tapers", default="0,0.5,1")
    args = p.parse_args(argv)
    tapers = [float(t) for t in args.tapers.split(",")]
    head = [f"`eof`, taper {t:g}" for t in tapers] + [f"`eof_interp`, taper {t:g}"
                                                       for t in tapers]
    print("| case | modes | " + " | ".join(head) + " |")
    print("| --- | ---: |" + " ---: |" * len(head))
    for case in args.cases.split(","):
        r = tapered_guides(case, args.seed, tapers)
        cells = [f"{v:.4g}" for v in (*r["eof"], *r["eof_interp"])]
        print(f"| {case} | {r['modes']} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
