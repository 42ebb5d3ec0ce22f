"""The numpy core of a fill: run a fitted method on an array and keep the guarantees.

:func:`run_method` fills a ``(C, T, H, W)`` array in data units: observed values
are copied back bit for bit, pixels never observed stay NaN (unless asked
otherwise) and the error is the model's; :func:`flags` says which pixel is which.
Everything above (the lazy chunk-wise fill, the hold-out scores, the CF product)
goes through these two functions, so no method can break the guarantees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from gapfill import errors
from gapfill.methods.base import Coords, TimeEdges, limit_threads

if TYPE_CHECKING:
    from gapfill.errors import ErrorModel
    from gapfill.fitted import FittedModel

__all__ = ["FILLED", "NEVER_OBSERVED", "OBSERVED", "flags", "predict_error", "run_method"]

#: The values of the flag variable.
OBSERVED, FILLED, NEVER_OBSERVED = 0, 1, 2


def run_method(
    model: FittedModel,
    raw: np.ndarray,
    seed: int | Sequence[int] = 0,
    coords: Coords | None = None,
    samples: int = 1,
    fill_never_observed: bool = False,
    never: np.ndarray | None = None,
    edges: TimeEdges | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Fill a ``(C, T, H, W)`` array in data units.

    ``never`` is the ``(C, 1, H, W)`` mask of pixels never observed, when
    ``raw`` is a time chunk of a longer cube (default: from ``raw`` itself);
    ``edges`` the chunk's :class:`~gapfill.methods.TimeEdges` for methods that
    ask for them (:meth:`~gapfill.methods.Method.fill_chunk`).

    Returns
    -------
    filled
        float64 array: observations where observed (exactly), the method's
        values where missing, NaN at never-observed pixels (unless
        ``fill_never_observed``).
    error
        One-sigma error in data units (0 at observed pixels): the model's calibrated
        :class:`~gapfill.errors.ErrorModel` where it has one, else the method's own
        error, else ``None``.
    """
    observed = np.isfinite(raw)
    if never is None:
        never = ~observed.any(axis=1, keepdims=True)
    z = model.normaliser.normalise(raw)
    rng = np.random.default_rng(seed)
    with limit_threads(model.method.options.threads, raw.size):
        if edges is None:
            result = model.method.fill(z, rng, samples=samples, coords=coords)
        else:
            result = model.method.fill_chunk(z, rng, samples=samples, coords=coords, edges=edges)
    filled = model.normaliser.denormalise(result.values)
    filled = np.where(observed, raw, filled)
    sigma = result.error
    if model.error_model is not None:
        sigma = predict_error(model.error_model, observed, result.error, edges,
                              filled=np.where(observed, z, result.values))
    error = None
    if sigma is not None:
        error = np.where(observed, 0.0, model.normaliser.scale_error(sigma))
    if not fill_never_observed:
        filled = np.where(never, np.nan, filled)
        if error is not None:
            error = np.where(never, np.nan, error)
    return filled, error


def predict_error(
    error_model: ErrorModel,
    observed: np.ndarray,
    native: np.ndarray | None,
    edges: TimeEdges | None = None,
    filled: np.ndarray | None = None,
) -> np.ndarray:
    """The calibrated one-sigma error (normalised units) of a fill given ``observed``,
    the method's own spread ``native`` and the ``filled`` field (normalised units)."""
    before = after = None
    if edges is not None:  # a time chunk: the observations just outside it count too
        n_time = observed.shape[1]
        far = float(errors.MAX_DISTANCE)
        before = np.nan_to_num(edges.start - np.asarray(edges.before_index, np.float64), nan=far)
        after = np.nan_to_num(
            np.asarray(edges.after_index, np.float64) - (edges.start + n_time - 1), nan=far
        )
        # A block with a time halo holds its chunk's edges, which may lie inside it: the
        # halo frames before (after) them have no known observation outside the block
        # (they are trimmed after the fill).
        before = np.where(before > 0, before, far)
        after = np.where(after > 0, after, far)
    use_native = native if error_model.uses_native else None
    variability = error_model.pixel_variability(observed.shape)
    if not error_model.coef[1 + errors.GRADIENT]:  # a slope of 0: the fill's gradient is unused
        filled = None
    features = errors.gap_features(observed, use_native, before, after, variability, filled)
    sigma = np.zeros(observed.shape, dtype=np.float32)
    gap = ~observed
    sigma[gap] = error_model.predict(features[:, gap])
    return sigma


def flags(raw: np.ndarray, time_axis: int, never: np.ndarray | None = None) -> np.ndarray:
    """uint8 flags: 0 observed, 1 filled, 2 never observed (over the whole time axis).

    ``never`` (broadcastable to ``raw``) overrides the never-observed mask, for a
    time chunk of a longer cube.
    """
    observed = np.isfinite(raw)
    if never is None:
        never = ~observed.any(axis=time_axis, keepdims=True)
    flag = np.where(observed, OBSERVED, FILLED).astype(np.uint8)
    return np.where(never, np.uint8(NEVER_OBSERVED), flag)
