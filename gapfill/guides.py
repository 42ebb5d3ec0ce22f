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
    ``"eof"`` plus a normalised convolution of the observed residuals
    (observation minus EOF), shrunk towards 0 away from observations, then
    optionally blended with ``"linear"`` where an observation is near in time.

:func:`choose_guide` picks the kind and its parameters per cube by the MAE on
held-out pixels (``"auto"``): since ``"eof"`` and ``"linear"`` are among the
candidates, the guide chosen is never worse than the better of the two on
those pixels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Guide kinds a method may ask for (``"auto"``: chosen by :func:`choose_guide`).
GUIDES = ("auto", "eof", "linear", "eof_interp", "none")
#: Gaussian widths ``(t, y, x)`` in pixels tried for the residual interpolation.
INTERP_SIGMAS = ((0.0, 1.0, 2.0), (0.0, 2.0, 4.0), (0.0, 4.0, 8.0), (1.0, 2.0, 4.0))
#: Shrinkage of the interpolated residual: ``num / (den + shrink)`` where ``den`` is the
#: Gaussian-weighted share of observed neighbours, so the correction fades far from them.
INTERP_SHRINKS = (0.02, 0.1, 0.3)
#: Time scales (frames) tried for blending in the linear guide near observations in time.
BLEND_TAUS = (0.5, 1.0, 2.0, 4.0)


def linear_guide(x: np.ndarray) -> np.ndarray:
    """Linear-in-time first guess of a gappy ``(C, T, H, W)`` array, 0 where unknown.

    Linear interpolation between each pixel's observations, Gaussian spatial
    fill at the ends of its series (:class:`gapfill.methods.linear.Linear`);
    pixels never observed get 0 (the normalised mean).
    """
    from gapfill.methods.linear import Linear

    out = Linear().fill(x, np.random.default_rng(0)).values
    return np.nan_to_num(out, nan=0.0).astype(np.float32)


def eof_guide(x: np.ndarray, modes: int | None = None) -> tuple[np.ndarray, int]:
    """DINEOF reconstruction of a gappy ``(C, T, H, W)`` array and its number of modes.

    Runs :class:`gapfill.methods.eof.EOF` with ``modes`` fixed (``None``: chosen
    by its cross-validation) and fills every pixel by projecting each frame on
    the EOFs. Deterministic (fixed seed); 0 where nothing is known. Degenerate
    inputs (fewer than two frames or observations) fall back to the linear guide.
    """
    from gapfill.methods.eof import EOF

    if np.isfinite(x).sum() < 2 or x.shape[1] < 2:
        return linear_guide(x), int(modes or 1)
    eof = EOF()
    try:
        eof.fit_array(x, np.random.default_rng(0), modes=modes)
        out = eof.fill(x, np.random.default_rng(0)).values
    except (ValueError, np.linalg.LinAlgError):  # degenerate tiny inputs
        return linear_guide(x), int(modes or 1)
    return np.nan_to_num(out, nan=0.0).astype(np.float32), int(eof.fit_info.get("modes", 1))


