"""One training run for every trained method: options, loop, checkpoints, resume.

A trained method's options extend :class:`TrainingOptions` (steps, time budget,
evaluation and checkpoint cadence, resume, seed, progress, learning rate, batch
size, device, threads, mixed precision, weight averaging), and its training is a
subclass of :class:`Trainer` that writes only what is its own::

    class MyTrainer(Trainer):
        metrics = ("loss",)                        # what train_step returns (logged)

        def __init__(self, method, run, data):
            super().__init__(method, run)          # seed, rng, device, DDP context
            self.data = data
            self.opt = torch.optim.Adam(method.net.parameters(), lr=self.options.lr)

        # networks() -> {"net": method.net} and optimizers() -> {"opt": self.opt} by
        # default; override them to train several networks (the first one listed is
        # kept at its best and averaged)

        def train_step(self):                      # one step; the metrics' values
            loss = ...
            self.optimise(loss, self.opt)          # backward + step (AMP-aware)
            return (float(loss),)

        def validate(self):                        # the value to minimise, or None
            return ...

    # in the method's fit:
    run = start_run(self, cube, rng)               # seed, checkpoints, checked resume
    data = build(cube, run.seed)
    torch.manual_seed(run.seed); self.net = ...
    self.fit_info.update(MyTrainer(self, run, data).fit())

:meth:`Trainer.fit` then runs the loop (:class:`~gapfill.trainloop.TrainLoop`): steps until the
step or time budget is spent or early stopping, an evaluation every
``eval_every`` steps (CSV row in ``checkpoint_dir/log.csv``, progress display,
a copy of the best weights), a checkpoint every ``checkpoint_every`` steps, the
best weights restored at the end. It owns the checkpoint's contents (networks,
optimisers, AMP scalers, RNGs, early-stopping state, best and averaged weights,
plus what :meth:`Trainer.state` adds) and resuming from it, the averaged
weights (``ema``), AMP on CUDA (``amp``), torch threads (``threads``) and
data-parallel runs under ``torchrun`` (only rank 0 logs and writes checkpoints,
seeds offset by rank).

Every checkpoint stores the run's identity (:func:`gapfill.checkpoints.run_identity`:
method, options that change what is learned, a fingerprint of the training
data). ``resume=True`` refuses a checkpoint of another run with a message that
says how to start over; ``resume=False`` starts over, deleting the directory's
old checkpoints (which would otherwise be taken for this run's).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from gapfill.checkpoints import (
    CheckpointManager,
    check_identity,
    data_fingerprint,
    load_checkpoint,
    load_weights,
    rng_state,
    run_identity,
    save_checkpoint,
    set_rng_state,
)
from gapfill.ddp import context
from gapfill.methods.base import Options
from gapfill.trainloop import Budget, CSVLogger, EarlyStopping, Progress, TrainLoop

if TYPE_CHECKING:
    import torch

    from gapfill.cube import Cube
    from gapfill.ddp import Context
    from gapfill.methods.base import Method

__all__ = [
    "Budget", "CSVLogger", "CheckpointManager", "EarlyStopping", "Progress", "Run",
    "TrainLoop", "Trainer", "TrainingOptions", "load_checkpoint", "load_weights",
    "amp_enabled", "pick_device", "rng_state", "save_checkpoint", "set_rng_state", "start_run",
    "torch_threads",
]

PROGRESS_MODES = ("auto", "bar", "log", "off")


# -- options ---------------------------------------------------------------------------
@dataclass
class TrainingOptions(Options):
    """Options every trained method shares; a method's ``Options`` extends this dataclass.

    A method changes a default by declaring the field again with its own value.

    Attributes
    ----------
    window
        Training window ``(T, H, W)`` (clipped to the cube).
    steps
        Step budget.
    time_budget
        Seconds of training in this call (``None``: steps only). Runs stopped by
        time are not bit-reproducible.
    eval_every
        Steps between validations (and CSV rows).
    early_stopping_patience
        Evaluations without improvement before stopping; ``None`` never stops.
    min_gain
        Share by which a validation must beat the first one (the untrained
        network's) for its weights to be kept; below it the fit keeps the start.
    checkpoint_dir
        Directory for ``ckpt_<step>.pt`` and ``log.csv``; ``None`` writes none.
    checkpoint_every
        Steps between checkpoints.
    resume
        Continue from the newest checkpoint in ``checkpoint_dir`` (refused when it
        belongs to a run on other data or options); ``False`` starts over.
    seed
        Seed of the fit; ``None`` draws one from the ``rng`` given to ``fit``.
    progress
        ``"auto"`` (a bar in a terminal, log lines otherwise), ``"bar"``, ``"log"``
        or ``"off"``.
    lr
        Learning rate.
    batch_size
        Windows per step.
    device
        Torch device; ``None`` picks CUDA when available (this process's GPU under
        ``torchrun``).
    threads
        (From :class:`~gapfill.methods.base.Options`.) Also the CPU threads torch uses
        during ``fit`` (restored after); ``None`` or 0: unchanged.
    amp
        Mixed precision in the training steps: on CUDA (bfloat16 where supported, else
        float16 with loss scaling), and in bfloat16 on a CPU that computes it natively
        (:func:`cpu_has_bf16`; about 1.5 times the steps per second of float32 for
        ``gan``; validation and fills stay in float32 there); ignored on other CPUs.
    ema
        Decay of a moving average of the weights, which validation uses and the
        fit keeps; ``None``: the weights themselves.
    """

    window: tuple[int, int, int] = (8, 64, 64)
    steps: int = 1000
    time_budget: float | None = 300.0
    eval_every: int = 100
    early_stopping_patience: int | None = None
    min_gain: float = 0.0
    checkpoint_dir: str | None = None
    checkpoint_every: int = 500
    resume: bool = False
    seed: int | None = None
    progress: str = "auto"
    lr: float = 1e-3
    batch_size: int = 4
    device: str | None = None
    amp: bool = False
    ema: float | None = None

    #: Options that steer a run without changing what it learns: a checkpoint written
    #: with other values of these can be resumed.
    run_control: ClassVar[tuple[str, ...]] = (
        "steps", "time_budget", "eval_every", "early_stopping_patience", "min_gain",
        "checkpoint_dir",
        "checkpoint_every", "resume", "seed", "progress", "device", "threads",
    )
    #: The name in error messages.
    _method: ClassVar[str] = "training"
    #: The method trains and fills on the CPU only (``device`` must be ``None`` or ``"cpu"``).
    cpu_only: ClassVar[bool] = False

    def __post_init__(self) -> None:
        self._as_windows(*(n for n in ("window", "fill_window") if hasattr(self, n)))

    def _as_windows(self, *names: str) -> None:
        """Make the ``(T, H, W)`` options ``names`` tuples of ints (JSON gives lists)."""
        for name in names:
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))

    def _bad(self, name: str, why: str) -> None:
        raise ValueError(f"{self._method} option {name}={getattr(self, name)!r}: {why}")

    def _check_choices(self, **choices: Any) -> None:
        """Refuse an option whose value is not among its ``choices`` (name=allowed values)."""
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                self._bad(name, f"must be one of {sorted(allowed)}")

    def _check_occlusion_options(self, *processes: str) -> None:
        """Refuse ``occlusion_options`` that one of the occlusion ``processes`` the
        method may build does not take, before any work."""
        from gapfill.masks import process_options

        for name in processes:
            takes = process_options(name)
            wrong = sorted(set(self.occlusion_options) - set(takes))
            if wrong:
                why = f"{wrong} not taken by the {name!r} occlusion process (it takes {takes})"
                if self.occlusion != name:
                    why += (f", one of those occlusion={self.occlusion!r} may use (the data's"
                            " own gaps when it has enough of them, else clouds): set occlusion"
                            " to the process these options are for, or drop them")
                self._bad("occlusion_options", why)

    def _check_windows(self, *names: str) -> None:
        for name in names:
            v = getattr(self, name)
            if len(v) != 3 or min(v) < 1:
                self._bad(name, "must be three positive integers (T, H, W)")

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad training option."""
        bad = self._bad
        self._check_windows("window")
        for name in ("steps", "eval_every", "checkpoint_every", "batch_size"):
            if int(getattr(self, name)) < 1:
                bad(name, "must be a positive integer")
        if self.time_budget is not None and not self.time_budget > 0:
            bad("time_budget", "must be > 0 or None")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            bad("early_stopping_patience", "must be >= 1 or None")
        if not 0 <= self.min_gain < 1:
            bad("min_gain", "must be in [0, 1)")
        if not (np.isfinite(self.lr) and self.lr > 0):
            bad("lr", "must be > 0")
        if self.cpu_only and self.device not in (None, "cpu"):
            bad("device", "this method runs on the CPU only")
        if self.ema is not None and not 0 < self.ema < 1:
            bad("ema", "must be in (0, 1) or None")
        if self.resume and not self.checkpoint_dir:
            bad("resume", "needs checkpoint_dir")
        self._check_choices(progress=PROGRESS_MODES)


# -- data augmentation -----------------------------------------------------------------
def random_flips(rng: np.random.Generator, axes: Sequence[int]) -> tuple[int, ...]:
    """The axes, among ``axes``, to reverse one training window along (each with odds 1/2).

    Flipped copies of the windows are the trained methods' data augmentation: the
    network sees the one cube it learns from in more versions than it can learn by heart.
    """
    return tuple(a for a in axes if rng.random() < 0.5)


# -- device and threads ----------------------------------------------------------------
def pick_device(name: str | None = None) -> torch.device:
    """The torch device ``name``; ``None``: CUDA when available (this process's GPU under
    ``torchrun``), else the CPU."""
    import torch

    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        ctx = context()
        return torch.device("cuda", ctx.local_rank) if ctx.enabled else torch.device("cuda")
    return torch.device("cpu")


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX tiles or AVX-512 BF16), where a
    training step in bfloat16 is faster than in float32; elsewhere it is emulated and slower."""
    import torch

    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def amp_enabled(device: torch.device, amp: bool) -> bool:
    """Whether the training steps run in mixed precision: ``amp``, on a CUDA device or on a
    CPU that computes bfloat16 natively (:func:`cpu_has_bf16`)."""
    return bool(amp) and (device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()))


def amp_precision(device: torch.device) -> str:
    """The floating-point type of mixed precision on ``device``: bfloat16 on a CPU and on a
    GPU that supports it, else float16."""
    import torch

    if device.type == "cpu" or torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float16"


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch CPU threads (``None`` or 0: unchanged), restoring the setting after."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- a run: seed, checkpoints, identity -------------------------------------------------
@dataclass
class Run:
    """The start of one training run (see :func:`start_run`).

    Attributes
    ----------
    seed
        The run's seed (the checkpoint's when resuming).
    manager
        The run's checkpoints (``None`` without ``checkpoint_dir``).
    checkpoint
        The checkpoint to resume from, already checked to belong to this run.
    identity
        What the run learns from (stored in every checkpoint).
    started
        ``time.monotonic()`` when the run started (``fit_info["seconds"]`` counts from it).
    """

    seed: int
    manager: CheckpointManager | None
    checkpoint: dict[str, Any] | None
    identity: dict[str, Any]
    started: float = dataclasses.field(default_factory=time.monotonic)


def start_run(
    method: Method, cube: Cube, rng: np.random.Generator, values: np.ndarray | None = None
) -> Run:
    """Open the checkpoints of ``method``'s training on ``cube`` and decide how it starts.

    With ``resume`` and a checkpoint in ``checkpoint_dir``, the run continues it
    (its seed included) after checking that it was written by this method, on the
    same data, with the same options (:attr:`TrainingOptions.run_control` aside).
    Without ``resume``, old checkpoints in the directory are deleted (with a
    warning): this run replaces them. ``values`` is the normalised training array
    when the caller has it (it spares loading the cube twice for the fingerprint).

    Raises
    ------
    ValueError
        If the checkpoint to resume was written by another method or another run.
    """
    o = method.options
    control = getattr(o, "run_control", TrainingOptions.run_control)
    identity = run_identity(method.name, method.options_dict(), control,
                            data_fingerprint(cube, values))
    directory = getattr(o, "checkpoint_dir", None)
    manager = CheckpointManager(directory) if directory else None
    ckpt = None
    if manager is not None and o.resume:
        ckpt = manager.load_latest()
    elif manager is not None and _is_main():
        removed = manager.clear()
        if removed:
            warnings.warn(f"{method.name}: starting over (resume=False): deleted {removed} old "
                          f"checkpoint(s) in {directory!r}", stacklevel=2)
    if ckpt is not None:
        fmt = checkpoint_format(method)
        if ckpt.get("format") != fmt:
            raise ValueError(
                f"the checkpoint in {directory!r} was not written by {method.name}")
        check_identity(ckpt, identity, repr(directory))
        return Run(int(ckpt["seed"]), manager, ckpt, identity)
    seed = o.seed if o.seed is not None else int(rng.integers(2**31 - 1))
    return Run(int(seed), manager, None, identity)


def _is_main() -> bool:
    return context().is_main


def checkpoint_format(method: Method) -> str:
    """The ``format`` tag of ``method``'s checkpoints."""
    return f"gapfill-{method.name}-checkpoint"


