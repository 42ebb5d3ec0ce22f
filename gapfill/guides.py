"""First guesses ("guides") that the deep methods correct.

A guide is a complete field computed from a gappy normalised ``(C, T, H, W)``
array by a classical method; ``gan``, ``combcn`` and ``tgfnet`` take it as an
input channel and predict a correction to it. Every guide here is built on
the package's own classical methods, so ``guide="eof"`` means the same code
(:class:`gapfill.methods.eof.EOF`) in every method:

``"eof"``
    DINEOF (:mod:`gapfill.methods.eof`): fit, then each frame projected on the EOFs.
``"linear"``
    Linear interpolation in time (:class:`gapfill.methods.linear.Linear`):
    the right first guess where gaps are short in time, as in video.
``"eof_interp"``
    ``"eof"`` plus the observed residuals (observation minus EOF) interpolated
    into each frame's gaps by Laplace's equation (:func:`harmonic_interpolation`),
    optionally screened so the correction fades far from observations, then
    optionally blended with ``"linear"`` where an observation is near in time.
    Its EOF reconstruction may have its smaller modes tapered (:data:`TAPERS`):
    what a tapered mode leaves out of the gaps, the interpolated residuals put
    back near the observations.
``"harmonic"``
    The same interpolation of the values themselves (no EOF), optionally
    blended with ``"linear"``; when asked for, or among the candidates of
    ``"auto"`` with ``values=True``.
``"regem"``
    Each frame's gaps filled by their conditional expectation given its observations,
    with the field's mean and localised covariance estimated by a short EM fit
    (:class:`gapfill.methods.regem.RegEM`: a few E-steps from the DINEOF fill at
    localisation length :data:`REGEM_LENGTH`, the EM ridge one of :data:`REGEM_RIDGES`,
    or from the moments of an earlier fit run until it converged, :func:`regem_start`);
    on a latitude/longitude grid
    (``grid``) of at most :data:`REGEM_MAX_PIXELS` ever-observed pixels. Its base is
    the DINEOF reconstruction it starts from.

:func:`choose_guide` picks the kind and its parameters per cube by the MAE on
held-out pixels (``"auto"``: ``"eof"``, ``"linear"`` or ``"eof_interp"``,
``"regem"`` where the grid allows it, and ``"harmonic"`` with ``values=True``): since
``"eof"`` and ``"linear"`` are among the candidates, the guide chosen is never
worse than the better of the two on those pixels.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("gapfill")

#: Guide kinds a method may ask for (``"auto"``: chosen by :func:`choose_guide`).
GUIDES = ("auto", "eof", "linear", "eof_interp", "harmonic", "regem", "none")
#: Screening of the harmonic interpolation tried: 0 (plain Laplace) and one that lets the
#: correction fade about 3 pixels from the observations.
SCREENS = (0.0, 0.1)
#: Tapers of the EOF modes tried under ``"eof_interp"`` (``EOFOptions.taper``): none, and
#: mode ``j`` of ``k`` weighted ``1 - j/k``.
TAPERS = (0.0, 1.0)
#: Time scales (frames) tried for blending in the linear guide near observations in time.
BLEND_TAUS = (0.5, 1.0, 2.0, 4.0)
#: The ``"regem"`` guide's EM fit: localisation length (km), the EM ridges tried, the
#: E-step counts it may take (rounds of SQUAREM; the caller picks one by cost, a recipe
#: without one takes the first, as one without an EM ridge takes the first ridge), the
#: fill ridges tried, and the most ever-observed pixels (× channels).
REGEM_LENGTH = 4000.0
REGEM_RIDGES = (0.01, 0.001, 0.0001)
REGEM_STEPS = (3, 6, 9)
REGEM_FILL_RIDGES = (0.0001, 0.001, 0.01, 0.1)
REGEM_MAX_PIXELS = 4000
#: The most E-steps of the fit a ``"regem"`` guide may start from (:func:`regem_start`;
#: it stops earlier once it converges).
REGEM_START_STEPS = 30
#: Where a ``"regem"`` guide of :data:`REGEM_STEPS` E-steps from the DINEOF fill costs
#: too much, the guides take this many E-steps from a fit of at most
#: :data:`REGEM_FIRST_START_STEPS` fitted before the guide is chosen (see
#: :class:`gapfill.methods.gan.GANOptions`'s ``guide``).
REGEM_STARTED_STEPS = 1
REGEM_FIRST_START_STEPS = 10
#: EM ridge of that fit (the choice tries no other: each would need its own fit).
REGEM_FIRST_START_RIDGE = 0.01
#: Seconds per E-step on one CPU core in :func:`regem_seconds`, per unit of each term:
#: ``n³`` (inverting the covariance), ``Σ g³`` (factorising and inverting each frame's
#: gap block), ``Σ g²`` (gathering and adding those blocks) and ``T`` (per frame).
REGEM_COSTS = (1.28e-10, 2.06e-11, 1.92e-8, 2.25e-4)


def linear_guide(x: np.ndarray) -> np.ndarray:
    """Linear-in-time first guess of a gappy ``(C, T, H, W)`` array, 0 where unknown.

    Linear interpolation between each pixel's observations, Gaussian spatial
    fill at the ends of its series (:class:`gapfill.methods.linear.Linear`);
    pixels never observed get 0 (the normalised mean).
    """
    from gapfill.methods.linear import Linear

    out = Linear().fill(x, np.random.default_rng(0)).values
    return np.nan_to_num(out, nan=0.0).astype(np.float32)


def eof_guide(
    x: np.ndarray, modes: int | None = None, taper: float = 0.0,
) -> tuple[np.ndarray, int]:
    """DINEOF reconstruction of a gappy ``(C, T, H, W)`` array and its number of modes.

    Runs :class:`gapfill.methods.eof.EOF` with ``modes`` fixed (``None``: chosen
    by its cross-validation) and ``taper`` (:class:`~gapfill.methods.eof.EOFOptions`),
    and fills every pixel by projecting each frame on the EOFs. Deterministic
    (fixed seed); 0 where nothing is known. Degenerate inputs (fewer than two
    frames or observations) fall back to the linear guide.
    """
    fields, k = eof_guides(x, modes, (taper,))
    return fields[0], k


def eof_guides(
    x: np.ndarray, modes: int | None = None, tapers: tuple[float, ...] = (0.0,),
) -> tuple[list[np.ndarray], int]:
    """:func:`eof_guide` for each of ``tapers``, from one DINEOF fit."""
    from gapfill.methods.eof import EOF

    if np.isfinite(x).sum() < 2 or x.shape[1] < 2:
        return [linear_guide(x)] * len(tapers), int(modes or 1)
    eof = EOF()
    fields = []
    try:
        eof.fit_array(x, np.random.default_rng(0), modes=modes)
        for taper in tapers:
            eof.options.taper = float(taper)
            fields.append(np.nan_to_num(eof.fill(x, np.random.default_rng(0)).values, nan=0.0)
                          .astype(np.float32))
    except (ValueError, np.linalg.LinAlgError):  # degenerate tiny inputs
        return [linear_guide(x)] * len(tapers), int(modes or 1)
    return fields, int(eof.fit_info.get("modes", 1))


@dataclass
class RegemStart:
    """The moments of an EM fit run until it converges (:func:`regem_start`), from
    which ``"regem"`` guides of the same grid start their E-steps.

    Attributes
    ----------
    fitted
        Its pixels (``C·H·W`` booleans, those observed at least once).
    mean, cov
        Their mean and localised covariance (normalised units, float32: as a model's
        state keeps them).
    em_ridge
        The EM ridge it was fitted with: a guide with another starts from the DINEOF fill.
    steps
        The E-steps it took.
    """

    fitted: np.ndarray
    mean: np.ndarray
    cov: np.ndarray
    em_ridge: float
    steps: int = 0

    def state_dict(self) -> dict[str, Any]:
        """Arrays for a model's state (:meth:`from_state` reads them back)."""
        return {"fitted": self.fitted, "mean": self.mean, "cov": self.cov,
                "em_ridge": float(self.em_ridge), "steps": int(self.steps)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RegemStart:
        """Inverse of :meth:`state_dict` (numpy arrays or torch tensors)."""
        from gapfill.methods.base import as_numpy

        return cls(as_numpy(state["fitted"]).astype(bool),
                   as_numpy(state["mean"]).astype(np.float32),
                   as_numpy(state["cov"]).astype(np.float32),
                   float(as_numpy(state["em_ridge"])), int(as_numpy(state["steps"])))


def _regem_fit(
    x: np.ndarray, base: np.ndarray, grid: tuple[Any, Any], em_ridge: float, steps: int,
    fill_ridge: float, start: RegemStart | None = None,
) -> Any:
    """The :class:`~gapfill.methods.regem.RegEM` fit of a ``"regem"`` guide (see
    :func:`regem_fields`), ``None`` when the grid is too large or the input degenerate."""
    from gapfill.localisation import grid_distances
    from gapfill.methods.regem import RegEM

    pixels = int(np.isfinite(x).any(1).sum())
    if pixels > REGEM_MAX_PIXELS or np.isfinite(x).sum() < 2 or x.shape[1] < 2:
        return None
    lat, lon = (np.asarray(v, dtype=np.float64) for v in grid)
    model = RegEM(length=REGEM_LENGTH, ridge=float(em_ridge), fill_ridge=fill_ridge,
                  max_iter=int(steps), max_pixels=REGEM_MAX_PIXELS)
    moments = None
    if start is not None and start.em_ridge == float(em_ridge) \
            and start.fitted.size == x.shape[0] * x.shape[2] * x.shape[3]:
        moments = (start.fitted, start.mean, start.cov)
    try:
        model.fit_array(x, np.random.default_rng(0), distances=grid_distances(lat, lon),
                        first_guess=base, moments=moments)
    except (ValueError, np.linalg.LinAlgError):  # degenerate tiny inputs
        return None
    return model


def regem_start(
    x: np.ndarray, base: np.ndarray, grid: tuple[Any, Any], em_ridge: float,
    steps: int = REGEM_START_STEPS,
) -> RegemStart | None:
    """The moments of the EM fit of a ``"regem"`` guide of ``x`` (see
    :func:`regem_fields`) run until it converges (RegEM's ``tol``), at most ``steps``
    E-steps; ``None`` where :func:`regem_fields` gives none.

    A guide that starts from them comes close to EM's fixed point in a few E-steps, where
    one that starts from the DINEOF fill needs many more. They carry what the fit learned
    from every value of ``x``: a guide of ``x`` less some of its values that starts from
    them is not blind to those values.
    """
    model = _regem_fit(x, base, grid, em_ridge, steps, REGEM_FILL_RIDGES[0])
    if model is None:
        return None
    st = model.state_dict()
    return RegemStart(st["fitted"], st["mean"].astype(np.float32),
                      st["cov"].astype(np.float32), float(em_ridge),
                      int(model.fit_info["iterations"]))


def regem_fields(
    x: np.ndarray, base: np.ndarray, grid: tuple[Any, Any], fill_ridges: tuple[float, ...],
    em_ridge: float = REGEM_RIDGES[0], steps: int = REGEM_STEPS[0],
    start: RegemStart | None = None,
) -> list[np.ndarray] | None:
    """The ``"regem"`` guide of ``x`` for each of ``fill_ridges``, from one short EM fit.

    EM (:class:`gapfill.methods.regem.RegEM`, ridge ``em_ridge``) starts from ``base``
    (the DINEOF fill) in the gaps, or from the moments ``start`` of a fit on the same
    grid with the same EM ridge (:func:`regem_start`), and takes ``steps`` E-steps
    with the covariance localised at :data:`REGEM_LENGTH` on ``grid`` (latitudes and
    longitudes of ``x``'s rows and columns, degrees). ``None`` when the grid has more
    than :data:`REGEM_MAX_PIXELS` ever-observed pixels or the fit fails (degenerate
    input); pixels never observed keep ``base``.
    """
    fills = regem_fills(x, base, grid, fill_ridges, em_ridge, steps, start)
    return None if fills is None else [field for field, _ in fills]


def regem_fills(
    x: np.ndarray, base: np.ndarray, grid: tuple[Any, Any], fill_ridges: tuple[float, ...],
    em_ridge: float = REGEM_RIDGES[0], steps: int = REGEM_STEPS[0],
    start: RegemStart | None = None,
) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """:func:`regem_fields`, each with its spread: the conditional standard deviation of
    the fill given each frame's observations (0 where observed, NaN where the field is
    ``base``'s)."""
    model = _regem_fit(x, base, grid, em_ridge, steps, fill_ridges[0], start)
    if model is None:
        return None
    rng = np.random.default_rng(0)
    fills = []
    try:
        for ridge in fill_ridges:
            model.options.fill_ridge = float(ridge)
            result = model.fill(x, rng)
            ok = np.isfinite(result.values)
            fills.append((np.where(ok, result.values, base).astype(np.float32),
                          np.where(ok, result.error, np.nan).astype(np.float32)))
    except (ValueError, np.linalg.LinAlgError):  # degenerate tiny inputs
        return None
    return fills


def regem_seconds(x: np.ndarray, steps: int = REGEM_STEPS[0]) -> float:
    """Estimated seconds of one ``"regem"`` guide of ``x`` (``steps`` E-steps) on one
    CPU core.

    Each E-step and the fill invert the ``n × n`` covariance (``n`` ever-observed pixels
    × channels) and, in each of the ``T`` frames, gather, factorise and invert the block
    of its ``g`` gaps: ``(steps + 1) (a n³ + b Σ g³ + c Σ g² + d T)`` seconds with
    :data:`REGEM_COSTS`. Those were fitted to 27 guides timed on one core of a 2-core
    Xeon (the Pacific anomaly, the 500 hPa height and A1B; 3, 6 and 9 E-steps; the cube
    as given and with 15% and 30% more of its values hidden, 0.27 to 66 s): the estimate
    is within 14% of each. Guides running side by side on both cores take several times
    longer.
    """
    seen = np.isfinite(x).reshape(x.shape[0], x.shape[1], -1)  # (C, T, pixels)
    fitted = seen.any(1)  # (C, pixels)
    n = float(fitted.sum())
    gaps = (~seen & fitted[:, None]).sum((0, 2)).astype(np.float64)  # per frame
    a, b, c, d = REGEM_COSTS
    per_step = a * n**3 + b * float((gaps**3).sum()) + c * float((gaps**2).sum()) + d * len(gaps)
    return (steps + 1) * per_step


def harmonic_interpolation(x: np.ndarray, base: np.ndarray, screen: float = 0.0) -> np.ndarray:
    """``base`` plus the residuals ``x - base`` interpolated into each frame's gaps.

    In every frame the residual is the solution of Laplace's equation on the
    4-neighbour grid, equal to the observed residual at observed pixels
    (harmonic interpolation: each gap pixel is the average of its four
    neighbours; a plane is reproduced exactly). The grid is the pixels observed
    at least once, so a coast is a no-flux boundary and never-observed pixels
    keep ``base``. ``screen > 0`` adds ``screen * r`` to the equation, which
    pulls the residual back to 0 about ``1 / sqrt(screen)`` pixels from the
    observations (a Gaussian Markov random field with that correlation length).
    Observed pixels get ``x``; gaps with no observation in their frame keep ``base``.
    """
    from scipy import ndimage, sparse
    from scipy.sparse.linalg import spsolve

    c_, t_, h, w = x.shape
    out = np.array(base, dtype=np.float32, copy=True)
    idx = np.arange(h * w).reshape(h, w)
    edges = np.concatenate([
        np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], 1),
        np.stack([idx[:-1, :].ravel(), idx[1:, :].ravel()], 1),
    ])
    for c in range(c_):
        obs = np.isfinite(x[c]).reshape(t_, h * w)
        grid = obs.any(0)
        e = edges[grid[edges[:, 0]] & grid[edges[:, 1]]]
        adj = sparse.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(h * w,) * 2)
        adj = (adj + adj.T).tocsr()
        # graph Laplacian, plus a tiny diagonal so a component with no observation solves to 0
        lap = (sparse.diags(np.asarray(adj.sum(1)).ravel() + screen + 1e-9) - adj).tocsr()
        for t in range(t_):
            o, u = obs[t], grid & ~obs[t]
            if not (o.any() and u.any()):
                continue
            xt, bt = x[c, t].reshape(-1), base[c, t].reshape(-1).astype(np.float64)
            # each gap (4-connected) is its own small system: solved one by one, as a
            # single sparse factorisation of all of them costs several times more
            labels, n = ndimage.label(u.reshape(h, w))
            labels = labels.reshape(-1)
            gap = np.flatnonzero(u)
            gap = gap[np.argsort(labels[gap], kind="stable")]  # gap pixels, gap by gap
            bounds = np.searchsorted(labels[gap], np.arange(1, n + 2))
            rows = lap[gap]
            rhs = -(rows[:, o] @ (xt[o] - bt[o]))
            a = rows[:, gap].tocsc()
            sol = np.empty(len(gap))
            for k in range(n):
                part = slice(bounds[k], bounds[k + 1])
                sol[part] = np.atleast_1d(spsolve(a[part, part], rhs[part]))
            out[c, t].reshape(-1)[gap] = bt[gap] + sol
        out[c] = np.where(np.isfinite(x[c]), x[c], out[c])
    return out


