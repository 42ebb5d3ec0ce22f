"""Cloud-shaped gaps: thresholded Gaussian random fields that drift and evolve."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
from scipy import fft as sfft

from gapfill.masks.base import (
    OcclusionProcess,
    Shape,
    _check_positive,
    _check_shape,
    _stochastic_round,
    _top_k,
)


# --------------------------------------------------------------------------- Cloud
class Cloud(OcclusionProcess):
    """Drifting, evolving cloud blobs from a thresholded Gaussian random field.

    A stationary Gaussian field with correlation ``exp(-r**2 / (2 * length_scale**2))``
    is built by filtering white noise in Fourier space. In the frame moving with
    the clouds it evolves smoothly by blending independent key fields spaced
    ``1 / evolution`` frames apart (lag-``k`` correlation
    ``exp(-(evolution * k) ** 2 / 2)``), and it is advected by ``velocity`` pixels
    per frame with an exact sub-pixel Fourier shift. Pixels above a threshold are
    hidden.

    Parameters
    ----------
    coverage
        Target fraction of hidden pixels.
    length_scale
        Correlation length of the underlying field in pixels; blobs are roughly
        two to four times this across.
    velocity
        ``(vy, vx)`` drift in pixels per frame, or a speed (a number): the
        direction is then drawn uniformly at random for each sequence.
    evolution
        Rate per frame at which cloud shapes change: after ``1 / evolution``
        frames the field, followed along the drift, has correlation
        ``exp(-1/2)``. 0 gives frozen shapes that only drift; 3 or more gives
        independent frames.
    match
        How the threshold meets ``coverage``: ``"frame"`` hides exactly the
        (stochastically rounded) target number of pixels in every frame,
        ``"sequence"`` does so over the whole sequence (frames vary), and
        ``"expected"`` uses the Gaussian quantile, so only the expectation matches.
    coverage_spread
        Standard deviation of a per-sequence coverage drawn from a Beta
        distribution with mean ``coverage``; 0 keeps the coverage fixed.
    periodic
        Whether the ``(y, x)`` edges wrap (e.g. ``(False, True)`` for a global
        longitude axis). Non-periodic axes are padded by ``4 * length_scale``
        so opposite edges are uncorrelated.
    seed
        Seed of the process's own generator.
    """

    name = "cloud"
    moving = True

    def __init__(
        self,
        coverage: float = 0.4,
        *,
        seed: int | None = None,
        length_scale: float = 8.0,
        velocity: float | tuple[float, float] = (0.5, 1.0),
        evolution: float = 0.1,
        match: Literal["frame", "sequence", "expected"] = "frame",
        coverage_spread: float = 0.0,
        periodic: bool | tuple[bool, bool] = False,
    ) -> None:
        super().__init__(coverage, seed=seed)
        self.length_scale = _check_positive(length_scale, "length_scale")
        if np.ndim(velocity) == 0:
            self.velocity: float | tuple[float, float] = _check_positive(
                velocity, "velocity", allow_zero=True
            )
        else:
            vel = tuple(float(v) for v in np.asarray(velocity, dtype=float).ravel())
            if len(vel) != 2 or not all(math.isfinite(v) for v in vel):
                raise ValueError(
                    f"velocity must be a speed or a finite (vy, vx) pair, got {velocity!r}"
                )
            self.velocity = vel
        self.evolution = _check_positive(evolution, "evolution", allow_zero=True)
        if match not in ("frame", "sequence", "expected"):
            raise ValueError(f"match must be 'frame', 'sequence' or 'expected', got {match!r}")
        self.match = match
        self.coverage_spread = _check_positive(coverage_spread, "coverage_spread", allow_zero=True)
        c = self.coverage
        if self.coverage_spread > 0 and self.coverage_spread**2 >= c * (1 - c):
            raise ValueError(
                f"coverage_spread must be below sqrt(coverage * (1 - coverage)) = "
                f"{math.sqrt(c * (1 - c)):.3g}, got {coverage_spread!r}"
            )
        per = (periodic, periodic) if np.ndim(periodic) == 0 else tuple(periodic)
        if len(per) != 2:
            raise ValueError(f"periodic must be a bool or a (y, x) pair of bools, got {periodic!r}")
        self.periodic: tuple[bool, bool] = (bool(per[0]), bool(per[1]))

    def _params(self) -> dict[str, Any]:
        return {
            **super()._params(),
            "length_scale": self.length_scale,
            "velocity": self.velocity,
            "evolution": self.evolution,
            "match": self.match,
            "coverage_spread": self.coverage_spread,
            "periodic": self.periodic,
        }

    def _grid_size(self, n: int, periodic: bool) -> int:
        if periodic:
            return n
        return sfft.next_fast_len(n + math.ceil(4 * self.length_scale), real=True)

    def _spectral_filter(self, n: int) -> np.ndarray:
        """Amplitude of the Gaussian smoothing filter on FFT frequencies (cycles/px)."""
        f = sfft.fftfreq(n)
        return np.exp(-((2 * np.pi * f * self.length_scale) ** 2) / 4)

    def _time_weights(self, T: int) -> np.ndarray:
        """Weights ``(T, K)`` blending ``K`` independent key fields into ``T`` frames.

        Keys sit every ``1 / evolution`` frames; each frame is a Gaussian-weighted
        blend of nearby keys, normalised to unit variance, so the blended field
        has lag-``k`` correlation ``exp(-(evolution * k) ** 2 / 2)`` and changes
        smoothly from frame to frame.
        """
        if self.evolution == 0:
            return np.ones((T, 1))
        if self.evolution >= 3:  # lag-1 correlation below 0.012: independent frames
            return np.eye(T)
        spacing = 1.0 / self.evolution
        sigma = spacing / math.sqrt(2)
        reach = math.ceil(4 * sigma / spacing)
        keys = np.arange(-reach, math.ceil((T - 1) / spacing) + reach + 1) * spacing
        w = np.exp(-((np.arange(T)[:, None] - keys[None, :]) ** 2) / (2 * sigma**2))
        w[w < 1e-3] = 0.0  # beyond 3.7 sigma: keeps the blend short
        return w / np.sqrt((w**2).sum(1, keepdims=True))

    def field(self, shape: Shape, rng: np.random.Generator | None = None) -> np.ndarray:
        """Draw the underlying unit-variance Gaussian field, ``float32 (T, H, W)``.

        The field is built in Fourier space on a ``(ny, nx)`` torus (padded on
        non-periodic axes). Only the low frequencies where the smoothing filter
        exceeds 1e-4 are drawn, as complex Gaussian noise with the statistics of
        the FFT of real white noise, so the cost hardly depends on the padding.
        """
        T, H, W = _check_shape(shape)
        rng = self._generator(rng)
        ny, nx = self._grid_size(H, self.periodic[0]), self._grid_size(W, self.periodic[1])
        fy, fx = self._spectral_filter(ny), self._spectral_filter(nx)
        norm = math.sqrt(float(np.mean(fy**2)) * float(np.mean(fx**2)))  # field std
        ky = np.flatnonzero(fy >= 1e-4)  # kept rows of the spectrum
        nkx = int(np.count_nonzero(fx[: nx // 2 + 1] >= 1e-4))  # kept columns 0 .. nkx - 1
        # Key spectra: E|X|^2 = ny * nx like the FFT of unit white noise. The x = 0 (and
        # x-Nyquist) columns lose their imaginary part in the real inverse transform, which
        # halves their power; sqrt(2) restores it (the kept real part is Hermitian).
        weights = self._time_weights(T)
        shape_k = (weights.shape[1], len(ky), nkx)
        keys = rng.standard_normal((*shape_k, 2), dtype=np.float32).view(np.complex64)[..., 0]
        keys *= math.sqrt(ny * nx / 2)
        keys[:, :, 0] *= math.sqrt(2)
        if nx % 2 == 0 and nkx == nx // 2 + 1:
            keys[:, :, -1] *= math.sqrt(2)
        # Evolution (in the frame moving with the clouds): blend the keys. Each key reaches
        # a band of frames; a loop over keys avoids BLAS, whose threads stall on busy
        # machines for such thin products.
        spec = np.zeros((T, *shape_k[1:]), dtype=np.complex64)
        for k, key in enumerate(keys):
            near = np.flatnonzero(weights[:, k])
            if near.size:
                band = slice(near[0], near[-1] + 1)
                spec[band] += weights[band, k, None, None].astype(np.float32) * key
        # Smoothing filter (normalised to unit variance) and advection by an exact
        # sub-pixel Fourier shift.
        vy, vx = self._draw_velocity(rng)
        t = np.arange(T)[:, None]
        phase_y = np.exp(-2j * np.pi * sfft.fftfreq(ny)[ky] * vy * t) * (fy[ky] / norm)
        phase_x = np.exp(-2j * np.pi * sfft.rfftfreq(nx)[:nkx] * vx * t) * fx[:nkx]
        spec *= phase_y[:, :, None].astype(np.complex64)
        spec *= phase_x[:, None, :].astype(np.complex64)
        # Inverse along y, keep the H rows in view, then inverse along x.
        full = np.zeros((T, ny, nkx), dtype=np.complex64)
        full[:, ky] = spec
        rows = sfft.ifft(full, axis=1, workers=-1)[:, :H]
        out = sfft.irfft(rows, n=nx, axis=2, workers=-1)  # zero-pads the high columns
        return out[:, :, :W]

    def _draw_velocity(self, rng: np.random.Generator) -> tuple[float, float]:
        if isinstance(self.velocity, tuple):
            return self.velocity
        angle = rng.uniform(0, 2 * np.pi)
        return self.velocity * math.sin(angle), self.velocity * math.cos(angle)

    def _sequence_coverage(self, rng: np.random.Generator) -> float:
        c, s = self.coverage, self.coverage_spread
        if s == 0:
            return c
        kappa = c * (1 - c) / s**2 - 1
        return min(float(rng.beta(c * kappa, (1 - c) * kappa)), 0.999)

    def _sample(self, shape: Shape, rng: np.random.Generator) -> np.ndarray:
        T, H, W = shape
        coverage = self._sequence_coverage(rng)
        field = self.field(shape, rng)
        if self.match == "expected":
            return field > NormalDist().inv_cdf(1 - coverage)
        rows = field.reshape(T, H * W) if self.match == "frame" else field.reshape(1, -1)
        k = _stochastic_round(np.full(len(rows), coverage * rows.shape[1]), rng)
        return _top_k(rows, k).reshape(shape)


