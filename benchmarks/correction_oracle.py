"""How much could a learned correction of ``gan``'s guide gain? A supervised oracle.

For each case of :mod:`gan_benchmark` (the same data and punched gaps), a guide like the
one ``gan`` fills with is made from the gappy cube. With ``--guide regem`` (the climate
cubes on a latitude-longitude grid): one E-step from an EM fit of every observation run
until it converges, at the EM ridge best in the punched gaps. With ``--guide auto`` (OSTIA,
whose grid is too large for ``regem``, and video): the guide of
:func:`~gapfill.guides.choose_guide` best in the punched gaps among ``eof``, ``linear``,
``eof_interp`` and ``harmonic``. Both choices are oracles. A gradient-boosted regressor
(scikit-learn's ``HistGradientBoostingRegressor``, absolute-error loss) then learns the
guide's error at the punched pixels from local features of the guide and the
observations, with the *true* values under half of the punched gaps, and corrects the
other half (two folds, frames split in alternate blocks of :data:`BLOCK` frames, or
``--block``; ``--block 0``: the first and the second half of the frames).

No method has those values, and the corrector learns on gaps drawn like the ones it
corrects, but from the guide's neighbourhood alone: its gain indicates what a correction
of the guide can add, and bounds nothing. Short blocks flatter it where the field changes
slowly and the gaps move slowly (the moving bar over a video's still background): the
true values just before and after a corrected block, at the same pixels, are among what
it learns from. The features of a punched pixel (:func:`features`): the
guide, the guide less its DINEOF base, the guide's differences to its neighbours at 1
and 2 pixels in space and 1 frame in time, whether those frames observe the pixel, the
distance to the frame's nearest observation, the frame's and the 5 × 5 neighbourhood's
observed share, the mean observed residual from the DINEOF base in that neighbourhood,
the pixel's row and column, and its channel (one regressor for all).

Usage::

    python benchmarks/correction_oracle.py                       # Pacific and the height
    python benchmarks/correction_oracle.py --cases a1b,e1 --em-ridges 0.01
    python benchmarks/correction_oracle.py --cases ostia --guide auto
    python benchmarks/correction_oracle.py --cases bikes-moving_bar --guide auto --block 0

Needs ``scikit-learn`` (``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import sys
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gan_benchmark import load_case  # noqa: E402

from gapfill.cube import Cube  # noqa: E402
from gapfill.guides import (  # noqa: E402
    REGEM_FILL_RIDGES,
    REGEM_RIDGES,
    REGEM_STARTED_STEPS,
    Guide,
    choose_guide,
    eof_guide,
    regem_start,
)

#: Frames per block of the two folds (alternate blocks train and are corrected), unless
#: ``--block`` says otherwise.
BLOCK = 5
#: Spatial offsets whose guide differences are features.
OFFSETS = ((0, 1), (0, -1), (1, 0), (-1, 0), (0, 2), (0, -2), (2, 0), (-2, 0))


def normalised_case(case: str, seed: int) -> tuple[Any, Cube, np.ndarray, np.ndarray,
                                                    np.ndarray, np.ndarray, bool]:
    """``(gappy, cube, x, truth, hidden, std, video)`` of a :mod:`gan_benchmark` case: the
    gappy DataArray and its :class:`~gapfill.cube.Cube`, the normalised gappy and true
    ``(C, T, H, W)`` arrays (the truth normalised like ``x``), the punched pixels where the
    truth is known (``(T, H, W)``), the normaliser's ``(C, 1)`` standard deviations (for
    errors in the data's units) and whether the case is video."""
    truth_da, gappy, hidden, video = load_case(case, seed)
    cube, whole = Cube(gappy), Cube(truth_da)
    x = cube.values()
    truth = cube.normaliser.normalise(whole.normaliser.denormalise(whole.values()))
    hid = np.asarray(hidden, dtype=bool) & np.isfinite(truth).all(0)
    std = np.asarray(cube.normaliser.std, dtype=np.float64).reshape(-1, 1)
    return gappy, cube, x, truth, hid, std, video


