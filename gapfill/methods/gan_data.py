"""Training data and validation pixels of the ``gan`` method.

:class:`TrainingData` holds everything ``fit`` draws training windows from, in
normalised units: the input with its validation pixels hidden, the guides
(:mod:`gapfill.guides`) computed without the pixels each window hides for the
L1 term, the conditioning channels and the occlusion processes.

Validation pixels (early stopping, the guide's choice) are hidden in the
shapes of the cube's own gaps (:func:`validation_pattern`: the data's missing
pattern at other times, :class:`gapfill.masks.Empirical`, whole gaps in runs of
whole frames) when the cube has enough gaps, so that large drifting gaps are
represented as they are in the data; otherwise in the shapes of the occlusion
process.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gapfill.guides import (
    REGEM_FIRST_START_RIDGE,
    REGEM_FIRST_START_STEPS,
    REGEM_RIDGES,
    REGEM_START_STEPS,
    REGEM_STARTED_STEPS,
    REGEM_STEPS,
    RegemStart,
    choose_guide,
    eof_guide,
    regem_seconds,
    regem_start,
)
from gapfill.localisation import is_lonlat
from gapfill.training import random_flips

if TYPE_CHECKING:
    from gapfill.cube import Cube
    from gapfill.masks import OcclusionProcess
    from gapfill.methods.gan import GAN

#: The data's own gaps give the validation shapes when they cover at least this share of
#: the pixels observed at least once (below it, the occlusion process's shapes are used).
MIN_GAP_SHARE = 0.05
#: Under ``guide="auto"``, the ``"regem"`` guide is a candidate only where one costs at
#: most this share of ``time_budget`` (of its default when ``None``;
#: :func:`~gapfill.guides.regem_seconds`), with the most E-steps of
#: :data:`~gapfill.guides.REGEM_STEPS` that keep it there: a fit builds a pool of guides,
#: redraws them as it trains and builds a dozen more after training.
REGEM_BUDGET_SHARE = 1 / 40
#: Where none does, the candidates take :data:`~gapfill.guides.REGEM_STARTED_STEPS`
#: E-steps from an EM fit made before the choice, where that fit
#: (:data:`~gapfill.guides.REGEM_FIRST_START_STEPS` E-steps) and one such guide are
#: estimated to cost at most these shares of ``time_budget``. Such guides cost half as
#: much as 3 E-steps from the DINEOF fill and come closer to EM's fixed point; training
#: then gets little time. On A1B (240 × 37 × 49; estimated 96 s and 17 s on one core)
#: the whole fit took 361 s on two cores and its guide scored 19% below training's
#: correction of the best other guide (docs/benchmarks.md).
REGEM_FIRST_START_SHARES = (1 / 4, 1 / 20)
#: The fill's ``"regem"`` guides start their E-steps from a fit of the training input run
#: until it converges (:func:`~gapfill.guides.regem_start`) where that fit is estimated
#: at most this share of ``time_budget`` (:data:`~gapfill.guides.REGEM_START_STEPS`
#: E-steps by :func:`~gapfill.guides.regem_seconds`).
REGEM_START_SHARE = 1 / 8


def validation_pattern(
    missing: np.ndarray, never: np.ndarray, share: float, rng: np.random.Generator,
    fallback: OcclusionProcess,
) -> tuple[np.ndarray, str]:
    """Gap shapes to draw validation pixels from, ``(T, H, W)``, and where they came from.

    The data's own missing pattern at other times (:class:`gapfill.masks.Empirical`,
    a random time shift of the whole sequence, so gaps keep their sizes, shapes
    and drift) when the data has at least :data:`MIN_GAP_SHARE` gaps and the
    shifted pattern covers at least ``share`` of the observed pixels; otherwise
    a sample of ``fallback`` (the occlusion process).
    """
    from gapfill import masks

    t, h, w = missing.shape
    valid = ~never
    gaps = float(missing[:, valid].mean()) if valid.any() else 0.0
    if t > 1 and gaps >= MIN_GAP_SHARE:
        process = masks.Empirical(missing, exclude=never, seed=int(rng.integers(2**31 - 1)))
        pattern = np.array(process.sample((t, h, w), rng, start=0), dtype=bool)
        observed = ~missing & valid[None]
        if (pattern & observed).sum() >= share * observed.sum():
            return pattern, "empirical"
    return np.array(fallback.sample((t, h, w), rng), dtype=bool), fallback.name


def gaps_in_runs(
    pattern: np.ndarray, missing: np.ndarray, share: float, rng: np.random.Generator,
    run: int,
) -> np.ndarray:
    """Hide about ``share`` of the observed pixels: ``pattern`` in random runs of frames.

    The candidates (``pattern`` on observed pixels) are cut in time into runs of
    ``run`` frames, and runs are kept at random with the probability that hides
    ``share`` of the observations (at least one run).
    A kept run hides the pattern's whole gaps in whole frames: hidden gaps
    are as large, as long and as far from the data as the real ones (a gap cut
    into pieces is easier to fill than the whole gap: its pieces border observed
    pixels of the same gap).
    """
    t = pattern.shape[0]
    cand = pattern & ~missing
    hidden = cand.sum() / max(1, (~missing).sum())
    q = min(1.0, share / max(float(hidden), 1e-6))
    run = max(1, run)
    runs = rng.random(-(-t // run)) < q
    if not runs.any():
        runs[rng.integers(runs.size)] = True
    keep = runs.repeat(run)[:t]
    return cand & keep[:, None, None]


# ----------------------------------------------------------------------------- gap likeness
#: Masks drawn per hide kept for the L1 term, and for the validation pixels.
CANDIDATES, VALIDATION_CANDIDATES = 4, 16

#: Weight of ``|log(share / val_share)|`` in the choice of the validation mask.
SHARE_WEIGHT = 0.25


def gap_distances(observed: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Mean ``log1p`` distance in space and in time from ``pixels`` to ``observed``.

    Both are boolean ``(T, H, W)``; the distances are those of the error model
    (:func:`gapfill.errors.gap_features`): to the nearest observed pixel of the same
    frame, and to the nearest observation of the same pixel in time.
    """
    from gapfill.errors import gap_features

    features = gap_features(observed[None])[:2, 0]
    return features[:, pixels].mean(1) if pixels.any() else np.full(2, np.inf)


