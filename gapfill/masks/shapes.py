"""Gaps of simple shapes: raindrops, a moving bar, random pixels."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from gapfill.masks.base import (
    OcclusionProcess,
    Shape,
    _check_positive,
)


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