def time_distance(x: np.ndarray) -> np.ndarray:
    """Frames from each entry of ``(C, T, H, W)`` to the nearest observation of its pixel.

    ``inf`` for pixels never observed; 0 at observations.
    """
    obs = np.isfinite(x)
    t = x.shape[1]
    idx = np.arange(t, dtype=np.float64)[None, :, None, None]
    before = np.where(obs, idx, -np.inf)
    before = np.maximum.accumulate(before, axis=1)
    after = np.where(obs, idx, np.inf)
    after = np.flip(np.minimum.accumulate(np.flip(after, 1), axis=1), 1)
    return np.minimum(idx - before, after - idx)


def blend_linear(base: np.ndarray, linear: np.ndarray, dist: np.ndarray, tau: float) -> np.ndarray:
    """``w·linear + (1 − w)·base`` with ``w = exp(−(d − 1) / tau)``, ``d`` frames to an observation.

    One frame from an observation the linear guide takes weight 1; the weight
    halves about every ``0.7·tau`` frames further into a gap.
    """
    w = np.exp(-np.maximum(dist - 1.0, 0.0) / tau)
    return (w * linear + (1.0 - w) * base).astype(np.float32)


@dataclass
class Guide:
    """A guide recipe: its kind and the parameters chosen for one cube.

    Attributes
    ----------
    kind
        ``"eof"``, ``"linear"``, ``"eof_interp"``, ``"harmonic"``, ``"regem"`` or
        ``"none"``.
    modes
        EOF modes (``"eof"``, ``"eof_interp"``).
    taper
        Taper of the EOF modes (``"eof_interp"``; :data:`TAPERS`), ``None``: none.
    screen
        Screening of the harmonic interpolation (``"eof_interp"``, ``"harmonic"``;
        ``None``: no interpolation).
    tau
        Time scale of the blend with the linear guide (``"eof_interp"``, ``"harmonic"``;
        ``None``: none).
    fill_ridge
        Fill ridge of the conditional expectation (``"regem"``).
    em_ridge, steps
        EM ridge and E-steps of its EM fit (``"regem"``; ``None``: the first of
        :data:`REGEM_RIDGES` and :data:`REGEM_STEPS`).
    grid
        Latitudes and longitudes (degrees) of the rows and columns (``"regem"``).
    scores
        Validation MAE of each candidate tried (what the choice was made on).
    """

    kind: str = "eof"
    modes: int | None = None
    taper: float | None = None
    screen: float | None = None
    tau: float | None = None
    fill_ridge: float | None = None
    em_ridge: float | None = None
    steps: int | None = None
    grid: list[list[float]] | None = None
    scores: dict[str, float] = dataclasses.field(default_factory=dict)

    def make(self, x: np.ndarray, start: RegemStart | None = None) -> np.ndarray | None:
        """The guide of the gappy ``(C, T, H, W)`` array ``x`` with these parameters
        (``start``: see :meth:`make_with_base`)."""
        return self.make_with_base(x, start)[0]

    def make_with_base(
        self, x: np.ndarray, start: RegemStart | None = None,
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The guide of ``x`` and its smooth base: the EOF reconstruction under an
        ``eof_interp`` or ``regem`` guide, zero under ``harmonic``, the guide itself
        otherwise.

        The base does not pass through the observations, so ``x - base`` at the observed
        pixels is the signal the residual interpolation spreads into the gaps. A
        ``regem`` guide's E-steps start from ``start`` (:func:`regem_start`) when given.
        """
        return self.make_with_spread(x, start)[:2]

    def make_with_spread(
        self, x: np.ndarray, start: RegemStart | None = None,
    ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """:meth:`make_with_base` and the guide's own spread: under a ``regem`` guide the
        conditional standard deviation of each value given its frame's observations (0
        where observed, NaN where EM gave no fill), ``None`` under the other kinds."""
        if self.kind == "none":
            return None, None, None
        if self.kind == "linear":
            field = linear_guide(x)
            return field, field, None
        if self.kind == "harmonic":
            base = np.zeros(x.shape, dtype=np.float32)
        else:
            base, modes = eof_guide(x, self.modes, self.taper or 0.0)
            if self.modes is None:
                self.modes = modes
            if self.kind == "eof":
                return base, base, None
            if self.kind == "regem":
                if self.grid is None:
                    raise ValueError("a regem guide needs its grid's latitudes and longitudes")
                ridge = self.fill_ridge or REGEM_FILL_RIDGES[0]
                fills = regem_fills(x, base, self.grid, (ridge,),
                                    self.em_ridge or REGEM_RIDGES[0],
                                    self.steps or REGEM_STEPS[0], start)
                if fills is None:  # too many pixels, or too little to fit: DINEOF's
                    log.warning("regem guide: %d ever-observed pixels or too few values to "
                                "fit; the DINEOF reconstruction is the guide",
                                int(np.isfinite(x).any(1).sum()))
                    return base, base, None
                return fills[0][0], base, fills[0][1]
        field = base
        if self.screen is not None:
            field = harmonic_interpolation(x, base, self.screen)
        if self.tau is not None:
            field = blend_linear(field, linear_guide(x), time_distance(x), self.tau)
        return field, base, None

    def stacked(
        self, x: np.ndarray, with_base: bool, start: RegemStart | None = None,
    ) -> np.ndarray | None:
        """The guide of ``x``, followed along the channel axis by its base when ``with_base``
        (what a generator with ``guide_base`` takes; ``start``: see :meth:`make_with_base`)."""
        return self.stacked_with_spread(x, with_base, start)[0]

    def stacked_with_spread(
        self, x: np.ndarray, with_base: bool, start: RegemStart | None = None,
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """:meth:`stacked` and the guide's spread (:meth:`make_with_spread`)."""
        field, base, spread = self.make_with_spread(x, start)
        if field is None:
            return None, None
        return (np.concatenate([field, base]) if with_base else field), spread

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for a model's metadata)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Guide:
        """Inverse of :meth:`to_dict`."""
        old = {"sigma", "shrink"} & set(d)
        if old:
            raise ValueError(
                f"this model's guide has {sorted(old)}, the options of a Gaussian residual "
                "interpolation this gapfill does not have; fit the model again")
        return cls(**d)

    def __str__(self) -> str:
        if self.kind == "regem":
            return (f"regem (k={self.modes}, em_ridge={self.em_ridge}, steps={self.steps}, "
                    f"fill_ridge={self.fill_ridge})")
        if self.kind not in ("eof_interp", "harmonic"):
            return self.kind if self.modes is None else f"{self.kind} (k={self.modes})"
        parts = [f"k={self.modes}"] if self.kind == "eof_interp" else []
        if self.taper:
            parts.append(f"taper={self.taper}")
        if self.screen is not None:
            parts.append(f"screen={self.screen}")
        if self.tau is not None:
            parts.append(f"linear blend tau={self.tau}")
        return f"{self.kind} ({', '.join(parts)})"


