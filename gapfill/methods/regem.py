"""RegEM: the mean and covariance of the field by expectation-maximisation, and each
frame's gaps filled by their conditional expectation given the frame's observations.

Schneider (2001, *J. Climate* 14, 853–871), the method of many climate-field
reconstructions, with its covariance localised as in ensemble data assimilation and its
ridges chosen on hidden observations instead of per frame by generalised
cross-validation:

1. Stack the cube into a matrix ``Y`` (time × pixels; channels are stacked into
   space) and start with the DINEOF fill (:mod:`gapfill.methods.eof`) in the gaps,
   which EM would otherwise take many more iterations to reach from the pixel means.
2. With ``μ`` and ``Σ`` the mean and covariance of the completed matrix plus the
   conditional covariances of its imputed values (E-step), fill each frame's gaps by
   ``μ_m + Σ_mo (Σ_oo + h² d I)⁻¹ (y_o − μ_o)`` (``m`` its gaps, ``o`` its
   observations, ``d`` the mean variance, ``h²`` the ridge), and sum the conditional
   covariances ``Σ_mm − Σ_mo (Σ_oo + h² d I)⁻¹ Σ_om`` for the next covariance
   (M-step). On a latitude/longitude grid the new covariance is multiplied element by
   element by Gaspari and Cohn's taper of the pixels' distance
   (:mod:`gapfill.localisation`): with fewer frames than pixels, the sample
   covariance's long-range correlations are mostly noise. Both steps come from the
   precision matrix ``(Σ + h² d I)⁻¹``, inverted once per iteration, with one solve per
   frame of the size of its gaps (:func:`conditional`). With many values missing EM
   creeps towards its fixed point, so its steps are accelerated by SQUAREM (Varadhan &
   Roland 2008): two steps, an extrapolation along them, one step from there
   (:func:`regem`). Stop when a round changes the imputed values by less than ``tol``
   of the data's spread.
3. The localisation length, the EM ridge and the fill ridge (below) are chosen by the
   error of short EM fits on a tenth of the observations hidden in the shapes of the
   cube's gaps (:func:`choose`), which also scale the conditional standard deviation
   so that it holds 68% of their errors.

Filling applies the last step with the fitted ``μ`` and ``Σ`` (to the fitted cube or to
new frames on the same grid) and a smaller ridge, ``fill_ridge``: the EM ridge
regularises a covariance estimated from few values per pixel, while at the fill it acts
as the observations' own noise. The error is the square root of the conditional
variance, scaled. Unlike DINEOF (:mod:`gapfill.methods.eof`), which keeps a few EOFs,
the covariance keeps every mode, shrunk by the ridge, and its estimate accounts for the
uncertainty of what it imputes. Time and memory grow as pixels³ and pixels²: the method
is meant for grids of up to a few thousand ever-observed pixels (coarse climate fields,
regional boxes); above ``max_pixels`` it says so before any work.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.linalg
import scipy.linalg.lapack

from gapfill.errors import ONE_SIGMA
from gapfill.localisation import gaspari_cohn, grid_distances, is_lonlat
from gapfill.methods.base import Chunking, Coords, FillResult, Method, Options, as_numpy, check_grid
from gapfill.methods.climatology import pixel_moments
from gapfill.methods.eof import EOF, _from_matrix, _to_matrix

if TYPE_CHECKING:
    from gapfill.cube import Cube

log = logging.getLogger("gapfill")


@dataclass
class RegEMOptions(Options):
    """Options of the ``"regem"`` method.

    Attributes
    ----------
    length
        Localisation length (km): each covariance estimate is multiplied element by
        element by Gaspari and Cohn's correlation of the pixels' chordal distance over
        ``length``, zero beyond twice it (:mod:`gapfill.localisation`). Needs latitude
        and longitude coordinates in degrees. ``None``: no localisation.
        ``"validate"``: chosen on hidden observations among :data:`VALIDATION_LENGTHS`
        with the ridges (:func:`choose`); on a grid without latitude and longitude, no
        localisation. (Fits without localisation are not among the candidates: on small
        cubes their validation error is too noisy to rank them against the localised
        ones, which were better in the gaps of every cube measured.)
    ridge
        ``h²`` of the EM fit: the ridge added to ``Σ_oo`` while the covariance is
        estimated, as a share of the mean variance. ``None``: without localisation, 20
        over the mean number of observations per pixel, within [0.05, 1]
        (:func:`default_ridge`); with it, :data:`FIRST_RIDGE`.
        ``"validate"``: the one of :data:`VALIDATION_RIDGES` (with localisation,
        :data:`LOCALISED_RIDGES`) that fills best a tenth of the observations hidden in
        the shapes of the cube's own gaps (:func:`choose`).
    fill_ridge
        ``h²`` of the fill (and of the conditional standard deviation). ``"validate"``:
        the one of :data:`FILL_RIDGES` that fills the hidden observations best, scored
        with every EM fit :func:`choose` makes (one when no other option is validated).
    tol
        Stop when a round of SQUAREM (three E-steps) changes the imputed values by less
        than this share of the data's standard deviation (RMS).
    max_iter
        Maximum number of E-steps.
    max_pixels
        Largest number of ever-observed pixels (times channels) accepted: the
        covariance has ``max_pixels²`` entries and each iteration inverts it.
    """

    length: float | str | None = "validate"
    ridge: float | str | None = "validate"
    fill_ridge: float | str = "validate"
    tol: float = 2e-3
    max_iter: int = 40
    max_pixels: int = 4000

    def validate(self) -> None:
        """Raise ``ValueError`` naming the option when a value is out of range."""
        for name, ok, what in (
            ("length", self.length is None or self.length == "validate"
             or (_real(self.length) and self.length > 0), "a number > 0, 'validate' or None"),
            ("ridge", self.ridge is None or self.ridge == "validate"
             or (_real(self.ridge) and self.ridge > 0), "a number > 0, 'validate' or None"),
            ("fill_ridge", self.fill_ridge == "validate"
             or (_real(self.fill_ridge) and self.fill_ridge > 0), "a number > 0 or 'validate'"),
            ("tol", _real(self.tol) and 0 < self.tol < 1, "in (0, 1)"),
            ("max_iter", _int(self.max_iter) and self.max_iter >= 1, "an integer >= 1"),
            ("max_pixels", _int(self.max_pixels) and self.max_pixels >= 2, "an integer >= 2"),
        ):
            if not ok:
                raise ValueError(
                    f"regem option {name!r} must be {what}, got {getattr(self, name)!r}")


def _int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _real(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
        and bool(np.isfinite(v))


def default_ridge(observations: float) -> float:
    """Return the EM ridge for ``observations`` per pixel: ``20 / observations`` in [0.05, 1].

    The sampling noise of a covariance estimated from ``n`` values per pixel falls as
    ``1 / n``, and so does the shrinkage it needs (as in Ledoit and Wolf's estimator).
    ``observations`` is the mean number of observed frames of the ever-observed pixels.
    The constant was measured on three real cubes (``benchmarks/regem_ridges.py``).
    """
    return float(np.clip(20.0 / max(observations, 1.0), 0.05, 1.0))


def nugget_of(cov: np.ndarray, ridge: float) -> float:
    """``h² d``: the ridge times the mean variance (the data's, 1 in normalised units,
    when the covariance is all zero, as on a cube too sparse to vary)."""
    d = float(np.mean(np.diag(cov)))
    return ridge * (d if d > 1e-12 else 1.0)


def precision_of(cov: np.ndarray, nugget: float) -> np.ndarray:
    """``(cov + nugget I)⁻¹``: the precision of the observations (signal plus nugget)."""
    for jitter in (0.0, 1e-8, 1e-6, 1e-4):  # rounding can leave cov a hair indefinite
        shifted = cov + (nugget + jitter) * np.eye(len(cov))
        factor, info = scipy.linalg.lapack.dpotrf(shifted, lower=1, clean=1)
        if info:
            continue
        return symmetric(scipy.linalg.lapack.dpotri(factor, lower=1)[0])
    raise np.linalg.LinAlgError("regem: the covariance is not positive semi-definite")


def symmetric(lower: np.ndarray) -> np.ndarray:
    """The symmetric matrix whose lower triangle is ``lower`` (its upper triangle is 0, as
    LAPACK's ``dpotri`` leaves it after ``dpotrf(..., clean=1)``); in place."""
    lower += lower.T
    lower[np.diag_indices_from(lower)] /= 2
    return lower


#: Frames whose products with the precision are computed together (one matrix product).
FRAME_BATCH = 256


def projections(y: np.ndarray, observed: np.ndarray, mean: np.ndarray,
                precision: np.ndarray) -> np.ndarray:
    """``Q (y_o − μ_o)`` for every frame of ``y`` (frames × pixels, gaps set to 0), by
    one matrix product: :func:`conditional` takes its rows at the gaps."""
    return np.where(observed, y - mean, 0.0) @ precision  # Q is symmetric


def gappy_frames(y: np.ndarray, observed: np.ndarray, mean: np.ndarray,
                 precision: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(t, projected)`` for each frame of ``y`` with a gap, its :func:`projections`
    row computed :data:`FRAME_BATCH` frames at a time."""
    for start in range(0, len(y), FRAME_BATCH):
        frames = range(start, min(start + FRAME_BATCH, len(y)))
        for t, row in zip(frames, projections(y[frames], observed[frames], mean, precision)):
            if not observed[t].all():
                yield t, row


def conditional(
    observed: np.ndarray, mean: np.ndarray, precision: np.ndarray, nugget: float,
    projected: np.ndarray, with_cov: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Fill the gaps of one frame by their conditional expectation.

    With ``Q`` the :func:`precision_of` the covariance, the gaps ``m`` given the
    observations ``o`` have mean ``μ_m − Q_mm⁻¹ Q_mo (y_o − μ_o)`` and, less the nugget,
    covariance ``Q_mm⁻¹ − nugget I``: one solve of the size of the gaps, not of the
    observations. ``projected`` is the frame's row of :func:`projections`. Returns the
    imputed values at ``~observed`` and their conditional covariance (``with_cov``: its
    lower triangle, the upper triangle 0) or variances.
    """
    m = np.flatnonzero(~observed)
    chol, info = scipy.linalg.lapack.dpotrf(precision[np.ix_(m, m)], lower=1, clean=1)
    if info:
        raise np.linalg.LinAlgError(f"regem: the precision of a frame's gaps is not positive "
                                    f"definite (LAPACK dpotrf info {info})")
    rhs = projected[m]  # Q_mo (y_o − μ_o)
    values = mean[m] - scipy.linalg.lapack.dpotrs(chol, rhs, lower=1)[0]
    inverse = scipy.linalg.lapack.dpotri(chol, lower=1)[0]  # lower triangle of Q_mm⁻¹
    if with_cov:
        spread = inverse
        spread[np.diag_indices_from(spread)] -= nugget
    else:
        spread = np.diag(inverse) - nugget
    return values, spread


def em_step(
    y: np.ndarray, observed: np.ndarray, mean: np.ndarray, cov: np.ndarray, ridge: float,
    taper: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One EM iteration from the moments ``(mean, cov)`` of ``y`` (time × pixels).

    E-step: each frame's gaps filled by their conditional expectation, with the sum of
    their conditional covariances. M-step: the mean and covariance of the completed
    matrix plus that sum, times ``taper`` element by element when given (localisation).
    Returns ``(mean, cov, filled)``.
    """
    n_pix = y.shape[1]
    nugget = nugget_of(cov, ridge)
    precision = precision_of(cov, nugget)
    filled = np.where(observed, y, 0.0)
    extra = np.zeros((n_pix, n_pix))
    flat = extra.reshape(-1)  # a view: adds at flat indices land in extra
    for t, row in gappy_frames(y, observed, mean, precision):
        gaps = np.flatnonzero(~observed[t])
        filled[t, gaps], c = conditional(observed[t], mean, precision, nugget, row,
                                         with_cov=True)
        # lower triangles: the gaps' indices increase
        flat[(gaps[:, None] * n_pix + gaps).reshape(-1)] += c.reshape(-1)
    mean, cov = _moments(filled, symmetric(extra), taper)
    return mean, cov, filled


def _moments(filled: np.ndarray, extra: np.ndarray,
             taper: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the completed matrix plus the imputations' covariance, the
    covariance times ``taper`` (element by element) when given."""
    mean = filled.mean(0)
    dev = filled - mean
    cov = (dev.T @ dev + extra) / len(filled)
    if taper is not None:
        cov *= taper
    return mean, cov


def extrapolate(
    start: tuple[np.ndarray, np.ndarray], one: tuple[np.ndarray, np.ndarray],
    two: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """SQUAREM's step (Varadhan & Roland 2008, scheme S3) from moments and two EM steps.

    With ``r`` the first step and ``v`` the change between the two steps, the moments
    move to ``start − 2αr + α²v`` with ``α = −|r| / |v|`` (at most −1; −1 gives ``two``),
    the point an EM converging at a constant rate would approach. A covariance that is no
    longer positive semi-definite (the Cholesky factorisation fails even with 1e-8 of the
    mean variance added) is made so again: its negative eigenvalues are set to 0.
    """
    def flat(moments: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        return np.concatenate([moments[0], moments[1].ravel()])

    theta = flat(start)
    r = flat(one) - theta
    v = flat(two) - flat(one) - r
    size = float(np.sqrt(v @ v))
    if size == 0.0:
        return two
    alpha = min(-float(np.sqrt(r @ r)) / size, -1.0)
    theta = theta - 2 * alpha * r + alpha * alpha * v
    n_pix = len(start[0])
    mean, cov = theta[:n_pix], theta[n_pix:].reshape(n_pix, n_pix)
    cov = (cov + cov.T) / 2
    jitter = 1e-8 * max(float(np.mean(np.diag(cov))), 1e-12) * np.eye(n_pix)
    if not scipy.linalg.lapack.dpotrf(cov + jitter, lower=1)[1]:
        return mean, cov
    values, vectors = np.linalg.eigh(cov)  # several times the cost of the factorisation
    return mean, (vectors * np.maximum(values, 0.0)) @ vectors.T


def regem(
    y: np.ndarray, start: np.ndarray | tuple[np.ndarray, np.ndarray], ridge: float,
    tol: float, max_iter: int,
    trace: Callable[[int, np.ndarray, np.ndarray, float], None] | None = None,
    accelerate: bool = True, taper: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int, float]:
    """The EM estimate of the mean and covariance of ``y`` (time × pixels, NaN = missing),
    from the first guess ``start`` in the gaps, or from moments ``start = (mean, cov)``
    (of an EM fit with another ridge or fewer observations; the first E-step imputes
    from them and counts as a step).

    With ``accelerate`` (SQUAREM), each round is two EM steps, an extrapolation along
    them (:func:`extrapolate`) and one EM step from there: three E-steps that go as far
    as many plain ones where EM converges slowly, as it does with many values missing.
    With a ``taper``, whose M-step is no longer EM's, the extrapolation can overshoot
    again and again: after a round that changes the imputed values more than the round
    before, the rest are plain EM steps.
    Without it, a round is one EM step. EM stops after the first round whose imputed
    values change by less than ``tol`` (RMS, over the observations' standard deviation),
    or after ``max_iter`` E-steps (plain steps when fewer than three are left).
    ``taper`` (pixels × pixels), when given, localises every covariance (:func:`em_step`).

    Returns ``(mean, cov, steps, change)``: ``steps`` E-steps in all, ``change`` that of
    the last round. ``trace(steps, mean, cov, change)``, when given, sees the moments
    after each round (and at the start, with change ``inf``: 0 steps, or 1 from moments).
    """
    observed = np.isfinite(y)
    spread = max(float(np.std(y[observed])), 1e-12)
    steps, change = 0, np.inf
    if isinstance(start, tuple):
        mean, cov, filled = em_step(y, observed, *start, ridge, taper)
        steps = 1
    else:
        filled = np.where(observed, y, start)
        mean, cov = _moments(filled, np.zeros((y.shape[1], y.shape[1])), taper)
    if trace is not None:
        trace(steps, mean, cov, change)
    last = np.inf
    while steps < max_iter:
        if accelerate and steps + 3 <= max_iter:
            one = em_step(y, observed, mean, cov, ridge, taper)[:2]
            two = em_step(y, observed, *one, ridge, taper)[:2]
            mean, cov, new = em_step(y, observed, *extrapolate((mean, cov), one, two), ridge,
                                     taper)
            steps += 3
        else:
            mean, cov, new = em_step(y, observed, mean, cov, ridge, taper)
            steps += 1
        moved = (new - filled)[~observed]
        change = float(np.sqrt(np.mean(moved**2))) / spread if moved.size else 0.0
        if accelerate and taper is not None and change > last:  # overshoot: plain EM now on
            accelerate = False
        last = change
        filled = new
        if trace is not None:
            trace(steps, mean, cov, change)
        if change < tol:
            break
    return mean, cov, steps, change


#: What validation chooses from: the EM ridges without localisation, the localisation
#: lengths (km), the EM ridges with localisation, the fill ridges, and the share of the
#: observations hidden to choose.
VALIDATION_RIDGES = (0.05, 0.2, 0.8)
VALIDATION_LENGTHS = (8000.0, 4000.0, 2000.0, 1000.0, 500.0, 250.0)
LOCALISED_RIDGES = (0.3, 0.1, 0.03, 0.01, 0.003)
FILL_RIDGES = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
VALIDATION_SHARE = 0.1
#: Where the searches along :data:`VALIDATION_LENGTHS` (km) and :data:`LOCALISED_RIDGES`
#: start, and the most E-steps of the first candidate's EM fit (two rounds of SQUAREM,
#: from DINEOF) and of each later one (one round, from the moments of the candidate
#: before): enough to rank them.
FIRST_LENGTH, FIRST_RIDGE, VALIDATION_STEPS = 4000.0, 0.01, (6, 3)
#: The fill ridge when no observation can be hidden to choose one.
UNVALIDATED_FILL_RIDGE = 0.02


@dataclass
class Choice:
    """What :func:`choose` chose: the options, every candidate's validation MAE (keyed
    ``"length=…,ridge=…,fill_ridge=…"``), the chosen fit ``(fitted, mean, cov)`` and the
    factor that calibrates its conditional standard deviation (:func:`sigma_scale`)."""

    length: float | None
    ridge: float
    fill_ridge: float
    scores: dict[str, float]
    fit: tuple[np.ndarray, np.ndarray, np.ndarray]
    sigma_scale: float = 1.0


def sigma_scale(errors: np.ndarray, sigma: np.ndarray) -> float:
    """The factor that puts 68.3% of the absolute ``errors`` within their ``sigma``: the
    conditional standard deviation of an estimated covariance leaves out the error of the
    estimate, which depends on the ridges and the localisation (1 with no errors)."""
    ok = np.isfinite(errors) & np.isfinite(sigma) & (sigma > 0)
    if not ok.any():
        return 1.0
    return float(np.quantile(errors[ok] / sigma[ok], ONE_SIGMA))


def _key(length: float | None, ridge: float, fill_ridge: float) -> str:
    return f"length={length if length is None else f'{length:g}'},ridge={ridge:g}," \
        f"fill_ridge={fill_ridge:g}"


def choose(
    x: np.ndarray, rng: np.random.Generator, times: np.ndarray | None,
    lengths: tuple[float | None, ...], ridge: float | str | None,
    fill_ridges: tuple[float, ...], tol: float, max_iter: int,
    distances: np.ndarray | None = None, default: float = 0.2,
) -> Choice:
    """The localisation length, EM ridge and fill ridge that fill hidden observations best.

    :data:`VALIDATION_SHARE` of the observed pixels of the normalised ``(C, T, H, W)``
    ``x`` are hidden in pieces of other frames' gaps
    (:func:`gapfill.diagnostics.borrowed_gaps`) and EM is fitted on the rest (at most
    :data:`VALIDATION_STEPS` E-steps), each fit started from the moments of the one
    before (the first from a DINEOF fill). First along ``lengths`` (``None``: no
    localisation), ordered from the longest: from :data:`FIRST_LENGTH` (or the first)
    to shorter lengths while the error falls, and when the first step does not lower
    it, to longer ones while it falls (:func:`_search`). A fit's EM ridge is ``ridge``
    when it is a number; otherwise ``default`` (the :func:`default_ridge` of the whole
    cube; when ``ridge`` is ``"validate"``, the largest of :data:`VALIDATION_RIDGES`)
    without localisation and :data:`FIRST_RIDGE` with it. Then, when ``ridge`` is
    ``"validate"``, at the best length: with localisation, a search along
    :data:`LOCALISED_RIDGES` from :data:`FIRST_RIDGE` (smaller first); without, the other
    :data:`VALIDATION_RIDGES`, largest first. Every fit fills the hidden pixels
    with each of ``fill_ridges`` and is scored by their MAE. ``distances`` (km) between
    the pixels of ``x``'s rows (channels stacked as :func:`gapfill.methods.eof._to_matrix`
    does) are needed for a length that is not ``None``.
    """
    from gapfill.diagnostics import borrowed_gaps

    observed = np.isfinite(x).all(0)
    never = ~np.isfinite(x).any((0, 1))
    hide = np.broadcast_to(
        borrowed_gaps(~observed, observed, VALIDATION_SHARE, rng, exclude=never), x.shape)
    fit_input = np.where(hide, np.nan, x)
    frames = hide.any((0, 2, 3))  # the frames the candidates fill and are scored on
    y = _to_matrix(fit_input).T.astype(np.float64)
    fitted = np.isfinite(y).any(0)
    moments: np.ndarray | tuple[np.ndarray, np.ndarray] = \
        _first_guess(fit_input, fitted, rng, times)
    probe = RegEM()
    grid = np.asarray(x.shape)[[0, 2, 3]]
    scores: dict[str, float] = {}
    best: dict[str, Any] = {"mae": np.inf}

    def first_ridge(length: float | None) -> float:
        if _real(ridge):
            return float(ridge)
        if length is not None:
            return FIRST_RIDGE
        return max(VALIDATION_RIDGES) if ridge == "validate" else default

    def evaluate(length: float | None, em_ridge: float) -> float:
        nonlocal moments
        taper = None if length is None else _taper(distances, length, fitted)
        steps = VALIDATION_STEPS[isinstance(moments, tuple)]
        mean, cov = regem(y[:, fitted], moments, em_ridge, tol, min(max_iter, steps),
                          taper=taper)[:2]
        moments = (mean, cov)
        probe.load_state_dict({"grid": grid, "fitted": fitted, "mean": mean, "cov": cov})
        if not frames.any():  # nothing hidden (too few observations): nothing to score
            return np.inf
        for fill_ridge in fill_ridges:
            probe.options.fill_ridge = fill_ridge
            filled = probe.fill(fit_input[:, frames], rng)
            errors = np.abs(filled.values - x[:, frames])[hide[:, frames]]
            sigma = filled.error[hide[:, frames]]
            seen = np.isfinite(errors)  # a pixel hidden wherever it was observed is not
            mae = float(errors[seen].mean()) if seen.any() else np.inf
            scores[_key(length, em_ridge, fill_ridge)] = mae
            if mae < best["mae"]:
                best.update(mae=mae, length=length, ridge=em_ridge, fill_ridge=fill_ridge,
                            mean=mean, cov=cov, scale=sigma_scale(errors, sigma))
        return scores_low(length, em_ridge)

    def scores_low(length: float | None, em_ridge: float) -> float:
        return min(scores[_key(length, em_ridge, f)] for f in fill_ridges)

    origin = lengths.index(FIRST_LENGTH) if FIRST_LENGTH in lengths else 0
    low = evaluate(lengths[origin], first_ridge(lengths[origin]))
    if not np.isfinite(low):  # no pixel could be hidden: the first fit, unscored
        length = lengths[origin]
        fill = fill_ridges[0] if len(fill_ridges) == 1 else UNVALIDATED_FILL_RIDGE
        return Choice(length, first_ridge(length), fill, scores, (fitted, *moments))
    _search(len(lengths), origin, low, lambda i: evaluate(lengths[i], first_ridge(lengths[i])))
    length = best["length"]
    if ridge == "validate" and length is not None:
        ladder = LOCALISED_RIDGES
        _search(len(ladder), ladder.index(FIRST_RIDGE), scores_low(length, FIRST_RIDGE),
                lambda i: evaluate(length, ladder[i]))
    elif ridge == "validate":
        for em_ridge in sorted(VALIDATION_RIDGES, reverse=True)[1:]:
            evaluate(length, em_ridge)
    return Choice(best["length"], best["ridge"], best["fill_ridge"], scores,
                  (fitted, best["mean"], best["cov"]), best.get("scale", 1.0))


def _first_guess(x: np.ndarray, fitted: np.ndarray, rng: np.random.Generator,
                 times: np.ndarray | None, given: np.ndarray | None = None) -> np.ndarray:
    """EM's first guess at the ``fitted`` pixels, time × pixels: ``given`` (like ``x``), or
    the DINEOF fill of ``x``."""
    if given is None:
        first = EOF()
        first.fit_array(x, rng, times)
        given = first.fill(x, rng).values
    return _to_matrix(given).T[:, fitted].astype(np.float64)


def _search(n: int, origin: int, low: float, score: Callable[[int], float]) -> None:
    """Line search along candidates ``0..n-1`` ordered by size, ``origin`` scored ``low``:
    score the next ones up while the error falls, and when the first of them does not
    lower it, the ones down while it falls."""
    for way in (1, -1):
        i = origin + way
        while 0 <= i < n:
            mae = score(i)
            if mae >= low:
                break
            low, i = mae, i + way
        if i != origin + way:
            break


def embed_moments(
    fitted_from: np.ndarray, mean: np.ndarray, cov: np.ndarray, fitted: np.ndarray,
    y: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The moments ``mean``, ``cov`` of a fit over the pixels ``fitted_from`` as a start
    for a fit over the pixels ``fitted`` (both boolean over all pixels) of ``y`` (time ×
    all pixels): a pixel the earlier fit did not have starts from its own mean and
    variance in ``y`` (the mean variance where it has fewer than two values),
    uncorrelated with the others."""
    where = np.full(fitted_from.size, -1)
    where[np.flatnonzero(fitted_from)] = np.arange(int(fitted_from.sum()))
    pos = where[np.flatnonzero(fitted)]
    known = pos >= 0
    out_mean = np.zeros(pos.size)
    out_cov = np.zeros((pos.size, pos.size))
    out_mean[known] = mean[pos[known]]
    out_cov[np.ix_(known, known)] = cov[np.ix_(pos[known], pos[known])]
    if not known.all():
        values = y[:, np.flatnonzero(fitted)[~known]]  # each has a value: it is fitted
        count, own_mean, own_sd = (m[0, :, 0] for m in pixel_moments(values[None, :, :, None]))
        spread = float(np.mean(np.diag(cov))) if cov.size else 1.0
        new = np.flatnonzero(~known)
        out_mean[new] = own_mean
        out_cov[new, new] = np.where(count >= 2, np.maximum(own_sd**2, 1e-12), spread)
    return out_mean, out_cov


def _taper(distances: np.ndarray | None, length: float, fitted: np.ndarray) -> np.ndarray:
    """Gaspari and Cohn's correlation between the ``fitted`` pixels at ``length`` km."""
    if distances is None:
        raise ValueError("regem: a localisation length needs the pixels' distances")
    return gaspari_cohn(distances[np.ix_(fitted, fitted)] / length)


class RegEM(Method):
    """Regularised EM: the field's covariance from the gappy cube, gaps by conditional expectation.

    The error is the conditional standard deviation.
    """

    name = "regem"
    Options = RegEMOptions
    provides_error = True
    refit_with_validation = True  # the error model's validation pixels are 10% of the data

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._state: dict[str, np.ndarray] | None = None
        self._sigma_scale = 1.0

    def fit(self, cube: Cube, rng: np.random.Generator) -> None:
        """Estimate the mean and covariance of the cube's observed pixels."""
        distances = None
        if self.options.length is not None:
            if is_lonlat(cube.da, cube.dims):
                coords = cube.coords()
                distances = grid_distances(coords.y, coords.x)
            elif self.options.length == "validate":
                log.info("regem: no latitude/longitude coordinates, so no localisation")
                self.options.length = None
            else:
                raise ValueError(
                    f"regem option length={self.options.length!r} needs latitude and "
                    f"longitude coordinates in degrees on dims {cube.dims.y!r} and "
                    f"{cube.dims.x!r} (units 'degrees_north'/'degrees_east', or names "
                    "lat/lon). Pass length=None to fit without localisation.")
        self.fit_array(cube.values(), rng, cube.coords().time, distances)

    def fit_array(self, x: np.ndarray, rng: np.random.Generator,
                  times: np.ndarray | None = None,
                  distances: np.ndarray | None = None,
                  first_guess: np.ndarray | None = None,
                  moments: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> None:
        """Fit on a normalised ``(C, T, H, W)`` array (NaN = missing); ``rng`` and the
        frames' ``times`` are for the DINEOF first guess, ``distances`` (km, between the
        ``H·W`` pixels of a frame, row by row) for localisation. ``first_guess`` (like
        ``x``), when given, is the first guess in the gaps instead of the DINEOF fill of
        ``x``. ``moments``, when given, are ``(fitted, mean, cov)`` of an earlier fit on
        the same grid (``fitted``: its pixels, ``C·H·W`` booleans): EM starts from them
        (:func:`embed_moments`) instead of from a first guess. Where validation chose the
        options, EM starts from its fit instead."""
        n_chan, n_time, height, width = x.shape
        y = _to_matrix(x).T.astype(np.float64)  # time × pixels
        fitted = np.isfinite(y).any(0)
        n_pix = int(fitted.sum())
        if n_pix > self.options.max_pixels:
            raise ValueError(
                f"regem: the cube has {n_pix} ever-observed pixels, more than max_pixels="
                f"{self.options.max_pixels} (its covariance would take "
                f"{8 * n_pix**2 / 2**30:.1f} GiB and be inverted at every iteration). Use "
                "method='eof' (DINEOF), coarsen or cut the grid, or pass max_pixels= if the "
                "machine can take it."
            )
        opts = self.options
        if distances is None and opts.length == "validate":
            opts.length = None  # no coordinates to localise with
        elif distances is None and opts.length is not None:
            raise ValueError(f"regem option length={opts.length!r} needs the pixels' "
                             "distances; fit through a cube with latitude/longitude "
                             "coordinates, or pass length=None")
        if distances is not None and n_chan > 1:
            distances = np.tile(distances, (n_chan, n_chan))
        clock = time.perf_counter()
        scores, scale = None, float(self._sigma_scale)
        start: np.ndarray | tuple[np.ndarray, np.ndarray] | None = None
        default = default_ridge(float(np.isfinite(y[:, fitted]).sum(0).mean()))
        if "validate" in (opts.length, opts.ridge, opts.fill_ridge):
            lengths = VALIDATION_LENGTHS if opts.length == "validate" else (opts.length,)
            fill_ridges = FILL_RIDGES if opts.fill_ridge == "validate" else (opts.fill_ridge,)
            choice = choose(x, rng, times, lengths, opts.ridge, fill_ridges, opts.tol,
                            opts.max_iter, distances, default)
            # a refit (and the saved model) keeps the choice
            opts.length, opts.ridge, opts.fill_ridge = \
                choice.length, choice.ridge, choice.fill_ridge
            scores, scale = choice.scores, choice.sigma_scale
            self._sigma_scale = scale  # a refit keeps it with the choice
            chosen, mean, cov = choice.fit
            if np.array_equal(chosen, fitted):  # else a pixel was observed only where hidden
                start = (mean, cov)
        ridge = opts.ridge
        if ridge is None:
            ridge = default if opts.length is None else FIRST_RIDGE
        taper = None if opts.length is None else _taper(distances, opts.length, fitted)
        if start is None and moments is not None:
            start = embed_moments(*moments, fitted, y)
        if start is None:
            start = _first_guess(x, fitted, rng, times, first_guess)
        mean, cov, iterations, change = regem(y[:, fitted], start, ridge, opts.tol,
                                              opts.max_iter, taper=taper)
        log.info("regem: %d pixels, %d iterations, last change %.2g, %.1f s", n_pix,
                 iterations, change, time.perf_counter() - clock)
        self._state = {
            "grid": np.asarray([n_chan, height, width], np.int64),
            "fitted": fitted,
            "mean": mean.astype(np.float64),
            "cov": cov.astype(np.float64),
            "sigma_scale": np.float64(scale),
        }
        self.fit_info = {"pixels": n_pix, "length": opts.length, "ridge": round(ridge, 6),
                         "fill_ridge": opts.fill_ridge, "sigma_scale": round(scale, 4),
                         "iterations": iterations,
                         "last_change": round(change, 6),
                         "converged": bool(change < opts.tol)}
        if scores is not None:
            self.fit_info["validation_mae"] = {k: round(v, 6) for k, v in scores.items()}

    def chunking(self) -> Chunking:
        """Any time chunks, whole frames: each frame is filled from its own observations."""
        return Chunking(whole=("y", "x"))

    def fill(
        self,
        x: np.ndarray,
        rng: np.random.Generator,
        samples: int = 1,
        coords: Coords | None = None,
    ) -> FillResult:
        """Fill each frame's gaps by their conditional expectation given its observations."""
        if self._state is None:
            raise RuntimeError("regem: call fit (or load_state_dict) before fill")
        st = self._state
        check_grid(self.name, st["grid"], x)
        n_chan, n_time, height, width = x.shape
        y = _to_matrix(x).T.astype(np.float64)  # time × pixels
        fitted = st["fitted"]
        mean, cov, scale = st["mean"], st["cov"], float(st["sigma_scale"])
        if not _real(self.options.fill_ridge):
            raise RuntimeError("regem: fill_ridge='validate' is chosen by fit; call fit, or "
                               "set fill_ridge to a number before filling a loaded state")
        nugget = nugget_of(cov, self.options.fill_ridge)
        precision = precision_of(cov, nugget)
        values = y.copy()
        error = np.zeros_like(values)
        yf = y[:, fitted]
        vf, ef = values[:, fitted], error[:, fitted]
        seen = np.isfinite(yf)
        for t, row in gappy_frames(yf, seen, mean, precision):
            v, var = conditional(seen[t], mean, precision, nugget, row)
            vf[t, ~seen[t]] = v
            ef[t, ~seen[t]] = np.sqrt(np.maximum(var, 1e-12)) * scale
        values[:, fitted], error[:, fitted] = vf, ef
        # A pixel the fit never saw observed, observed here: its own mean and spread.
        rest = ~fitted & np.isfinite(y).any(0)
        if rest.any():
            own = y[:, rest]
            count, mu, sd = (m[0, :, 0] for m in pixel_moments(own[None, :, :, None]))
            sd = np.where(count >= 2, np.maximum(sd, 1e-6), 1.0)
            values[:, rest] = np.where(np.isfinite(own), own, mu)
            error[:, rest] = sd
        return FillResult(_from_matrix(values.T, x.shape), _from_matrix(error.T, x.shape))

    def calibration_copy(self) -> RegEM:
        """An unfitted copy with this fit's options and ``sigma_scale``, as validation chose."""
        copy = RegEM(**self.options_dict())
        copy._sigma_scale = self._sigma_scale
        return copy

    def state_dict(self) -> dict[str, Any]:
        """Grid, fitted-pixel mask, mean, covariance and the factor of the spread."""
        return {} if self._state is None else dict(self._state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._state = {
            "grid": as_numpy(state["grid"]).astype(np.int64),
            "fitted": as_numpy(state["fitted"]).astype(bool),
            "mean": as_numpy(state["mean"]).astype(np.float64),
            "cov": as_numpy(state["cov"]).astype(np.float64),
            "sigma_scale": np.float64(as_numpy(state.get("sigma_scale", 1.0))),
        }
        self._sigma_scale = float(self._state["sigma_scale"])
