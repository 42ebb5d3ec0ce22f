"""Kriging each frame with the complete cube's covariance: a floor for linear fills.

For each case of :mod:`gan_benchmark` (the same data and punched gaps), each frame's
hidden pixels are predicted from that frame's observations by simple kriging, with the
mean and covariance of the *complete* other frames, which no method has. Each frame is
filled at every ridge of :data:`RIDGES` (a multiple of the mean variance added to the
diagonal of the observed block), and the ridge best in the gaps is reported: an oracle
in that too.

The covariance is held in its sample form ``A`` (frames x pixels), so a frame costs an
``n x n`` eigendecomposition, ``n`` the number of other frames:
``C_ho (C_oo + mu I)^-1 r_o = A_h^T (A_o A_o^T + mu' I)^-1 A_o r_o``.

The figure bounds the linear fills of a frame from its own observations; it does not
bound fills that use other frames' observations, or non-linear ones. How much the other
frames could add is measured by a second oracle: the kriging error at each hidden pixel
regressed (least squares, two coefficients for the whole cube) on the pixel's *true*
values a frame before and a frame after, each less the kriged value. On a short cube
(OSTIA: 54 frames) the covariance is estimated from few frames and the oracle is weaker.

Usage::

    python benchmarks/kriging_oracle.py                          # the four cubes, seed 0, ~1 min
    python benchmarks/kriging_oracle.py --cases a1b --seed 1
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gan_benchmark import load_case  # noqa: E402

RIDGES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)


def krige(truth: np.ndarray, hidden: np.ndarray, ridges: tuple[float, ...]) -> np.ndarray:
    """Kriged values at the ``hidden`` pixels for every ridge: ``(len(ridges), hidden.sum())``.

    Parameters
    ----------
    truth
        ``(T, P)`` complete values (the pixels that are never missing; the scored pixels of
        every case are among them).
    hidden
        ``(T, P)`` booleans: the pixels predicted; the others of their frame are observed.
    ridges
        Multiples of the mean variance added to the diagonal of the observed block.
    """
    n_t = truth.shape[0]
    out = np.zeros((len(ridges), int(hidden.sum())))
    pos = 0
    for t in range(n_t):
        hid = hidden[t]
        if not hid.any():
            continue
        others = np.delete(truth, t, axis=0)
        mean = others.mean(0)
        a = others - mean
        a_h, a_o = a[:, hid], a[:, ~hid]
        evals, evecs = np.linalg.eigh(a_o @ a_o.T)
        proj = evecs.T @ (a_o @ (truth[t, ~hid] - mean[~hid]))
        scale = (n_t - 2) * float(a.var(0).mean())
        for i, ridge in enumerate(ridges):
            w = evecs @ (proj / (np.maximum(evals, 0) + ridge * scale))
            out[i, pos:pos + hid.sum()] = mean[hid] + a_h.T @ w
        pos += int(hid.sum())
    return out


def with_neighbours(truth: np.ndarray, hidden: np.ndarray, pred: np.ndarray) -> float:
    """MAE of the kriged values ``pred`` corrected by the pixel's true values a frame before
    and after (least squares over the hidden pixels that have both)."""
    n_t = truth.shape[0]
    full = np.zeros(truth.shape)
    full[hidden] = pred
    t, p = np.nonzero(hidden & (np.arange(n_t) > 0)[:, None] & (np.arange(n_t) < n_t - 1)[:, None])
    err = truth[t, p] - full[t, p]
    feats = np.stack([truth[t - 1, p] - full[t, p], truth[t + 1, p] - full[t, p]], axis=1)
    coef, *_ = np.linalg.lstsq(feats, err, rcond=None)
    return float(np.abs(err - feats @ coef).mean())


def oracle(case: str, seed: int, ridges: tuple[float, ...] = RIDGES) -> dict[str, float]:
    """The best MAE in the punched gaps (``"mae"``), its ridge, and on the hidden pixels of
    the inner frames the MAE before (``"inner"``) and after the neighbours' correction
    (``"neighbours"``, :func:`with_neighbours`)."""
    truth, _, hidden, is_video = load_case(case, seed)
    if is_video:
        raise ValueError("the kriging oracle is measured on the cubes, not on video")
    values = np.asarray(truth.values, dtype=np.float64)
    n_t = values.shape[0]
    values = values.reshape(n_t, -1)
    hidden = hidden.reshape(n_t, -1)
    sea = np.isfinite(values).all(0)
    values, hidden = values[:, sea], hidden[:, sea]
    pred = krige(values, hidden, ridges)
    maes = np.abs(pred - values[hidden]).mean(1)
    i = int(np.argmin(maes))
    inner = hidden.copy()
    inner[[0, -1]] = False
    return {
        "mae": float(maes[i]), "ridge": ridges[i],
        "inner": float(np.abs(pred[i] - values[hidden])[inner[hidden]].mean()),
        "neighbours": with_neighbours(values, hidden, pred[i]),
    }


def main(argv: list[str] | None = None) -> None:
    """Print a markdown table: a row per case, the oracle's MAE, its ridge and the
    neighbours' correction (inner frames)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="ostia,a1b,pacific,hgt")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(f"| case (seed {args.seed}) | kriging oracle MAE | ridge | inner frames | "
          "with the true values a frame before and after |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for case in args.cases.split(","):
        r = oracle(case, args.seed)
        print(f"| {case} | {r['mae']:.4g} | {r['ridge']:g} | {r['inner']:.4g} | "
              f"{r['neighbours']:.4g} ({r['neighbours'] / r['inner'] - 1:+.1%}) |", flush=True)


if __name__ == "__main__":
    main()
