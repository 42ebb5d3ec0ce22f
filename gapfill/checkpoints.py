"""Checkpoint files of a training run, and the identity that says which run wrote them.

- :func:`save_checkpoint` writes atomically (temp file in the same directory,
  then ``os.replace``); :func:`load_checkpoint` reads with
  ``torch.load(weights_only=True)`` and turns any failure into a clear error.
- :class:`CheckpointManager` keeps the last few ``ckpt_<step>.pt`` of a run and
  finds the newest one to resume from.
- :func:`run_identity` describes what a run learns from: the method, the
  options that change the weights, and a fingerprint of the training data
  (:func:`data_fingerprint`). Every checkpoint stores it, and
  :func:`check_identity` refuses to resume a checkpoint of another run.
- :func:`load_weights` loads networks from a checkpoint, with a clear error when
  shapes differ; :func:`rng_state` / :func:`set_rng_state` capture numpy and
  torch RNGs in a form ``weights_only`` loading accepts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from gapfill.cube import Cube

__all__ = [
    "CheckpointManager", "check_identity", "data_fingerprint", "load_checkpoint",
    "load_weights", "rng_state", "run_identity", "save_checkpoint", "set_rng_state",
]


def save_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` with ``torch.save`` to a temp file, then rename it to ``path``.

    A crash mid-write leaves the previous file intact, never a truncated one.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(dict(payload), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``, on CPU).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is unreadable (truncated, corrupt, not a checkpoint, or
        holding objects that safe loading refuses).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many exception types for bad files
        raise ValueError(
            f"cannot read checkpoint {str(path)!r}: the file is corrupt, truncated or not a "
            f"gapfill checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
            "Delete it to resume from an older checkpoint, or start again with resume=False."
        ) from None
    if not isinstance(payload, dict):
        raise ValueError(f"checkpoint {str(path)!r} does not hold a dict; it is not a checkpoint")
    return payload


class CheckpointManager:
    """Numbered checkpoints ``ckpt_<step>.pt`` in one directory, keeping the newest ``keep``.

    Parameters
    ----------
    directory
        Where checkpoints (and, by convention, the CSV log) go.
    keep
        How many recent checkpoints to keep (older ones are deleted).
    """

    pattern = re.compile(r"^ckpt_(\d+)\.pt$")

    def __init__(self, directory: str | os.PathLike, keep: int = 2) -> None:
        self.directory = Path(directory)
        self.keep = max(1, int(keep))

    def path(self, step: int) -> Path:
        """The file name of the checkpoint at ``step``."""
        return self.directory / f"ckpt_{step:08d}.pt"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """``(step, path)`` of the checkpoints present, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for p in self.directory.iterdir():
            match = self.pattern.match(p.name)
            if match:
                found.append((int(match.group(1)), p))
        return sorted(found)

    def latest(self) -> Path | None:
        """The newest checkpoint, or ``None``."""
        found = self.checkpoints()
        return found[-1][1] if found else None

    def save(self, step: int, payload: Mapping[str, Any]) -> Path:
        """Write the checkpoint of ``step`` atomically and prune old ones."""
        path = save_checkpoint(self.path(step), payload)
        for _, old in self.checkpoints()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def clear(self) -> int:
        """Delete every checkpoint of the directory (a run starting over); return how many."""
        found = self.checkpoints()
        for _, path in found:
            path.unlink(missing_ok=True)
        return len(found)

    def load_latest(self) -> dict[str, Any] | None:
        """Load the newest checkpoint (``None`` when there is none)."""
        path = self.latest()
        return None if path is None else load_checkpoint(path)


