"""What an interrupted ``gapfill run`` keeps besides the written regions: the fit and its scores.

A resumable run (a dask-backed input, written region by region into
``<output>.partial``, see :func:`gapfill.zarr_regions.write_regions`) saves the fitted
model and the hold-out diagnostics in ``<partial>.fit/`` before it starts
writing. Started again with the same recipe, it reads them back instead of
fitting and scoring again, which for a trained network is most of the run.
The directory is removed when the product is complete, and ignored (and
replaced) when the recipe or the input changed.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from gapfill.atomic import replacing

log = logging.getLogger("gapfill")

__all__ = ["RunCache"]

KEY_FILE, MODEL_FILE, DIAGNOSTICS_FILE = "key.txt", "model.pt", "diagnostics.npz"


class RunCache:
    """The fit and the hold-out scores of one resumable run.

    Parameters
    ----------
    partial
        The run's partial store (:func:`gapfill.zarr_regions.partial_path`).
    key
        What identifies the run (:func:`gapfill.pipeline.resume_key` of the recipe,
        plus anything about the input that must match).
    """

    def __init__(self, partial: Path, key: str) -> None:
        self.directory = partial.with_name(partial.name + ".fit")
        self.key = key
        stored = self.directory / KEY_FILE
        if self.directory.exists() and (
            not stored.is_file() or stored.read_text() != key
        ):
            log.info("%s holds the fit of another recipe or input: fitting afresh", self.directory)
            self.clear()

    # -- model ----------------------------------------------------------------------
    def load_model(self) -> Any | None:
        """The model saved by an interrupted run, or ``None``."""
        from gapfill.fitted import load

        path = self.directory / MODEL_FILE
        if not path.is_file():
            return None
        try:
            model = load(path)
        except ValueError as err:  # half-written or corrupt: fit again
            log.warning("ignoring %s (%s): fitting again", path, err)
            return None
        log.info("resuming: reusing the model fitted by the interrupted run (%s)", path)
        return model

    def save_model(self, model: Any) -> None:
        """Keep ``model`` (written atomically by :meth:`FittedModel.save`)."""
        self._ensure()
        model.save(self.directory / MODEL_FILE)

    # -- diagnostics ------------------------------------------------------------------
    def load_diagnostics(self) -> Any | None:
        """The hold-out diagnostics saved by an interrupted run, or ``None``."""
        from gapfill.diagnostics import Diagnostics

        path = self.directory / DIAGNOSTICS_FILE
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                diag = Diagnostics(
                    truth=f["truth"], predicted=f["predicted"],
                    predicted_error=f["predicted_error"] if meta["has_error"] else None,
                    time_index=f["time_index"], times=f["times"], method=meta["method"],
                    unfilled=int(meta["unfilled"]), extra=dict(meta["extra"]),
                    scale=float(meta.get("scale", 1.0)),
                    transfer=float(meta.get("transfer", 1.0)),
                    draws=int(meta.get("draws", 1)),
                )
        except (OSError, ValueError, KeyError) as err:
            log.warning("ignoring %s (%s): scoring again", path, err)
            return None
        log.info("resuming: reusing the hold-out scores of the interrupted run")
        return diag

    def save_diagnostics(self, diag: Any) -> None:
        """Keep ``diag`` (a :class:`~gapfill.diagnostics.Diagnostics`), atomically."""
        self._ensure()
        meta = {"method": diag.method, "unfilled": int(diag.unfilled), "extra": diag.extra,
                "scale": float(diag.scale), "transfer": float(diag.transfer),
                "draws": int(diag.draws),
                "has_error": diag.predicted_error is not None}
        arrays = {
            "truth": diag.truth, "predicted": diag.predicted, "time_index": diag.time_index,
            "times": np.asarray(diag.times), "meta": np.asarray(json.dumps(meta)),
            "predicted_error": (diag.predicted_error if diag.predicted_error is not None
                                else np.zeros(0)),
        }
        with replacing(self.directory / DIAGNOSTICS_FILE) as tmp:
            np.savez(tmp, **arrays)

    # -- lifetime -----------------------------------------------------------------------
    def clear(self) -> None:
        """Remove the directory (when the product is complete, or belongs to another run)."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def _ensure(self) -> None:
        if not self.directory.exists():
            self.directory.mkdir(parents=True)
            (self.directory / KEY_FILE).write_text(self.key)
