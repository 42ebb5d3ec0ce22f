"""Occlusion processes: random boolean masks of missing pixels.

A process draws masks of shape ``(T, H, W)`` with ``True`` where a pixel is
hidden. They serve three purposes: re-occluding a filled sequence while
training the unsupervised GAN (a fresh mask from the same process, as in Yin
et al., "Unsupervised spatiotemporal data inpainting"), holding out observed
pixels for error diagnostics, and occluding natural videos for benchmarks (one
mask shared by all colour channels).

Every process takes a target ``coverage`` (expected fraction of hidden pixels)
and a ``seed``; ``sample(shape)`` without a generator draws from the process's
own ``np.random.default_rng(seed)``, so the same seed gives the same sequence of
masks. Pass an explicit ``rng`` to control the stream from outside.

>>> proc = make("cloud", coverage=0.4, seed=0)
>>> proc.sample((24, 64, 64)).shape
(24, 64, 64)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from statistics import NormalDist
from typing import Any, ClassVar, Literal

import numpy as np
from scipy import fft as sfft

__all__ = [
    "PROCESSES",
    "Cloud",
    "Empirical",
    "MovingBar",
    "OcclusionProcess",
    "Raindrops",
    "RemovePixels",
    "for_data",
    "make",
    "missing_share",
]

Shape = tuple[int, int, int]


# --------------------------------------------------------------------------- helpers
def _check_coverage(coverage: Any, name: str = "coverage") -> float:
    """Return ``coverage`` as a float in ``[0, 1)`` or raise ``ValueError``."""
    try:
        value = float(coverage)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1), got {coverage!r}") from None
    if isinstance(coverage, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {coverage!r}")
    return value


def _check_positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a finite float > 0 (or >= 0) or raise ``ValueError``."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    ok = out >= 0 if allow_zero else out > 0
    if not (math.isfinite(out) and ok):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return out


def _check_shape(shape: Any) -> Shape:
    """Return ``shape`` as a ``(T, H, W)`` tuple of positive ints."""
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a (T, H, W) tuple, got {shape!r}") from None
    if len(dims) != 3 or min(dims) < 1 or dims != tuple(shape):
        raise ValueError(f"shape must be three positive integers (T, H, W), got {shape!r}")
    return dims  # type: ignore[return-value]


def _stochastic_round(x: np.ndarray | float, rng: np.random.Generator) -> np.ndarray:
    """Round to an integer, up with probability ``frac(x)`` (unbiased)."""
    x = np.asarray(x, dtype=float)
    base = np.floor(x)
    return (base + (rng.random(x.shape) < (x - base))).astype(np.int64)


def _top_k(values: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Mark the ``k[i]`` largest entries of each row of a 2-D array."""
    n = values.shape[1]
    ordered = np.sort(values, axis=1)
    ordered = np.concatenate([ordered, np.full((len(ordered), 1), np.inf, ordered.dtype)], 1)
    thresholds = np.take_along_axis(ordered, (n - k)[:, None], axis=1)
    return values >= thresholds


