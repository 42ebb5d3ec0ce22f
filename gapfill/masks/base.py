"""The occlusion process interface and the argument checks the processes share."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

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