def fold_of(frame: np.ndarray, n_time: int, block: int) -> np.ndarray:
    """The fold (0 or 1) of each index in ``frame`` of ``n_time`` frames: alternate blocks
    of ``block`` frames; ``block`` 0: the first and the second half of the frames."""
    size = block or -(-n_time // 2)
    return (np.asarray(frame) // size) % 2


def guide_of(x: np.ndarray, truth: np.ndarray, hidden: np.ndarray, grid: list,
             em_ridges: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, float]:
    """``(guide, base, em_ridge)``: the ``regem`` guide of ``x`` (normalised ``(1, T, H,
    W)``) best at the ``hidden`` pixels (``(T, H, W)``) among ``em_ridges``, and its
    DINEOF base (both ``(1, T, H, W)``)."""
    base = eof_guide(x)[0]
    best = None
    for ridge in em_ridges:
        start = regem_start(x, base, grid, ridge)
        recipe = Guide(kind="regem", grid=grid, em_ridge=ridge, steps=REGEM_STARTED_STEPS,
                       fill_ridge=REGEM_FILL_RIDGES[0])
        field = recipe.make(x, start)
        mae = float(np.abs(field[0][hidden] - truth[0][hidden]).mean())
        print(f"    EM ridge {ridge:g}: guide MAE {mae:.4f} (normalised)", flush=True)
        if best is None or mae < best[0]:
            best = (mae, field, ridge)
    return best[1], base, best[2]


def features(x: np.ndarray, guide: np.ndarray, base: np.ndarray) -> np.ndarray:
    """``(F, T, H, W)`` features of every pixel (see the module docstring); ``x`` is the
    gappy ``(T, H, W)`` field, ``guide`` and ``base`` complete ones."""
    from scipy import ndimage

    seen = np.isfinite(x)
    t, h, w = x.shape
    pad = np.pad(guide, ((1, 1), (2, 2), (2, 2)), mode="edge")
    out = [guide, guide - base]
    for di, dj in OFFSETS:
        out.append(pad[1:-1, 2 + di:2 + di + h, 2 + dj:2 + dj + w] - guide)
    for dt in (-1, 1):
        out.append(pad[1 + dt:1 + dt + t, 2:-2, 2:-2] - guide)
        shifted = np.zeros_like(seen)
        if dt < 0:
            shifted[1:] = seen[:-1]
        else:
            shifted[:-1] = seen[1:]
        out.append(shifted.astype(np.float32))
    distance = np.stack([ndimage.distance_transform_edt(~s) if s.any() else
                         np.full(s.shape, float(h + w)) for s in seen])
    out.append(distance)
    out.append(np.broadcast_to(seen.mean((1, 2), keepdims=True), seen.shape))
    count = ndimage.uniform_filter(seen.astype(np.float64), size=(1, 5, 5), mode="nearest")
    residual = ndimage.uniform_filter(np.where(seen, x - base, 0.0), size=(1, 5, 5),
                                      mode="nearest")
    out.append(count)
    out.append(np.where(count > 0, residual / np.maximum(count, 1e-12), 0.0))
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    out.append(np.broadcast_to(rows, seen.shape))
    out.append(np.broadcast_to(cols, seen.shape))
    return np.stack([np.asarray(f, dtype=np.float32) for f in out])


def corrected(x: np.ndarray, truth: np.ndarray, hidden: np.ndarray, guide: np.ndarray,
              base: np.ndarray, seed: int, block: int = BLOCK) -> np.ndarray:
    """``(C, pixels)``: the guide at the ``hidden`` pixels (``(T, H, W)``) of each channel
    of the ``(C, T, H, W)`` arrays plus its error as predicted by a regressor trained on
    the other fold's hidden pixels (folds: :func:`fold_of`; in ``hidden``'s order; one
    regressor for all channels, the channel a feature)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    n = int(hidden.sum())
    f = np.concatenate([
        np.column_stack([features(x[c], guide[c], base[c])[:, hidden].T, np.full(n, c)])
        for c in range(x.shape[0])])  # (C * pixels, F + 1)
    target = (truth - guide)[:, hidden].reshape(-1)
    fold = np.tile(fold_of(np.nonzero(hidden)[0], x.shape[1], block), x.shape[0])
    out = guide[:, hidden].reshape(-1).astype(np.float64)
    for k in (0, 1):
        model = HistGradientBoostingRegressor(loss="absolute_error", learning_rate=0.05,
                                              max_iter=400, early_stopping=True,
                                              validation_fraction=0.15, random_state=seed)
        model.fit(f[fold != k], target[fold != k])
        out[fold == k] += model.predict(f[fold == k])
    return out.reshape(x.shape[0], n)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="pacific,hgt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guide", choices=("regem", "auto"), default="regem")
    parser.add_argument("--em-ridges", default=",".join(map(str, REGEM_RIDGES)))
    parser.add_argument("--block", type=int, default=BLOCK,
                        help="frames per block of the folds; 0: the two halves of the frames")
    args = parser.parse_args(argv)
    ridges = tuple(float(r) for r in args.em_ridges.split(","))
    rows = []
    for case in args.cases.split(","):
        gappy, cube, x, truth, hid, std, video = normalised_case(case, args.seed)
        if video and args.guide == "regem":
            raise SystemExit(f"{case}: a regem guide needs a latitude-longitude grid; "
                             "use --guide auto")

        def mae(at: np.ndarray) -> float:  # (C, pixels) at hid, in the data's units
            return float((np.abs(at - truth[:, hid]) * std).mean())

        print(f"[{case}] {dict(gappy.sizes)}, {hid.sum()} punched pixels", flush=True)
        if args.guide == "regem":
            coords = cube.coords()
            grid = [[float(v) for v in coords.y], [float(v) for v in coords.x]]
            guide, base, ridge = guide_of(x, truth, hid, grid, ridges)
            name = f"regem (EM ridge {ridge:g})"
        else:
            recipe, guide, _ = choose_guide(x, np.broadcast_to(hid, x.shape), truth, "auto",
                                            values=True)
            base, name = eof_guide(x)[0], str(recipe)
        # the DINEOF fill, corrected the same way: what the corrector can learn where
        # a guide leaves room
        for label, field in ((name, guide), ("DINEOF", base)):
            before = mae(field[:, hid])
            after = mae(corrected(x, truth, hid, field, base, args.seed, args.block))
            rows.append((case, label, before, after))
            print(f"[{case}] {label}: {before:.4f}, corrected {after:.4f} "
                  f"({after / before - 1:+.1%})", flush=True)
    print("\n| case | guide | its MAE | with the learned correction (oracle) | change |")
    print("|---|---|---:|---:|---:|")
    for case, label, before, after in rows:
        print(f"| {case} | {label} | {before:.4f} | {after:.4f} | {after / before - 1:+.1%} |")


if __name__ == "__main__":
    main()