def load_weights(ckpt: Mapping[str, Any], nets: Mapping[str, torch.nn.Module]) -> None:
    """Load ``ckpt[key]`` into each network of ``nets`` (checkpoint key -> network).

    Raises
    ------
    ValueError
        If the shapes differ (the checkpoint was written with other options).
    """
    try:
        for key, net in nets.items():
            net.load_state_dict(ckpt[key])
    except RuntimeError as err:
        raise ValueError(
            "the checkpoint does not match these options (network shapes differ); "
            f"resume with the options it was written with: {ckpt.get('options')}"
        ) from err


# -- RNG state -------------------------------------------------------------------------
def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """Numpy and torch RNG states as ``weights_only``-loadable values."""
    import torch

    return {
        "numpy": json.dumps(rng.bit_generator.state),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(rng: np.random.Generator, state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (into ``rng`` and torch's CPU RNG)."""
    import torch

    rng.bit_generator.state = json.loads(state["numpy"])
    torch.set_rng_state(state["torch"])


# -- run identity ----------------------------------------------------------------------
def data_fingerprint(cube: Cube, values: np.ndarray | None = None) -> str:
    """A short hash of the training data of ``cube``: its shape, statistics and values.

    The shape and the per-channel normalisation statistics (computed from every
    observed value) always enter; for an in-memory cube (or when ``values``, the
    normalised ``(C, T, H, W)`` array, is given) so do the exact values and the
    missing-value mask. A dask-backed cube is not loaded for this: its
    statistics already change with almost any change of the data.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(tuple(int(n) for n in cube.shape)).encode())
    for stat in (cube.normaliser.mean, cube.normaliser.std):
        h.update(np.ascontiguousarray(stat, dtype=np.float64).tobytes())
    if values is None and not cube.is_lazy:
        values = cube.values()
    if values is not None:
        h.update(array_digest(values).encode())
    return h.hexdigest()


def array_digest(a: np.ndarray) -> str:
    """Hash of an array's shape, missing-value mask and finite values (NaN payloads ignored)."""
    a = np.asarray(a)
    finite = np.isfinite(a)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(a.shape).encode())
    h.update(np.packbits(finite).tobytes())
    h.update(np.ascontiguousarray(np.where(finite, a, 0)).tobytes())
    return h.hexdigest()


def run_identity(
    method: str, options: Mapping[str, Any], run_control: Iterable[str], data: str
) -> dict[str, Any]:
    """What a training run learns from: ``method``, its ``options`` without the
    ``run_control`` ones (budgets, checkpointing, progress: they change how long or
    where a run goes, not what it learns), and the ``data`` fingerprint."""
    skip = set(run_control)
    kept = {k: v for k, v in options.items() if k not in skip}
    return {"method": method, "options": json.loads(json.dumps(kept)), "data": data}


def check_identity(ckpt: Mapping[str, Any], identity: Mapping[str, Any], where: str) -> None:
    """Refuse to resume ``ckpt`` unless it was written by a run of this ``identity``.

    Raises
    ------
    ValueError
        If the checkpoint has no identity or another one; the message names
        what differs and how to start over.
    """
    restart = (f"Resume with the same data and options, or start over: resume=False "
               f"(the checkpoints in {where} are then replaced) or another checkpoint_dir.")
    stored = ckpt.get("identity")
    if not stored:
        raise ValueError(f"the checkpoint in {where} does not say which data and options it "
                         f"was trained on, so it cannot be resumed safely. {restart}")
    stored = json.loads(stored) if isinstance(stored, str) else dict(stored)
    identity = json.loads(json.dumps(dict(identity)))
    if stored == identity:
        return
    why = []
    if stored.get("method") != identity["method"]:
        why.append(f"it was written by {stored.get('method')!r}")
    if stored.get("data") != identity["data"]:
        why.append("it was trained on other data")
    old, new = stored.get("options", {}), identity["options"]
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        why.append("its options differ: " + ", ".join(
            f"{k}={old.get(k)!r} there, {new.get(k)!r} here" for k in changed))
    raise ValueError(f"the checkpoint in {where} belongs to another training run "
                     f"({'; '.join(why)}). {restart}")
