"""A calibrated one-sigma error for the fill of every method.

A filled value is as good as what its gap pixel can see: how far it is, in space and
in time, from the nearest observation (and whether it is right next to one: a pixel one
step from an observation is easier than the logarithm of its distance says), how much
the pixel's value changes from one time step to the next (:func:`time_variability`: a
gap in a quiet pixel is easier to fill than one in a restless pixel), how steep the
filled field is there (:func:`fill_gradient`: a gap on a front is harder than one in a
flat region, whatever its distance to the data), and, for methods that have one, the
method's own spread (the EOF posterior, a per-pixel standard deviation). An
:class:`ErrorModel` learns that relation from *validation pixels*: observed pixels
hidden from the fit in gap-shaped patches, filled after the fit and compared with their
observations (never the diagnostics hold-out, which stays an independent check; its
observations are inputs of that fill, as they are of the product's).

It has two parts:

1. a log-linear regression of ``|error|`` on the features (see
   :func:`gap_features`) whose slopes are kept non-negative, so the error never
   shrinks as a pixel gets further from the observations or as the method's own
   spread grows;
2. a binned split-conformal calibration: within each bin of the regression's
   prediction ``s``, the factor ``c`` that puts 68.3 % of ``|error| / s`` within
   1 and 95.4 % within 2 as nearly as the error distribution allows (the larger of
   the two misses, in units of their tolerances, as small as it can be: see
   :func:`_factor`); ``c`` is interpolated between bins. With few validation errors
   the regression is replaced by the method's own spread (slope 1) or a constant.

Only numpy arrays below this line: the fill that produces the validation errors
is :func:`gapfill.filling.validation_errors`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

#: Distances (pixels in space, steps in time) are capped here: beyond it, a pixel is
#: "far from everything" and one more step changes nothing the model can learn.
MAX_DISTANCE = 32

#: The error model learns on a fill of the cube's first frames, at most this many pixels
#: (whole frames; a dask-backed cube's are read time chunk by time chunk).
WINDOW_PIXELS = 2**22


def window_frames(shape: tuple[int, ...]) -> int:
    """How many first frames of a ``(C, T, H, W)`` cube the error model learns on
    (at most :data:`WINDOW_PIXELS` pixels, at least two frames)."""
    n_chan, n_time, height, width = shape
    return min(n_time, max(2, WINDOW_PIXELS // (n_chan * height * width)))


#: Shares of a Gaussian within one and two sigma.
ONE_SIGMA, TWO_SIGMA = 0.6827, 0.9545

#: How far the shares within 1σ and 2σ may stray from :data:`ONE_SIGMA` and
#: :data:`TWO_SIGMA`. Errors have heavier tails than a Gaussian's, so no one factor
#: hits both shares; the calibration balances their misses in these units.
ONE_SIGMA_TOLERANCE, TWO_SIGMA_TOLERANCE = 0.05, 0.03

#: With fewer validation errors than this, the error is a constant: their root mean
#: square shrunk towards the data's standard deviation.
MIN_ERRORS = 10

#: Fewest validation errors per calibration bin, and most bins.
MIN_PER_BIN, MAX_BINS = 1000, 4

#: Largest slope of ``log |error|`` on a feature: keeps a nearly constant feature from
#: taking a wild slope that would explode where it strays.
MAX_SLOPE = 1.5

FEATURES = ("space_distance", "time_distance", "time_gap", "native_sigma", "time_variability",
            "fill_gradient", "space_beyond_adjacent", "time_beyond_adjacent")
#: Index of the method's own spread in :data:`FEATURES`, of the pixel's variability, of
#: the fill's gradient, of the distances beyond the adjacent pixel, and of the time
#: features.
NATIVE = FEATURES.index("native_sigma")
VARIABILITY = FEATURES.index("time_variability")
GRADIENT = FEATURES.index("fill_gradient")
SPACE_BEYOND = FEATURES.index("space_beyond_adjacent")
TIME_BEYOND = FEATURES.index("time_beyond_adjacent")
TIME_FEATURES = (FEATURES.index("time_distance"), FEATURES.index("time_gap"), TIME_BEYOND)
#: Smallest gradient (normalised units per pixel) the feature tells apart.
MIN_GRADIENT = 1e-3


def _distance_1d(observed: np.ndarray, axis: int, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """Steps back and forward along ``axis`` to the nearest ``observed`` (capped at ``cap``)."""
    obs = np.moveaxis(observed, axis, -1)
    n = obs.shape[-1]
    idx = np.arange(n)
    big = n + cap + 1
    last = np.maximum.accumulate(np.where(obs, idx, -big), axis=-1)
    nxt = np.minimum.accumulate(np.where(obs, idx, 2 * big)[..., ::-1], axis=-1)[..., ::-1]
    back = np.minimum(idx - last, cap)
    ahead = np.minimum(nxt - idx, cap)
    return np.moveaxis(back, -1, axis), np.moveaxis(ahead, -1, axis)


def space_distance(observed: np.ndarray, cap: int = MAX_DISTANCE) -> np.ndarray:
    """Euclidean distance (pixels) to the nearest observed pixel of the same frame.

    Exact up to ``cap``, ``cap`` beyond. ``observed`` is boolean ``(..., H, W)``.
    """
    back, ahead = _distance_1d(observed, -1, cap)
    dx2 = np.minimum(back, ahead).astype(np.float32) ** 2
    best = dx2.copy()
    height = observed.shape[-2]
    for dy in range(1, min(cap, height - 1) + 1):
        shifted = dx2[..., :-dy, :] + dy * dy
        np.minimum(best[..., dy:, :], shifted, out=best[..., dy:, :])
        shifted = dx2[..., dy:, :] + dy * dy
        np.minimum(best[..., :-dy, :], shifted, out=best[..., :-dy, :])
    return np.sqrt(np.minimum(best, float(cap * cap)))


def time_variability(z: np.ndarray) -> np.ndarray:
    """How much each pixel changes from one time step to the next.

    The root mean square of the change between consecutive frames where both are
    observed, per channel and pixel. A pixel with no such pair gets the median of the
    others (1 when there is none at all).

    Parameters
    ----------
    z
        ``(C, T, H, W)`` values (normalised units), NaN where missing.

    Returns
    -------
    numpy.ndarray
        float32 ``(C, H, W)``, positive.
    """
    step = np.asarray(z[:, 1:], np.float64) - z[:, :-1]
    ok = np.isfinite(step)
    count = ok.sum(axis=1)
    rms = np.sqrt((np.where(ok, step, 0.0) ** 2).sum(axis=1) / np.maximum(count, 1))
    rms[count == 0] = np.nan
    for channel in rms:
        known = np.isfinite(channel) & (channel > 0)
        channel[~known] = np.median(channel[known]) if known.any() else 1.0
    return rms.astype(np.float32)


def fill_gradient(filled: np.ndarray) -> np.ndarray:
    """Magnitude of the spatial gradient of a filled ``(C, T, H, W)`` field, per pixel.

    Each direction's derivative is the root mean square of the differences to the
    neighbours on either side that are finite (one-sided at edges and coasts, 0 where
    neither is). Normalised units per pixel, float32.
    """
    f = np.asarray(filled, np.float32)

    def along(axis: int) -> np.ndarray:
        d = np.diff(f, axis=axis)
        pad = [(0, 0)] * f.ndim
        pad[axis] = (1, 0)
        back = np.pad(d, pad, constant_values=np.nan)
        pad[axis] = (0, 1)
        ahead = np.pad(d, pad, constant_values=np.nan)
        sq = np.stack([back, ahead]) ** 2
        n = np.isfinite(sq).sum(0)
        return np.where(n > 0, np.nansum(sq, 0) / np.maximum(n, 1), 0.0)

    with np.errstate(invalid="ignore"):
        return np.sqrt(along(-1) + along(-2)).astype(np.float32)


def gap_features(
    observed: np.ndarray,
    native: np.ndarray | None = None,
    before: np.ndarray | None = None,
    after: np.ndarray | None = None,
    variability: np.ndarray | None = None,
    filled: np.ndarray | None = None,
) -> np.ndarray:
    """What each pixel of a ``(C, T, H, W)`` array can see of the observations.

    Parameters
    ----------
    observed
        Boolean ``(C, T, H, W)``: the pixels the fill was given.
    native
        The method's own one-sigma spread (normalised units), or ``None``.
    before, after
        Optional ``(C, H, W)`` steps from the array's first frame back to the last
        observation before it, and from its last frame on to the first observation
        after it (for a time chunk of a longer cube).
    variability
        ``(C, H, W)`` :func:`time_variability` of the pixels, or ``None``.
    filled
        The filled field (normalised units, observations in place), or ``None``.

    Returns
    -------
    numpy.ndarray
        float32 ``(8, C, T, H, W)``: ``log1p`` of the spatial distance, of the time
        distance (to the nearer observation of the pixel) and of the time gap (steps
        between the observations around it), the log of ``native``, the log of
        ``variability`` and the log of the :func:`fill_gradient` of ``filled`` (at
        least :data:`MIN_GRADIENT`; each 0 when ``None``), then the spatial and the
        time distance less 1, clipped to ``[0, 1]`` (0 next to an observation, 1 from
        two steps on: with a non-negative slope, the log-linear model may make the
        pixels next to the data easier than the other distances' straight line
        says). See :data:`FEATURES`.
    """
    cap = MAX_DISTANCE
    back, ahead = _distance_1d(observed, 1, cap)
    n_time = observed.shape[1]
    t = np.arange(n_time)[None, :, None, None]
    if before is not None:  # no observation back inside the array: use the one before it
        back = np.where(back >= t + 1, np.minimum(t + np.asarray(before)[:, None], cap), back)
    if after is not None:
        ahead = np.where(
            ahead >= n_time - t, np.minimum(n_time - 1 - t + np.asarray(after)[:, None], cap), ahead
        )
    out = np.empty((len(FEATURES), *observed.shape), dtype=np.float32)
    distance = space_distance(observed, cap)
    nearest = np.minimum(back, ahead)  # steps to the nearer observation in time
    out[0] = np.log1p(distance)
    out[1] = np.log1p(nearest)
    out[2] = np.log1p(np.minimum(back + ahead, 2 * cap))
    out[SPACE_BEYOND] = np.clip(distance - 1.0, 0.0, 1.0)
    out[TIME_BEYOND] = np.clip(nearest - 1.0, 0.0, 1.0)
    if native is None:
        out[NATIVE] = 0.0
    else:
        out[NATIVE] = np.log(
            np.maximum(np.nan_to_num(np.asarray(native, np.float32), nan=1.0), 1e-6)
        )
    if variability is None:
        out[VARIABILITY] = 0.0
    else:
        out[VARIABILITY] = np.log(np.maximum(np.asarray(variability, np.float32), 1e-6))[:, None]
    if filled is None:
        out[GRADIENT] = 0.0
    else:
        out[GRADIENT] = np.log(np.maximum(fill_gradient(filled), MIN_GRADIENT))
    return out


@dataclass
class ErrorModel:
    """A fitted map from :func:`gap_features` to a calibrated one-sigma error.

    Attributes
    ----------
    coef
        ``(1 + len(FEATURES),)`` intercept and slopes of ``log |error|`` (unused
        features have slope 0).
    log_scale, factor
        The calibration: bin centres of ``log s`` and the factor ``c`` of each bin;
        the error is ``c(log s) · s``, ``c`` interpolated linearly (flat outside).
    uses_native
        Whether the method's own spread is an input.
    variability
        ``(C, H, W)`` :func:`time_variability` of the fitted cube, or ``None``.
    """

    coef: np.ndarray
    log_scale: np.ndarray
    factor: np.ndarray
    uses_native: bool = False
    variability: np.ndarray | None = None

    # -- fitting ------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        abs_error: np.ndarray,
        features: np.ndarray,
        uses_native: bool = False,
        variability: np.ndarray | None = None,
    ) -> ErrorModel:
        """Learn the model from validation pixels.

        Parameters
        ----------
        abs_error
            ``(n,)`` absolute errors of the fill at the validation pixels.
        features
            ``(len(FEATURES), n)`` their features.
        uses_native
            Whether the feature ``native_sigma`` (the method's own spread) is informative.
        variability
            The :func:`time_variability` the features were computed with, kept for the
            fills (:meth:`pixel_variability`).

        With fewer than :data:`MIN_ERRORS` finite errors the model is a constant.
        """
        abs_error = np.asarray(abs_error, dtype=np.float64)
        features = np.asarray(features, dtype=np.float64)
        ok = np.isfinite(abs_error) & np.isfinite(features).all(0)
        abs_error, features = abs_error[ok], features[:, ok]
        if abs_error.size < MIN_ERRORS:  # shrink towards 1 (the data's standard deviation)
            n = abs_error.size
            sigma = np.sqrt(((abs_error**2).sum() + (MIN_ERRORS - n)) / MIN_ERRORS)
            coef = np.zeros(1 + len(FEATURES))
            coef[0] = np.log(sigma)
            return cls(coef, np.zeros(1), np.ones(1), False, variability)
        floor = max(float(np.median(abs_error)) * 1e-2, 1e-12)
        y = np.log(abs_error + floor)
        free = [i for i in range(len(FEATURES)) if (uses_native or i != NATIVE)
                and np.ptp(features[i]) > 0]
        if abs_error.size < MIN_PER_BIN:  # too few to learn slopes: the method's own
            coef = np.zeros(1 + len(FEATURES))  # spread (slope 1) where it has one, else a constant
            coef[1 + NATIVE] = 1.0 if uses_native else 0.0
            coef[0] = float(np.mean(y - coef[1 + NATIVE] * features[NATIVE]))
        else:
            coef = _bounded_fit(y, features, free)
        log_s = coef[0] + coef[1:] @ features
        ratio = abs_error / np.exp(log_s)
        n_bins = int(np.clip(abs_error.size // MIN_PER_BIN, 1, MAX_BINS))
        edges = np.quantile(log_s, np.linspace(0, 1, n_bins + 1))
        which = np.clip(np.searchsorted(edges, log_s, side="right") - 1, 0, n_bins - 1)
        centres, factors = [], []
        for b in range(n_bins):
            r = ratio[which == b]
            if r.size == 0:
                continue
            centres.append(float(np.median(log_s[which == b])))
            factors.append(_factor(r))
        return cls(np.asarray(coef), np.asarray(centres), np.asarray(factors), bool(uses_native),
                   variability)

    @property
    def sees_time(self) -> bool:
        """Whether the error depends on the time features (so that the fill of a time
        chunk needs each pixel's nearest observations outside it)."""
        return bool(np.any(self.coef[1 + np.array(TIME_FEATURES)] != 0))

    def rescaled(self, factor: float) -> ErrorModel:
        """The same model with every predicted error multiplied by ``factor``."""
        return replace(self, factor=np.asarray(self.factor, np.float64) * float(factor))

    # -- applying -----------------------------------------------------------------
    def pixel_variability(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """The :func:`time_variability` for a fill of a ``(C, T, H, W)`` array of ``shape``:
        the fitted cube's, or its median everywhere when the frames are not the fitted
        cube's (another grid); ``None`` without one."""
        v = self.variability
        if v is None:
            return None
        if v.shape == (shape[0], *shape[2:]):
            return v
        return np.full((shape[0], *shape[2:]), np.median(v), dtype=np.float32)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """One-sigma error (normalised units) for features ``(len(FEATURES), ...)``."""
        f = np.asarray(features, dtype=np.float64)
        log_s = self.coef[0] + np.tensordot(self.coef[1:], f, axes=1)
        c = np.interp(log_s, self.log_scale, self.factor)
        return (c * np.exp(log_s)).astype(np.float32)

    def relative_error(self, features: np.ndarray) -> np.ndarray:
        """How hard each pixel is, from its features ``(len(FEATURES), ...)`` alone: the
        regression's error without the method's own spread and without the calibration,
        for comparing two sets of pixels (:func:`gapfill.diagnostics.holdout_transfer`).

        The own spread is left out because it follows the coverage of the frame, and a
        hold-out hides more of some frames than the validation pixels the slope was learned
        on ever did."""
        coef = np.array(self.coef, dtype=np.float64)
        coef[1 + NATIVE] = 0.0
        f = np.asarray(features, dtype=np.float64)
        return np.exp(coef[0] + np.tensordot(coef[1:], f, axes=1))

    # -- persistence (arrays only) ------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays that rebuild the model (see :meth:`from_state`)."""
        return {
            "coef": np.asarray(self.coef, np.float64),
            "log_scale": np.asarray(self.log_scale, np.float64),
            "factor": np.asarray(self.factor, np.float64),
            "uses_native": np.asarray([int(self.uses_native)], np.int64),
            "variability": np.asarray(np.zeros(0) if self.variability is None
                                      else self.variability, np.float32),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ErrorModel:
        """Rebuild from :meth:`state_dict` output (numpy arrays or torch tensors)."""
        def arr(key: str) -> np.ndarray:
            v = state[key]
            return np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)

        coef = arr("coef")
        if coef.shape != (1 + len(FEATURES),):
            raise ValueError(
                f"the error model has {coef.size - 1} features, this gapfill uses "
                f"{len(FEATURES)} ({', '.join(FEATURES)}): fit the model again"
            )
        variability = arr("variability")
        return cls(coef, arr("log_scale"), arr("factor"), bool(arr("uses_native").reshape(-1)[0]),
                   variability if variability.size else None)

    def __repr__(self) -> str:
        slopes = ", ".join(f"{n}={c:.2f}" for n, c in zip(FEATURES, self.coef[1:]) if c)
        return f"ErrorModel({slopes or 'constant'}; {len(self.factor)} calibration bins)"


def _bounded_fit(y: np.ndarray, features: np.ndarray, free: list[int]) -> np.ndarray:
    """Least squares of ``y`` on an intercept and ``features[free]`` with slopes in
    ``[0, MAX_SLOPE]``: a slope out of bounds is fixed at the bound and the rest refitted."""
    fixed: dict[int, float] = {}
    while True:
        offset = sum((b * features[i] for i, b in fixed.items()), np.zeros_like(y))
        design = np.column_stack([np.ones_like(y)] + [features[i] for i in free])
        beta = np.linalg.lstsq(design, y - offset, rcond=None)[0]
        out = {i: b for i, b in zip(free, beta[1:]) if not 0.0 <= b <= MAX_SLOPE}
        if not out:
            break
        for i, b in out.items():
            fixed[i] = float(np.clip(b, 0.0, MAX_SLOPE))
        free = [i for i in free if i not in out]
    coef = np.zeros(1 + len(FEATURES))
    coef[0] = beta[0]
    for i, b in [*zip(free, beta[1:]), *fixed.items()]:
        coef[1 + i] = b
    return coef


def _factor(ratio: np.ndarray) -> float:
    """The calibration factor ``c`` of one bin of ``ratio = |error| / s``: the one whose
    shares within ``c`` and ``2c`` miss :data:`ONE_SIGMA` and :data:`TWO_SIGMA` by the
    least, the larger miss measured in units of its tolerance (for Gaussian ratios
    both misses are 0; for heavier tails the 1σ share ends above its target and the
    2σ share below, by equal parts of their tolerances)."""
    r = np.sort(ratio)
    candidates = np.concatenate([r, r / 2.0])
    one = np.searchsorted(r, candidates, side="right") / r.size
    two = np.searchsorted(r, 2.0 * candidates, side="right") / r.size
    miss = np.maximum(np.abs(one - ONE_SIGMA) / ONE_SIGMA_TOLERANCE,
                      np.abs(two - TWO_SIGMA) / TWO_SIGMA_TOLERANCE)
    return max(float(candidates[np.argmin(miss)]), 1e-12)


def within_shares(
    abs_error: np.ndarray, sigma: np.ndarray, ks: tuple[float, ...] = (1.0, 2.0)
) -> list[float]:
    """Share of ``abs_error`` within ``k · sigma`` for each ``k`` (NaN when empty)."""
    abs_error, sigma = np.asarray(abs_error), np.asarray(sigma)
    if abs_error.size == 0:
        return [float("nan")] * len(ks)
    return [float((abs_error <= k * sigma).mean()) for k in ks]

