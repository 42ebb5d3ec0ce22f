"""Honest error figures from held-out observed pixels.

No ground truth exists under real clouds, so the only honest check is to hide
some observed pixels in gap-shaped patches, fill without them and compare.
The hold-out is drawn from a seeded occlusion process, so the same pixels are
held out when the model is fitted (it never sees them) and when it is scored.

By default (``process="auto"``) the patches are the cube's own gap shapes
(:func:`borrowed_gaps`: pieces of the gaps of other frames) when the cube has enough
gaps, and drifting clouds (:class:`gapfill.masks.Cloud`) otherwise, so the
held-out pixels are as far from the observations as the real gap pixels are.
The draws come from their own random streams (:func:`stream_rng`): a hold-out
drawn with seed 0 is independent of a :mod:`gapfill.masks` draw with seed 0
(which a benchmark may have used to punch the gaps), and of the validation
pixels that calibrate the error model (:mod:`gapfill.errors`).

The product has the held-out observations that the scored fill lacks, and its gaps are not
the held-out pieces: the reported MAE is the scored one times what those observations are
worth to the fill (:attr:`Diagnostics.scale`, measured by ``fit`` on the validation pixels)
and times how much harder the real gaps are than the held-out pixels, as the error model
sees them (:attr:`Diagnostics.transfer`, :func:`holdout_transfer`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gapfill import core
from gapfill.errors import gap_features, window_frames, within_shares
from gapfill.metrics import error_summary

if TYPE_CHECKING:
    import xarray as xr

    from gapfill.fitted import FittedModel, Holdout


#: The hold-out (and a recipe's punched gaps) are drawn in time blocks of whole frames
#: holding about this many pixels: a cube up to this size is one block (one draw).
BLOCK_PIXELS = 2**24

#: Random streams of the draws made from one seed (see :func:`stream_rng`).
HOLDOUT_STREAM, VALIDATION_STREAM = 1, 2

#: ``process="auto"`` borrows the cube's own gap shapes when at least this share of the
#: pixels observed at some time are missing; clouds otherwise.
MIN_GAP_SHARE = 0.05

#: A hold-out needs at least this many observed values (in memory).
MIN_HOLDOUT_SOURCE = 20

#: Share of the observed pixels (after the hold-out) hidden from every fit as validation
#: pixels for the error model.
VALIDATION_FRACTION = 0.1
#: Fewer observed pixels than this (after the hold-out, in memory): no validation pixels
#: are hidden, and the error model is the data's spread.
MIN_VALIDATION_SOURCE = 200
#: A method whose fit is cheap (``refit_with_validation``) and whose validation pixels
#: number fewer than this is fitted again on more draws (each without its own hold-out
#: and validation pixels), whose validation pixels the error model pools, up to
#: :data:`MAX_VALIDATION_DRAWS` draws in all: on a small cube a single draw's few
#: hundred pieces leave the scale of the error to chance.
MIN_VALIDATION_PIXELS = 5000
MAX_VALIDATION_DRAWS = 4

#: The hold-out MAE's standard error (``mae_se``): a bootstrap that resamples this many
#: stretches of time with replacement, this many times (the hold-out is a few drifting
#: patches, so its pixels are not independent). Fewer than :data:`MIN_SE_BLOCKS` stretches
#: holding hold-out pixels give NaN.
TIME_BLOCKS, RESAMPLES, MIN_SE_BLOCKS = 10, 2000, 3

#: Draws tried before a block's hold-out is given up as empty (the last two as clouds,
#: then single pixels).
ATTEMPTS = 6


def time_blocks(n_time: int, height: int, width: int) -> list[slice]:
    """The time blocks masks are drawn in: ``BLOCK_PIXELS // (H·W)`` frames each (at least 1)."""
    step = max(1, BLOCK_PIXELS // max(1, height * width))
    return [slice(t0, min(n_time, t0 + step)) for t0 in range(0, n_time, step)]


def block_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of punched-gap block ``index``: ``seed`` itself for the first block,
    so a one-block punch equals the :mod:`gapfill.masks` draw with that seed."""
    return np.random.default_rng(seed if index == 0 else [seed, index])


def stream_rng(seed: int, stream: int, index: int, draw: int = 0) -> np.random.Generator:
    """The generator of block ``index`` of a draw ``stream`` (:data:`HOLDOUT_STREAM`, ...).

    Spawned from ``SeedSequence(seed)`` with the key ``(stream, index)`` (``(stream,
    index, draw)`` for the repeated hold-out draws ``draw > 0``), so it is independent
    of ``default_rng(seed)`` (the :mod:`gapfill.masks` and punch draws), of the other
    streams and of the other draws.
    """
    key = (stream, index) if draw == 0 else (stream, index, draw)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def resolve_process(process: str, observed: Any) -> str:
    """The hold-out process to use: ``process``, or for ``"auto"`` ``"empirical"`` when
    at least :data:`MIN_GAP_SHARE` of the ever-observed pixels are missing, else ``"cloud"``.

    ``observed`` is the ``(C, T, H, W)`` boolean observed mask (numpy or dask).
    """
    if process != "auto":
        return process
    seen = observed.any(0)  # (T, H, W)
    ever = seen.any(0)
    n_missing = (~seen & ever[None]).sum()
    n_ever = ever.sum() * seen.shape[0]
    if hasattr(n_missing, "dask"):
        import dask

        n_missing, n_ever = dask.compute(n_missing, n_ever)
    share = float(n_missing) / max(float(n_ever), 1.0)
    return "empirical" if share >= MIN_GAP_SHARE else "cloud"


def borrowed_gaps(
    missing: np.ndarray,
    observed: np.ndarray,
    fraction: float,
    rng: np.random.Generator,
    exclude: np.ndarray | None = None,
    tiled: bool = False,
) -> np.ndarray:
    """Hide pieces of the gaps of other frames until about ``fraction`` of ``observed`` is hidden.

    The cube's missing pattern is shifted in time (:class:`gapfill.masks.Empirical`:
    ``T`` consecutive frames from a random other start); the parts of its gaps that fall
    on ``observed`` pixels (regions connected in space and time, cut into time slabs of
    the mean gap duration) are taken in random order, slab by slab, until they cover
    ``fraction`` of the observed pixels so far (a slab's shortfall or excess carries over
    to the next), so the hidden patches have the real gaps' shapes and durations and the
    hidden pixels are spread evenly over time.

    Parameters
    ----------
    missing
        ``(T, H, W)`` missing pattern of the data.
    observed
        ``(T, H, W)`` pixels that may be hidden.
    fraction
        Target share of ``observed`` to hide.
    rng
        The generator.
    exclude
        ``(H, W)`` pixels never observed (never part of a gap).
    tiled
        Also cut the pieces by square tiles as wide as the mean gap of a frame (the
        square root of its mean area): many more, smaller pieces, for the validation
        pixels of the error model, which learns how the error grows with the distance to
        the observations and needs many independent gaps more than gaps of the true size.

    Returns
    -------
    numpy.ndarray
        ``(T, H, W)`` boolean, True where hidden (always within ``observed``).
    """
    from scipy import ndimage

    from gapfill import masks

    shape = missing.shape
    if exclude is not None and exclude.all():
        return np.zeros(shape, dtype=bool)
    source = masks.Empirical(missing, exclude=exclude)
    gaps = source.sample(shape, rng)
    # Gaps are regions connected in space and time, cut into time slabs of about the mean
    # gap duration (so that one drifting gap spanning the whole cube is still many gaps)
    # and chosen slab by slab (so that every stretch of time gets its share).
    ever = ~exclude if exclude is not None else np.ones(shape[1:], dtype=bool)
    starts = (missing[1:] & ~missing[:-1] & ever).sum() + (missing[0] & ever).sum()
    duration = float((missing & ever).sum()) / max(float(starts), 1.0)
    slab = int(np.clip(round(duration), 1, shape[0]))
    # The pieces are the parts of the borrowed gaps that fall on observed pixels: at high
    # cloud cover a whole borrowed gap is one giant region, and a handful of them would
    # make the whole hold-out. What a slab takes short of (or beyond) its share is carried
    # over to the next slab, so the hidden share stays close to ``fraction`` throughout.
    gaps = gaps & observed
    tiles = _gap_tiles(missing & ever) if tiled else None
    chosen = np.zeros(shape, dtype=bool)
    debt = 0.0
    for t0 in range(0, shape[0], slab):
        sl = slice(t0, t0 + slab)
        target = fraction * float(observed[sl].sum()) + debt
        piece, n = ndimage.label(gaps[sl])
        if tiles is not None and n:  # pieces cut by the tiles, numbered 1..n again
            cut = np.where(piece > 0, piece.astype(np.int64) * (int(tiles.max()) + 1) + tiles, 0)
            piece = np.unique(cut, return_inverse=True)[1].reshape(cut.shape)
            n = int(piece.max())
        if n == 0:
            debt = target
            continue
        counts = np.bincount(piece.ravel(), minlength=n + 1)[1:].astype(np.float64)
        order = rng.permutation(n)
        total = np.concatenate([[0.0], np.cumsum(counts[order])])
        k = int(np.searchsorted(total, target))  # the first k pieces reach the target
        if k > n or k > 0 and target - total[k - 1] < total[k] - target:
            k -= 1  # the nearer of the two sums around the target
        debt = target - total[k]
        take = np.zeros(n + 1, dtype=bool)
        take[1 + order[:k]] = True
        chosen[sl] = take[piece]
    return chosen


def _gap_tiles(missing: np.ndarray) -> np.ndarray:
    """``(H, W)`` tile numbers of square tiles as wide as the mean gap (regions connected
    in space) of a frame of ``missing`` ``(T, H, W)``."""
    from scipy import ndimage

    in_frame = np.zeros((3, 3, 3), dtype=bool)
    in_frame[1] = ndimage.generate_binary_structure(2, 1)
    n = ndimage.label(missing, structure=in_frame)[1]
    side = max(2, int(round(np.sqrt(missing.sum() / max(n, 1)))))
    _, height, width = missing.shape
    rows, cols = np.meshgrid(np.arange(height) // side, np.arange(width) // side, indexing="ij")
    return rows * (width // side + 1) + cols


def holdout_mask(
    observed: np.ndarray,
    holdout: Holdout,
    missing: np.ndarray | None = None,
    persist: bool = False,
    stream: int = HOLDOUT_STREAM,
    required: bool = True,
    draw: int = 0,
    tiled: bool = False,
) -> np.ndarray:
    """Draw the hold-out: observed pixels hidden in gap-shaped patches.

    The draw is made per time block (:func:`time_blocks`; block ``b`` uses the
    generator :func:`stream_rng` ``(seed, stream, b)``), so a dask-backed cube gets
    the same hold-out, lazily, block by block, whatever its chunks. A cube of up to
    ``BLOCK_PIXELS`` pixels is one block. The ``"empirical"`` process borrows
    the gap shapes of the block's own frames (:func:`borrowed_gaps`). A block whose
    draw hides nothing is drawn again (clouds at the last attempts). A pixel observed
    more than once that the draw would take every observation of keeps them
    (:func:`every_observation`), unless nothing else is left to hold out.

    Parameters
    ----------
    observed
        ``(C, T, H, W)`` boolean array of observed pixels (numpy or dask).
    holdout
        The hold-out specification (share, process, seed); ``process`` must be
        resolved (:func:`resolve_process`).
    missing
        ``(T, H, W)`` missing pattern of the data, for the ``"empirical"``
        process (default: pixels missing in any channel).
    persist
        For dask input: draw the blocks now and keep them packed in bits (``T·H·W/8``
        bytes), so that passes over the data that use the hold-out do not draw it again.
        The ``"empirical"`` process, which looks at the data, stays lazy.
    stream
        The random stream (:data:`HOLDOUT_STREAM`, :data:`VALIDATION_STREAM`).
    required
        Raise when an in-memory draw hides nothing (else return the empty mask).
    draw
        Which of the repeated draws (:func:`fit_masks`); 0 is the model's hold-out.
    tiled
        For the ``"empirical"`` process: cut the borrowed gaps into smaller pieces
        (:func:`borrowed_gaps`), as for the validation pixels.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        ``(C, T, H, W)`` boolean, True where an observed pixel is held out;
        dask-backed (nothing computed) when ``observed`` is.

    Raises
    ------
    ValueError
        When an in-memory cube has fewer than :data:`MIN_HOLDOUT_SOURCE` observed
        values, or its draw would hold out nothing.
    """
    if hasattr(observed, "dask"):
        hidden = _holdout_lazy(observed, holdout, persist, stream, draw, tiled)
        if holdout.fraction == 0:
            return hidden
        return hidden & ~every_observation(observed, hidden)
    if holdout.fraction == 0:
        return np.zeros(observed.shape, dtype=bool)
    n_observed = int(observed.sum())
    if required and n_observed < MIN_HOLDOUT_SOURCE:
        raise ValueError(
            f"the cube has only {n_observed} observed values: too few to hold out "
            f"{holdout.fraction:g} of them and fit on the rest. Pass holdout=0 to fit "
            "without diagnostics."
        )
    _, t, h, w = observed.shape
    out = np.empty(observed.shape, dtype=bool)
    for b, sl in enumerate(time_blocks(t, h, w)):
        miss = None if missing is None else missing[sl]
        out[:, sl] = _holdout_block(observed[:, sl], holdout, b, miss, stream, draw, tiled)
    kept = out & ~every_observation(observed, out)
    if kept.any():  # a tiny cube may have nothing else to hold out
        out = kept
    if required and observed.any() and not out.any():
        raise ValueError(
            f"the hold-out ({holdout.fraction:g} of the observed pixels, {holdout.process} "
            f"patches) would hide no observed pixel: the cube has only {n_observed} "
            "observed values. Raise holdout, use holdout_process='remove_pixels', or pass "
            "holdout=0 to fit without diagnostics."
        )
    return out


def every_observation(observed: Any, hidden: Any) -> Any:
    """``(C, 1, H, W)``: the pixels observed at least twice that ``hidden`` would take
    every observation of.

    A hold-out keeps them observed: a fill without any observation of a pixel is
    not what the product faces (it gets the hold-out back), and a method that learns
    per pixel (``eof``'s loadings, ``climatology``'s means) would have nothing to learn
    it from. Numpy or dask (lazy) like ``observed``.
    """
    left = (observed & ~hidden).any(axis=1, keepdims=True)
    return (observed.sum(axis=1, keepdims=True) >= 2) & ~left


def _holdout_block(
    observed: np.ndarray,
    holdout: Holdout,
    index: int,
    missing: np.ndarray | None = None,
    stream: int = HOLDOUT_STREAM,
    draw: int = 0,
    tiled: bool = False,
) -> np.ndarray:
    from gapfill import masks

    _, t, h, w = observed.shape
    rng = stream_rng(holdout.seed, stream, index, draw)
    seen = observed.any(0)
    if not seen.any():
        return np.zeros(observed.shape, dtype=bool)
    never = ~seen.any(0)
    if missing is None:
        missing = ~observed.all(0)
    hidden = np.zeros((t, h, w), dtype=bool)
    for attempt in range(ATTEMPTS):
        # the last attempts: clouds, then single pixels (a tiny cube may hold no cloud)
        process = (holdout.process, "cloud", "remove_pixels")[max(0, attempt - ATTEMPTS + 3)]
        if process == "empirical":
            hidden = borrowed_gaps(missing, seen, holdout.fraction, rng, exclude=never, tiled=tiled)
        else:
            clouds = masks.make(process, coverage=holdout.fraction, seed=holdout.seed)
            hidden = clouds.sample((t, h, w), rng) & seen
        if hidden.any():
            break
    return hidden[None] & observed


def _holdout_lazy(observed: Any, holdout: Holdout, persist: bool = False,
                  stream: int = HOLDOUT_STREAM, draw: int = 0, tiled: bool = False) -> Any:
    import dask
    import dask.array as dsa

    if holdout.fraction == 0:
        return dsa.zeros_like(observed, dtype=bool)
    n_chan, t, h, w = observed.shape
    blocks = time_blocks(t, h, w)
    if holdout.process == "empirical":  # the draw needs the block's own gaps
        lengths = tuple(sl.stop - sl.start for sl in blocks)
        by_block = observed.rechunk({0: -1, 1: lengths, 2: -1, 3: -1})

        def draw_empirical(obs: np.ndarray, block_info: dict | None = None) -> np.ndarray:
            index = block_info[0]["chunk-location"][1] if block_info else 0
            return _holdout_block(obs, holdout, index, stream=stream, draw=draw, tiled=tiled)

        hidden = by_block.map_blocks(draw_empirical, dtype=bool, meta=np.array((), dtype=bool))
        return hidden.rechunk(observed.chunks)
    # Other processes do not look at the data: each block is drawn on its own (the draw
    # holds no data) and intersected with the observed pixels chunk by chunk.
    draws = [
        dask.delayed(_draw_block, pure=True)(holdout, b, sl.stop - sl.start, h, w, stream, draw)
        for b, sl in enumerate(blocks)
    ]
    if persist:
        packed = dask.compute(*[dask.delayed(np.packbits)(d) for d in draws])
        draws = [dask.delayed(_unpack, pure=True)(bits, (1, sl.stop - sl.start, h, w))
                 for bits, sl in zip(packed, blocks)]
    parts = [
        dsa.from_delayed(d, (1, sl.stop - sl.start, h, w), dtype=bool)
        for d, sl in zip(draws, blocks)
    ]
    hidden = dsa.concatenate(parts, axis=1).rechunk(((1,), *observed.chunks[1:]))
    return hidden & observed


def _unpack(bits: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape).astype(bool)


def _draw_block(holdout: Holdout, index: int, n_time: int, h: int, w: int,
                stream: int = HOLDOUT_STREAM, draw: int = 0) -> np.ndarray:
    from gapfill import masks

    process = masks.make(holdout.process, coverage=holdout.fraction, seed=holdout.seed)
    return process.sample((n_time, h, w), stream_rng(holdout.seed, stream, index, draw))[None]


def fit_masks(
    observed: Any, holdout: Holdout, missing: np.ndarray | None = None,
    persist: bool = False, draw: int = 0,
) -> tuple[Any, Any]:
    """The observed pixels a fit must not see: its hold-out and its validation pixels.

    The hold-out (scored by :func:`score`) is :func:`holdout_mask`; the validation
    pixels (they calibrate the error model) are :data:`VALIDATION_FRACTION` of the
    rest, drawn the same way from their own stream, in smaller pieces (``tiled``). An
    in-memory cube with fewer than :data:`MIN_VALIDATION_SOURCE` observed values left
    keeps them all for the fit.
    ``draw > 0`` gives the independent repeated draws of :func:`score`; the other
    arguments are :func:`holdout_mask`'s.

    Returns
    -------
    tuple
        ``(hold-out, validation)``, boolean like ``observed``.
    """
    from gapfill.fitted import Holdout

    hide = holdout_mask(observed, holdout, missing, persist=persist, draw=draw)
    left = observed & ~hide
    if hasattr(left, "dask") or left.sum() >= MIN_VALIDATION_SOURCE:
        spec = Holdout(VALIDATION_FRACTION, holdout.process, holdout.seed)
        validation = holdout_mask(left, spec, persist=persist, stream=VALIDATION_STREAM,
                                  required=False, draw=draw, tiled=True)
    else:  # a tiny cube keeps every observation for the fit
        validation = np.zeros_like(left)
    return hide, validation


def refit(model: FittedModel, cube: Any, hidden: Any, draw: int,
          stream: bool | None = None, method: Any = None) -> FittedModel:
    """``model`` with its method fitted again on ``cube`` without the ``hidden`` pixels:
    the model of a repeated hold-out draw (its error model is ``model``'s). ``method``:
    the unfitted method to fit (``None``: a new one with ``model``'s options).
    ``stream``: as ``streaming_fit`` of :meth:`~gapfill.accessor.GapfillAccessor.fit`.
    A model that :attr:`~gapfill.methods.Method.fills_without_training` is returned as it
    is: a fit without ``hidden`` would fill them alike."""
    from gapfill import methods, streaming
    from gapfill.fitted import FittedModel

    if model.method.fills_without_training:
        return model
    if method is None:
        method = methods.get(model.name)(**model.method.options_dict())
    rng = np.random.default_rng([model.holdout.seed, draw])
    fit_cube = cube.with_hide(hidden)
    with methods.limit_threads(method.options.threads, int(np.prod(cube.shape))):
        if streaming.use_streaming(method, cube, stream):
            streaming.fit(method, fit_cube, rng)
        else:
            method.fit(fit_cube, rng)
    return FittedModel(method, model.normaliser, model.dims, model.variable, model.holdout,
                       model.info, model.error_model)


def holdout_draws(method: Any) -> int:
    """How many hold-out draws :func:`score` pools for the fitted ``method``: its
    :attr:`~gapfill.methods.Method.holdout_draws`, or :data:`MAX_VALIDATION_DRAWS` for a
    method that :attr:`~gapfill.methods.Method.fills_without_training` (its other draws
    reuse it, so they cost only fills)."""
    if method.fills_without_training:
        return max(method.holdout_draws, MAX_VALIDATION_DRAWS)
    return method.holdout_draws


def validation_draws(method: Any, n_validation: int, stream: bool = False) -> int:
    """How many draws' validation pixels the error model of the fitted ``method`` pools,
    given the first draw's ``n_validation``: :func:`holdout_draws`, raised for a cheap
    in-memory fit (or one that reuses the model) towards :data:`MIN_VALIDATION_PIXELS`
    pixels (at most :data:`MAX_VALIDATION_DRAWS` draws)."""
    draws = holdout_draws(method)
    cheap = method.refit_with_validation or method.fills_without_training
    if cheap and not stream and 0 < n_validation < MIN_VALIDATION_PIXELS:
        wanted = -(-MIN_VALIDATION_PIXELS // n_validation)
        draws = max(draws, min(MAX_VALIDATION_DRAWS, wanted))
    return draws


def _draws(model: FittedModel, cube: Any, observed: Any, missing: np.ndarray | None,
           persist: bool = False) -> Iterator[tuple[FittedModel, Any]]:
    """The repeated hold-out draws of :func:`score`: ``(model, hold-out)`` for each of
    :func:`holdout_draws` (the first is the model's own hold-out; the others :func:`refit`
    the method without theirs and their validation pixels)."""
    yield model, holdout_mask(observed, model.holdout, missing, persist=persist)
    for draw in range(1, holdout_draws(model.method)):
        hide, validation = fit_masks(observed, model.holdout, missing, persist, draw)
        yield refit(model, cube, hide | validation, draw), hide


@dataclass
class Diagnostics:
    """Scores of a fill on held-out observed pixels.

    Attributes
    ----------
    truth, predicted
        Observed and filled values at the held-out pixels (1-D, data units).
    predicted_error
        The method's one-sigma error estimate at those pixels, or ``None``.
    time_index
        Time index of each held-out pixel.
    times
        Time coordinate values (for the per-time table).
    method
        The method's name.
    scale
        The fitted model's ``info["holdout_scale"]``, measured by ``fit`` on its validation
        pixels: how much smaller the product's error is than the error of the fill the
        hold-out is scored in. The summary's ``mae``, ``mae_se`` and ``rmse`` are the
        scored ones times ``scale`` and ``transfer``; ``scored_mae`` is the MAE as scored.
        1 when unknown.
    transfer
        How much harder the real gaps are than the held-out pixels in the scored fill, as
        the error model sees them (:func:`holdout_transfer`; over several draws, their
        transfers weighted by each draw's share of the scored absolute error). 1 when
        the model has no error model.
    draws
        How many hold-out draws were scored and pooled (:func:`holdout_draws`).
    """

    truth: np.ndarray
    predicted: np.ndarray
    predicted_error: np.ndarray | None
    time_index: np.ndarray
    times: np.ndarray
    method: str
    unfilled: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    scale: float = 1.0
    transfer: float = 1.0
    draws: int = 1

    @property
    def errors(self) -> np.ndarray:
        """Filled minus observed, at each held-out pixel."""
        return self.predicted - self.truth

    @property
    def summary(self) -> dict[str, float]:
        """MAE (and its standard error, :func:`block_bootstrap_se`) and RMSE of the product
        (the scored ones times :attr:`scale` and :attr:`transfer`), the scored MAE, the
        scale, the transfer, bias and count (over all :attr:`draws`, also given); error
        calibration when the method gives errors."""
        e = self.errors
        out: dict[str, float] = {**error_summary(e), "unfilled": int(self.unfilled)}
        out["scored_mae"], out["scale"] = out["mae"], float(self.scale)
        out["transfer"], out["draws"] = float(self.transfer), int(self.draws)
        factor = self.scale * self.transfer
        out["mae"] *= factor
        out["rmse"] *= factor
        if self.predicted_error is not None and e.size:
            sigma = self.predicted_error
            out["mean_predicted_error"] = float(np.sqrt((sigma**2).mean()))
            # Shares of errors within one and two predicted sigma: 0.683 and 0.954 if the
            # error is calibrated (and Gaussian).
            out["within_1sigma"], out["within_2sigma"] = within_shares(np.abs(e), sigma)
        out["mae_se"] = factor * block_bootstrap_se(self.time_index, np.abs(e), len(self.times))
        out.update(self.extra)
        return out

    def reliability(self, ks: np.ndarray | None = None) -> pd.DataFrame:
        """Expected (Gaussian) and observed share of held-out errors within ``k`` sigma.

        Raises
        ------
        ValueError
            If the fill gave no error estimate.
        """
        from math import erf, sqrt

        if self.predicted_error is None:
            raise ValueError(f"the {self.method} fill gave no error estimate")
        ks = np.linspace(0.25, 3.0, 12) if ks is None else np.asarray(ks, dtype=float)
        observed = within_shares(np.abs(self.errors), self.predicted_error, tuple(ks))
        expected = [erf(k / sqrt(2.0)) for k in ks]
        return pd.DataFrame({"k": ks, "expected": expected, "observed": observed})

    def to_dataframe(self) -> pd.DataFrame:
        """Per-time-step MAE, RMSE, bias and count, with an ``all`` row last (as scored:
        without :attr:`scale` and :attr:`transfer`)."""
        e = self.errors
        frame = pd.DataFrame({"t": self.time_index, "abs": np.abs(e), "sq": e**2, "err": e})
        g = frame.groupby("t")
        table = pd.DataFrame(
            {
                "n": g.size(),
                "mae": g["abs"].mean(),
                "rmse": np.sqrt(g["sq"].mean()),
                "bias": g["err"].mean(),
            }
        )
        table.index = [str(self.times[i]) for i in table.index]
        s = error_summary(e)
        table.loc["all"] = [s["n"], s["mae"], s["rmse"], s["bias"]]
        table.index.name = "time"
        return table

    def to_csv(self, path: str) -> None:
        """Write :meth:`to_dataframe` as CSV."""
        self.to_dataframe().to_csv(path)

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"<gapfill.Diagnostics method={self.method!r} held-out n={s['n']} "
            f"MAE={s['mae']:.4g} (scored {s['scored_mae']:.4g}, scale {s['scale']:.3g}, "
            f"transfer {s['transfer']:.3g}) "
            f"RMSE={s['rmse']:.4g} bias={s['bias']:+.3g}>"
        )


def time_block_draws(
    n_time: int, seed: int = 0, blocks: int = TIME_BLOCKS, resamples: int = RESAMPLES
) -> tuple[np.ndarray, np.ndarray]:
    """A block bootstrap over stretches of time.

    Returns
    -------
    block
        ``(n_time,)`` the stretch of each time step: ``blocks`` equal stretches in order.
    draw
        ``(resamples, blocks)`` stretches drawn with replacement, one resample per row.
    """
    block = np.minimum(np.arange(n_time) * blocks // max(n_time, 1), blocks - 1)
    draw = np.random.default_rng(seed).integers(0, blocks, size=(resamples, blocks))
    return block, draw


def block_bootstrap_se(time_index: np.ndarray, values: np.ndarray, n_time: int) -> float:
    """Standard error of the mean of ``values`` (at time steps ``time_index`` of
    ``n_time``), from :func:`time_block_draws`; NaN when fewer than
    :data:`MIN_SE_BLOCKS` stretches hold values."""
    if not np.size(values):
        return float("nan")
    block, draw = time_block_draws(n_time)
    where = block[np.asarray(time_index)]
    total = np.bincount(where, weights=np.asarray(values, np.float64), minlength=TIME_BLOCKS)
    count = np.bincount(where, minlength=TIME_BLOCKS).astype(np.float64)
    if (count > 0).sum() < MIN_SE_BLOCKS:
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        means = total[draw].sum(1) / count[draw].sum(1)
    return float(np.nanstd(means))


def score(da: xr.DataArray, model: FittedModel, seed: int = 0) -> Diagnostics:
    """Fill ``da`` with the model's hold-out hidden and score the held-out pixels.

    Raises
    ------
    ValueError
        If the model was fitted with ``holdout=0``.
    """
    from gapfill.cube import Cube
    if model.holdout.fraction == 0:
        raise ValueError("the model was fitted with holdout=0: there is nothing to score")
    lazy = da.chunks is not None
    cube = Cube(da, model.dims, normaliser=model.normaliser, check_values=not lazy)
    times = (
        cube.da[cube.dims.time].values if cube.dims.time in cube.da.coords
        else np.arange(cube.shape[1])
    )
    if lazy:
        return _score_lazy(cube, model, seed, times)
    raw = np.asarray(cube.da.values, dtype=np.float64)
    raw = raw if raw.ndim == 4 else raw[None]
    observed = np.isfinite(raw)
    parts, transfers = [], []
    frames = slice(0, window_frames(raw.shape))
    ever = observed.any(axis=1, keepdims=True)
    for fitted, hide in _draws(model, cube, observed, cube.missing_pattern()):
        gappy = np.where(hide, np.nan, raw)
        # Pixels whose every observation is held out are still ocean: ask for a value there too.
        filled, error = core.run_method(
            fitted, gappy, seed=seed, coords=cube.coords(), fill_never_observed=True
        )
        predicted = filled[hide]
        ok = np.isfinite(predicted)
        t_index = np.nonzero(hide)[1]
        parts.append((raw[hide][ok], predicted[ok], None if error is None else error[hide][ok],
                      t_index[ok], int((~ok).sum())))
        transfers.append(holdout_transfer(model, observed[:, frames], hide[:, frames],
                                          filled[:, frames], ever))
    return _joined(parts, times, model.name, _factor(model, "holdout_scale"), transfers,
                   _factor(model, "observation_gain"))


def _factor(model: FittedModel, key: str) -> float:
    """The positive factor ``model.info[key]`` (``holdout_scale``, ``observation_gain``);
    1 when it has none."""
    value = float(model.info.get(key, float("nan")))
    return value if np.isfinite(value) and value > 0 else 1.0


def holdout_transfer(
    model: FittedModel, observed: np.ndarray, hide: np.ndarray, filled: np.ndarray,
    ever: np.ndarray,
) -> float:
    """How much harder the real gaps are than the held-out pixels, as the error model sees
    them: the mean of :meth:`~gapfill.errors.ErrorModel.relative_error` over the gaps over
    its mean over the held-out pixels, both in the scored fill (the hold-out hidden).

    The hold-out's pieces are pieces of real gaps, but not their mix: next to a large
    gap, or lasting less, they can sit nearer the observations in space or in time than
    the gaps do, and a fill whose error grows with the distance to the data is then
    better on them than in the gaps. The transfer carries the hold-out MAE over to the
    gaps by the features the error model weighs.

    Parameters
    ----------
    model
        The fitted model (its :attr:`~gapfill.fitted.FittedModel.error_model`).
    observed, hide, filled
        ``(C, T, H, W)``: the observed pixels, the hold-out, and the scored fill (data
        units), over the frames compared (the first frames, as the error model learns on:
        :func:`~gapfill.errors.window_frames`).
    ever
        ``(C, 1, H, W)`` pixels observed at some time (the others are not gaps).

    Returns
    -------
    float
        The ratio; 1 without an error model or without gap or held-out pixels.
    """
    em = model.error_model
    seen = observed & ~hide
    gaps = ~observed & ever
    held = hide & observed & np.isfinite(filled)
    if em is None or not gaps.any() or not held.any():
        return 1.0
    z = model.normaliser.normalise(filled)
    features = gap_features(seen, None, variability=em.pixel_variability(seen.shape), filled=z)
    relative = em.relative_error(features[:, gaps | held])
    which = held[gaps | held]
    return float(relative[~which].mean() / relative[which].mean())


def _joined(parts: list[tuple], times: np.ndarray, method: str, scale: float = 1.0,
            transfers: list[float] | None = None, gain: float = 1.0) -> Diagnostics:
    """One :class:`Diagnostics` from the ``(truth, predicted, error, time index,
    unfilled)`` of each hold-out draw and its transfer (:func:`holdout_transfer`).

    The scored fill lacks the held-out observations, as the fill the error model learned
    in lacks the validation pixels: its predicted error is the product's over ``gain``
    (the model's ``observation_gain``)."""
    transfer = 1.0
    if transfers is not None:
        weight = np.array([np.abs(p[1] - p[0]).sum() for p in parts])
        if weight.sum() > 0:
            transfer = float(np.dot(weight, transfers) / weight.sum())
    error = None if parts[0][2] is None else np.concatenate([p[2] for p in parts]) / gain
    return Diagnostics(
        truth=np.concatenate([p[0] for p in parts]),
        predicted=np.concatenate([p[1] for p in parts]),
        predicted_error=error,
        time_index=np.concatenate([p[3] for p in parts]),
        times=times,
        method=method,
        unfilled=sum(p[4] for p in parts),
        scale=scale,
        transfer=transfer,
        draws=len(parts),
    )


def _score_lazy(cube: Any, model: FittedModel, seed: int, times: np.ndarray) -> Diagnostics:
    """:func:`score` on a dask-backed cube: a chunk-wise fill; only held-out pixels are kept."""
    import dask
    import dask.array as dsa

    from gapfill.chunked import fill_lazy

    data = cube.da.data
    data = data if data.ndim == 4 else data[None]
    with_error = model.gives_error(1)
    t0 = np.concatenate([[0], np.cumsum(data.chunks[1])[:-1]])
    frames = slice(0, window_frames(data.shape))
    draws, windows = [], []
    # each hold-out drawn once (persisted in bits), all draws scored in one pass
    for fitted, hide in _draws(model, cube, dsa.isfinite(data), None, persist=True):
        gappy = dsa.where(hide, np.nan, data)
        filled, error, _ = fill_lazy(
            gappy, fitted, coords=cube.coords(), seed=seed, fill_never_observed=True,
            with_error=with_error, dtype=data.dtype, flags=False,
        )
        arrays = [data, hide, filled] + ([error] if with_error else [])
        blocks = [a.to_delayed(optimize_graph=False) for a in arrays]
        draws.append([
            dask.delayed(_held_out)(*(b[idx] for b in blocks), int(t0[idx[1]]))
            for idx in np.ndindex(*data.numblocks)
        ])
        windows.append((hide[:, frames], filled[:, frames]))
    ever = dsa.isfinite(data).any(axis=1, keepdims=True)
    results, windows, ever, first = dask.compute(draws, windows, ever, data[:, frames])
    observed = np.isfinite(first)
    transfers = [holdout_transfer(model, observed, np.asarray(hide), np.asarray(filled), ever)
                 for hide, filled in windows]
    parts = [
        (*(np.concatenate([r[i] for r in draw]) for i in range(4)), int(sum(r[4] for r in draw)))
        for draw in results
    ]
    if not with_error:
        parts = [(p[0], p[1], None, *p[3:]) for p in parts]
    return _joined(parts, times, model.name, _factor(model, "holdout_scale"), transfers,
                   _factor(model, "observation_gain"))


def _held_out(raw: np.ndarray, hide: np.ndarray, filled: np.ndarray, *rest: Any) -> tuple:
    """The held-out pixels of one block: truth, predicted, error, time index, unfilled count."""
    *error, t0 = rest
    predicted = filled[hide]
    ok = np.isfinite(predicted)
    t_index = (np.nonzero(hide)[1] + t0).astype(np.int32)
    err = error[0][hide][ok] if error else np.empty(0, dtype=filled.dtype)
    return raw[hide][ok], predicted[ok], err, t_index[ok], int((~ok).sum())
