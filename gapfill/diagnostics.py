"""Honest error figures from held-out observed pixels.

No ground truth exists under real clouds, so the only honest check is to hide
some observed pixels in cloud-shaped patches, fill without them and compare.
The hold-out is drawn from a seeded occlusion process, so the same pixels are
held out when the model is fitted (it never sees them) and when it is scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import xarray as xr

    from gapfill.model import FittedModel, Holdout


def holdout_mask(observed: np.ndarray, holdout: Holdout, missing: np.ndarray | None = None) -> np.ndarray:
    """Draw the hold-out: observed pixels hidden in cloud-shaped patches.

    Parameters
    ----------
    observed
        ``(C, T, H, W)`` boolean array of observed pixels.
    holdout
        The hold-out specification (share, process, seed).
    missing
        ``(T, H, W)`` missing pattern of the data, for the ``"empirical"`` process.

    Returns
    -------
    numpy.ndarray
        ``(C, T, H, W)`` boolean, True where an observed pixel is held out.
    """
    if holdout.fraction == 0:
        return np.zeros(observed.shape, dtype=bool)
    from gapfill import masks

    _, t, h, w = observed.shape
    rng = np.random.default_rng(holdout.seed)
    if holdout.process == "empirical":
        if missing is None:
            missing = ~observed.all(0)
        never = ~observed.any((0, 1))
        process = masks.Empirical(missing, coverage=holdout.fraction, seed=holdout.seed, exclude=never)
    else:
        process = masks.make(holdout.process, coverage=holdout.fraction, seed=holdout.seed)
    hidden = process.sample((t, h, w), rng)
    return hidden[None] & observed


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
    """

    truth: np.ndarray
    predicted: np.ndarray
    predicted_error: np.ndarray | None
    time_index: np.ndarray
    times: np.ndarray
    method: str
    unfilled: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def errors(self) -> np.ndarray:
        """Filled minus observed, at each held-out pixel."""
        return self.predicted - self.truth

    @property
    def summary(self) -> dict[str, float]:
        """MAE, RMSE, bias and count; error calibration when the method gives errors."""
        e = self.errors
        out: dict[str, float] = {
            "n": int(e.size),
            "mae": float(np.abs(e).mean()) if e.size else float("nan"),
            "rmse": float(np.sqrt((e**2).mean())) if e.size else float("nan"),
            "bias": float(e.mean()) if e.size else float("nan"),
            "unfilled": int(self.unfilled),
        }
        if self.predicted_error is not None and e.size:
            sigma = self.predicted_error
            out["mean_predicted_error"] = float(np.sqrt((sigma**2).mean()))
            # Share of errors within one predicted sigma: ~0.68 if the error is calibrated.
            out["within_1sigma"] = float((np.abs(e) <= sigma).mean())
        out.update(self.extra)
        return out

    def to_dataframe(self) -> pd.DataFrame:
        """Per-time-step MAE, RMSE, bias and count, with an ``all`` row last."""
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
        s = self.summary
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
            f"MAE={s['mae']:.4g} RMSE={s['rmse']:.4g} bias={s['bias']:+.3g}>"
        )


def score(da: xr.DataArray, model: FittedModel, seed: int = 0) -> Diagnostics:
    """Fill ``da`` with the model's hold-out hidden and score the held-out pixels.

    Raises
    ------
    ValueError
        If the model was fitted with ``holdout=0``.
    """
    from gapfill.cube import Cube
    from gapfill.filling import run_method

    if model.holdout.fraction == 0:
        raise ValueError("the model was fitted with holdout=0: there is nothing to score")
    cube = Cube(da, model.dims, normaliser=model.normaliser)
    raw = np.asarray(cube.da.values, dtype=np.float64)
    raw = raw if raw.ndim == 4 else raw[None]
    observed = np.isfinite(raw)
    hide = holdout_mask(observed, model.holdout, cube.missing_pattern())
    gappy = np.where(hide, np.nan, raw)
    # Pixels whose every observation is held out are still ocean: ask for a value there too.
    filled, error = run_method(
        model, gappy, seed=seed, coords=cube.coords(), fill_never_observed=True
    )
    predicted = filled[hide]
    ok = np.isfinite(predicted)
    t_index = np.nonzero(hide)[1]
    return Diagnostics(
        truth=raw[hide][ok],
        predicted=predicted[ok],
        predicted_error=None if error is None else error[hide][ok],
        time_index=t_index[ok],
        times=cube.da[cube.dims.time].values if cube.dims.time in cube.da.coords else np.arange(raw.shape[1]),
        method=model.name,
        unfilled=int((~ok).sum()),
    )
