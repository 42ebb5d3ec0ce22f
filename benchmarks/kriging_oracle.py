"""Kriging each frame with the complete cube's covariance: how low a fill can go.

For each case of :mod:`gan_benchmark` (the same data and punched gaps), each frame's
hidden pixels are predicted from that frame's observations by simple kriging, with the
mean and covariance of the *complete* other frames, which no method has. Each frame is
filled at every ridge of :data:`RIDGES` (a multiple of the mean variance added to the
diagonal of the observed block), and the ridge best in the gaps is reported: an oracle
in that too.

The covariance is held in its sample form ``A`` (frames x pixels), so a frame costs an
``n x n`` eigendecomposition, ``n`` the number of other frames:
``C_ho (C_oo + mu I)^-1 r_o = A_h^T (A_o A_o^T + mu' I)^-1 A_o r_o``.

A sample covariance of fewer frames than pixels is noisy at long range. With
``--lengths`` the oracle also uses it *localised*, as ensemble data assimilation does:
multiplied element by element by the Gaspari-Cohn function of the pixels' chordal distance
(zero beyond twice the length, in km; the product stays a covariance), for each length
given, again at the best ridge.

Neither figure is a bound: a better estimate of the covariance, or a fill that uses other
frames' observations or is non-linear, can go lower. How much the other frames could add
is measured by a third figure: the (unlocalised) kriging error at each hidden pixel
regressed (least squares, two coefficients for the whole cube) on the pixel's *true*
values a frame before and a frame after, each less the kriged value.

Usage::

    python benchmarks/kriging_oracle.py                          # the four cubes, seed 0, ~10 s
    python benchmarks/kriging_oracle.py --cases a1b --seed 1
    python benchmarks/kriging_oracle.py --cases a1b,pacific,hgt --lengths 2000,4000
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gan_benchmark import load_case  # noqa: E402

from gapfill.localisation import gaspari_cohn, grid_distances  # noqa: E402

RIDGES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)


def _hidden_frames(hidden: np.ndarray) -> Iterator[tuple[int, np.ndarray, slice]]:
    """``(t, hid, at)`` for each frame ``t`` with hidden pixels ``hid``: ``at`` is their
    slice of the flat output (frame by frame)."""
    pos = 0
    for t, hid in enumerate(hidden):
        if hid.any():
            n = int(hid.sum())
            yield t, hid, slice(pos, pos + n)
            pos += n


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
    for t, hid, at in _hidden_frames(hidden):
        others = np.delete(truth, t, axis=0)
        mean = others.mean(0)
        a = others - mean
        a_h, a_o = a[:, hid], a[:, ~hid]
        evals, evecs = np.linalg.eigh(a_o @ a_o.T)
        proj = evecs.T @ (a_o @ (truth[t, ~hid] - mean[~hid]))
        scale = (n_t - 2) * float(a.var(0).mean())
        for i, ridge in enumerate(ridges):
            w = evecs @ (proj / (np.maximum(evals, 0) + ridge * scale))
            out[i, at] = mean[hid] + a_h.T @ w
    return out


def krige_localised(truth: np.ndarray, hidden: np.ndarray, taper: np.ndarray,
                    ridges: tuple[float, ...]) -> np.ndarray:
    """:func:`krige` with the other frames' covariance multiplied by ``taper`` ``(P, P)``."""
    n_t = truth.shape[0]
    centre = truth.mean(0)  # less cancellation in the sums of products below
    truth = truth - centre
    total, outer = truth.sum(0), truth.T @ truth
    out = np.zeros((len(ridges), int(hidden.sum())))
    for t, hid, at in _hidden_frames(hidden):
        x = truth[t]
        mean = (total - x) / (n_t - 1)
        cov = (outer - np.outer(x, x) - (n_t - 1) * np.outer(mean, mean)) / (n_t - 2) * taper
        obs = ~hid
        c_oo, c_ho = cov[np.ix_(obs, obs)], cov[np.ix_(hid, obs)]
        scale = float(np.diag(cov).mean())
        for i, ridge in enumerate(ridges):
            w = np.linalg.solve(c_oo + ridge * scale * np.eye(int(obs.sum())), x[obs] - mean[obs])
            out[i, at] = centre[hid] + mean[hid] + c_ho @ w
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


def oracle(case: str, seed: int, ridges: tuple[float, ...] = RIDGES,
           lengths: tuple[float, ...] = ()) -> dict[str, Any]:
    """The best MAE in the punched gaps (``"mae"``), its ridge, and on the hidden pixels of
    the inner frames the MAE before (``"inner"``) and after the neighbours' correction
    (``"neighbours"``, :func:`with_neighbours`); ``"localised"``: per length (km), the
    best MAE and ridge of the localised covariance."""
    truth, _, hidden, is_video = load_case(case, seed)
    if is_video:
        raise ValueError("the kriging oracle is measured on the cubes, not on video")
    values = np.asarray(truth.values, dtype=np.float64)
    n_t = values.shape[0]
    values = values.reshape(n_t, -1)
    hidden = hidden.reshape(n_t, -1)
    sea = np.isfinite(values).all(0)
    values, hidden = values[:, sea], hidden[:, sea]
    localised = {}
    if lengths:
        lat, lon = (np.asarray(truth[d].values, dtype=np.float64) for d in truth.dims[1:])
        dist = grid_distances(lat, lon)[np.ix_(sea, sea)]
        for length in lengths:
            maes = np.abs(krige_localised(values, hidden, gaspari_cohn(dist / length), ridges)
                          - values[hidden]).mean(1)
            localised[length] = (float(maes.min()), ridges[int(np.argmin(maes))])
    pred = krige(values, hidden, ridges)
    maes = np.abs(pred - values[hidden]).mean(1)
    i = int(np.argmin(maes))
    inner = hidden.copy()
    inner[[0, -1]] = False
    return {
        "mae": float(maes[i]), "ridge": ridges[i],
        "inner": float(np.abs(pred[i] - values[hidden])[inner[hidden]].mean()),
        "neighbours": with_neighbours(values, hidden, pred[i]), "localised": localised,
    }


def main(argv: list[str] | None = None) -> None:
    """Print a markdown table: a row per case, the oracle's MAE, its ridge and the
    neighbours' correction (inner frames)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="ostia,a1b,pacific,hgt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lengths", default="",
                   help="localisation lengths in km, comma-separated (none by default)")
    p.add_argument("--ridges", default="", help="ridges tried, comma-separated (RIDGES)")
    args = p.parse_args(argv)
    lengths = tuple(float(v) for v in args.lengths.split(",") if v)
    ridges = tuple(float(v) for v in args.ridges.split(",")) if args.ridges else RIDGES
    print(f"| case (seed {args.seed}) | kriging oracle MAE | ridge | inner frames | "
          "with the true values a frame before and after |"
          + "".join(f" localised {v:g} km (ridge) |" for v in lengths))
    print("| --- | ---: | ---: | ---: | ---: |" + " ---: |" * len(lengths))
    for case in args.cases.split(","):
        r = oracle(case, args.seed, ridges, lengths)
        print(f"| {case} | {r['mae']:.4g} | {r['ridge']:g} | {r['inner']:.4g} | "
              f"{r['neighbours']:.4g} ({r['neighbours'] / r['inner'] - 1:+.1%}) |"
              + "".join(f" {m:.4g} ({rd:g}) |" for m, rd in r["localised"].values()),
              flush=True)


if __name__ == "__main__":
    main()
