"""Gaps cut from the data's own missing-value pattern at other times."""

from __future__ import annotations

from typing import Any

import numpy as np

from gapfill.masks.base import (
    OcclusionProcess,
    Shape,
    _check_shape,
)


# --------------------------------------------------------------------------- Empirical
class Empirical(OcclusionProcess):
    """Masks cut from the data's own missing pattern at other times.

    ``sample`` takes ``T`` consecutive frames of ``missing`` (wrapping around its
    end) from a random start that is never the target's own start (index 0, or
    ``start`` when given) when the data has more than one frame. Spatially it
    takes a random crop when the requested ``(H, W)`` is smaller than the data,
    the data itself when equal, and a random window of the mirror-tiled data
    when larger; ``flip=True`` adds random up/down and left/right flips.

    Pixels marked in ``exclude`` (never observed, e.g. land) are never hidden
    in the output: they are missing anyway and carry no information about the
    gap pattern. Coverages are measured over the non-excluded pixels. On the
    data's own grid (same ``(H, W)``, no flips) the excluded pixels line up with
    the target's; after a crop, tiling or flip they show as clear (unhidden)
    patches wherever they land.

    When ``coverage`` is given, ``n_candidates`` windows are drawn and the one
    whose coverage is nearest the target is returned (so masks remain genuine
    patterns of the data, and the achieved coverage is only as close as the
    data allows). When ``coverage`` is ``None`` windows are drawn uniformly and
    ``self.coverage`` reports the data's own missing fraction.

    Parameters
    ----------
    missing
        Boolean ``(T0, H0, W0)`` missing mask of the data (``True`` = missing);
        integer 0/1 arrays are accepted.
    coverage
        Optional target fraction of hidden pixels.
    exclude
        Optional boolean ``(H0, W0)`` mask of never-observed pixels.
    flip
        Whether to apply random flips.
    n_candidates
        Windows compared when ``coverage`` is given.
    seed
        Seed of the process's own generator.
    """

    name = "empirical"
    moving = True

    def __init__(
        self,
        missing: np.ndarray,
        coverage: float | None = None,
        *,
        seed: int | None = None,
        exclude: np.ndarray | None = None,
        flip: bool = False,
        n_candidates: int = 8,
    ) -> None:
        missing = np.asarray(missing)
        if missing.ndim != 3 or min(missing.shape) < 1:
            raise ValueError(
                f"missing must be a non-empty (T, H, W) array, got shape {missing.shape}"
            )
        if missing.dtype != bool:
            if missing.dtype.kind not in "iu" or not np.isin(missing, (0, 1)).all():
                raise ValueError(f"missing must be a boolean array, got dtype {missing.dtype}")
            missing = missing.astype(bool)
        valid = np.ones(missing.shape[1:], dtype=bool)
        if exclude is not None:
            exclude = np.asarray(exclude)
            if exclude.shape != missing.shape[1:] or exclude.dtype != bool:
                raise ValueError(
                    f"exclude must be a boolean (H, W) = {missing.shape[1:]} array, "
                    f"got {exclude.dtype} {exclude.shape}"
                )
            valid = ~exclude
        if not valid.any():
            raise ValueError("exclude marks every pixel: no pattern left to sample")
        if int(n_candidates) != n_candidates or n_candidates < 1:
            raise ValueError(f"n_candidates must be a positive integer, got {n_candidates!r}")
        self._missing = missing & valid
        self._frame_hidden = self._missing.sum(axis=(1, 2))
        self._valid = valid
        self.flip = bool(flip)
        self.n_candidates = int(n_candidates)
        data_coverage = float(self._missing.sum() / (valid.sum() * missing.shape[0]))
        self._match = coverage is not None
        if not self._match and data_coverage >= 1.0:
            raise ValueError("missing hides every non-excluded pixel: nothing is ever observed")
        super().__init__(data_coverage if coverage is None else coverage, seed=seed)

    @property
    def missing(self) -> np.ndarray:
        """The data's missing pattern with excluded pixels cleared (read-only view)."""
        view = self._missing.view()
        view.flags.writeable = False
        return view

    def _params(self) -> dict[str, Any]:
        return {
            "missing": f"<{'x'.join(map(str, self._missing.shape))} bool>",
            "coverage": self.coverage if self._match else None,
            "data_coverage": round(float(self._missing.mean(0)[self._valid].mean()), 4),
            "exclude": int((~self._valid).sum()),
            "flip": self.flip,
            "n_candidates": self.n_candidates,
        }

    def sample(
        self,
        shape: tuple[int, int, int],
        rng: np.random.Generator | None = None,
        *,
        start: int = 0,
    ) -> np.ndarray:
        """Draw one mask; see :meth:`OcclusionProcess.sample`.

        ``start`` is the data time index where the target window begins: the
        source window never starts there (when the data has several frames), so
        no target frame gets its own gap pattern.
        """
        shape = _check_shape(shape)
        gen = self._generator(rng)
        if self._match and self.coverage == 0.0:
            return np.zeros(shape, dtype=bool)
        return self._sample(shape, gen, start=int(start))

    @staticmethod
    def _offsets(n_out: int, n_src: int, rng: np.random.Generator, size: int) -> np.ndarray:
        """Index arrays ``(size, n_out)`` into an axis of length ``n_src``."""
        if n_out <= n_src:
            return rng.integers(0, n_src - n_out + 1, size)[:, None] + np.arange(n_out)
        idx = (rng.integers(0, 2 * n_src, size)[:, None] + np.arange(n_out)) % (2 * n_src)
        return np.where(idx < n_src, idx, 2 * n_src - 1 - idx)  # mirror tiling

    def _sample(self, shape: Shape, rng: np.random.Generator, start: int = 0) -> np.ndarray:
        T, H, W = shape
        T0, H0, W0 = self._missing.shape
        k = self.n_candidates if self._match else 1
        if T0 > 1:
            first = (start + rng.integers(1, T0, k)) % T0
        else:
            first = np.zeros(k, dtype=np.int64)
        times = (first[:, None] + np.arange(T)) % T0
        rows = self._offsets(H, H0, rng, k)
        cols = self._offsets(W, W0, rng, k)
        if self.flip:
            flip_y, flip_x = rng.random(k) < 0.5, rng.random(k) < 0.5
            rows = np.where(flip_y[:, None], rows[:, ::-1], rows)
            cols = np.where(flip_x[:, None], cols[:, ::-1], cols)
        best = 0
        if k > 1:
            if (H, W) == (H0, W0):  # whole frames (maybe flipped): per-frame counts suffice
                cover = self._frame_hidden[times].sum(1) / (self._valid.sum() * T)
            else:
                cover = np.empty(k)
                for i in range(k):
                    hidden = self._missing[np.ix_(times[i], rows[i], cols[i])].sum()
                    n_valid = self._valid[np.ix_(rows[i], cols[i])].sum() * T
                    cover[i] = hidden / n_valid if n_valid else np.nan
            err = np.abs(cover - self.coverage)
            best = int(np.nanargmin(err)) if np.isfinite(err).any() else 0
        return self._missing[np.ix_(times[best], rows[best], cols[best])]