# -- the trainer -----------------------------------------------------------------------
class Trainer:
    """One training run of a method; subclasses write the step and the validation.

    See the module docstring for how a method uses it. A subclass implements
    :meth:`train_step` and :meth:`validate` and sets ``self.opt``; it overrides
    :meth:`networks` and :meth:`optimizers` when it trains several networks (the
    default is the method's one network, ``method.net``, and ``self.opt``). It may
    set the class attributes below and override :meth:`state` /
    :meth:`load_state` (what else its checkpoints hold), :meth:`before_loop` /
    :meth:`after_loop` (facts for ``fit_info``).

    Parameters
    ----------
    method
        The method being trained (``method.options`` extends :class:`TrainingOptions`).
    run
        From :func:`start_run`.

    Attributes
    ----------
    options, seed, manager
        The method's options, the run's seed and checkpoints.
    ddp
        The data-parallel context (:func:`gapfill.ddp.context`).
    rng
        The run's numpy generator (offset by rank under ``torchrun``); saved in
        checkpoints.
    device
        The torch device (:func:`pick_device`).
    loop
        The :class:`~gapfill.trainloop.TrainLoop` (step, early stopping, best weights).
    averaged
        The moving average of the first network's weights (``ema``), or ``None``.
    """

    #: Names of the values :meth:`train_step` returns (CSV log columns).
    metrics: ClassVar[tuple[str, ...]] = ("loss",)
    #: Those of ``metrics`` shown after every step.
    shown: ClassVar[tuple[str, ...]] = ("loss",)
    #: Log column of the validation value.
    val_name: ClassVar[str] = "val_mae"
    #: Only finite validation values can be a new best.
    finite_only: ClassVar[bool] = False
    #: Validate (and log) the untrained network at step 0.
    first_eval: ClassVar[bool] = True
    #: Checkpoint keys of the best and of the averaged weights.
    best_key: ClassVar[str] = "best"
    averaged_key: ClassVar[str] = "averaged"

    def __init__(self, method: Method, run: Run) -> None:
        self.method, self.options, self.run_info = method, method.options, run
        self.seed, self.manager = run.seed, run.manager
        self.ddp: Context = context()
        # every process draws its own windows and masks under torchrun
        key = [self.seed, 1, self.ddp.rank] if self.ddp.enabled else [self.seed, 1]
        self.rng = np.random.default_rng(key)
        self.device = pick_device(getattr(self.options, "device", None))
        self.loop: TrainLoop | None = None
        self.averaged: torch.nn.Module | None = None
        self._scalers: dict[str, Any] = {}
        self.skipped_steps = 0

    # -- what a method writes ----------------------------------------------------------
    def networks(self) -> dict[str, torch.nn.Module]:
        """Checkpoint key -> network; the first is the one kept at its best (and averaged).

        Default: the method's one network (:class:`~gapfill.methods.base.NetworkMethod`).
        """
        return {self.method.network_key: self.method.net}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Checkpoint key -> optimiser (default: ``{"opt": self.opt}``)."""
        return {"opt": self.opt}

    def train_step(self) -> Sequence[float]:
        """One training step; the values named by :attr:`metrics`."""
        raise NotImplementedError

    def validate(self) -> float | None:
        """The validation value to minimise (``None`` when there is none)."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """What else a checkpoint holds (tensors, plain values)."""
        return {}

    def load_state(self, ckpt: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` saved."""

    def before_loop(self) -> dict[str, Any]:
        """Called before the first step (the clock running); facts for ``fit_info``."""
        return {}

    def after_loop(self) -> dict[str, Any]:
        """Called with the best weights restored; facts for ``fit_info``."""
        return {}

    # -- helpers for train_step -----------------------------------------------------------
    @property
    def amp(self) -> bool:
        """Whether mixed precision is on: ``amp``, on a CUDA device or on a CPU with
        native bfloat16 (:func:`cpu_has_bf16`)."""
        return amp_enabled(self.device, getattr(self.options, "amp", False))

    @property
    def precision(self) -> str:
        """Floating-point type of the training steps' forward passes (``fit_info["precision"]``)."""
        return amp_precision(self.device) if self.amp else "float32"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast for the forward passes of a step (a no-op without :attr:`amp`)."""
        import torch

        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=getattr(torch, self.precision))

    def scaler(self, key: str) -> Any:
        """The gradient scaler of optimiser ``key`` (float16 AMP only; else a pass-through)."""
        import torch

        if key not in self._scalers:
            fp16 = self.amp and self.device.type == "cuda" and not torch.cuda.is_bf16_supported()
            self._scalers[key] = torch.amp.GradScaler("cuda", enabled=fp16)
        return self._scalers[key]

    def optimise(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Zero the gradients, back-propagate ``loss`` and step ``optimizer`` (AMP-aware).

        In bfloat16 a step whose gradients are not finite is skipped (counted in
        ``fit_info["skipped_steps"]``), as float16's gradient scaler skips its own: on a
        CPU with native bfloat16, a few steps of a tiny adversarial run gave NaN
        gradients that float32 did not.
        """
        import torch

        key = next(k for k, v in self.optimizers().items() if v is optimizer)
        scaler = self.scaler(key)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if self.precision == "bfloat16":
            grads = [p.grad.detach() for group in optimizer.param_groups
                     for p in group["params"] if p.grad is not None]
            norms = [torch.linalg.vector_norm(g, dtype=torch.float32) for g in grads]
            if norms and not bool(torch.isfinite(torch.stack(norms)).all()):
                optimizer.zero_grad(set_to_none=True)
                self.skipped_steps += 1
                return
        scaler.step(optimizer)
        scaler.update()

    # -- the run ---------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Restore the checkpoint when resuming, train, keep the best weights; ``fit_info``."""
        with torch_threads(getattr(self.options, "threads", None)):
            self._make_loop()
            if self.run_info.checkpoint is not None:
                self.restore(self.run_info.checkpoint)
            info = self._run()
        info["seconds"] = round(time.monotonic() - self.run_info.started, 2)
        info["precision"] = self.precision
        if self.skipped_steps:
            info["skipped_steps"] = self.skipped_steps
        return info

    def _make_loop(self) -> None:
        o = self.options
        net = next(iter(self.networks().values()))
        if getattr(o, "ema", None):
            self.averaged = copy.deepcopy(net).requires_grad_(False)
        # only rank 0 writes the log and shows progress; every rank takes part in the rest
        self.loop = TrainLoop(
            self.averaged if self.averaged is not None else net, self._validate,
            steps=o.steps, time_budget=o.time_budget, eval_every=o.eval_every,
            checkpoint_every=o.checkpoint_every,
            patience=getattr(o, "early_stopping_patience", None),
            min_gain=getattr(o, "min_gain", 0.0),
            metrics=self.metrics, shown=self.shown, val_name=self.val_name,
            finite_only=self.finite_only,
            log=self.manager.directory / "log.csv" if self.manager is not None else None,
            desc=self.method.name, progress=o.progress,
            ddp=self.ddp if self.ddp.enabled else None,
        )

    def _run(self) -> dict[str, Any]:
        loop = self.loop
        loop.start()
        info = self.before_loop()
        save = self.save if self.manager is not None else None
        reason = loop.run(self._train_step, save, first_eval=self.first_eval)
        loop.restore_best()
        net = next(iter(self.networks().values()))
        if self.averaged is not None:  # the fitted weights are the (best) averaged ones
            net.load_state_dict(self.averaged.state_dict())
        net.eval()
        info.update(loop.summary(reason))
        meta = getattr(self.method, "_meta", None)
        if meta is not None:  # 0: the untrained weights kept (``fills_without_training``)
            meta["best_step"] = loop.stopper.best_step
        if loop.first_val is not None:
            info["initial_" + self.val_name] = loop.first_val
        info.update(self.after_loop())
        return info

    def _train_step(self) -> Sequence[float]:
        values = self.train_step()
        if self.averaged is not None:
            self._update_average()
        return values

    def _update_average(self) -> None:
        """Move the averaged weights towards the current ones (decay ``ema``)."""
        import torch

        net = next(iter(self.networks().values()))
        with torch.no_grad():
            for avg, new in zip(self.averaged.state_dict().values(), net.state_dict().values()):
                if avg.is_floating_point():
                    avg.lerp_(new, 1.0 - self.options.ema)
                else:
                    avg.copy_(new)

    def _validate(self) -> float | None:
        """:meth:`validate`, with the averaged weights in place when there are any."""
        if self.averaged is None:
            return self.validate()
        net = next(iter(self.networks().values()))
        current = copy.deepcopy(net.state_dict())
        net.load_state_dict(self.averaged.state_dict())
        try:
            return self.validate()
        finally:
            net.load_state_dict(current)

    # -- checkpoints -----------------------------------------------------------------------
    def payload(self) -> dict[str, Any]:
        """The checkpoint of the current step (a collective call under ``torchrun``)."""
        loop = self.loop
        out: dict[str, Any] = {
            "format": checkpoint_format(self.method),
            "step": loop.step,
            "seed": self.seed,
            "options": json.dumps(self.method.options_dict()),
            "identity": json.dumps(self.run_info.identity),
        }
        meta = getattr(self.method, "_meta", None)
        if meta is not None:
            out["meta"] = json.dumps(meta)
        out.update({k: net.state_dict() for k, net in self.networks().items()})
        for k, opt in self.optimizers().items():
            out[k] = opt.state_dict()
            out[_scaler_key(k)] = self.scaler(k).state_dict()
        out["rng"] = rng_state(self.rng)
        # every rank's sampling state
        out["rng_ranks"] = self.ddp.gather(rng_state(self.rng)) if self.ddp.enabled else []
        out["stopper"] = loop.stopper.state_dict()
        out[self.best_key] = loop.best_state if loop.best_state is not None else {}
        out[self.averaged_key] = self.averaged.state_dict() if self.averaged is not None else {}
        out.update(self.state())
        return out

    def save(self) -> None:
        """Write the checkpoint of the current step (rank 0 writes; every rank takes part)."""
        payload = self.payload()
        if self.ddp.is_main:
            self.manager.save(self.loop.step, payload)

    def restore(self, ckpt: Mapping[str, Any]) -> None:
        """Continue from ``ckpt`` (checked by :func:`start_run`)."""
        load_weights(ckpt, self.networks())
        for k, opt in self.optimizers().items():
            opt.load_state_dict(ckpt[k])
            if ckpt.get(_scaler_key(k)):
                self.scaler(k).load_state_dict(ckpt[_scaler_key(k)])
        ranks = ckpt.get("rng_ranks") or []
        if self.ddp.enabled and len(ranks) == self.ddp.world_size:
            set_rng_state(self.rng, ranks[self.ddp.rank])
        elif self.ddp.enabled:  # written by a run with another number of processes
            self.rng = np.random.default_rng([self.seed, 1, self.ddp.rank, int(ckpt["step"])])
        else:
            set_rng_state(self.rng, ckpt["rng"])
        loop = self.loop
        loop.stopper.load_state_dict(ckpt["stopper"])
        loop.best_state = dict(ckpt[self.best_key]) or None
        if self.averaged is not None:
            net = next(iter(self.networks().values()))
            self.averaged.load_state_dict(ckpt.get(self.averaged_key) or net.state_dict())
        loop.step = int(ckpt["step"])
        self.load_state(ckpt)


def _scaler_key(optimizer_key: str) -> str:
    """``opt`` -> ``scaler``, ``opt_g`` -> ``scaler_g``."""
    return "scaler" + optimizer_key.removeprefix("opt")
