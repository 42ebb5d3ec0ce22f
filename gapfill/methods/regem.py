"""RegEM: the mean and covariance of the field by expectation-maximisation, and each
frame's gaps filled by their conditional expectation given the frame's observations.

Schneider (2001, *J. Climate* 14, 853–871), the method of many climate-field
reconstructions, with ridges set by the number of observations per pixel instead of
chosen per frame by generalised cross-validation:

1. Stack the cube into a matrix ``Y`` (time × pixels; channels are stacked into
   space) and start with the DINEOF fill (:mod:`gapfill.methods.eof`) in the gaps,
   which EM would otherwise take many more iterations to reach from the pixel means.
2. With ``μ`` and ``Σ`` the mean and covariance of the completed matrix plus the
   conditional covariances of its imputed values (E-step), fill each frame's gaps by
   ``μ_m + Σ_mo (Σ_oo + h² d I)⁻¹ (y_o − μ_o)`` (``m`` its gaps, ``o`` its
   observations, ``d`` the mean variance, ``h²`` the ridge), and sum the conditional
   covariances ``Σ_mm − Σ_mo (Σ_oo + h² d I)⁻¹ Σ_om`` for the next covariance
   (M-step). Both come from the precision matrix ``(Σ + h² d I)⁻¹``, inverted once per
   iteration, with one solve per frame of the size of its gaps (:func:`conditional`).
   With many values missing EM creeps towards its fixed point, so its steps are
   accelerated by SQUAREM (Varadhan & Roland 2008): two steps, an extrapolation along
   them, one step from there (:func:`regem`). Stop when a round changes the imputed
   values by less than ``tol`` of the data's spread.

Filling applies the last step with the fitted ``μ`` and ``Σ`` (to the fitted cube or to
new frames on the same grid) and a smaller ridge, ``fill_ridge``: the EM ridge
regularises a covariance estimated from few values per pixel, while at the fill it acts
as the observations' own noise (measured on three cubes:
``benchmarks/regem_ridges.py``). The error is the square root of the conditional
variance. Unlike DINEOF (:mod:`gapfill.methods.eof`), which keeps a few EOFs, the
covariance keeps every mode, shrunk by the ridge, and its estimate accounts for the
uncertainty of what it imputes. Time and memory grow as pixels³ and pixels²: the method
is meant for grids of up to a few thousand ever-observed pixels (coarse climate fields,
regional boxes); above ``max_pixels`` it says so before any work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.linalg
import scipy.linalg.lapack

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
    ridge
        ``h²`` of the EM fit: the ridge added to ``Σ_oo`` while the covariance is
        estimated, as a share of the mean variance. ``None``: 20 over the mean number
        of observations per pixel, within [0.05, 1] (:func:`default_ridge`).
        ``"validate"``: the one of :data:`VALIDATION_RIDGES` that fills best a tenth of
        the observations hidden in the shapes of the cube's own gaps (an EM fit per
        candidate, each started from the one before, and the fit on every observation
        from the one chosen; :func:`choose_ridge`); the fitted model's ``ridge`` is then
        the one chosen.
    fill_ridge
        ``h²`` of the fill (and of the conditional standard deviation).
    tol
        Stop when a round of SQUAREM (three E-steps) changes the imputed values by less
        than this share of the data's standard deviation (RMS).
    max_iter
        Maximum number of E-steps.
    max_pixels
        Largest number of ever-observed pixels (times channels) accepted: the
        covariance has ``max_pixels²`` entries and each iteration inverts it.
    """

    ridge: float | str | None = None
    fill_ridge: float = 0.02
    tol: float = 2e-3
    max_iter: int = 40
    max_pixels: int = 4000

    def validate(self) -> None:
        """Raise ``ValueError`` naming the option when a value is out of range."""
        for name, ok, what in (
            ("ridge", self.ridge is None or self.ridge == "validate"
             or (_real(self.ridge) and self.ridge > 0), "a number > 0, 'validate' or None"),
            ("fill_ridge", _real(self.fill_ridge) and self.fill_ridge > 0, "a number > 0"),
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


def conditional(
    y: np.ndarray, observed: np.ndarray, mean: np.ndarray, precision: np.ndarray,
    nugget: float, with_cov: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Fill the gaps of one frame ``y`` (pixels,) by their conditional expectation.

    With ``Q`` the :func:`precision_of` the covariance, the gaps ``m`` given the
    observations ``o`` have mean ``μ_m − Q_mm⁻¹ Q_mo (y_o − μ_o)`` and, less the nugget,
    covariance ``Q_mm⁻¹ − nugget I``: one solve of the size of the gaps, not of the
    observations. Returns the imputed values at ``~observed`` and their conditional
    covariance (``with_cov``: its lower triangle, the upper triangle 0) or variances.
    """
    o, m = observed, ~observed
    chol, info = scipy.linalg.lapack.dpotrf(precision[np.ix_(m, m)], lower=1, clean=1)
    if info:
        raise np.linalg.LinAlgError(f"regem: the precision of a frame's gaps is not positive "
                                    f"definite (LAPACK dpotrf info {info})")
    rhs = precision[np.ix_(m, o)] @ (y[o] - mean[o])
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One EM iteration from the moments ``(mean, cov)`` of ``y`` (time × pixels).

    E-step: each frame's gaps filled by their conditional expectation, with the sum of
    their conditional covariances. M-step: the mean and covariance of the completed
    matrix plus that sum. Returns ``(mean, cov, filled)``.
    """
    n_time, n_pix = y.shape
    nugget = nugget_of(cov, ridge)
    precision = precision_of(cov, nugget)
    filled = np.where(observed, y, 0.0)
    extra = np.zeros((n_pix, n_pix))
    for t in range(n_time):
        gaps = ~observed[t]
        if not gaps.any():
            continue
        filled[t, gaps], c = conditional(y[t], observed[t], mean, precision, nugget,
                                         with_cov=True)
        extra[np.ix_(gaps, gaps)] += c  # lower triangles: the gaps' indices increase
    mean, cov = _moments(filled, symmetric(extra))
    return mean, cov, filled


def _moments(filled: np.ndarray, extra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the completed matrix plus the imputations' covariance."""
    mean = filled.mean(0)
    dev = filled - mean
    return mean, (dev.T @ dev + extra) / len(filled)


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
    accelerate: bool = True,
) -> tuple[np.ndarray, np.ndarray, int, float]:
    """The EM estimate of the mean and covariance of ``y`` (time × pixels, NaN = missing),
    from the first guess ``start`` in the gaps, or from moments ``start = (mean, cov)``
    (of an EM fit with another ridge or fewer observations; the first E-step imputes
    from them and counts as a step).

    With ``accelerate`` (SQUAREM), each round is two EM steps, an extrapolation along
    them (:func:`extrapolate`) and one EM step from there: three E-steps that go as far
    as many plain ones where EM converges slowly, as it does with many values missing.
    Without it, a round is one EM step. EM stops after the first round whose imputed
    values change by less than ``tol`` (RMS, over the observations' standard deviation),
    or after ``max_iter`` E-steps (plain steps when fewer than three are left).

    Returns ``(mean, cov, steps, change)``: ``steps`` E-steps in all, ``change`` that of
    the last round. ``trace(steps, mean, cov, change)``, when given, sees the moments
    after each round (and at the start, with change ``inf``: 0 steps, or 1 from moments).
    """
    observed = np.isfinite(y)
    spread = max(float(np.std(y[observed])), 1e-12)
    steps, change = 0, np.inf
    if isinstance(start, tuple):
        mean, cov, filled = em_step(y, observed, *start, ridge)
        steps = 1
    else:
        filled = np.where(observed, y, start)
        mean, cov = _moments(filled, np.zeros((y.shape[1], y.shape[1])))
    if trace is not None:
        trace(steps, mean, cov, change)
    while steps < max_iter:
        if accelerate and steps + 3 <= max_iter:
            one = em_step(y, observed, mean, cov, ridge)[:2]
            two = em_step(y, observed, *one, ridge)[:2]
            mean, cov, new = em_step(y, observed, *extrapolate((mean, cov), one, two), ridge)
            steps += 3
        else:
            mean, cov, new = em_step(y, observed, mean, cov, ridge)
            steps += 1
        change = float(np.sqrt(np.mean((new - filled)[~observed] ** 2))) / spread
        filled = new
        if trace is not None:
            trace(steps, mean, cov, change)
        if change < tol:
            break
    return mean, cov, steps, change


#: The EM ridges ``ridge="validate"`` chooses from, and the share of the observations it
#: hides to choose.
VALIDATION_RIDGES, VALIDATION_SHARE = (0.05, 0.2, 0.8), 0.1


def choose_ridge(
    x: np.ndarray, rng: np.random.Generator, times: np.ndarray | None, tol: float,
    max_iter: int, fill_ridge: float,
) -> tuple[float, dict[float, float], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The EM ridge of :data:`VALIDATION_RIDGES` that fills hidden observations best.

    :data:`VALIDATION_SHARE` of the observed pixels of the normalised ``(C, T, H, W)``
    ``x`` are hidden in pieces of other frames' gaps
    (:func:`gapfill.diagnostics.borrowed_gaps`), EM is fitted on the rest with each
    ridge, largest first (from one DINEOF first guess, then from the moments of the
    ridge before, which EM with the next ridge leaves in fewer steps), and the hidden
    pixels are filled with ``fill_ridge``. Returns the ridge with the lowest MAE there,
    every ridge's MAE, and that ridge's fit ``(fitted, mean, cov)`` (pixels fitted as in
    :meth:`RegEM.fit_array`), a start for the fit on every observation.
    """
    from gapfill.diagnostics import borrowed_gaps

    observed = np.isfinite(x).all(0)
    never = ~np.isfinite(x).any((0, 1))
    hide = np.broadcast_to(
        borrowed_gaps(~observed, observed, VALIDATION_SHARE, rng, exclude=never), x.shape)
    fit_input = np.where(hide, np.nan, x)
    y = _to_matrix(fit_input).T.astype(np.float64)
    fitted = np.isfinite(y).any(0)
    first = EOF()
    first.fit_array(fit_input, rng, times)
    start: np.ndarray | tuple[np.ndarray, np.ndarray] = \
        _to_matrix(first.fill(fit_input, rng).values).T[:, fitted].astype(np.float64)
    probe = RegEM(fill_ridge=fill_ridge)
    grid = np.asarray(x.shape)[[0, 2, 3]]
    scores: dict[float, float] = {}
    best: tuple[float, np.ndarray, np.ndarray] | None = None  # ridge, mean, cov
    for ridge in sorted(VALIDATION_RIDGES, reverse=True):
        mean, cov = regem(y[:, fitted], start, ridge, tol, max_iter)[:2]
        start = (mean, cov)
        probe.load_state_dict({"grid": grid, "fitted": fitted, "mean": mean, "cov": cov})
        errors = np.abs(probe.fill(fit_input, rng).values - x)[hide]
        errors = errors[np.isfinite(errors)]  # a pixel hidden wherever it was observed
        scores[ridge] = float(errors.mean()) if errors.size else np.inf
        if best is None or scores[ridge] < scores[best[0]]:
            best = (ridge, mean, cov)
    assert best is not None
    return best[0], {r: scores[r] for r in VALIDATION_RIDGES}, (fitted, best[1], best[2])


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

    def fit(self, cube: Cube, rng: np.random.Generator) -> None:
        """Estimate the mean and covariance of the cube's observed pixels."""
        self.fit_array(cube.values(), rng, cube.coords().time)

    def fit_array(self, x: np.ndarray, rng: np.random.Generator,
                  times: np.ndarray | None = None) -> None:
        """Fit on a normalised ``(C, T, H, W)`` array (NaN = missing); ``rng`` and the
        frames' ``times`` are for the DINEOF first guess."""
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
        clock = time.perf_counter()
        ridge, scores = self.options.ridge, None
        start: np.ndarray | tuple[np.ndarray, np.ndarray] | None = None
        if ridge == "validate":
            ridge, scores, (chosen, mean, cov) = choose_ridge(
                x, rng, times, self.options.tol, self.options.max_iter,
                self.options.fill_ridge)
            self.options.ridge = ridge  # a refit (and the saved model) keeps the choice
            if np.array_equal(chosen, fitted):  # else a pixel was observed only where hidden
                start = (mean, cov)
        elif ridge is None:
            ridge = default_ridge(float(np.isfinite(y[:, fitted]).sum(0).mean()))
        if start is None:
            first = EOF()
            first.fit_array(x, rng, times)
            start = _to_matrix(first.fill(x, rng).values).T[:, fitted].astype(np.float64)
        mean, cov, iterations, change = regem(y[:, fitted], start, ridge,
                                              self.options.tol, self.options.max_iter)
        log.info("regem: %d pixels, %d iterations, last change %.2g, %.1f s", n_pix,
                 iterations, change, time.perf_counter() - clock)
        self._state = {
            "grid": np.asarray([n_chan, height, width], np.int64),
            "fitted": fitted,
            "mean": mean.astype(np.float64),
            "cov": cov.astype(np.float64),
        }
        self.fit_info = {"pixels": n_pix, "ridge": round(ridge, 6), "iterations": iterations,
                         "last_change": round(change, 6),
                         "converged": bool(change < self.options.tol)}
        if scores is not None:
            self.fit_info["ridge_validation_mae"] = {str(k): round(v, 6)
                                                     for k, v in scores.items()}

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
        mean, cov = st["mean"], st["cov"]
        nugget = nugget_of(cov, self.options.fill_ridge)
        precision = precision_of(cov, nugget)
        values = y.copy()
        error = np.zeros_like(values)
        yf = y[:, fitted]
        vf, ef = values[:, fitted], error[:, fitted]
        for t in range(n_time):
            observed = np.isfinite(yf[t])
            if observed.all():
                continue
            v, var = conditional(yf[t], observed, mean, precision, nugget)
            vf[t, ~observed] = v
            ef[t, ~observed] = np.sqrt(np.maximum(var, 1e-12))
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

    def state_dict(self) -> dict[str, Any]:
        """Grid, fitted-pixel mask, mean and covariance."""
        return {} if self._state is None else dict(self._state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._state = {
            "grid": as_numpy(state["grid"]).astype(np.int64),
            "fitted": as_numpy(state["fitted"]).astype(bool),
            "mean": as_numpy(state["mean"]).astype(np.float64),
            "cov": as_numpy(state["cov"]).astype(np.float64),
        }
