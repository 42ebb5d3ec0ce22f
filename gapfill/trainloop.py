"""The step loop of a training run, and what it watches: log, progress, stopping rules.

- :class:`TrainLoop` calls a training step until the budget is spent or early
  stopping, evaluates every few steps (CSV row, progress, a copy of the best
  weights), calls a checkpoint writer, and puts the best weights back at the end.
  :class:`gapfill.training.Trainer` drives it for every trained method.
- :class:`CSVLogger` appends one row per evaluation to ``log.csv``.
- :class:`Progress` shows a tqdm bar in a terminal and periodic log lines
  otherwise (batch jobs get no bar spam).
- :class:`Budget` stops on a step count or a wall-clock budget;
  :class:`EarlyStopping` on a validation metric that stops improving.
"""

from __future__ import annotations

import copy
import csv
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

if TYPE_CHECKING:
    import torch

    from gapfill.ddp import Context

__all__ = ["Budget", "CSVLogger", "EarlyStopping", "Progress", "TrainLoop"]


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
    min_gain
        Relative improvement on the first value needed to count
        (``first * (1 - min_gain)``): a start that later values must clearly beat.
    """

    def __init__(self, patience: int | None, min_delta: float = 0.0,
                 min_gain: float = 0.0) -> None:
        self.patience, self.min_delta, self.min_gain = patience, min_delta, min_gain
        self.best = float("inf")
        self.first = float("inf")
        self.best_step = -1
        self.bad = 0

    def improves(self, value: float) -> bool:
        """Whether ``value`` would be a new best."""
        return self.best_step < 0 or (value < self.best * (1 - self.min_delta)
                                      and value < self.first * (1 - self.min_gain))

    def update(self, value: float, step: int) -> bool:
        """Record ``value`` at ``step``; return whether it is a new best."""
        if self.best_step < 0:
            self.first = float(value)
        if self.improves(value):
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
        return {"best": self.best, "best_step": self.best_step, "bad": self.bad,
                "first": self.first}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.best = float(state["best"])
        self.best_step = int(state["best_step"])
        self.first = float(state.get("first", self.best))
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
    min_gain
        :class:`EarlyStopping` ``min_gain``: the share by which a later validation
        must beat the first (the untrained network's) for its weights to be kept.
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
        Under ``torchrun`` (:mod:`gapfill.ddp`): rank 0's budget decision
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
        min_gain: float = 0.0,
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
        self.stopper = EarlyStopping(patience, min_gain=min_gain)
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
