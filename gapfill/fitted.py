"""Fitted models: what ``fit`` returns, and how it is saved and loaded.

A :class:`FittedModel` bundles a fitted method with everything needed to
apply it again: the normalisation statistics, the dims, the variable name and
the hold-out used for diagnostics. Files are written with ``torch.save`` and
read with ``torch.load(weights_only=True)``: only tensors and plain Python
values, never arbitrary pickled objects.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gapfill import methods
from gapfill.atomic import replacing
from gapfill.cube import Normaliser
from gapfill.dims import Dims
from gapfill.errors import ErrorModel
from gapfill.methods.base import Method

FORMAT = "gapfill-model"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Holdout:
    """How diagnostic hold-out pixels are drawn.

    Attributes
    ----------
    fraction
        Share of the observed pixels hidden from fitting and used for scoring
        (0 disables the hold-out).
    process
        Occlusion process that shapes the hidden patches (``"empirical"``: the
        cube's own gap shapes, ``"cloud"``, or any name of :func:`gapfill.masks.make`;
        ``"auto"`` is resolved at fit time by :func:`gapfill.diagnostics.resolve_process`).
    seed
        Seed of the draw, so the same pixels are held out again at fill time.
    """

    fraction: float = 0.1
    process: str = "cloud"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise ValueError(f"holdout must be in [0, 1), got {self.fraction}")


class FittedModel:
    """A method fitted to a gappy cube, ready to fill it (or another like it).

    Returned by ``da.gapfill.fit``; passed to ``da.gapfill.fill``. Save it with
    :meth:`save` and read it back with :func:`gapfill.load`.
    """

    def __init__(
        self,
        method: Method,
        normaliser: Normaliser,
        dims: Dims,
        variable: str,
        holdout: Holdout,
        info: dict[str, Any] | None = None,
        error_model: ErrorModel | None = None,
    ) -> None:
        self.method = method
        self.normaliser = normaliser
        self.dims = dims
        self.variable = variable
        self.holdout = holdout
        self._run = dict(info or {})
        #: The calibrated error model (:mod:`gapfill.errors`), learned after the fit.
        self.error_model = error_model

    @property
    def info(self) -> dict[str, Any]:
        """What the fit learned and facts about the run, in one JSON-serialisable dict.

        The method's findings (e.g. ``modes`` and ``cv_rmse`` for ``eof``, losses
        for the trained methods; the ``fit:`` line of the repr) and the run's
        ``variable``, ``shape``, ``fit_seconds``, ``fitted_at`` and
        ``gapfill_version``. A copy: changing it changes nothing.
        """
        return copy.deepcopy({**self.method.fit_info, **self._run})

    def gives_error(self, samples: int = 1) -> bool:
        """Whether a fill with this many samples gives an error variable."""
        return self.error_model is not None or self.method.gives_error(samples)

    @property
    def name(self) -> str:
        """The method's registry name."""
        return self.method.name

    def options_dict(self) -> dict[str, Any]:
        """The method's options."""
        return self.method.options_dict()

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options_dict().items())
        shape = self.info.get("shape")
        return (
            f"<gapfill.FittedModel method={self.name!r} variable={self.variable!r} "
            f"dims={self.dims.core} fitted_on={shape} holdout={self.holdout.fraction:g} "
            f"({self.holdout.process})>\n  options: {opts}"
            + (f"\n  error: {self.error_model!r}" if self.error_model is not None else "")
            + (f"\n  fit: {json.dumps(self.method.fit_info)}" if self.method.fit_info else "")
        )

    # -- persistence ----------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to ``path`` (atomically: temp file, then rename).

        Returns
        -------
        pathlib.Path
            The path written.
        """
        import torch

        path = Path(path)
        state = {k: _to_tensor(v) for k, v in self.method.state_dict().items()}
        payload = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "method": self.name,
            "options": json.dumps(self.options_dict()),
            "fit_info": json.dumps(self.method.fit_info),
            "info": json.dumps(self._run),
            "dims": json.dumps(self.dims.as_dict()),
            "variable": self.variable,
            "holdout": json.dumps(asdict(self.holdout)),
            "mean": torch.as_tensor(self.normaliser.mean, dtype=torch.float64),
            "std": torch.as_tensor(self.normaliser.std, dtype=torch.float64),
            "state": state,
        }
        if self.error_model is not None:
            payload["error_model"] = _to_tensor(self.error_model.state_dict())
        with replacing(path) as tmp:
            torch.save(payload, tmp)
        return path


def _to_tensor(value: Any) -> Any:
    import torch

    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, dict):
        return {k: _to_tensor(v) for k, v in value.items()}
    return value


def load(path: str | os.PathLike) -> FittedModel:
    """Read a model written by :meth:`FittedModel.save`.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a readable gapfill model (corrupt, truncated, or
        another kind of file).
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for bad files
        raise ValueError(
            f"cannot read model file {str(path)!r}: it is not a gapfill model or it is corrupt "
            f"({type(err).__name__}). Re-create it with model.save(path)."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(
            f"{str(path)!r} is not a gapfill model file (written by FittedModel.save)."
        )
    if payload.get("version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} was written by a newer gapfill (format {payload['version']}); "
            "upgrade gapfill to read it."
        )
    cls = methods.get(payload["method"])
    method = cls(**json.loads(payload["options"]))
    method.fit_info = json.loads(payload["fit_info"])
    method.load_state_dict(payload["state"])
    dims = Dims(**json.loads(payload["dims"]))
    normaliser = Normaliser(payload["mean"].numpy(), payload["std"].numpy())
    error_model = payload.get("error_model")
    return FittedModel(
        method,
        normaliser,
        dims,
        payload["variable"],
        Holdout(**json.loads(payload["holdout"])),
        json.loads(payload["info"]),
        None if error_model is None else ErrorModel.from_state(error_model),
    )