def mismatch(seen: np.ndarray, hide: np.ndarray, real: np.ndarray) -> float:
    """How much farther from the data (or nearer) the pixels ``hide`` takes from ``seen``
    are than the real gaps' pixels, whose :func:`gap_distances` are ``real``.

    Hiding a pattern on top of the real gaps can lengthen and widen them (a hidden
    gap next to a real one makes one larger gap), and cutting it into runs of frames
    shortens it: the pixels would be harder or easier to fill than those of the
    real gaps. The sum of the differences of the two mean distances (log units).
    """
    return float(np.abs(gap_distances(seen & ~hide, seen & hide) - real).sum())


#: Bins of distance to the nearest observation (pixels in space, steps in time) by which
#: :func:`distance_weights` matches validation pixels to the real gaps.
DISTANCE_EDGES = (0.0, 1.5, 2.5, 4.0, 7.0, np.inf)


def distance_weights(
    seen: np.ndarray, val: np.ndarray, gaps: np.ndarray, axes: tuple[str, ...] = ("space",),
) -> np.ndarray:
    """Weights of the pixels ``val`` that make their distances to ``seen`` distributed as
    those of ``gaps``.

    All three are boolean ``(C, T, H, W)``. Each pixel falls in a bin of
    :data:`DISTANCE_EDGES` along each of ``axes`` (``"space"``: to the nearest
    observation of its frame; ``"time"``: of its pixel), and the weight of a bin
    is the share of ``gaps`` in it over the share of ``val`` in it. Validation
    pixels cut in small pieces sit nearer the observations than the real gaps
    (where the fills that interpolate do best); weighted, their mean error is that
    of a set of pixels as far from the data as the real gaps. The weights of
    ``val``'s pixels, in ``val``'s order, with mean 1 (all 1 when no bin holds both).
    """
    from gapfill.errors import gap_features

    features = gap_features(seen)
    columns = {"space": 0, "time": 1}
    edges = np.asarray(DISTANCE_EDGES)
    index = np.zeros(seen.shape, dtype=np.int64)
    for axis in axes:
        distance = np.expm1(features[columns[axis]])
        index = index * (len(edges) - 1) + np.clip(
            np.searchsorted(edges, distance, side="right") - 1, 0, len(edges) - 2)
    bins = (len(edges) - 1) ** len(axes)
    in_val = np.bincount(index[val], minlength=bins).astype(np.float64)
    in_gaps = np.bincount(index[gaps], minlength=bins).astype(np.float64)
    ratio = np.divide(in_gaps / max(in_gaps.sum(), 1.0), in_val / max(in_val.sum(), 1.0),
                      out=np.zeros(bins), where=in_val > 0)
    weights = ratio[index[val]]
    if not weights.sum() > 0:
        return np.ones(int(val.sum()))
    return weights / weights.mean()


