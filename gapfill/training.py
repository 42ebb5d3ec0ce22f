"""Reusable pieces of a torch training loop: checkpoints, logs, progress, budgets.

Nothing here knows about a particular model:

- :func:`save_checkpoint` writes atomically (temp file in the same directory,
  then ``os.replace``), :func:`load_checkpoint` reads with
  ``torch.load(weights_only=True)`` and turns any failure into a clear error;
  :class:`CheckpointManager` keeps the last few ``ckpt_<step>.pt`` of a run
  and finds the newest one to resume from.
- :class:`CSVLogger` appends one row per evaluation to ``log.csv``.
- :class:`Progress` shows a tqdm bar in a terminal and periodic log lines
  otherwise (batch jobs get no bar spam).
- :class:`Budget` stops on a step count or a wall-clock budget;
  :class:`EarlyStopping` on a validation metric that stops improving.
- :func:`rng_state` / :func:`set_rng_state` capture numpy and torch RNGs in a
  form ``weights_only`` loading accepts.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np


# -- checkpoints -----------------------------------------------------------------------
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

    def load_latest(self) -> dict[str, Any] | None:
        """Load the newest checkpoint (``None`` when there is none)."""
        path = self.latest()
        return None if path is None else load_checkpoint(path)


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


# -- logging ---------------------------------------------------------------------------
class CSVLogger:
    """Append rows of metrics to a CSV file (header written once).

    Parameters
    ----------
    path
        The CSV file; created with its parent directory.
    fields
        Column names; missing values in a row are left empty.
    append
        Keep existing rows (resuming) instead of starting a new file.
    """

    def __init__(
        self, path: str | os.PathLike, fields: Sequence[str], append: bool = False
    ) -> None:
        self.path = Path(path)
        self.fields = list(fields)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not (append and self.path.exists() and self.path.stat().st_size > 0)
        if fresh:
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(self.fields)

    def log(self, row: Mapping[str, Any]) -> None:
        """Append one row."""
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(k, "")) for k in self.fields])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


class Progress:
    """A tqdm bar in a terminal, periodic log lines in batch jobs.

    Parameters
    ----------
    total
        Total steps (for the bar and the log lines).
    start
        The step the run starts at (resumed runs).
    desc
        A label.
    mode
        ``"auto"`` (bar when ``stream`` is a TTY), ``"bar"``, ``"log"`` or ``"off"``.
    log_every
        Seconds between log lines.
    stream
        Where to write (default ``sys.stderr``).
    """

    def __init__(
        self,
        total: int,
        start: int = 0,
        desc: str = "train",
        mode: str = "auto",
        log_every: float = 30.0,
        stream: TextIO | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "log"
        if mode not in ("bar", "log", "off"):
            raise ValueError(f"progress mode must be auto, bar, log or off; got {mode!r}")
        self.mode, self.total, self.desc, self.log_every = mode, total, desc, log_every
        self.step = start
        self._last_log = time.monotonic()
        self.bar = None
        if mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, initial=start, desc=desc, file=self.stream, dynamic_ncols=True
            )

    def update(self, step: int, force: bool = False, **metrics: float) -> None:
        """Advance to ``step`` and show ``metrics``."""
        text = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if v is not None)
        if self.bar is not None:
            self.bar.update(step - self.step)
            if metrics:
                self.bar.set_postfix_str(text, refresh=False)
        elif self.mode == "log":
            now = time.monotonic()
            if force or now - self._last_log >= self.log_every:
                line = f"[{self.desc}] step {step}/{self.total} {text}"
                print(line, file=self.stream, flush=True)
                self._last_log = now
        self.step = step

    def close(self) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()


# -- stopping rules --------------------------------------------------------------------
class Budget:
    """Stop after ``steps`` steps or ``seconds`` of wall time, whichever comes first.

    The time budget counts from construction (this process), so a resumed run
    gets a fresh time budget but continues the step count.
    """

    def __init__(self, steps: int | None, seconds: float | None) -> None:
        self.steps, self.seconds = steps, seconds
        self.start = time.monotonic()

    @property
    def elapsed(self) -> float:
        """Seconds since construction."""
        return time.monotonic() - self.start

    def exhausted(self, step: int) -> str | None:
        """Why to stop at ``step`` (``"steps"`` or ``"time"``), or ``None`` to go on."""
        if self.steps is not None and step >= self.steps:
            return "steps"
        if self.seconds is not None and self.elapsed >= self.seconds:
            return "time"
        return None


class EarlyStopping:
    """Track the best value of a metric to minimise; stop after ``patience`` bad evaluations.

    Parameters
    ----------
    patience
        Evaluations without improvement before stopping; ``None`` never stops.
    min_delta
        Relative improvement needed to count (``best * (1 - min_delta)``).
    """

    def __init__(self, patience: int | None, min_delta: float = 0.0) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.best = float("inf")
        self.best_step = -1
        self.bad = 0

    def update(self, value: float, step: int) -> bool:
        """Record ``value`` at ``step``; return whether it is a new best."""
        if value < self.best * (1 - self.min_delta) or self.best_step < 0:
            self.best, self.best_step, self.bad = float(value), int(step), 0
            return True
        self.bad += 1
        return False

    @property
    def should_stop(self) -> bool:
        """Whether patience has run out."""
        return self.patience is not None and self.bad >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """Plain values for a checkpoint."""
        return {"best": self.best, "best_step": self.best_step, "bad": self.bad}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.best = float(state["best"])
        self.best_step = int(state["best_step"])
        self.bad = int(state["bad"])