def interpolate_residuals(
    x: np.ndarray, base: np.ndarray, sigma: tuple[float, ...] | list[float], shrink: float
) -> np.ndarray:
    """``base`` plus a shrunk Gaussian-weighted average of the observed residuals ``x - base``.

    A normalised convolution (Knutsson & Westin 1993): residuals and the
    observation mask are smoothed with the same Gaussian of widths ``sigma``
    (t, y, x pixels); the correction is ``num / (den + shrink)``, so deep in a
    large gap (``den`` near 0) it fades to 0 instead of spreading the average
    of far-away residuals.
    """
    from scipy.ndimage import gaussian_filter

    out = np.empty(base.shape, dtype=np.float32)
    for c in range(x.shape[0]):
        obs = np.isfinite(x[c])
        r = np.where(obs, x[c] - base[c], 0.0)
        num = gaussian_filter(r, sigma, mode="nearest", truncate=3.0)
        den = gaussian_filter(obs.astype(np.float64), sigma, mode="nearest", truncate=3.0)
        out[c] = base[c] + num / (den + shrink)
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
        ``"eof"``, ``"linear"``, ``"eof_interp"`` or ``"none"``.
    modes
        EOF modes (``"eof"``, ``"eof_interp"``).
    sigma, shrink
        Residual interpolation widths ``(t, y, x)`` and shrinkage (``"eof_interp"``;
        ``sigma=None``: none).
    tau
        Time scale of the blend with the linear guide (``"eof_interp"``; ``None``: none).
    scores
        Validation MAE of each candidate tried (what the choice was made on).
    """

    kind: str = "eof"
    modes: int | None = None
    sigma: list[float] | None = None
    shrink: float = 0.1
    tau: float | None = None
    scores: dict[str, float] = dataclasses.field(default_factory=dict)

    def make(self, x: np.ndarray) -> np.ndarray | None:
        """The guide of the gappy ``(C, T, H, W)`` array ``x`` with these parameters."""
        if self.kind == "none":
            return None
        if self.kind == "linear":
            return linear_guide(x)
        base, modes = eof_guide(x, self.modes)
        if self.modes is None:
            self.modes = modes
        if self.kind == "eof":
            return base
        if self.sigma is not None:
            base = interpolate_residuals(x, base, self.sigma, self.shrink)
        if self.tau is not None:
            base = blend_linear(base, linear_guide(x), time_distance(x), self.tau)
        return base

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for a model's metadata)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Guide:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)

    def __str__(self) -> str:
        if self.kind != "eof_interp":
            return self.kind if self.modes is None else f"{self.kind} (k={self.modes})"
        parts = [f"k={self.modes}"]
        if self.sigma is not None:
            parts.append(f"sigma={self.sigma}, shrink={self.shrink}")
        if self.tau is not None:
            parts.append(f"linear blend tau={self.tau}")
        return f"eof_interp ({', '.join(parts)})"


def choose_guide(
    x: np.ndarray, val: np.ndarray, truth: np.ndarray, kind: str = "auto",
    modes: int | None = None,
) -> tuple[Guide, np.ndarray | None]:
    """Choose a guide for ``x`` by its MAE on the held-out pixels ``val``.

    Parameters
    ----------
    x
        ``(C, T, H, W)`` normalised input with the ``val`` pixels hidden (NaN).
    val
        ``(C, T, H, W)`` held-out pixels (may be empty: then no choice is made
        and ``"auto"`` means ``"eof_interp"`` with middle parameters).
    truth
        Values at least at ``val``.
    kind
        ``"auto"`` (every candidate), or one of :data:`GUIDES` to fix the kind
        (its parameters are still chosen).
    modes
        Fixed EOF modes; ``None`` lets DINEOF's cross-validation choose.

    Returns
    -------
    (Guide, numpy.ndarray or None)
        The chosen recipe and the guide of ``x`` it gives.
    """
    if kind not in GUIDES:
        raise ValueError(f"guide must be one of {GUIDES}, got {kind!r}")
    if kind == "none":
        return Guide("none"), None
    has_val = bool(val.any())

    def mae(field: np.ndarray) -> float:
        return float(np.abs(field[val] - truth[val]).mean()) if has_val else np.inf

    scores: dict[str, float] = {}
    best: tuple[float, Guide, np.ndarray] | None = None

    def consider(name: str, guide: Guide, field: np.ndarray) -> None:
        nonlocal best
        score = mae(field)
        scores[name] = score
        if best is None or score < best[0]:
            best = (score, guide, field)

    linear = linear_guide(x) if kind in ("auto", "linear", "eof_interp") else None
    if kind in ("auto", "linear"):
        consider("linear", Guide("linear"), linear)
    if kind != "linear":
        eof, k = eof_guide(x, modes)
        consider("eof", Guide("eof", modes=k), eof)
        if kind in ("auto", "eof_interp"):
            if not has_val:  # nothing to choose on: middle parameters
                g = Guide("eof_interp", modes=k, sigma=list(INTERP_SIGMAS[1]), shrink=0.1)
                return g, g.make(x)
            # widths at a middle shrinkage, then the shrinkage at the best width
            base, base_guide, base_score = eof, Guide("eof_interp", modes=k), scores["eof"]
            tried = [(sigma, INTERP_SHRINKS[1]) for sigma in INTERP_SIGMAS]
            for i in range(2):
                for sigma, shrink in tried:
                    name = f"eof_interp sigma={list(sigma)} shrink={shrink}"
                    g = Guide("eof_interp", modes=k, sigma=list(sigma), shrink=shrink)
                    consider(name, g, field := interpolate_residuals(x, eof, sigma, shrink))
                    if scores[name] < base_score:
                        base, base_guide, base_score = field, g, scores[name]
                if i == 0 and base_guide.sigma is not None:
                    tried = [(base_guide.sigma, s) for s in INTERP_SHRINKS
                             if s != INTERP_SHRINKS[1]]
                else:
                    break
            dist = time_distance(x)
            for tau in BLEND_TAUS:
                g = dataclasses.replace(base_guide, tau=tau)
                consider(f"{base_guide} + linear tau={tau}", g,
                         blend_linear(base, linear, dist, tau))
    assert best is not None
    _, guide, field = best
    guide.scores = scores
    return guide, field