# --------------------------------------------------------------------------- base class
class OcclusionProcess(ABC):
    """A random process of boolean occlusion masks, ``True`` = hidden.

    Parameters
    ----------
    coverage
        Target expected fraction of hidden pixels, in ``[0, 1)``.
    seed
        Seed of the process's own generator, used when ``sample`` gets no ``rng``.
    """

    name: ClassVar[str]
    moving: ClassVar[bool]

    def __init__(self, coverage: float = 0.4, *, seed: int | None = None) -> None:
        self.coverage = _check_coverage(coverage)
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def sample(
        self, shape: tuple[int, int, int], rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """Draw one mask.

        Parameters
        ----------
        shape
            ``(T, H, W)``, each at least 1.
        rng
            Generator to draw from (an int is taken as a seed); ``None`` uses the
            process's own seeded generator.

        Returns
        -------
        numpy.ndarray
            Boolean ``(T, H, W)`` array, ``True`` where hidden.
        """
        shape = _check_shape(shape)
        gen = self._generator(rng)
        if self.coverage == 0.0:
            return np.zeros(shape, dtype=bool)
        return self._sample(shape, gen)

    def sample_batch(
        self, n: int, shape: tuple[int, int, int], rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """Draw ``n`` independent masks as a boolean ``(n, T, H, W)`` array."""
        if int(n) != n or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        shape = _check_shape(shape)
        gen = self._generator(rng)
        out = np.empty((int(n), *shape), dtype=bool)
        for i in range(int(n)):
            out[i] = self.sample(shape, gen)
        return out

    @abstractmethod
    def _sample(self, shape: Shape, rng: np.random.Generator) -> np.ndarray:
        """Draw one mask for a validated shape with ``coverage > 0``."""

    def _generator(self, rng: np.random.Generator | int | None) -> np.random.Generator:
        if rng is None:
            return self._rng
        if isinstance(rng, np.random.Generator):
            return rng
        return np.random.default_rng(rng)

    def _params(self) -> dict[str, Any]:
        """Parameters shown by ``repr`` (subclasses extend)."""
        return {"coverage": self.coverage}

    def __repr__(self) -> str:
        params = {**self._params(), "seed": self.seed}
        body = ", ".join(f"{k}={v!r}" for k, v in params.items())
        return f"{type(self).__name__}({body})"


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


# --------------------------------------------------------------------------- Raindrops
class Raindrops(OcclusionProcess):
    """Drops that appear, slide down and leave a streak, like rain on a lens.

    Drops are born uniformly in space and time. Each is a disc of radius
    ``U(0.5, 1.5) * radius`` that falls at ``speed * r / radius`` pixels per frame
    (bigger drops fall faster) for a lifetime of about ``lifetime`` frames, leaving
    a streak ``streak_width`` times its diameter wide and at most ``trail``
    pixels long. The birth rate is set from the expected drop area with the
    Boolean-model relation ``coverage = 1 - exp(-density * area)``, so
    overlaps are accounted for and the expected hidden fraction is ``coverage``.

    Parameters
    ----------
    coverage
        Target expected fraction of hidden pixels.
    radius
        Mean drop radius in pixels.
    speed
        Fall speed of a drop of mean radius, in pixels per frame.
    lifetime
        Mean number of frames a drop lives.
    trail
        Maximum streak length in pixels (``inf`` for a streak back to the birth place).
    streak_width
        Streak width as a fraction of the drop diameter, in ``[0, 1]``.
    seed
        Seed of the process's own generator.
    """

    name = "raindrops"
    moving = True

    def __init__(
        self,
        coverage: float = 0.3,
        *,
        seed: int | None = None,
        radius: float = 2.0,
        speed: float = 2.0,
        lifetime: float = 10.0,
        trail: float = 12.0,
        streak_width: float = 0.5,
    ) -> None:
        super().__init__(coverage, seed=seed)
        self.radius = _check_positive(radius, "radius")
        self.speed = _check_positive(speed, "speed", allow_zero=True)
        self.lifetime = _check_positive(lifetime, "lifetime")
        if self.lifetime < 1:
            raise ValueError(f"lifetime must be at least 1 frame, got {lifetime!r}")
        trail = float(trail)
        if not trail >= 0:
            raise ValueError(f"trail must be >= 0 (inf allowed), got {trail!r}")
        self.trail = trail
        width = float(streak_width)
        if not 0.0 <= width <= 1.0:
            raise ValueError(f"streak_width must be in [0, 1], got {streak_width!r}")
        self.streak_width = width
        self._life_range = (
            max(1, math.ceil(0.5 * self.lifetime)),
            max(1, math.ceil(0.5 * self.lifetime), math.floor(1.5 * self.lifetime)),
        )
        self._birth_rate = self._calibrate()

    def _params(self) -> dict[str, Any]:
        return {
            **super()._params(),
            "radius": self.radius,
            "speed": self.speed,
            "lifetime": self.lifetime,
            "trail": self.trail,
            "streak_width": self.streak_width,
        }

    def _draw_drops(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """Radius, speed and lifetime of ``n`` drops."""
        r = self.radius * rng.uniform(0.5, 1.5, n)
        s = self.speed * r / self.radius
        lo, hi = self._life_range
        life = rng.integers(lo, hi + 1, n)
        return r, s, life

    def _calibrate(self) -> float:
        """Births per pixel per frame giving the target coverage (Boolean model)."""
        rng = np.random.default_rng(12345)  # fixed quadrature, independent of seed
        r, s, life = self._draw_drops(4096, rng)
        age = np.arange(self._life_range[1])
        alive = age[None, :] < life[:, None]
        length = np.minimum(s[:, None] * age[None, :], self.trail)  # (drops, ages)
        half_w = self.streak_width * r  # half-width of streak = width_frac * diameter / 2
        # Exposed streak area: integral over streak columns of max(0, L - h(x)).
        u = (np.arange(8) + 0.5) / 8 * 2 - 1  # midpoints in (-1, 1)
        dx = u[None, :] * half_w[:, None]
        h = np.sqrt(np.maximum(r[:, None] ** 2 - dx**2, 0))  # (drops, 8)
        exposed = np.maximum(length[:, :, None] - h[:, None, :], 0).mean(-1) * 2 * half_w[:, None]
        area = np.pi * r[:, None] ** 2 + exposed
        per_drop = (area * alive).sum(1).mean()  # expected summed area over a drop's life
        return -math.log1p(-self.coverage) / per_drop

    def _sample(self, shape: Shape, rng: np.random.Generator) -> np.ndarray:
        T, H, W = shape
        r_max = 1.5 * self.radius
        l_max = self._life_range[1]
        y0, y1 = -(r_max + 1.5 * self.speed * (l_max - 1)), H - 1 + r_max  # can fall into view
        x0, x1 = -r_max, W - 1 + r_max
        n_frames = T + l_max - 1
        n = rng.poisson(self._birth_rate * (y1 - y0) * (x1 - x0) * n_frames)
        birth = rng.integers(-(l_max - 1), T, n)
        yb = rng.uniform(y0, y1, n)
        xb = rng.uniform(x0, x1, n)
        r, s, life = self._draw_drops(n, rng)
        # Skip drops that die before reaching the frame (above it, or before frame 0).
        reach = (yb + s * (life - 1) + r >= 0) & (birth + life > 0)
        birth, yb, xb, r, s, life = (a[reach] for a in (birth, yb, xb, r, s, life))
        n = len(birth)

        # One entry per (drop, frame alive): age 0 .. life - 1.
        drop = np.repeat(np.arange(n), life)
        age = np.arange(len(drop)) - np.repeat(np.cumsum(life) - life, life)
        t = birth[drop] + age
        keep = (t >= 0) & (t < T)
        drop, age, t = drop[keep], age[keep], t[keep]
        r, s = r[drop], s[drop]
        cx = xb[drop]
        cy = yb[drop] + s * age
        top = cy - np.minimum(s * age, self.trail)
        seen = (cy + r >= 0) & (np.minimum(top, cy - r) <= H - 1)
        t, r, cx, cy, top = t[seen], r[seen], cx[seen], cy[seen], top[seen]

        # Rasterise as one vertical run per (drop, frame, column) with pixel-centre inclusion.
        R = math.ceil(r_max) + 1
        x = np.floor(cx)[:, None].astype(np.int64) + np.arange(-R, R + 1)[None, :]
        dx = x - cx[:, None]
        h = np.sqrt(np.maximum(r[:, None] ** 2 - dx**2, 0.0))
        lo = cy[:, None] - h
        in_streak = np.abs(dx) <= self.streak_width * r[:, None]
        lo = np.where(in_streak, np.minimum(lo, top[:, None]), lo)
        hi = cy[:, None] + h
        ylo = np.maximum(np.ceil(lo), 0).astype(np.int64)
        yhi = np.minimum(np.floor(hi), H - 1).astype(np.int64)
        ok = (np.abs(dx) <= r[:, None]) & (x >= 0) & (x < W) & (ylo <= yhi)
        tt = np.broadcast_to(t[:, None], x.shape)[ok]
        x, ylo, yhi = x[ok], ylo[ok], yhi[ok]
        size = T * (H + 1) * W
        start = np.bincount((tt * (H + 1) + ylo) * W + x, minlength=size)
        stop = np.bincount((tt * (H + 1) + yhi + 1) * W + x, minlength=size)
        runs = (start - stop).reshape(T, H + 1, W)
        return np.cumsum(runs, axis=1)[:, :H] > 0


# --------------------------------------------------------------------------- MovingBar
class MovingBar(OcclusionProcess):
    """A bar across the frame that moves from frame to frame.

    The bar is ``coverage`` of the frame wide (a vertical bar hides whole columns
    and moves along x). Its start, direction and, with ``motion="bounce"``, its
    reflections at the edges are random per sequence; a pixel is hidden when its
    centre lies inside the bar, so fractional widths are honoured on average.

    Parameters
    ----------
    coverage
        Bar width as a fraction of the frame width (height for a horizontal bar).
    orientation
        ``"vertical"`` (moves left/right) or ``"horizontal"`` (moves up/down).
    speed
        Pixels per frame; ``None`` sweeps the free span once over the sequence.
    motion
        ``"bounce"`` (reflect at the edges) or ``"wrap"`` (leave one side,
        re-enter on the other).
    seed
        Seed of the process's own generator.
    """

    name = "moving_bar"
    moving = True

    def __init__(
        self,
        coverage: float = 0.2,
        *,
        seed: int | None = None,
        orientation: Literal["vertical", "horizontal"] = "vertical",
        speed: float | None = None,
        motion: Literal["bounce", "wrap"] = "bounce",
    ) -> None:
        super().__init__(coverage, seed=seed)
        if orientation not in ("vertical", "horizontal"):
            raise ValueError(f"orientation must be 'vertical' or 'horizontal', got {orientation!r}")
        if motion not in ("bounce", "wrap"):
            raise ValueError(f"motion must be 'bounce' or 'wrap', got {motion!r}")
        self.orientation = orientation
        self.motion = motion
        self.speed = None if speed is None else _check_positive(speed, "speed", allow_zero=True)

    def _params(self) -> dict[str, Any]:
        return {
            **super()._params(),
            "orientation": self.orientation,
            "speed": self.speed,
            "motion": self.motion,
        }

    def _sample(self, shape: Shape, rng: np.random.Generator) -> np.ndarray:
        T, H, W = shape
        n = W if self.orientation == "vertical" else H
        width = self.coverage * n
        span = n - width if self.motion == "bounce" else float(n)
        speed = span / max(T - 1, 1) if self.speed is None else self.speed
        direction = rng.choice((-1.0, 1.0))
        if self.motion == "bounce":
            # Triangle wave on [0, span]: position uniform at a random phase.
            q = (rng.uniform(0, 2 * span) + direction * speed * np.arange(T)) % (2 * span)
            pos = span - np.abs(q - span)
            centres = np.arange(n) + 0.5
            inside = (centres[None, :] >= pos[:, None]) & (centres[None, :] < pos[:, None] + width)
        else:
            pos = (rng.uniform(0, n) + direction * speed * np.arange(T)) % n
            offset = (np.arange(n)[None, :] + 0.5 - pos[:, None]) % n
            inside = offset < width
        if self.orientation == "vertical":
            return np.broadcast_to(inside[:, None, :], shape).copy()
        return np.broadcast_to(inside[:, :, None], shape).copy()


# --------------------------------------------------------------------------- RemovePixels
class RemovePixels(OcclusionProcess):
    """Independent Bernoulli(``coverage``) hiding of each pixel in each frame."""

    name = "remove_pixels"
    moving = True

    def __init__(self, coverage: float = 0.5, *, seed: int | None = None) -> None:
        super().__init__(coverage, seed=seed)

    def _sample(self, shape: Shape, rng: np.random.Generator) -> np.ndarray:
        return rng.random(shape) < self.coverage


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


# --------------------------------------------------------------------------- registry
PROCESSES: dict[str, type[OcclusionProcess]] = {
    cls.name: cls for cls in (Cloud, Raindrops, MovingBar, RemovePixels, Empirical)
}


def make(name: str, **kwargs: Any) -> OcclusionProcess:
    """Build an occlusion process by its registry name.

    Parameters
    ----------
    name
        One of :data:`PROCESSES` (``"cloud"``, ``"raindrops"``, ``"moving_bar"``,
        ``"remove_pixels"``, ``"empirical"``).
    **kwargs
        Passed to the process's constructor.

    Raises
    ------
    ValueError
        If ``name`` is unknown.
    """
    try:
        cls = PROCESSES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown occlusion process {name!r}; valid names are {sorted(PROCESSES)}"
        ) from None
    return cls(**kwargs)


def for_data(
    name: str,
    missing: np.ndarray,
    never: np.ndarray,
    coverage: float | None,
    seed: int,
    **options: Any,
) -> OcclusionProcess:
    """The occlusion process ``name`` to hide extra pixels of gappy data.

    ``"empirical"`` cuts the data's own gap pattern ``missing`` (``(T, H, W)``,
    True = missing) at other times, leaving out the pixels ``never`` observed;
    any other name is built by :func:`make`. ``options`` go to the process.
    """
    if name == "empirical":
        return Empirical(missing, coverage=coverage, seed=seed, exclude=never, **options)
    return make(name, coverage=coverage, seed=seed, **options)


def missing_share(
    missing: np.ndarray, never: np.ndarray, low: float = 0.0, high: float = 1.0
) -> float:
    """Share of ``missing`` pixels over the locations observed at least once (not
    ``never``), clipped to ``[low, high]``; 0.3 when nothing was ever observed."""
    valid = ~never
    share = float(missing[:, valid].mean()) if valid.any() else 0.3
    return float(np.clip(share, low, high))