def pool_hides(
    process: OcclusionProcess, x: np.ndarray, observed: np.ndarray, never: np.ndarray,
    count: int, share: float | None, run: int, rng: np.random.Generator,
) -> list[np.ndarray]:
    """``count`` hides ``(N, T, H, W)`` for the L1 term, as far from the data as the real gaps.

    A hide is ``process``'s pattern, or with a ``share`` the pattern in runs of
    ``run`` frames taking about that share of the training input's observations
    (:func:`gaps_in_runs`). :data:`CANDIDATES` distinct hides are drawn per hide
    kept, and those kept have the smallest :func:`mismatch` (summed over the
    blocks). ``x`` is the training input (validation pixels hidden), ``observed``
    the data's observed pixels and ``never`` the never-observed ones, all with a
    leading block axis.
    """
    n, _, t, h, w = x.shape
    given = np.isfinite(x).any(1)  # pixels with an observation in some channel
    seen = observed.any(1)
    real = [gap_distances(seen[b], ~seen[b] & ~never[b][None]) for b in range(n)]
    scored: dict[bytes, tuple[float, int, np.ndarray]] = {}  # one entry per distinct hide
    for i in range(CANDIDATES * count):
        hide = np.stack([np.asarray(process.sample((t, h, w), rng), dtype=bool)
                         for _ in range(n)])
        if share is not None:
            hide = np.stack([gaps_in_runs(hide[b], ~given[b], share, rng, run)
                             for b in range(n)])
        key = np.packbits(hide).tobytes()
        if not (given & hide).any() or key in scored:
            continue
        score = sum(mismatch(given[b], hide[b], real[b]) for b in range(n) if hide[b].any())
        scored[key] = (score, i, hide)
    ranked = sorted(scored.values(), key=lambda item: item[:2])
    return [hide for _, _, hide in ranked[:count]]


