"""Self-supervised training shared by the deep video-inpainting methods (``combcn``, ``tgfnet``).

These methods are trained without gap-free data: an occlusion process
(:mod:`gapfill.masks`; by default the data's own gap patterns at other times)
hides extra *observed* pixels of random training windows, the network fills
the window from what is left, and the losses are taken on the extra-hidden
pixels ("holes") and on all observed pixels ("whole frame"). Some observed
pixels are held out once for validation (the process's gaps on a block of
consecutive frames); their MAE drives early stopping and the best weights are
kept, so a network that does not beat its starting point (the guide, below)
falls back to it.

:class:`SelfSupervisedMethod` holds the training step and validation (run by
:class:`gapfill.training.Trainer`, which brings checkpoints with resume, CSV log,
progress, step and time budgets, early stopping; Adam with a linear warm-up;
random flips as augmentation) and the windowed fill (:func:`gapfill.windows.fill_windows`).
A subclass supplies the network (:meth:`~SelfSupervisedMethod._build`), its
loss on a batch (:meth:`~SelfSupervisedMethod._loss`) and its window fill
(:meth:`~SelfSupervisedMethod._predict`).

Addition for geophysical cubes: a *guide*, a classical first guess of the
whole field given to the network as an extra input, which the network
corrects. ``guide="linear"``: linear interpolation in time with a Gaussian
spatial fill at the series' ends (:mod:`gapfill.methods.linear`).
``guide="eof"``: a DINEOF reconstruction (:mod:`gapfill.methods.eof`), the
basin-scale context a local network cannot see. Guides are computed on the
whole cube, as at fill time; in training on copies of the cube with the
extra-hidden pixels removed (a pool of ``guide_pool``, linear ones refreshed
as training goes), so the network never learns to copy a guide that saw the
answer. ``guide="none"`` is the plain method of the paper.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gapfill import masks
from gapfill.guides import eof_guide, linear_guide
from gapfill.methods.base import (
    Coords,
    FillResult,
    NetworkMethod,
    as_numpy,
)
from gapfill.training import (
    Run,
    Trainer,
    TrainingOptions,
    pick_device,
    random_flips,
    start_run,
)
from gapfill.windows import fill_windows

if TYPE_CHECKING:
    import torch

    from gapfill.cube import Cube

GUIDES = ("linear", "eof", "none")


@dataclass
class SelfSupervisedOptions(TrainingOptions):
    """Options shared by the self-supervised deep methods (and :class:`TrainingOptions`).

    The training ``window`` is also the fill window.

    Attributes
    ----------
    guide
        First guess given to the network, which predicts a correction to it:
        ``"linear"`` (time interpolation), ``"eof"`` (DINEOF reconstruction of
        the whole cube) or ``"none"``.
    guide_pool
        Guides precomputed for training, each on the cube without its own
        draw of extra-hidden pixels.
    guide_refresh
        With ``guide="linear"``: steps between replacing one guide of the pool
        by a fresh draw (0: never).
    guide_modes
        With ``guide="eof"``: EOF modes; ``None`` lets DINEOF's
        cross-validation choose them at fit time.
    occlusion
        Occlusion process hiding extra observed pixels in training (and the
        validation pixels): ``"empirical"`` (the data's own gap patterns at
        other times; the network learns to fill gaps like the ones it will
        fill) or a :func:`gapfill.masks.make` name (``"cloud"``,
        ``"raindrops"``, ``"moving_bar"``, ``"remove_pixels"``). A process
        unlike the real gaps teaches corrections that hurt at fill time.
    coverage
        Coverage of that process; ``None`` takes the data's missing share
        (clipped to [0.1, 0.6]).
    occlusion_options
        Extra keyword arguments of the process.
    augment
        Random flips of the training windows along x, y and time (the same
        field seen mirrored: less memorising of the one cube it trains on).
    hole_weight
        Weight of the L1 loss on the extra-hidden observed pixels.
    valid_weight
        Weight of the L1 loss on all observed pixels (the "whole frame" term).
    warmup
        Steps of linear learning-rate warm-up from 0 (the heads start at zero,
        so the first fills equal the guide; a warm-up keeps Adam's first,
        sign-like steps from adding noise to it).
    val_share
        Rough share of the observed pixels held out for validation: the
        occlusion process's gaps on a block of consecutive frames (0 turns it
        off; then the last weights are kept).
    overlap
        Overlap of neighbouring windows when filling.
    fill_batch_size
        Windows per forward pass when filling.
    """

    guide: str = "linear"
    guide_pool: int = 4
    guide_refresh: int = 4
    guide_modes: int | None = None
    occlusion: str = "empirical"
    coverage: float | None = None
    occlusion_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    augment: bool = True
    hole_weight: float = 6.0
    valid_weight: float = 1.0
    lr: float = 3e-4
    warmup: int = 100
    steps: int = 3000
    val_share: float = 0.05
    early_stopping_patience: int | None = 8
    overlap: float = 0.5
    fill_batch_size: int = 4

    _method = "self-supervised"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.occlusion_options = dict(self.occlusion_options or {})

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad option."""
        super().validate()
        bad = self._bad
        for name in ("fill_batch_size", "guide_pool"):
            if int(getattr(self, name)) < 1:
                bad(name, "must be a positive integer")
        if int(self.guide_refresh) < 0:
            bad("guide_refresh", "must be >= 0")
        if self.guide_modes is not None and int(self.guide_modes) < 1:
            bad("guide_modes", "must be >= 1 or None")
        self._check_choices(guide=GUIDES, occlusion=masks.PROCESSES)
        self._check_occlusion_options(self.occlusion)
        if self.coverage is not None and not 0 < self.coverage < 1:
            bad("coverage", "must be in (0, 1) or None")
        for name in ("hole_weight", "valid_weight"):
            if not getattr(self, name) >= 0:
                bad(name, "must be >= 0")
        if self.hole_weight + self.valid_weight <= 0:
            bad("hole_weight", "hole_weight + valid_weight must be > 0")
        if int(self.warmup) < 0:
            bad("warmup", "must be >= 0")
        if not 0 <= self.val_share < 0.5:
            bad("val_share", "must be in [0, 0.5)")
        if not 0 <= self.overlap < 1:
            bad("overlap", "must be in [0, 1)")


