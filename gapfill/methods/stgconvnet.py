"""Spatial-temporal generative ConvNet (Xie, Zhu & Wu, CVPR 2017), method ``"stgconvnet"``.

An energy-based model ``p(I; w) ∝ exp(f(I; w)) q(I)`` of sequences, with ``f``
a bottom-up 3D ConvNet and ``q`` Gaussian white noise of variance
``sigma^2`` (:mod:`gapfill.models.stgconvnet_energy`). It learns from occluded
data with the paper's recovery algorithm; each iteration:

1. ``recover_steps`` Langevin steps recover the missing pixels of a batch of
   training windows, the observed pixels clamped. The recovered values are
   persistent: they live in a cube the size of the data and each visit of a
   window continues from them;
2. ``synth_steps`` Langevin steps update persistent synthesised chains
   (started from ``q``);
3. ``w`` moves (Adam) by the difference of the mean ``df/dw`` over the
   recovered and the synthesised windows.

Filling is Langevin recovery with the learned model: missing pixels start
from a simple guess (``init``: linear in time, a spatial normalised convolution of
the frame, or the frame mean; by default the one that fills observed pixels hidden
in the data's own gap patterns best, chosen before training), then
``fill_steps`` steps follow and the value is the mean of the last
``fill_average`` iterates. By default the chain length is chosen on held-out
pixels after training, 0 included, so a weak model stays at or near its start
(the choice and the validation MAE of every length are in ``fit_info``). With ``samples > 1``
independent chains run and the error is the spread of their pooled iterates.
:meth:`STGConvNet.synthesize` samples new sequences (dynamic textures).

A share of the observed pixels (``val_share``) is hidden from training; the
fill MAE on them is tracked every ``eval_every`` iterations and the best model
is kept.

Choices that differ from the paper's code, for stability on normalised data
(per-channel unit variance) and short CPU runs: the reference is narrow
(``sigma=0.1``, step ``0.3 sigma``) with ``f`` scaled by ``1 / sigma^2`` (the
network's outputs stay of order one); a penalty on the squared mean response
(``energy_reg``, Du & Mordatch 2019) keeps ``f`` from blowing up, which
otherwise makes the Langevin chains diverge; the learning step uses the
per-position mean of ``f``, the same direction as the paper's difference of
means.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gapfill import masks
from gapfill.methods.base import Coords, FillResult, NetworkMethod
from gapfill.methods.linear import Linear, spatial_fill
from gapfill.training import Run, Trainer, TrainingOptions, start_run
from gapfill.windows import fill_windows

if TYPE_CHECKING:
    from gapfill.cube import Cube

INITS = ("linear", "spatial", "mean")
#: Chain lengths tried when ``fill_steps=None`` (0: the start itself, kept when no chain
#: beats it).
FILL_STEP_GRID = (0, 5, 10, 20, 40, 80)
#: Chain length without validation pixels to choose one (and while training).
DEFAULT_FILL_STEPS = 40
SYNTH_INITS = ("noise", "data")


@dataclass
class STGConvNetOptions(TrainingOptions):
    """Options of the ``stgconvnet`` method (and :class:`~gapfill.training.TrainingOptions`).

    Attributes
    ----------
    widths, kernels, strides
        Filters, ``(t, h, w)`` kernels and sub-sampling of each ConvNet layer.
    activation
        ``"relu"`` (the paper's) or ``"silu"``.
    sigma
        Standard deviation of the Gaussian reference ``q`` (normalised units).
    step_size
        Langevin step ``delta``.
    recover_steps
        Langevin steps on the missing pixels of the training windows per iteration (``k``).
    synth_steps
        Langevin steps on the synthesised chains per iteration (``l``).
    n_chains
        Synthesised chains.
    synth_init
        ``"noise"``: persistent chains started once from ``q`` (the paper);
        ``"data"``: each iteration's chains start from recovered training
        windows (contrastive divergence: learns the density near the data,
        which is what recovery uses, in far fewer iterations).
    energy_reg
        Weight of a penalty on the squared mean top-layer response of the data
        and synthesised windows (Du & Mordatch 2019); 0 is the paper's objective.
    betas
        Adam's betas (its learning rate is ``lr``).
    init
        Start of the missing pixels (of the training's recovered cube and of the
        fills): ``"linear"`` (in time, spatial fill where a pixel has no
        observation), ``"spatial"`` (a normalised convolution of the frame, linear
        in time where the frame has no observation), ``"mean"`` (the frame's mean),
        or ``"auto"``: the one of :data:`INITS` with the lowest MAE on observed
        pixels hidden in the data's own gap patterns at other times.
    fill_steps
        Langevin steps when filling (0: the start alone); ``None`` chooses them from
        :data:`FILL_STEP_GRID` on the validation pixels after training
        (:data:`DEFAULT_FILL_STEPS` without validation pixels).
    fill_average
        Iterates at the end of a fill averaged into the estimate.
    fill_noise
        Noise scale of the fill's Langevin steps (1: Langevin; 0: gradient ascent).
    fill_window
        Window ``(T, H, W)`` of the fill (larger cubes are filled window by window).
    overlap
        Overlap of fill windows.
    val_share
        Share of the observed pixels held out to track the fill error (0: none).

    A training step is one learning iteration; ``batch_size`` training windows
    are recovered per iteration.
    """

    window: tuple[int, int, int] = (12, 32, 32)
    widths: tuple[int, ...] = (32, 32, 32)
    kernels: tuple[tuple[int, int, int], ...] = ((3, 5, 5), (3, 3, 3), (3, 3, 3))
    strides: tuple[tuple[int, int, int], ...] = ((1, 2, 2), (1, 2, 2), (1, 1, 1))
    activation: str = "relu"
    sigma: float = 0.1
    step_size: float = 0.03
    recover_steps: int = 5
    synth_steps: int = 5
    n_chains: int = 4
    synth_init: str = "noise"
    energy_reg: float = 1.0
    betas: tuple[float, float] = (0.5, 0.999)
    steps: int = 2000
    time_budget: float | None = 120.0
    init: str = "auto"
    fill_steps: int | None = None
    fill_average: int = 30
    fill_noise: float = 1.0
    fill_window: tuple[int, int, int] = (64, 128, 128)
    overlap: float = 0.25
    val_share: float = 0.05
    eval_every: int = 50
    checkpoint_every: int = 200

    _method = "stgconvnet"
    cpu_only = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.widths = tuple(int(v) for v in self.widths)
        self.kernels = tuple(tuple(int(k) for k in ks) for ks in self.kernels)  # type: ignore[misc]
        self.strides = tuple(tuple(int(s) for s in ss) for ss in self.strides)  # type: ignore[misc]
        self.betas = tuple(float(v) for v in self.betas)  # type: ignore[assignment]

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad option."""
        super().validate()
        bad = self._bad
        self._check_windows("fill_window")
        from gapfill.models.stgconvnet_energy import STEnergyConfig

        try:
            STEnergyConfig(1, self.widths, self.kernels, self.strides, self.activation)
        except ValueError as err:
            bad("widths", str(err))
        if min(self.widths) < 1:
            bad("widths", "must be positive")
        for name in ("recover_steps", "synth_steps", "n_chains", "fill_average"):
            if int(getattr(self, name)) < 1:
                bad(name, "must be a positive integer")
        for name in ("sigma", "step_size"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                bad(name, "must be > 0")
        if self.fill_steps is not None and int(self.fill_steps) < 0:
            bad("fill_steps", "must be an integer >= 0 or None")
        if not (np.isfinite(self.fill_noise) and self.fill_noise >= 0):
            bad("fill_noise", "must be >= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            bad("betas", "must be two numbers in [0, 1)")
        self._check_choices(synth_init=SYNTH_INITS, init=(*INITS, "auto"))
        if not 0 <= self.overlap < 1:
            bad("overlap", "must be in [0, 1)")
        if not 0 <= self.val_share < 0.5:
            bad("val_share", "must be in [0, 0.5)")


def initial_guess(x: np.ndarray, kind: str = "linear") -> np.ndarray:
    """A finite start for the missing pixels of a ``(C, T, H, W)`` array (observed kept).

    ``"linear"``: linear interpolation in time, a spatial normalised
    convolution where a pixel has no observation at all, then the channel mean
    (0 in normalised units). ``"spatial"``: a spatial normalised convolution of
    each frame, ``"linear"`` where the frame has no observation. ``"mean"``: each
    frame's mean of its observations (the channel mean for empty frames).
    """
    obs = np.isfinite(x)
    if kind == "spatial":
        out = spatial_fill(x, ~obs)
        if not np.isfinite(out).all():  # frames without an observation
            out = np.where(np.isfinite(out), out, initial_guess(x, "linear"))
    elif kind == "linear":
        out = Linear().fill(x, np.random.default_rng(0)).values
        todo = ~np.isfinite(out)
        if todo.any():
            out = spatial_fill(out, todo)
    else:
        c, t = x.shape[:2]
        flat = np.where(obs, x, 0).reshape(c, t, -1)
        n = obs.reshape(c, t, -1).sum(-1)
        mean = flat.sum(-1) / np.maximum(n, 1)
        chan = np.where(obs, x, 0).reshape(c, -1).sum(1) / np.maximum(obs.reshape(c, -1).sum(1), 1)
        mean = np.where(n > 0, mean, chan[:, None])
        out = np.where(obs, x, mean[:, :, None, None])
    return np.where(np.isfinite(out), out, 0.0).astype(np.float32)


class STGConvNet(NetworkMethod):
    """Spatial-temporal generative ConvNet; see the module docstring."""

    name = "stgconvnet"
    stochastic = True
    Options = STGConvNetOptions

    network_key = "energy"

    # -- building ---------------------------------------------------------------------
    def _build(self, channels: int) -> None:
        from gapfill.models.stgconvnet_energy import STEnergy, STEnergyConfig

        o = self.options
        cfg = STEnergyConfig(channels, o.widths, o.kernels, o.strides, o.activation,
                             1.0 / o.sigma**2)
        self._meta["energy"] = dataclasses.asdict(cfg)
        self.net = STEnergy(cfg)

    def _langevin(self, noise: float = 1.0) -> Any:
        from gapfill.models.stgconvnet_energy import Langevin

        return Langevin(self.options.step_size, self.options.sigma, noise)

    # -- fit --------------------------------------------------------------------------
    def fit(self, cube: Cube, rng: np.random.Generator) -> None:
        """Learn ``f`` from the observed pixels of ``cube`` (the recovery algorithm)."""
        import torch

        truth = cube.values()
        run = start_run(self, cube, rng, truth)
        self._meta = {"window": [min(a, b) for a, b in zip(self.options.window, truth.shape[1:])]}
        init_mae = self._choose_init(truth, run.seed)
        torch.manual_seed(run.seed)  # the network's initial weights
        self._build(truth.shape[0])
        self.fit_info.update(init=self._init(), init_mae=init_mae)
        self.fit_info.update(_Trainer(self, run, truth).fit())

    def _init(self) -> str:
        """The start of the missing pixels: the option, or the one ``fit`` chose
        (``"linear"`` for a model without a choice)."""
        o = self.options
        return o.init if o.init != "auto" else str(self._meta.get("init", "linear"))

    @property
    def fills_without_training(self) -> bool:
        """Also when the fill's chain has length 0: the fill is then its start, which the
        network does not touch."""
        return super().fills_without_training or (self.net is not None
                                                   and self._fill_steps() == 0)

    def _fill_steps(self) -> int:
        """Langevin steps of a fill: the option, or the chain length ``fit`` chose
        (:data:`DEFAULT_FILL_STEPS` for a model without a choice)."""
        if self.options.fill_steps is not None:
            return int(self.options.fill_steps)
        chosen = self._meta.get("fill_steps")
        return DEFAULT_FILL_STEPS if chosen is None else int(chosen)

    def _choose_init(self, x: np.ndarray, seed: int) -> dict[str, float] | None:
        """With ``init="auto"``, set ``meta["init"]`` to the start of :data:`INITS` with the
        lowest MAE on observed pixels of ``x`` hidden in the data's own gap patterns at
        other times; returns each start's MAE."""
        hide = masks.own_gap_hides(x, seed) if self.options.init == "auto" else None
        if hide is None:
            return None
        hidden = np.where(hide, np.nan, x)
        scores = {kind: float(np.abs(initial_guess(hidden, kind)[hide] - x[hide]).mean())
                  for kind in INITS}
        self._meta["init"] = min(scores, key=lambda k: scores[k])
        return {k: round(v, 6) for k, v in scores.items()}

    # -- fill -------------------------------------------------------------------------
    def fill(
        self,
        x: np.ndarray,
        rng: np.random.Generator,
        samples: int = 1,
        coords: Coords | None = None,
    ) -> FillResult:
        """Langevin recovery of the NaNs of a normalised ``(C, T, H, W)`` array.

        With ``samples > 1``, that many chains run; ``values`` is the mean of
        their last ``fill_average`` iterates and ``error`` their standard deviation.
        """
        config = self._meta.get("energy", {})
        self._check_fill(x, samples, self.net is not None, config.get("channels"))
        seed = int(rng.integers(2**31 - 1))
        mean, std = self.recover(x, samples, seed)
        values = np.where(np.isfinite(x), x, mean).astype(np.float32)
        error = None
        if samples > 1:
            error = np.where(np.isfinite(x), 0.0, std).astype(np.float32)
        return FillResult(values, error)

    def recover(
        self, x: np.ndarray, samples: int, seed: int, steps: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of the last iterates of ``samples`` recovery chains (``(C, T, H, W)``)."""
        import torch

        o = self.options
        if steps is None:
            steps = self._fill_steps()
        steps = int(steps)
        init = initial_guess(x, self._init())
        if steps == 0:  # the start itself
            return init.astype(np.float32), np.zeros_like(init, dtype=np.float32)
        keep = max(1, min(o.fill_average, steps))
        c = x.shape[0]
        stacked = np.concatenate([init, np.isfinite(x).astype(np.float32)], 0)
        langevin = self._langevin(o.fill_noise)
        gen = torch.Generator().manual_seed(seed)

        def fn(batch: np.ndarray) -> np.ndarray:
            b = torch.from_numpy(np.ascontiguousarray(batch)).repeat_interleave(samples, 0)
            start, free = b[:, :c], b[:, c:] < 0.5
            _, mean, var = langevin.run(self.net, start, steps, free, gen, keep)
            mean = mean.reshape(-1, samples, *mean.shape[1:])
            var = var.reshape(-1, samples, *var.shape[1:])
            pooled = mean.mean(1)
            spread = (var.mean(1) + mean.var(1, unbiased=False)).clamp(min=0).sqrt()
            ok = torch.isfinite(pooled)
            pooled = torch.where(ok, pooled, start[::samples])
            spread = torch.where(torch.isfinite(spread), spread, torch.zeros_like(spread))
            return torch.cat([pooled, spread], 1).numpy()

        self.net.eval()
        with torch.no_grad():
            out = fill_windows(stacked, fn, o.fill_window, overlap=o.overlap, batch_size=1)
        return out[:c], out[c:]

    def synthesize(
        self,
        n: int,
        shape: tuple[int, int, int],
        steps: int = 100,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """Sample ``n`` new sequences of ``(T, H, W)`` = ``shape`` from the model.

        Chains start from the reference distribution ``q`` and run ``steps``
        Langevin steps on every pixel. Values are in the fitted model's
        normalised units (``FittedModel.normaliser.denormalise`` maps them back).

        Returns
        -------
        numpy.ndarray
            ``(n, C, T, H, W)`` float32.
        """
        import torch

        if self.net is None:
            raise RuntimeError("stgconvnet is not fitted: call fit() or load_state_dict()")
        rng = rng if rng is not None else np.random.default_rng()
        gen = torch.Generator().manual_seed(int(rng.integers(2**31 - 1)))
        c = self._meta["energy"]["channels"]
        x = torch.randn((int(n), c, *map(int, shape)), generator=gen) * self.options.sigma
        x, _, _ = self._langevin(1.0).run(self.net, x, int(steps), None, gen, 0)
        return x.numpy().astype(np.float32)

    def _rebuild(self) -> Any:
        from gapfill.models.stgconvnet_energy import STEnergy, STEnergyConfig

        return STEnergy(STEnergyConfig(**self._meta["energy"]))


# ----------------------------------------------------------------------------- training
class _Trainer(Trainer):
    """The learning loop of :class:`STGConvNet` (one call of ``fit``)."""

    metrics = ("f_data", "f_synth")
    shown = ()
    finite_only = True
    first_eval = False

    def __init__(self, method: STGConvNet, run: Run, truth: np.ndarray) -> None:
        import torch

        super().__init__(method, run)
        self.m, o = method, self.options
        torch.manual_seed(self.seed)
        self.gen = torch.Generator().manual_seed(self.seed)
        self.window = tuple(method._meta["window"])
        observed = np.isfinite(truth)
        # validation pixels: a random share of the observed ones, hidden from training
        val = np.zeros_like(observed)
        if o.val_share > 0 and observed.sum() >= 20:
            val = observed & (self.rng.random(observed.shape) < o.val_share)
            if (observed & ~val).sum() == 0:
                val[:] = False
        self.truth, self.val = truth, val
        self.x = np.where(val, np.nan, truth).astype(np.float32)
        self.obs = np.isfinite(self.x)
        self.rec = initial_guess(self.x, method._init())  # the persistent recovered cube
        c = truth.shape[0]
        self.chains = torch.randn((o.n_chains, c, *self.window), generator=self.gen) * o.sigma
        self.opt = torch.optim.Adam(method.net.parameters(), lr=o.lr, betas=o.betas)
        self.val_windows = self._val_windows()

    def _val_windows(self) -> list[tuple[int, int, int]]:
        """Up to 2 fixed windows holding the most validation pixels."""
        if not self.val.any():
            return []
        cands = [self._offset() for _ in range(16)]
        counts = [self.val[(slice(None), *self._slices(s))].sum() for s in cands]
        order = np.argsort(counts)[::-1]
        return [cands[i] for i in order[:2] if counts[i] > 0]

    def _offset(self) -> tuple[int, int, int]:
        return tuple(int(self.rng.integers(0, n - s + 1))
                     for n, s in zip(self.x.shape[1:], self.window))  # type: ignore[return-value]

    def _slices(self, start: tuple[int, int, int]) -> tuple[slice, slice, slice]:
        sl = tuple(slice(a, a + s) for a, s in zip(start, self.window))
        return sl  # type: ignore[return-value]

    # -- one iteration ----------------------------------------------------------------
    def train_step(self) -> tuple[float, float]:
        """One iteration: recovery, synthesis, learning; the mean ``f`` of data and synthesis."""
        import torch

        o, energy = self.options, self.m.net
        starts = [self._offset() for _ in range(o.batch_size)]
        sl = [(slice(None), *self._slices(s)) for s in starts]
        rec = torch.from_numpy(np.stack([self.rec[s] for s in sl]))
        free = torch.from_numpy(np.stack([~self.obs[s] for s in sl]))
        langevin = self.m._langevin(1.0)
        energy.eval()
        if free.any():  # (1) recovery of the missing pixels, observed clamped
            rec, _, _ = langevin.run(energy, rec, o.recover_steps, free, self.gen)
            rec = torch.where(torch.isfinite(rec), rec, 0.0)
            for s, r in zip(sl, rec.numpy()):
                self.rec[s] = r
        # (2) synthesis: persistent chains, or short chains from the recovered windows
        if o.synth_init == "data":
            pick = torch.randint(0, rec.shape[0], (o.n_chains,), generator=self.gen)
            self.chains = rec[pick]
        chains, _, _ = langevin.run(energy, self.chains, o.synth_steps, None, self.gen)
        self.chains = torch.where(torch.isfinite(chains), chains, 0.0)
        # (3) learning: E_data[df/dw] - E_synth[df/dw]
        energy.train()
        f_data, r_data = energy.energies(rec)
        f_synth, r_synth = energy.energies(self.chains)
        f_data, f_synth = f_data.mean(), f_synth.mean()
        # f_synth - f_data, per position (the same gradient direction; keeps energy_reg's scale)
        loss = r_synth.mean() - r_data.mean()
        if o.energy_reg > 0:  # keeps the responses, hence df/dI, of bounded size
            loss = loss + o.energy_reg * (r_data.square().mean() + r_synth.square().mean())
        self.optimise(loss, self.opt)
        return float(f_data.detach()), float(f_synth.detach())

    @property
    def option_steps(self) -> int:
        """The option's chain length, or :data:`DEFAULT_FILL_STEPS` (training's chains)."""
        o = self.options
        return DEFAULT_FILL_STEPS if o.fill_steps is None else int(o.fill_steps)

    def validate(self, steps: int | None = None) -> float | None:
        """Fill MAE on the validation pixels (chains of ``steps``; default:
        :attr:`option_steps`, not a former choice)."""
        if not self.val_windows:
            return None
        if steps is None:
            steps = self.option_steps
        errs, n = 0.0, 0
        for s0 in self.val_windows:
            sl = (slice(None), *self._slices(s0))
            mean, _ = self.m.recover(self.x[sl], 1, self.seed + 7, steps=steps)
            v = self.val[sl]
            errs += float(np.abs(mean[v] - self.truth[sl][v]).sum())
            n += int(v.sum())
        return errs / max(n, 1)

    def choose_fill_steps(self) -> dict[str, float] | None:
        """Set the fill's chain length: the option, or the best of :data:`FILL_STEP_GRID`."""
        o, meta = self.options, self.m._meta
        if o.fill_steps is not None or not self.val_windows:
            meta["fill_steps"] = self.option_steps
            return None
        scores = {str(k): self.validate(k) for k in FILL_STEP_GRID}
        meta["fill_steps"] = int(min(scores, key=lambda k: scores[k]))
        return scores

    def init_val_mae(self) -> float | None:
        if not self.val_windows:
            return None
        errs, n = 0.0, 0
        for s0 in self.val_windows:
            sl = (slice(None), *self._slices(s0))
            v = self.val[sl]
            init = initial_guess(self.x[sl], self.m._init())
            errs += float(np.abs(init[v] - self.truth[sl][v]).sum())
            n += int(v.sum())
        return errs / max(n, 1)

    # -- checkpoints and the run -----------------------------------------------------------
    def state(self) -> dict[str, Any]:
        import torch

        return {"rec": torch.from_numpy(self.rec), "chains": self.chains,
                "gen": self.gen.get_state()}

    def load_state(self, ckpt: Mapping[str, Any]) -> None:
        if tuple(ckpt["rec"].shape) != self.rec.shape:
            raise ValueError("the checkpoint was written for a cube of another shape")
        self.rec = ckpt["rec"].numpy().copy()
        self.chains = ckpt["chains"]
        self.gen.set_state(ckpt["gen"])

    def before_loop(self) -> dict[str, Any]:
        return {"init_val_mae": self.init_val_mae(),
                "untrained_val_mae": self.validate() if self.loop.step == 0 else None}

    def after_loop(self) -> dict[str, Any]:
        chain = self.choose_fill_steps()
        return {"fill_steps": self.m._meta["fill_steps"], "fill_steps_val_mae": chain}