def validation_pixels(
    missing: np.ndarray, never: np.ndarray, share: float, rng: np.random.Generator,
    fallback: OcclusionProcess,
) -> tuple[np.ndarray, str]:
    """Validation pixels ``(T, H, W)`` of one block, and the source of their shapes.

    Of :data:`VALIDATION_CANDIDATES` draws of :func:`validation_pattern` in runs of
    a sixth of the frames (:func:`gaps_in_runs`), the one whose pixels are as far
    from the data as the real gaps' (:func:`mismatch`) and hold out about ``share``
    of the observations (:data:`SHARE_WEIGHT`).
    """
    seen = ~missing
    real = gap_distances(seen, missing & ~never[None])
    best: tuple[float, np.ndarray, str] | None = None
    for _ in range(VALIDATION_CANDIDATES):
        pattern, source = validation_pattern(missing, never, share, rng, fallback)
        val = gaps_in_runs(pattern, missing, share, rng, missing.shape[0] // 6)
        if not val.any():
            continue
        score = mismatch(seen, val, real) + SHARE_WEIGHT * abs(
            np.log(val.sum() / (share * seen.sum())))
        if best is None or score < best[0]:
            best = (score, val, source)
    if best is None:
        return np.zeros_like(missing), fallback.name
    return best[1], best[2]


def _unit(diffs: list[np.ndarray]) -> float:
    """Mean absolute value of ``diffs``, or 1 when there are none (or it is not a usable
    unit: not finite, or about 0)."""
    flat = np.concatenate(diffs) if diffs else np.empty(0)
    mae = float(np.abs(flat).mean()) if flat.size else 1.0
    return mae if np.isfinite(mae) and mae > 1e-6 else 1.0


# ----------------------------------------------------------------------------- data
#: Pixels filled at each validation: a cube (or the blocks of a streaming fit) up to this
#: size is validated whole; a larger one on the regions richest in validation pixels, since
#: filling everything at every evaluation would cost more than the steps in between.
VALIDATION_PIXELS = 2**21


def validation_regions(
    val: np.ndarray, window: tuple[int, int, int], budget: int = VALIDATION_PIXELS
) -> list[tuple[int, tuple[slice, slice, slice]]]:
    """``(block, (t, y, x) slices)`` to validate on, at most ``budget`` pixels in all.

    ``val`` is ``(N, C, T, H, W)``. Each block's frames from a window before its first
    validation frame to a window after its last are taken while they fit; otherwise
    the blocks are cut into regions of two windows per axis, taken by decreasing
    number of validation pixels.
    """
    n, _, t, h, w = val.shape
    spans = []
    for b in range(n):
        frames = np.flatnonzero(val[b].any((0, 2, 3)))
        if frames.size:
            first, last = max(0, frames[0] - window[0]), min(t, frames[-1] + 1 + window[0])
            spans.append((b, (slice(int(first), int(last)), slice(None), slice(None))))
    if sum((sl[0].stop - sl[0].start) * h * w for _, sl in spans) <= budget:
        return spans
    size = [min(2 * s, m) for s, m in zip(window, (t, h, w))]
    starts = itertools.product(range(n), *(range(0, m, s) for m, s in zip((t, h, w), size)))
    candidates = []
    for b, *corner in starts:
        sl = tuple(slice(a, a + s) for a, s in zip(corner, size))
        count = int(val[b][(slice(None), *sl)].sum())
        if count:
            candidates.append((count, b, sl))
    candidates.sort(key=lambda c: -c[0])
    chosen, used = [], 0
    for _, b, sl in candidates:
        volume = np.prod([s.stop - s.start for s in sl])
        if chosen and used + volume > budget:
            break
        chosen.append((b, sl))
        used += volume
    return chosen


@dataclass
class TrainingData:
    """Everything fit() draws windows from (numpy, normalised units).

    The arrays have a leading *block* axis: one block, the whole cube, for a cube
    in memory; for a streaming fit (:meth:`GAN.fit_streaming`), ``fit_blocks``
    sub-cubes read from a dask-backed cube (:meth:`~gapfill.cube.Cube.sample_windows`).
    """

    x: np.ndarray  # (N, C, T, H, W) training input, validation pixels hidden
    truth: np.ndarray  # (N, C, T, H, W) all observed values (for the validation MAE)
    val: np.ndarray  # (N, C, T, H, W) validation pixels
    never: np.ndarray  # (N, H, W) never observed in any channel
    extras: np.ndarray  # (N, E, T, H, W)
    guides: list[np.ndarray | None]  # [0]: guide of x; [1:]: guides without hides[i]
    hides: list[np.ndarray | None]  # (N, T, H, W) extra-hidden pixels per guide
    process: Any
    recon_process: Any
    clean: np.ndarray | None  # (N, C, T, H, W)
    window: tuple[int, int, int]
    setup_seconds: float
    #: Seconds to choose the guide of ``x`` (:func:`~gapfill.guides.choose_guide`) and to
    #: build one guide of it (of ``x`` less a pool hide, a regem guide's seconds scaled to
    #: ``x`` by :func:`~gapfill.guides.regem_seconds`): what estimates the guide work left
    #: after training.
    choice_seconds: float = 0.0
    guide_seconds: float = 0.0
    #: Draws a fresh hide for the L1 term and the guides without it (``None``: no pool).
    redraw: Callable[[np.random.Generator], tuple[Any, Any]] | None = None
    #: The converged EM fit of ``x`` that the fill's ``"regem"`` guides start from
    #: (``None``: they start from the DINEOF fill). ``guides[0]`` starts from it; the
    #: pool's guides do not: it has seen the values they hide.
    guide_start: RegemStart | None = None

    @property
    def channels(self) -> int:
        return self.x.shape[1]

    @classmethod
    def build(
        cls, method: GAN, cube: Cube, rng: np.random.Generator, clean: Any,
        blocks: int | None = None, deadline: float | None = None,
    ) -> TrainingData:
        """Read the cube (or ``blocks`` sampled sub-cubes), hide validation pixels, build
        the occlusion processes and the guides; the guide pool stops growing once
        ``deadline`` (a :func:`time.monotonic` time) is passed (at least one is built)."""
        t0 = time.monotonic()
        o = method.options
        coords = cube.coords()
        if blocks:
            if o.supervision != "unsupervised" or o.occlusion == "empirical":
                raise ValueError(
                    "a streaming gan fit (sampled blocks of a large dask-backed cube) is "
                    "unsupervised with a synthetic occlusion process: use "
                    "occlusion='cloud' (or another process), or load the cube into memory"
                )
            # Blocks of one window in time (the guide of a long block is costly) and two in
            # space, so the training windows vary inside them.
            size = tuple(min(k * s, n) for k, s, n in zip((1, 2, 2), o.window, cube.shape[1:]))
            truth, offsets = cube.sample_windows(blocks, size, rng)
        else:
            truth = cube.values()[None]
            offsets = np.zeros((1, 3), dtype=np.int64)
        n, c, t, h, w = truth.shape
        observed = np.isfinite(truth)
        never = ~observed.any((1, 2))
        missing = ~observed.any(1)
        seeds = rng.integers(2**31 - 1, size=3)
        coverage = o.coverage
        if n > 1 and coverage is None:  # the blocks' own share of gaps
            coverage = float(np.clip(missing[np.broadcast_to(~never[:, None], missing.shape)]
                                     .mean(), 0.02, 0.9))
        process = method._process(missing[0], never[0], coverage, int(seeds[0]), n > 1)
        val = np.zeros_like(observed)
        sources = []
        if o.val_share > 0:
            for b in range(n):
                pixels, source = validation_pixels(missing[b], never[b], o.val_share, rng,
                                                   process)
                sources.append(source)
                val[b] = pixels & observed[b]
            if val.sum() == 0 or (observed & ~val).sum() == 0:
                val = np.zeros_like(observed)
        method._meta["validation_shapes"] = sorted(set(sources)) if val.any() else None
        x = np.where(val, np.nan, truth).astype(np.float32)

        if o.recon_weight > 0 or o.guide != "none":
            recon_cov = o.recon_coverage if o.recon_coverage is not None else coverage
            recon_process = method._process(missing[0], never[0], recon_cov, int(seeds[1]),
                                            n > 1)
        else:
            recon_process = None

        meta = method._meta
        meta["window"] = [min(a, b) for a, b in zip(o.window, (t, h, w))]
        meta["use_time"] = bool(o.time_channels and coords.time_of_year is not None)
        meta["use_coords"] = bool(o.coord_channels)
        meta["coord_stats"] = [
            float(np.mean(coords.y)), float(np.std(coords.y) or 1.0),
            float(np.mean(coords.x)), float(np.std(coords.x) or 1.0),
        ]
        extras = np.stack([
            method._extras(coords.isel(*(slice(a, a + s) for a, s in zip(off, (t, h, w)))),
                           (t, h, w))
            for off in offsets
        ])

        guides: list[np.ndarray | None] = [None]
        hides: list[np.ndarray | None] = [None]
        redraw = None
        guide_start = None
        choice_seconds = guide_seconds = 0.0
        if o.guide != "none":
            # The guide's kind and parameters are chosen on the block with most validation.
            ref = int(np.argmax(val.reshape(n, -1).sum(1)))
            started = time.monotonic()
            # a regem guide needs the latitudes and longitudes of a whole grid, and a fit
            # builds a few dozen guides: one may take a small share of the time budget
            if blocks and o.guide == "regem":
                raise ValueError("guide='regem' needs the whole grid: a streaming gan fit "
                                 "trains on sampled blocks; use guide='auto' or 'eof_interp'")
            grid = (None if blocks or not is_lonlat(cube.da, cube.dims)
                    else [[float(v) for v in coords.y], [float(v) for v in coords.x]])
            steps = REGEM_STEPS[0]
            # the default budget's share without one: the pool's redraws never stop
            budget = type(o).time_budget if o.time_budget is None else o.time_budget
            first_start, start_seconds = False, 0.0
            if grid is not None:
                affordable = [s for s in REGEM_STEPS
                              if regem_seconds(x[ref], s) <= REGEM_BUDGET_SHARE * budget]
                steps = max(affordable, default=steps)
                # too dear from the DINEOF fill: a fit first, then a few E-steps from it
                first_start = not affordable and n == 1 and (o.guide == "regem" or (
                    regem_seconds(x[ref], REGEM_STARTED_STEPS)
                    <= REGEM_FIRST_START_SHARES[1] * budget
                    and regem_seconds(x[ref], REGEM_FIRST_START_STEPS)
                    <= REGEM_FIRST_START_SHARES[0] * budget))
                if first_start:
                    steps = REGEM_STARTED_STEPS
                elif o.guide == "auto" and not affordable:
                    grid = None
            meta["guide_grid"] = grid
            meta["guide_regem_steps"] = steps
            meta["guide_first_start"] = first_start
            meta.pop("guide_start_steps", None)
            if first_start:
                # x lacks the validation pixels: the choice scores values the fit has not seen
                guide_start = regem_start(x[ref], eof_guide(x[ref], o.guide_modes)[0], grid,
                                          REGEM_FIRST_START_RIDGE, REGEM_FIRST_START_STEPS)
                start_seconds = time.monotonic() - started
            guide, *first = choose_guide(x[ref], val[ref], truth[ref], o.guide, o.guide_modes,
                                         grid=grid, regem_steps=steps, start=guide_start)
            meta["guide"] = guide.to_dict()
            meta["guide_frames"] = int(t)  # how many frames it was chosen on
            # what tune's choice costs: the first start is not fitted again
            choice_seconds = guide_seconds = time.monotonic() - started - start_seconds
            if guide.kind != "regem" and not first_start:  # tune's choice may use a first
                guide_start = None
            elif guide.kind == "regem" and guide_start is None and n == 1 and regem_seconds(
                    x[ref], REGEM_START_STEPS) <= REGEM_START_SHARE * budget:
                # EM converges slowly from the DINEOF fill: the fill's guides start from
                # the moments of one fit of x run until it converges. x lacks the
                # validation pixels and the hold-out: that fit has not seen the values
                # those guides are scored on.
                guide_start = regem_start(x[ref], first[1], guide.grid,
                                          guide.em_ridge or REGEM_RIDGES[0])
                if guide_start is not None:
                    first = list(guide.make_with_base(x[ref], guide_start))
            if guide_start is not None:
                meta["guide_start_steps"] = guide_start.steps

            def make(xb: np.ndarray) -> np.ndarray:  # the guide, then its base
                return guide.stacked(xb, o.guide_base)

            start = np.concatenate(first) if o.guide_base else first[0]
            guides = [np.stack([start if b == ref else make(x[b]) for b in range(n)])]
            if val.any():
                meta["guide_val_mae"] = float(np.abs(guides[0][:, :c][val] - truth[val]).mean())
            if o.recon_weight > 0 and o.supervision != "paired":
                # Sampled blocks share the pool: about guide_pool variants in all, at least 1
                # per block (each is a guide of every block).
                pool = o.guide_pool if n == 1 else -(-o.guide_pool // n)
                run = max(1, meta["window"][0] // 2)  # half the (clipped) window

                def guides_without(hide: np.ndarray) -> np.ndarray:
                    return np.stack([make(np.where(hide[b], np.nan, x[b])) for b in range(n)])

                def redraw(generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
                    hide = pool_hides(recon_process, x, observed, never, 1, o.recon_share,
                                      run, generator)
                    return (guides_without(hide[0]), hide[0]) if hide else (None, None)

                for i, hide in enumerate(pool_hides(recon_process, x, observed, never, pool,
                                                    o.recon_share, run, rng)):
                    if i and deadline is not None and time.monotonic() > deadline:
                        break
                    started = time.monotonic()
                    guides.append(guides_without(hide))
                    hides.append(hide)
                    if not i:  # one guide of every block
                        guide_seconds = (time.monotonic() - started) / n
                        if guide.kind == "regem":
                            # the guides after training hide none of the pool's pixels: a
                            # regem guide's cost grows with the gaps (regem_seconds)
                            guide_seconds *= (regem_seconds(x[ref], steps) / regem_seconds(
                                np.where(hide[ref], np.nan, x[ref]), steps))
        clean_arr = _as_clean(clean, cube) if o.supervision != "unsupervised" else None
        if o.supervision != "unsupervised" and clean_arr is None:
            raise ValueError(f"supervision={o.supervision!r} needs fit(..., clean=...)")
        if clean_arr is not None and clean_arr.shape != truth.shape[1:]:
            raise ValueError(f"clean has shape {clean_arr.shape}, expected {truth.shape[1:]}")
        if clean_arr is not None:  # validation scores pixels training never learned
            clean_arr = np.where(val[0], np.nan, clean_arr).astype(np.float32)
        return cls(
            x, truth, val, never, extras, guides, hides, process, recon_process,
            None if clean_arr is None else clean_arr[None],
            tuple(meta["window"]), time.monotonic() - t0, choice_seconds, guide_seconds,
            redraw, guide_start,
        )

    def refresh(self, member: int, rng: np.random.Generator) -> None:
        """Replace guide ``member`` (1 and up) of the pool and its hide by a fresh draw."""
        if self.redraw is None or not 1 <= member < len(self.guides):
            return
        guide, hide = self.redraw(rng)
        if hide is not None:
            self.guides[member], self.hides[member] = guide, hide

    def guide_error(self) -> float:
        """Mean absolute error of the guide on pixels it did not see (1 without a guide).

        Taken on the validation pixels, or, without them, on the pixels hidden
        from the pool's guides for the L1 term: the size of the correction the
        generator learns, which sets its :attr:`GeneratorConfig.residual_scale`.
        """
        diffs: list[np.ndarray] = []
        c = self.x.shape[1]  # guide channels beyond these are the guide's base
        if self.guides[0] is not None and self.val.any():
            diffs.append(self.guides[0][:, :c][self.val] - self.truth[self.val])
        else:
            for guide, hide in zip(self.guides[1:], self.hides[1:]):
                sel = np.broadcast_to(hide[:, None], self.x.shape) & np.isfinite(self.x)
                diffs.append(guide[:, :c][sel] - self.x[sel])
        return _unit(diffs)

    def base_spread(self) -> float:
        """Mean absolute departure of the observations from the guide's base (1 when the
        guides have no base): the unit of that departure in the generator's input."""
        g, c = self.guides[0], self.x.shape[1]
        if g is None or g.shape[1] == c:
            return 1.0
        obs = np.isfinite(self.x)
        return _unit([self.x[obs] - g[:, c:][obs]])

    def _offset(self, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """A random block and window start in it."""
        b = int(rng.integers(0, len(self.x))) if len(self.x) > 1 else 0
        limits = [n - s + 1 for n, s in zip(self.x.shape[2:], self.window)]
        t0, y0, x0 = (int(rng.integers(0, lim)) for lim in limits)
        return b, t0, y0, x0

    def batch(
        self, n: int, rng: np.random.Generator, recon: bool, fake: bool = True,
        flips: str = "none",
    ) -> dict[str, np.ndarray]:
        """Random training windows: input, target, masks, guide, extras and (with ``fake``)
        the re-occlusion masks the discriminators need.

        ``flips="time"`` reverses each window in time with probability 1/2, ``"all"``
        also in y and in x (each with probability 1/2), all its arrays alike.
        """
        wt, wh, ww = self.window
        out: dict[str, list[np.ndarray]] = {k: [] for k in (
            "y", "y_in", "hide", "guide", "extras", "fake_hidden", "valid", "clean", "real_clean")}
        pool = len(self.guides) - 1
        for _ in range(n):
            p = int(rng.integers(1, pool + 1)) if (recon and pool > 0) else 0
            for _try in range(100):  # a window with data (and, for the L1 term, hidden pixels)
                b, t0, y0, x0 = self._offset(rng)
                sl = (slice(t0, t0 + wt), slice(y0, y0 + wh), slice(x0, x0 + ww))
                y = self.x[b][(slice(None), *sl)]
                finite = np.isfinite(y)
                if finite.mean() >= 0.05 and (p == 0 or (finite & self.hides[p][b][sl]).any()):
                    break
            if recon and pool == 0:
                hide = self.recon_process.sample((wt, wh, ww), rng)
            elif recon:
                hide = self.hides[p][b][sl]
            else:
                hide = np.zeros((wt, wh, ww), dtype=bool)
            never = self.never[b][sl[1:]]
            out["y"].append(y)
            out["y_in"].append(np.where(hide, np.nan, y))
            out["hide"].append(np.broadcast_to(hide, y.shape) & np.isfinite(y))
            g = self.guides[p]
            if g is not None:
                out["guide"].append(g[b][(slice(None), *sl)])
            out["extras"].append(self.extras[b][(slice(None), *sl)])
            kw = {"start": t0} if self.process.name == "empirical" else {}
            if fake:
                hidden = self.process.sample((wt, wh, ww), rng, **kw) | never[None]
                out["fake_hidden"].append(np.broadcast_to(hidden, y.shape))
            out["valid"].append(np.broadcast_to(~never[None], y.shape))
            if self.clean is not None:
                out["clean"].append(self.clean[b][(slice(None), *sl)])
                a, a0, b0, c0 = self._offset(rng)
                out["real_clean"].append(
                    self.clean[a][:, a0 : a0 + wt, b0 : b0 + wh, c0 : c0 + ww]
                )
            if flips != "none":
                axes = random_flips(rng, (-3, -2, -1) if flips == "all" else (-3,))
                if axes:
                    for v in out.values():
                        if v:
                            v[-1] = np.flip(v[-1], axes)
        return {k: np.stack(v).astype(v[0].dtype) for k, v in out.items() if v}


def _as_clean(clean: Any, cube: Cube) -> np.ndarray | None:
    if clean is None:
        return None
    if isinstance(clean, np.ndarray):
        return clean.astype(np.float32)
    from gapfill.cube import Cube

    if not isinstance(clean, Cube):
        clean = Cube(clean, dims=cube.dims)
    raw = np.asarray(clean.da.values)
    raw = raw if raw.ndim == 4 else raw[None]
    return cube.normaliser.normalise(raw)

