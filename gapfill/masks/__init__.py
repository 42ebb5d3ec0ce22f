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

import inspect
from typing import Any

import numpy as np

from gapfill.masks.base import OcclusionProcess
from gapfill.masks.cloud import Cloud
from gapfill.masks.empirical import Empirical
from gapfill.masks.shapes import MovingBar, Raindrops, RemovePixels

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
    "own_gap_hides",
    "process_options",
]


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


#: Keyword arguments a method sets itself when it builds a process.
SET_BY_METHOD = ("missing", "coverage", "seed", "exclude")


def process_options(name: str) -> list[str]:
    """The keyword options of the process ``name`` a user may set (``occlusion_options``):
    its constructor's, less those a method sets itself (:data:`SET_BY_METHOD`)."""
    params = inspect.signature(PROCESSES[name].__init__).parameters
    return [k for k in params if k != "self" and k not in SET_BY_METHOD]


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


def own_gap_hides(x: np.ndarray, seed: int, minimum: int = 10) -> np.ndarray | None:
    """Observed pixels of a gappy ``(C, T, H, W)`` array to hide for choosing between fills:
    the data's own gap patterns at other times (:class:`Empirical`), drawn from the stream
    ``[seed, 3]``. ``None`` when fewer than ``minimum`` pixels would be hidden (no gaps to
    borrow, or too few observations)."""
    missing = ~np.isfinite(x).all(0)
    never = missing.all(0)
    if never.all():
        return None
    process = for_data("empirical", missing, never, None, seed)
    hide = process.sample(x.shape[1:], np.random.default_rng([seed, 3]))[None] & np.isfinite(x)
    return hide if hide.sum() >= minimum else None


def missing_share(
    missing: np.ndarray, never: np.ndarray, low: float = 0.0, high: float = 1.0
) -> float:
    """Share of ``missing`` pixels over the locations observed at least once (not
    ``never``), clipped to ``[low, high]``; 0.3 when nothing was ever observed."""
    valid = ~never
    share = float(missing[:, valid].mean()) if valid.any() else 0.3
    return float(np.clip(share, low, high))