def choose_guide(
    x: np.ndarray, val: np.ndarray, truth: np.ndarray, kind: str = "auto",
    modes: int | None = None, values: bool = False, weights: np.ndarray | None = None,
    grid: tuple[Any, Any] | None = None, regem_steps: int = REGEM_STEPS[0],
    start: RegemStart | None = None,
) -> tuple[Guide, np.ndarray | None, np.ndarray | None]:
    """Choose a guide for ``x`` by its MAE on the held-out pixels ``val``.

    Parameters
    ----------
    x
        ``(C, T, H, W)`` normalised input with the ``val`` pixels hidden (NaN).
    val
        ``(C, T, H, W)`` held-out pixels (may be empty: then no choice is made
        and ``"auto"`` means ``"eof_interp"`` with unscreened interpolation).
    truth
        Values at least at ``val``.
    kind
        ``"auto"`` (``"eof"``, ``"linear"``, ``"eof_interp"``, ``"regem"``), or one of
        :data:`GUIDES` to fix the kind
        (its parameters are still chosen).
    modes
        Fixed EOF modes; ``None`` lets DINEOF's cross-validation choose.
    values
        With ``"auto"``, also try ``"harmonic"``: the interpolation of the values
        themselves, the best of these guides where the field has no structure a
        few EOFs hold (video under a moving bar). It has no EOF base for a generator
        to learn from, so ``gan`` tries it only after training
        (:meth:`~gapfill.methods.gan.GAN.tune`).
    weights
        One weight per ``val`` pixel (in ``val``'s order) for the MAE, or ``None``.
    grid
        Latitudes and longitudes (degrees) of ``x``'s rows and columns, or ``None`` (the
        grid is not a latitude/longitude grid): with them ``"auto"`` also tries
        ``"regem"`` (one EM fit of ``regem_steps`` E-steps at each of
        :data:`REGEM_RIDGES`, each filled at each of :data:`REGEM_FILL_RIDGES`), which
        needs them.
    regem_steps
        E-steps of the ``"regem"`` candidates' EM fits.
    start
        Moments of an EM fit of ``x`` (:func:`regem_start`): the ``"regem"`` candidates
        then start from them and take only their EM ridge. ``x`` lacks ``val``: the fit
        has not seen the values they are scored on.

    Returns
    -------
    (Guide, numpy.ndarray or None, numpy.ndarray or None)
        The chosen recipe, the guide of ``x`` it gives and that guide's base
        (:meth:`Guide.make_with_base`).
    """
    if kind not in GUIDES:
        raise ValueError(f"guide must be one of {GUIDES}, got {kind!r}")
    if kind == "none":
        return Guide("none"), None, None
    if kind == "regem" and grid is None:
        raise ValueError("guide='regem' needs latitude and longitude coordinates in degrees "
                         "(units 'degrees_north'/'degrees_east', or names lat/lon); use "
                         "guide='auto' or 'eof_interp'")
    has_val = bool(val.any())

    def mae(field: np.ndarray) -> float:
        if not has_val:
            return np.inf
        return float(np.average(np.abs(field[val] - truth[val]), weights=weights))

    scores: dict[str, float] = {}
    best: tuple[float, Guide, np.ndarray, np.ndarray] | None = None

    def consider(name: str, guide: Guide, field: np.ndarray, base: np.ndarray) -> None:
        nonlocal best
        score = mae(field)
        scores[name] = score
        if best is None or score < best[0]:
            best = (score, guide, field, base)

    linear = linear_guide(x) if kind != "eof" else None
    if kind in ("auto", "linear"):
        consider("linear", Guide("linear"), linear, linear)
    bases: list[tuple[Guide, np.ndarray]] = []
    if kind in ("auto", "eof", "eof_interp", "regem"):
        tapers = TAPERS if kind in ("auto", "eof_interp") else TAPERS[:1]
        fields, k = eof_guides(x, modes, tapers)
        eof = fields[0]
        consider("eof", Guide("eof", modes=k), eof, eof)
        if kind in ("auto", "eof_interp"):
            bases += [(Guide("eof_interp", modes=k, taper=taper or None), field)
                      for taper, field in zip(tapers, fields)]
        if kind in ("auto", "regem") and grid is not None:
            on = [list(map(float, np.asarray(v, dtype=np.float64))) for v in grid]
            ridges = REGEM_FILL_RIDGES if has_val else REGEM_FILL_RIDGES[:1]
            em_ridges = REGEM_RIDGES if has_val else REGEM_RIDGES[:1]
            for em_ridge in em_ridges if start is None else (start.em_ridge,):
                regem = regem_fields(x, eof, on, ridges, em_ridge, regem_steps, start)
                if regem is None and kind == "regem":
                    raise ValueError(
                        f"guide='regem' takes at most {REGEM_MAX_PIXELS} ever-observed "
                        f"pixels (× channels) and two frames; this cube has "
                        f"{int(np.isfinite(x).any(1).sum())} and {x.shape[1]}: use "
                        "guide='auto' or 'eof_interp'")
                for ridge, field in zip(ridges, regem or []):
                    g = Guide("regem", modes=k, fill_ridge=ridge, em_ridge=em_ridge,
                              steps=int(regem_steps), grid=on)
                    if not has_val and kind == "regem":  # nothing to choose on: as asked
                        g.scores = scores
                        return g, field, eof
                    consider(str(g), g, field, eof)
    if kind == "harmonic" or (kind == "auto" and values):
        bases.append((Guide("harmonic"), np.zeros(x.shape, dtype=np.float32)))
    if bases and not has_val:  # nothing to choose on: the first base, plain Laplace
        g, base = dataclasses.replace(bases[0][0], screen=SCREENS[0]), bases[0][1]
        return g, harmonic_interpolation(x, base, g.screen), base
    interp: list[tuple[float, Guide, np.ndarray, np.ndarray]] = []
    for base_guide, base in bases:  # screening pulls towards the base: useless at 0
        for screen in SCREENS if base_guide.kind == "eof_interp" else SCREENS[:1]:
            g = dataclasses.replace(base_guide, screen=screen)
            consider(str(g), g, field := harmonic_interpolation(x, base, screen), base)
            interp.append((scores[str(g)], g, field, base))
    if interp and linear is not None:  # the best interpolation, blended with linear in time
        _, g0, field0, base0 = min(interp, key=lambda item: item[0])
        dist = time_distance(x)
        for tau in BLEND_TAUS:
            g = dataclasses.replace(g0, tau=tau)
            consider(str(g), g, blend_linear(field0, linear, dist, tau), base0)
    assert best is not None
    _, guide, field, base = best
    guide.scores = scores
    return guide, field, base
