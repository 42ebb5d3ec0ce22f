"""Realism of a fill: does it keep the truth's small-scale variability in the gaps?

A fill that minimises a pixel loss (L1, L2) is smooth and loses fronts, eddies
and texture; :func:`realism` measures that as ratios, fill over truth, of the
mean spatial-gradient magnitude and of the small-scale power in the hidden
pixels (1 is perfect; smooth fills score below 1, noisy ones above).
"""

from __future__ import annotations

import numpy as np

from gapfill.metrics.pixels import ArrayLike, _mask_values, _video_values


def realism(
    truth: ArrayLike, filled: ArrayLike, mask: ArrayLike | None = None, *, small: float = 0.5
) -> dict[str, float]:
    """Small-scale variability of ``filled`` against ``truth`` in the hidden pixels.

    ``gradient``: the mean spatial-gradient magnitude of the fill over the
    hidden pixels, divided by the truth's (central differences along y and x
    per frame and channel; pixels next to NaN are left out). ``spectrum``: the
    ratio of their radially averaged power spectra summed over the small
    scales (wavenumbers above ``small`` times the Nyquist wavenumber), each
    frame's field taken as its anomaly from the hidden pixels' mean, set to 0
    outside the hidden pixels (the same window for both). 1.0 is perfect; a
    smooth fill scores below 1, a noisy one above.

    Parameters
    ----------
    truth, filled
        ``(time, y, x[, channel])`` arrays or DataArrays.
    mask
        ``(time, y, x)`` boolean, ``True`` where hidden (``None``: everywhere).
    small
        Lower edge of the small scales, as a fraction of the Nyquist wavenumber.

    Returns
    -------
    dict
        ``{"gradient", "spectrum"}`` (``nan`` when nothing is hidden).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.standard_normal((4, 32, 32))
    >>> r = realism(truth, 0.5 * truth)  # a fill with half the truth's variability
    >>> round(r["gradient"], 2), round(r["spectrum"], 2)
    (0.5, 0.25)
    """
    t = _video_values(truth, "truth").astype(np.float64)
    f = _video_values(filled, "filled").astype(np.float64)
    if t.shape != f.shape:
        raise ValueError(f"truth {t.shape} and filled {f.shape} differ in shape")
    m = np.broadcast_to(_mask_values(mask, t.shape), t.shape) & np.isfinite(t) & np.isfinite(f)
    if not m.any():
        return {"gradient": float("nan"), "spectrum": float("nan")}

    def grad(a: np.ndarray) -> np.ndarray:
        gy = np.zeros_like(a) + np.nan
        gx = gy.copy()
        gy[:, 1:-1] = (a[:, 2:] - a[:, :-2]) / 2
        gx[:, :, 1:-1] = (a[:, :, 2:] - a[:, :, :-2]) / 2
        return np.hypot(gy, gx)

    gt, gf = grad(t), grad(f)
    ok = m & np.isfinite(gt) & np.isfinite(gf)
    gradient = float(gf[ok].mean() / gt[ok].mean()) if ok.any() and gt[ok].mean() > 0 else np.nan

    h, w = t.shape[1:3]
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.rfftfreq(w)[None, :]
    high = np.hypot(ky, kx) > small * 0.5
    power = []
    for a in (t, f):
        n = m.sum((1, 2), keepdims=True)
        mean = np.where(m, a, 0).sum((1, 2), keepdims=True) / np.maximum(n, 1)
        anom = np.where(m, a - mean, 0.0)
        spec = np.abs(np.fft.rfft2(anom, axes=(1, 2))) ** 2
        power.append(float(spec[:, high].sum()))
    spectrum = power[1] / power[0] if power[0] > 0 else float("nan")
    return {"gradient": gradient, "spectrum": float(spectrum)}
