"""Reusable pieces of a torch training loop: checkpoints, logs, progress, budgets.

Nothing here knows about a particular model:

- :func:`save_checkpoint` writes atomically (temp file in the same directory,
  then ``os.replace``), :func:`load_checkpoint` reads with
  ``torch.load(weights_only=True)`` and turns any failure into a clear error;
  :class:`CheckpointManager` keeps the last few ``ckpt_<step>.pt`` of a run
  and finds the newest one to resume from; :func:`open_run` gives a fit its
  manager, the checkpoint to resume from and the seed; :func:`load_weights`
  loads networks from a checkpoint, with a clear error when shapes differ.
- :class:`CSVLogger` appends one row per evaluation to ``log.csv``.
- :class:`Progress` shows a tqdm bar in a terminal and periodic log lines
  otherwise (batch jobs get no bar spam).
- :class:`Budget` stops on a step count or a wall-clock budget;
  :class:`EarlyStopping` on a validation metric that stops improving.
- :func:`rng_state` / :func:`set_rng_state` capture numpy and torch RNGs in a
  form ``weights_only`` loading accepts.
- :class:`TrainLoop` puts these together into the loop the trained methods
  share: steps until the budget is spent, an evaluation every few steps (CSV
  row, progress, early stopping, a copy of the best weights), checkpoints, and
  the best weights restored at the end.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

if TYPE_CHECKING:
    import torch

    from gapfill.distributed import Context


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


def open_run(
    checkpoint_dir: str | None, resume: bool, seed: int | None, rng: np.random.Generator
) -> tuple[CheckpointManager | None, dict[str, Any] | None, int]:
    """The checkpoints of a training run, the one to resume from, and the run's seed.

    Returns
    -------
    manager
        A :class:`CheckpointManager` of ``checkpoint_dir`` (``None`` without one).
    checkpoint
        The newest checkpoint when ``resume`` and there is one, else ``None``.
    seed
        The checkpoint's seed when resuming, else ``seed``, else one drawn from ``rng``.
    """
    manager = CheckpointManager(checkpoint_dir) if checkpoint_dir else None
    ckpt = manager.load_latest() if (manager is not None and resume) else None
    if ckpt is not None:
        return manager, ckpt, int(ckpt["seed"])
    return manager, None, seed if seed is not None else int(rng.integers(2**31 - 1))


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


# -- the loop --------------------------------------------------------------------------
class TrainLoop:
    """The training loop the trained methods share.

    :meth:`run` calls a training step until the :class:`Budget` is spent or
    :class:`EarlyStopping` stops it, evaluates every ``eval_every`` steps (and
    once at the end) and calls ``save`` every ``checkpoint_every`` steps (and
    once at the end). An evaluation validates, keeps a copy of the weights of
    ``net`` at a new best, appends a row to the CSV log and shows it.
    :meth:`restore_best` then puts the best weights back.

    Parameters
    ----------
    net
        The network whose best weights are kept.
    validate
        The validation value to minimise (``None`` when there is none).
    steps, time_budget
        The :class:`Budget` (steps, seconds).
    eval_every, checkpoint_every
        Steps between evaluations and between checkpoints.
    patience
        :class:`EarlyStopping` patience; ``None`` never stops early.
    metrics
        Names of the values a training step returns; their means since the
        last evaluation go into the log rows.
    shown
        Those of ``metrics`` shown by the progress display after every step.
    val_name
        Log column of the validation value (its best is ``"best_" + val_name``).
    finite_only
        Only finite validation values can be a new best.
    log
        The CSV log file (``None``: none).
    desc, progress
        The :class:`Progress` label and mode.
    ddp
        Under ``torchrun`` (:mod:`gapfill.distributed`): rank 0's budget decision
        is everyone's, and only rank 0 writes the log and shows progress.

    Attributes
    ----------
    step
        Steps done (set it when resuming).
    stopper
        The :class:`EarlyStopping` state.
    best_state
        CPU copy of the best weights, or ``None``.
    first_val
        The validation value before training (``run(first_eval=True)``).
    budget
        The :class:`Budget` (from :meth:`start`).
    """

    def __init__(
        self,
        net: torch.nn.Module,
        validate: Callable[[], float | None],
        *,
        steps: int,
        time_budget: float | None,
        eval_every: int,
        checkpoint_every: int,
        patience: int | None = None,
        metrics: Sequence[str] = (),
        shown: Sequence[str] = (),
        val_name: str = "val_mae",
        finite_only: bool = False,
        log: str | os.PathLike | None = None,
        desc: str = "train",
        progress: str = "auto",
        ddp: Context | None = None,
    ) -> None:
        self.net, self.validate = net, validate
        self.steps, self.time_budget = steps, time_budget
        self.eval_every, self.checkpoint_every = eval_every, checkpoint_every
        self.metrics, self.shown = list(metrics), set(shown)
        self.val_name, self.finite_only = val_name, finite_only
        self.log_path, self.desc, self.progress_mode = log, desc, progress
        self.ddp = ddp
        self.main = ddp is None or ddp.is_main
        self.stopper = EarlyStopping(patience)
        self.best_state: dict[str, Any] | None = None
        self.step = 0
        self.first_val: float | None = None
        self.budget: Budget | None = None
        self.logger: CSVLogger | None = None
        self.progress: Progress | None = None

    @property
    def fields(self) -> list[str]:
        """The columns of the CSV log."""
        return ["step", "seconds", *self.metrics, self.val_name, "best_" + self.val_name]

    @property
    def best(self) -> float | None:
        """The best validation value so far (``None`` before any)."""
        return None if self.stopper.best_step < 0 else self.stopper.best

    def start(self) -> None:
        """Start the clock, the CSV log and the progress display (:meth:`run` does it too)."""
        self.budget = Budget(self.steps, self.time_budget)
        if self.log_path is not None and self.main:
            self.logger = CSVLogger(self.log_path, self.fields, append=self.step > 0)
        mode = self.progress_mode if self.main else "off"
        self.progress = Progress(self.steps, start=self.step, desc=self.desc, mode=mode)

    def _stop_reason(self) -> str | None:
        reason = self.budget.exhausted(self.step)
        return self.ddp.from_main(reason) if self.ddp is not None else reason

    def run(
        self,
        train_step: Callable[[], Sequence[float]],
        save: Callable[[], None] | None = None,
        first_eval: bool = False,
    ) -> str | None:
        """Train until the budget is spent or early stopping; return why it stopped.

        Parameters
        ----------
        train_step
            One training step; returns the values named by ``metrics``.
        save
            Writes a checkpoint of the current step (``None``: no checkpoints).
        first_eval
            Evaluate (and log) the untrained network when starting from step 0.

        Returns
        -------
        str or None
            ``"steps"``, ``"time"`` or ``"early_stopping"`` (``None`` only if the
            budget has neither steps nor time).
        """
        if self.budget is None:
            self.start()
        reason = self._stop_reason()
        if first_eval and self.step == 0 and reason is None:
            self.first_val = self.evaluate()
        self.net.train()
        sums, count = np.zeros(len(self.metrics)), 0
        while reason is None:
            values = train_step()
            self.step += 1
            sums += values
            count += 1
            shown = {k: v for k, v in zip(self.metrics, values) if k in self.shown}
            self.progress.update(self.step, **shown)
            if self.step % self.eval_every == 0:
                self.evaluate(sums / count)
                sums[:], count = 0, 0
                if self.stopper.should_stop:
                    reason = "early_stopping"
            if save is not None and self.step % self.checkpoint_every == 0:
                save()
            reason = reason or self._stop_reason()
        if count:
            self.evaluate(sums / count)
        if save is not None:
            save()
        self.progress.close()
        return reason

    def evaluate(self, means: np.ndarray | None = None) -> float | None:
        """Validate, keep the weights at a new best, log and show a row; return the value.

        ``means`` are the means of ``metrics`` since the last evaluation.
        """
        value = self.validate()
        usable = value is not None and (not self.finite_only or np.isfinite(value))
        if usable and self.stopper.update(value, self.step):
            weights = self.net.state_dict()
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in weights.items()})
        row: dict[str, Any] = {"step": self.step, "seconds": round(self.budget.elapsed, 2)}
        if means is not None:
            row.update(zip(self.metrics, map(float, means)))
        row[self.val_name] = value
        row["best_" + self.val_name] = self.best
        if self.logger is not None:
            self.logger.log(row)
        shown = {k: v for k, v in row.items() if k != "step" and v is not None}
        self.progress.update(self.step, force=True, **shown)
        return value

    def restore_best(self) -> None:
        """Load the best weights (when there were any) and put the network in eval mode."""
        if self.best_state is not None:
            self.net.load_state_dict(self.best_state)
        self.net.eval()

    def summary(self, reason: str | None) -> dict[str, Any]:
        """What ``fit_info`` reports of the run."""
        return {
            "steps": self.step,
            "stopped_by": reason,
            "best_" + self.val_name: self.best,
            "best_step": self.stopper.best_step,
            "train_seconds": round(self.budget.elapsed, 2),
        }