# ----------------------------------------------------------------------------- data
@dataclass
class TrainingData:
    """What training draws windows from (normalised numpy arrays)."""

    x: np.ndarray  # (C, T, H, W) training input: validation pixels hidden
    truth: np.ndarray  # (C, T, H, W) every observed value (validation targets)
    val: np.ndarray  # (C, T, H, W) validation pixels
    process: Any  # the occlusion process of the extra hiding
    window: tuple[int, int, int]
    guide_kind: str
    guide: np.ndarray  # (C, T, H, W) guide of x (for validation fills)
    pool_hides: list[np.ndarray]  # (T, H, W) extra-hidden pixels ...
    pool_guides: list[np.ndarray]  # ... and the guide computed without them
    guide_modes: int | None
    guide_refresh: int
    augment: bool = False
    calls: int = 0

    @classmethod
    def build(
        cls, truth: np.ndarray, options: SelfSupervisedOptions, rng: np.random.Generator
    ) -> TrainingData:
        """Draw the validation pixels of the cube's normalised values ``truth``
        (``(C, T, H, W)``), build the occlusion process and the guides."""
        c, t, h, w = truth.shape
        observed = np.isfinite(truth)
        missing = ~observed.all(0)
        never = ~observed.any((0, 1))
        coverage = options.coverage or masks.missing_share(missing, never, 0.1, 0.6)
        process = masks.for_data(options.occlusion, missing, never, coverage,
                                 int(rng.integers(2**31 - 1)), **options.occlusion_options)
        val = np.zeros(truth.shape, dtype=bool)
        if options.val_share > 0:
            # the process's own gap patterns on a block of consecutive frames
            kw = {"start": 0} if process.name == "empirical" else {}
            hide = np.array(process.sample((t, h, w), rng, **kw), dtype=bool)
            n = int(np.clip(round(t * options.val_share / max(process.coverage, 1e-3)), 1, t))
            first = int(rng.integers(0, t - n + 1))
            hide[:first] = False
            hide[first + n :] = False
            val = np.broadcast_to(hide, truth.shape) & observed
            if val.sum() >= observed.sum():  # never hide every observation
                val[:] = False
        x = np.where(val, np.nan, truth).astype(np.float32)
        window = tuple(min(a, b) for a, b in zip(options.window, (t, h, w)))
        kind = options.guide
        data = cls(x, truth, val, process, window, kind, np.zeros_like(x), [], [], None,
                   options.guide_refresh, bool(options.augment))  # type: ignore[arg-type]
        if kind == "eof":
            data.guide, data.guide_modes = eof_guide(x, options.guide_modes)
        elif kind == "linear":
            data.guide = linear_guide(x)
        if kind != "none":
            for _ in range(options.guide_pool):
                data.pool_hides.append(np.zeros((t, h, w), dtype=bool))
                data.pool_guides.append(data.guide)
                data.refresh_pool(len(data.pool_hides) - 1, rng)
        return data

    def refresh_pool(self, i: int, rng: np.random.Generator) -> None:
        """Replace guide ``i`` of the pool by one without a fresh draw of hidden pixels."""
        _, t, h, w = self.x.shape
        kw = {"start": 0} if self.process.name == "empirical" else {}
        hide = self.process.sample((t, h, w), rng, **kw)
        xh = np.where(hide, np.nan, self.x)
        if self.guide_kind == "eof":
            guide = eof_guide(xh, self.guide_modes)[0]
        else:
            guide = linear_guide(xh)
        self.pool_hides[i] = hide
        self.pool_guides[i] = guide

    def batch(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` random windows and what the losses need.

        Returns ``y`` (observed values), ``y_in`` (extra pixels hidden),
        ``guide`` (the first guess of ``y_in``; zeros with ``guide="none"``),
        ``t0`` (each window's first frame), ``flip_t`` (whether a window was
        reversed in time by the augmentation) and ``frames`` (the cube's length).
        """
        c, t, h, w = self.x.shape
        wt, wh, ww = self.window
        self.calls += 1
        every = self.guide_refresh
        if self.guide_kind == "linear" and every and self.calls % every == 0:
            self.refresh_pool(int(rng.integers(len(self.pool_hides))), rng)
        ys, ins, guides, starts, flips = [], [], [], [], []
        for _ in range(n):
            for _try in range(100):
                t0, y0, x0 = (int(rng.integers(0, a - b + 1))
                              for a, b in zip((t, h, w), self.window))
                sl = (slice(t0, t0 + wt), slice(y0, y0 + wh), slice(x0, x0 + ww))
                y = self.x[(slice(None), *sl)]
                if np.isfinite(y).mean() >= 0.05:
                    break
            if self.pool_hides:
                p = int(rng.integers(len(self.pool_hides)))
                hide = self.pool_hides[p][sl]
                guide = self.pool_guides[p][(slice(None), *sl)]
            else:
                kw = {"start": t0} if self.process.name == "empirical" else {}
                hide = self.process.sample((wt, wh, ww), rng, **kw)
                guide = np.zeros_like(y)
            y_in = np.where(hide, np.nan, y).astype(np.float32)
            flip_t = False
            if self.augment:
                axes = random_flips(rng, (1, 2, 3))
                y, y_in, guide = (np.flip(a, axes) for a in (y, y_in, guide))
                flip_t = 1 in axes
            ys.append(y)
            ins.append(y_in)
            guides.append(guide)
            starts.append(t0)
            flips.append(flip_t)
        return {
            "y": np.stack(ys),
            "y_in": np.stack(ins),
            "guide": np.stack(guides),
            "t0": np.asarray(starts, dtype=np.int64),
            "flip_t": np.asarray(flips, dtype=bool),
            "frames": np.asarray(t, dtype=np.int64),
        }


# ----------------------------------------------------------------------------- the base method
class SelfSupervisedMethod(NetworkMethod):
    """Base class of the self-supervised deep methods; see the module docstring.

    Subclasses set ``name`` and ``Options`` and implement :meth:`_build`,
    :meth:`_loss` and :meth:`_predict`; they may override :meth:`_fill_size`
    and :meth:`_setup_training`.
    """

    # -- hooks ------------------------------------------------------------------------
    def _build(self, channels: int) -> Any:
        """Build the network for ``channels`` data channels; record its config in ``_meta``."""
        raise NotImplementedError

    def _rebuild(self) -> Any:
        """Rebuild the network from ``_meta`` (loading a state dict)."""
        raise NotImplementedError

    def _loss(
        self, batch: dict[str, np.ndarray], rng: np.random.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of the network on a batch of windows (see :meth:`TrainingData.batch`)."""
        raise NotImplementedError

    def _predict(self, batch: np.ndarray, guide: np.ndarray) -> np.ndarray:
        """Fill a batch of gappy windows ``(n, C, t, h, w)`` (NaN = missing) given their guides."""
        raise NotImplementedError

    def _fill_size(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The fill window for a ``(T, H, W)`` array (default: the training window)."""
        return tuple(self._meta["window"])  # type: ignore[return-value]

    def _setup_training(self) -> None:
        """Anything training needs besides the network (e.g. a loss network)."""

    def _teardown_training(self) -> None:
        """Drop what :meth:`_setup_training` made."""

    # -- helpers ----------------------------------------------------------------------
    def _device(self) -> torch.device:
        return pick_device(self.options.device)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        import torch

        return torch.from_numpy(np.ascontiguousarray(a)).to(self._device())

    # -- fit --------------------------------------------------------------------------
    def fit(self, cube: Cube, rng: np.random.Generator) -> None:
        """Train on the observed pixels of ``cube`` (self-supervised)."""
        import torch

        truth = cube.values()
        run = start_run(self, cube, rng, truth)
        data = TrainingData.build(truth, self.options, np.random.default_rng([run.seed, 0]))
        self._meta = {"window": list(data.window), "channels": int(data.x.shape[0]),
                      "guide_modes": data.guide_modes}
        torch.manual_seed(run.seed)
        self.net = self._build(data.x.shape[0]).to(self._device())
        self._setup_training()
        try:
            info = _Trainer(self, run, data).fit()
        finally:
            self._teardown_training()
        info["parameters"] = int(sum(p.numel() for p in self.net.parameters()))
        if data.guide_modes is not None:
            info["guide_modes"] = data.guide_modes
        self.fit_info.update(info)

    # -- fill -------------------------------------------------------------------------
    def fill(
        self,
        x: np.ndarray,
        rng: np.random.Generator,
        samples: int = 1,
        coords: Coords | None = None,
    ) -> FillResult:
        """Fill the NaNs of a normalised ``(C, T, H, W)`` array (deterministic; no error)."""
        self._check_fill(x, samples, self.net is not None, self._meta.get("channels"))
        out = self._fill_array(x)
        values = np.where(np.isfinite(x), x, out).astype(np.float32)
        return FillResult(values, None)

    def _guide(self, x: np.ndarray) -> np.ndarray:
        """The guide of a whole ``(C, T, H, W)`` array to fill."""
        kind = self.options.guide
        if kind == "eof":
            return eof_guide(x, self._meta.get("guide_modes"))[0]
        if kind == "linear":
            return linear_guide(x)
        return np.zeros_like(x, dtype=np.float32)

    def _fill_array(self, x: np.ndarray, guide: np.ndarray | None = None) -> np.ndarray:
        """Blend the network's fills of overlapping windows of ``x`` (``(C, T, H, W)``).

        ``guide`` is computed from ``x`` when not given.
        """
        import torch

        net = self.net
        was_training = net.training
        net.eval()
        c = x.shape[0]
        if guide is None:
            guide = self._guide(x)
        stacked = np.concatenate([x, guide], 0).astype(np.float32)

        def fn(batch: np.ndarray) -> np.ndarray:
            return self._predict(batch[:, :c], batch[:, c:])

        try:
            with torch.no_grad():
                out = fill_windows(
                    stacked, fn, size=self._fill_size(x.shape[1:]), overlap=self.options.overlap,
                    batch_size=self.options.fill_batch_size,
                )
        finally:
            net.train(was_training)
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)

    def _place(self, net: Any) -> Any:
        return net.to(self._device())


# ----------------------------------------------------------------------------- training
class _Trainer(Trainer):
    """Adam (learning rate warmed up) on the method's loss; validation MAE; the guide pool."""

    def __init__(self, method: SelfSupervisedMethod, run: Run, data: TrainingData) -> None:
        import torch

        super().__init__(method, run)
        self.data = data
        self.opt = torch.optim.Adam(method.net.parameters(), lr=self.options.lr)

    def state(self) -> dict[str, Any]:
        """The training guides (refreshed as training goes), so a resumed run continues exactly."""
        import torch

        d = self.data
        if not d.pool_hides:
            return {"pool": {}}
        return {"pool": {
            "calls": d.calls,
            "hides": torch.from_numpy(np.stack(d.pool_hides)),
            "guides": torch.from_numpy(np.stack(d.pool_guides)),
        }}

    def load_state(self, ckpt: Mapping[str, Any]) -> None:
        pool = ckpt.get("pool") or {}
        if pool and self.data.pool_hides:
            self.data.calls = int(pool["calls"])
            self.data.pool_hides = list(as_numpy(pool["hides"]).astype(bool))
            self.data.pool_guides = list(as_numpy(pool["guides"]).astype(np.float32))

    def train_step(self) -> tuple[float]:
        """One Adam step (learning rate warmed up linearly) on a random batch; its loss."""
        o = self.options
        batch = self.data.batch(o.batch_size, self.rng)
        scale = min(1.0, (self.loop.step + 1) / o.warmup) if o.warmup else 1.0
        for group in self.opt.param_groups:
            group["lr"] = o.lr * scale
        with self.autocast():
            loss, _ = self.method._loss(batch, self.rng)
        self.optimise(loss, self.opt)
        return (float(loss.detach()),)

    def validate(self) -> float | None:
        """MAE of the fill on the validation pixels (the network left in training mode)."""
        d = self.data
        if not d.val.any():
            return None
        out = self.method._fill_array(d.x, d.guide)
        self.method.net.train()
        return float(np.abs(out[d.val] - d.truth[d.val]).mean())
