"""Per-pixel climatology: the temporal mean of each pixel's observations.

The error is each pixel's temporal standard deviation. A pixel that had no
observation when fitting takes the mean of its own observations in the array
being filled when it has some there (e.g. observed only in new frames, or only
at hold-out pixels). Otherwise it falls back to the mean of its frame's
observations (same channel), or to the channel's mean climatology if the frame
has none.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gapfill.methods.base import Chunking, Coords, FillResult, Method, Options, as_numpy, check_grid

if TYPE_CHECKING:
    from gapfill.cube import Cube


def pixel_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel count, mean and standard deviation of the observations of a
    ``(C, T, H, W)`` array (mean and std NaN where a pixel has none)."""
    obs = np.isfinite(x)
    count = obs.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(obs, x, 0).astype(np.float64).sum(1) / count
        sq = (np.where(obs, x - np.nan_to_num(mean)[:, None], 0) ** 2).sum(1)
        std = np.sqrt(sq / count)
    return count, mean, std


@dataclass
class ClimatologyOptions(Options):
    """The ``"climatology"`` method has no options."""


class Climatology(Method):
    """Fill every missing pixel with its temporal mean; error = its temporal std."""

    name = "climatology"
    Options = ClimatologyOptions
    provides_error = True
    holdout_draws = 4  # a fit is one pass of sums
    refit_with_validation = True

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None

    def fit(self, cube: Cube, rng: np.random.Generator) -> None:
        """Compute per-pixel mean and std of the observations."""
        self.fit_array(cube.values())

    def fit_streaming(self, cube: Cube, rng: np.random.Generator) -> None:
        """The same statistics from a dask-backed cube, in one reduction over its blocks."""
        from gapfill.streaming import fit_climatology

        fit_climatology(self, cube)

    def fit_array(self, x: np.ndarray) -> None:
        """Fit on a normalised ``(C, T, H, W)`` array."""
        count, mean, std = pixel_moments(x)
        # Pixels seen fewer than twice have no spread of their own: use the channel's typical std.
        seen = count >= 2
        typical = np.array(
            [np.median(std[c][seen[c]]) if seen[c].any() else 1.0 for c in range(x.shape[0])]
        )
        std = np.where(seen, std, typical[:, None, None])
        self._mean = mean.astype(np.float32)  # NaN where never observed
        self._std = np.maximum(std, 1e-6).astype(np.float32)
        self.fit_info = {"observed_pixels": int((count > 0).sum())}

    def chunking(self) -> Chunking:
        """Any time chunks, whole frames: the fill takes the fitted per-pixel grid (a
        pixel without a fitted climatology takes its own observations in the chunk, or
        its frame's mean)."""
        return Chunking(whole=("y", "x"))

    def fill(
        self,
        x: np.ndarray,
        rng: np.random.Generator,
        samples: int = 1,
        coords: Coords | None = None,
    ) -> FillResult:
        """Return the climatology (broadcast over time) and its std."""
        if self._mean is None or self._std is None:
            raise RuntimeError("climatology: call fit (or load_state_dict) before fill")
        check_grid(self.name, self._mean.shape, x)
        n_chan, n_time, height, width = x.shape
        values = np.broadcast_to(self._mean[:, None], x.shape).copy()
        error = np.broadcast_to(self._std[:, None], x.shape).copy()
        unknown = ~np.isfinite(self._mean)
        if unknown.any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
                chan_mean = np.nan_to_num(np.nanmean(self._mean.reshape(n_chan, -1), axis=1))
                frame_mean = np.nanmean(x.reshape(n_chan, n_time, -1), axis=2)
            frame_mean = np.where(np.isfinite(frame_mean), frame_mean, chan_mean[:, None])
            fallback = np.broadcast_to(frame_mean[:, :, None, None], x.shape)
            where = np.broadcast_to(unknown[:, None], x.shape)
            values[where] = fallback[where]
            error[where] = 1.0  # normalised units: the channel's overall std
            # a pixel observed in x, though not in the fit: its own observations here
            count, mean, std = pixel_moments(x)
            own = unknown & (count > 0)
            if own.any():
                std = np.where(count >= 2, np.maximum(std, 1e-6), 1.0)
                where = np.broadcast_to(own[:, None], x.shape)
                values[where] = np.broadcast_to(mean[:, None], x.shape)[where]
                error[where] = np.broadcast_to(std[:, None], x.shape)[where]
        return FillResult(values.astype(np.float32), error.astype(np.float32))

    def state_dict(self) -> dict[str, Any]:
        """Per-pixel mean (NaN where never observed) and std."""
        return {} if self._mean is None else {"mean": self._mean, "std": self._std}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._mean = as_numpy(state["mean"]).astype(np.float32)
        self._std = as_numpy(state["std"]).astype(np.float32)
