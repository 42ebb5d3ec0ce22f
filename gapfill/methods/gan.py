"""Unsupervised GAN inpainting (Yin, Pajot, de Bézenac & Gallinari), method ``"gan"``.

Training needs no gap-free data. A generator ``G`` fills an observed sequence
``y`` (mask ``m``) and learns from the observations alone: a self-supervised
L1 term on extra observed pixels hidden from it (as DINCAE does) and,
optionally, the paper's adversarial terms: the fill is re-occluded with a
fresh mask ``m_hat`` from an occlusion process (:mod:`gapfill.masks`), and two
discriminators, one per frame (2D PatchGAN) and one per sequence (3D
PatchGAN, with frame differences when the masks move), learn to tell real
observed sequences ``(y, m)`` from re-occluded fills ``(G(y) m_hat, m_hat)``.

The generator corrects a *guide* (:mod:`gapfill.guides`): a classical fill of
the whole cube (DINEOF, linear time interpolation, DINEOF plus
interpolated residuals and a linear blend, or, on small latitude/longitude
grids, the conditional expectation with a localised covariance of a short
RegEM fit), chosen per cube on validation
pixels hidden in the shapes of the cube's own gaps
(:mod:`gapfill.methods.gan_data`). The guide gives the basin-scale context a
windowed network cannot see; guides used in training are computed without
the pixels hidden for the L1 term and without the validation pixels, so the
network never learns to copy a guide that saw the answer. The untrained
generator returns its guide and the generator kept is the best on
validation, so the fit is never worse than its guide there
(:mod:`gapfill.methods.gan_train`). Through ``da.gapfill.fit``, the share of
the generator's correction that the fill applies is chosen after training on
the error model's validation pixels (:meth:`GAN.tune`), whose input lacks
only those pixels and the hold-out, nearly as dense as the fill's.

Defaults are the best configuration measured (``docs/benchmarks.md``): the L1
term alone (``adv_weight=0``), hides at the data's own gap share, lr 3e-4 and
a moving average of the generator's weights. Options are in :class:`GANOptions`.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from gapfill.diagnostics import MAX_VALIDATION_DRAWS
from gapfill.errors import window_frames
from gapfill.guides import GUIDES, REGEM_STEPS, Guide, RegemStart, choose_guide
from gapfill.methods.base import (
    Chunking,
    Coords,
    FillResult,
    Method,
    load_network,
    network_state,
)
from gapfill.methods.gan_data import (
    MIN_GAP_SHARE,
    TrainingData,
    distance_weights,
    validation_pixels,
)
from gapfill.methods.gan_train import GANTrainer, choose_gain
from gapfill.training import (
    TrainingOptions,
    amp_enabled,
    amp_precision,
    pick_device,
    start_run,
    torch_threads,
)
from gapfill.windows import count_windows

#: The shares of the generator's correction of its guide :meth:`GAN.tune` scores.
TUNED_GAINS = (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0)

#: The distances by which ``tune`` weights its validation pixels like the real gaps
#: (:func:`~gapfill.methods.gan_data.distance_weights`; empty: unweighted).
TUNE_DISTANCES: tuple[str, ...] = ("space",)

#: A guide the generator was not trained on replaces training's only if, on pixels hidden
#: in the shapes of the cube's own gaps (:data:`SWITCH_DRAWS` draws of
#: :func:`~gapfill.methods.gan_data.validation_pixels`, each about :data:`SWITCH_SHARE` of
#: the observations), its best MAE is on average at most this share above training's.
#: These pixels lean towards training's guide (they are drawn like its training hides),
#: hence a tolerance (docs/benchmarks.md: "fit's choices weighted by distance").
SWITCH_TOLERANCE = 0.125
SWITCH_DRAWS = 2
SWITCH_SHARE = 0.1

#: Generator fills and guides that :meth:`GAN.tune` runs besides choosing a guide again
#: (training leaves their time, :meth:`GAN._after_fit_seconds`): a fill with each of two
#: guides (building training's), and on each draw of the switch check a fill and a guide
#: with each of two guides.
TUNE_FILLS = 2 + 2 * SWITCH_DRAWS
TUNE_GUIDES = 1 + 2 * SWITCH_DRAWS

#: The time reserved after training is the estimate times this: room for what the
#: estimate does not count (the error model's own fits) and for a machine that slows
#: down after training.
AFTER_FIT_MARGIN = 1.25

#: A time budget that leaves training less than this share of it (after the set-up and
#: the reserve for what ``fit`` does after training) gets a warning.
SHORT_TRAINING = 0.1

if TYPE_CHECKING:
    import torch

    from gapfill.cube import Cube
    from gapfill.masks import OcclusionProcess


def _recipe(guide: Guide) -> dict[str, Any]:
    """A guide's recipe without the scores it was chosen on (to compare two guides)."""
    return {k: v for k, v in guide.to_dict().items() if k != "scores"}


LOSSES = ("hinge", "log", "lsgan")
SUPERVISION = ("unsupervised", "paired", "unpaired")
FLIPS = ("none", "time", "all")
NOISE = ("dropout", "channel", "none")
#: The generator's default width where the training steps run in mixed precision (CUDA,
#: or bfloat16 on a CPU that computes it natively), and where they run in float32.
WIDTH_MIXED, WIDTH_FLOAT32 = 16, 8
#: Share of ``time_budget`` after which no more guides are added to the pool.
GUIDE_POOL_SHARE = 0.25


@dataclass
class GANOptions(TrainingOptions):
    """Options of the ``gan`` method.

    Attributes
    ----------
    window
        Training and filling window ``(T, H, W)``, clipped to the cube.
    width
        Generator channels at full resolution (doubled at each of ``n_down`` halvings).
        ``None``: 16 where the training steps run in mixed precision (CUDA, or bfloat16
        on a CPU that computes it natively), else 8: on a CPU with AVX2 only a step of
        width 16 costs about 2.8 times a step of width 8, and fewer steps fit the budget.
        ``fit`` sets it to the width it trains, so a checkpoint resumes only at that width.
    n_down
        Spatial halvings in the generator.
    n_res_blocks
        Residual blocks at the generator's bottleneck.
    attention
        Frame self-attention (SAGAN) in the bottleneck.
    factorised
        (2+1)D factorised convolutions in the residual blocks (cheaper on CPU).
    d_width, d_layers
        Width and stride-2 layers of both discriminators.
    coord_channels
        Add the y and x coordinates as input channels.
    time_channels
        Add sin/cos of the time of year as input channels (datetime time axes only).
    guide
        The first guess the generator corrects (:mod:`gapfill.guides`):
        ``"auto"`` chooses among ``"eof"``, ``"linear"``, ``"eof_interp"`` and, on a
        latitude/longitude grid of at most 4000 ever-observed pixels where one such guide
        is estimated to cost at most 1/40 of ``time_budget`` (of its default when
        ``None``; with 9, 6 or 3 E-steps from the DINEOF fill, the most that fit; else
        1 E-step from an EM fit made first, where that fit and one such guide cost at
        most 1/4 and 1/20 of it),
        ``"regem"`` (and their parameters) by the MAE on the validation pixels; one of
        those, or ``"harmonic"``, fixes the kind (``"regem"`` whatever it costs);
        ``"none"`` is the plain method of the paper.
    guide_modes
        EOF modes of the guide; ``None`` lets DINEOF's cross-validation choose them.
    guide_base
        Also give the generator the guide's smooth base (the EOF reconstruction of an
        ``eof_interp`` or ``regem`` guide), and the observations' departure from it: the
        guide itself passes through the observations, so it hides that signal. The
        guides kept for training take twice the memory.
    guide_pool
        Guides precomputed with different extra-hidden pixels for the L1 term
        (fewer when building them takes a quarter of ``time_budget``).
    guide_refresh
        Steps between redraws of the pool: the oldest guide is replaced by one
        without a fresh hide, so the hides keep changing as the generator trains
        (with a time budget, the redraws take at most a fifth of the training
        time). ``0``: the pool stays as built, which did better in fits of two
        minutes on the Pacific anomaly (``docs/benchmarks.md``).
    occlusion
        Occlusion process of the pixels hidden for the L1 term and of the
        re-occluded fills: a :func:`gapfill.masks.make` name (``"cloud"``,
        ``"raindrops"``, ``"moving_bar"``, ``"remove_pixels"``), ``"empirical"``
        (the data's own gap patterns at other times) or ``"auto"``: empirical
        when the data has enough gaps, else cloud.
    coverage
        Coverage of that process; ``None`` takes the data's missing fraction
        over the pixels observed at least once.
    occlusion_options
        Extra keyword arguments of the process (e.g. ``{"length_scale": 4}`` with
        ``occlusion="cloud"``); with ``"auto"`` they must suit both processes it may
        use, so set ``occlusion`` to give a process's own options.
    loss
        ``"hinge"``, ``"log"`` (the paper's objective, non-saturating) or ``"lsgan"``.
    adv_weight
        Weight of the adversarial terms in the generator loss.
    recon_weight
        Weight of the self-supervised L1 loss on extra-hidden observed pixels
        (0 turns it off). In ``"paired"`` mode, the weight of the L1 to the clean target.
    recon_coverage
        Coverage of the process drawing the extra hiding; ``None`` uses ``coverage``.
    recon_share
        ``None``: each extra hiding is the process's whole pattern. A share: it takes
        about this share of the observed pixels, the pattern in random runs of half
        a window of frames (fewer hidden pixels per step, but guides computed
        without them about as good as the guide of the whole data).
    lr, betas
        Adam settings of all three networks.
    ema
        Decay of an exponential moving average of the generator's weights
        (Polyak averaging, updated after every generator step); validation,
        early stopping and the fitted model then use the averaged weights,
        which move less from one step to the next than the raw ones. ``None``:
        the raw weights.
    d_steps
        Discriminator steps per generator step.
    batch_size
        Sequences per step.
    flips
        ``"time"``: reverse each training window in time with probability 1/2;
        ``"all"``: also in y and in x; ``"none"``. More versions of every window,
        so the generator cannot learn the values under the few hides by heart.
    steps
        Generator steps (the step budget).
    time_budget
        Seconds of the whole fit, guide set-up included, and of what
        ``da.gapfill.fit`` does after it (the guide and share chosen again, the error
        model's fill): training stops early enough to leave their estimated time
        (``fit_info["reserved_seconds"]``); a budget that leaves training less than
        :data:`SHORT_TRAINING` of it warns. ``None``: steps only. Runs stopped by
        time are not bit-reproducible; set ``time_budget=None`` for that.
    supervision
        ``"unsupervised"``, ``"paired"`` (``fit(..., clean=)`` gives the matching
        gap-free cube: the discriminators see clean sequences, plus an L1 to it)
        or ``"unpaired"`` (clean sequences from other windows as the real ones);
        the clean cube is hidden at the validation pixels, as the input is.
    val_share
        Share of the observed pixels held out for validation (0 turns it off),
        in the shapes of the data's own gaps when it has enough of them
        (:func:`gapfill.methods.gan_data.validation_pattern`).
    fit_blocks
        For a dask-backed cube too large to fit in memory (the streaming fit,
        :mod:`gapfill.streaming`): train on this many sub-cubes of one ``window``
        in time and two in y and x, read from the cube tile by tile; the cube is
        never loaded.
    eval_every
        Steps between validation MAEs (and CSV log rows).
    early_stopping_patience
        Evaluations without improvement before stopping; ``None`` never stops.
    min_gain
        Share by which the trained generator must beat its guide (the untrained
        generator) on the validation pixels to be kept; below it the fitted model
        fills with the guide. The default, 1%, is above the validation's noise (on
        A1B a 0.6% validation gain came with a 0.7% loss in the real gaps). ``fit`` applies
        the same share to the correction it keeps (:meth:`GAN.tune`).
    checkpoint_dir
        Directory for checkpoints and ``log.csv``; ``None`` writes none.
    checkpoint_every
        Steps between checkpoints.
    resume
        Continue from the newest checkpoint in ``checkpoint_dir`` when there is one.
    noise
        Source of randomness for ``samples > 1``: ``"dropout"`` (kept on at
        inference), ``"channel"`` (a Gaussian noise input channel) or ``"none"``.
    dropout
        Dropout probability in the generator's bottleneck and decoder.
    time_halo
        ``None`` (default): a dask-backed cube is filled as one block, exactly as
        in memory (the guide's EOFs span the whole time axis), which needs the
        cube in memory. A number: fill it time chunk by time chunk with this many
        frames of halo on each side (at least ``window[0]``), each chunk's guide
        from the chunk and its halo: memory bounded by a chunk, at the price of a
        fill that depends slightly on the chunking.
    overlap
        Overlap of neighbouring windows when filling.
    fill_batch_size
        Windows per forward pass when filling.
    device
        ``"cuda"``, ``"cpu"``, ...; ``None`` picks CUDA when available.
    threads
        CPU threads torch uses during ``fit`` and ``fill`` (restored after);
        ``None`` keeps torch's setting. On a shared machine 1 avoids thread
        stalls (tiny convolutions ran ~30x slower with 2 threads on 2 busy cores).
    amp
        Mixed precision: on CUDA (training and fill), and bfloat16 training steps on a
        CPU that computes bfloat16 natively (:func:`gapfill.training.cpu_has_bf16`:
        AMX or AVX-512 BF16, about 1.5 times the steps per second); ignored on
        other CPUs.
    seed
        Seed of the whole fit; ``None`` draws one from the ``rng`` given to ``fit``.
    progress
        ``"auto"`` (bar on a terminal, log lines otherwise), ``"bar"``, ``"log"`` or ``"off"``.
    """

    window: tuple[int, int, int] = (16, 32, 32)
    width: int | None = None
    n_down: int = 2
    n_res_blocks: int = 2
    attention: bool = True
    factorised: bool = False
    d_width: int = 32
    d_layers: int = 3
    coord_channels: bool = False
    time_channels: bool = True
    guide: str = "auto"
    guide_modes: int | None = None
    guide_base: bool = True
    guide_pool: int = 8
    guide_refresh: int = 20
    fit_blocks: int = 16
    occlusion: str = "auto"
    coverage: float | None = None
    occlusion_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    loss: str = "hinge"
    adv_weight: float = 0.0
    recon_weight: float = 10.0
    recon_coverage: float | None = None
    recon_share: float | None = None
    lr: float = 3e-4
    betas: tuple[float, float] = (0.0, 0.999)
    ema: float | None = 0.99
    d_steps: int = 2
    batch_size: int = 4
    flips: str = "time"
    steps: int = 5000
    time_budget: float | None = 570.0
    supervision: str = "unsupervised"
    val_share: float = 0.05
    eval_every: int = 100
    early_stopping_patience: int | None = 24
    min_gain: float = 0.01
    checkpoint_dir: str | None = None
    checkpoint_every: int = 500
    resume: bool = False
    noise: str = "dropout"
    dropout: float = 0.1
    overlap: float = 0.5
    time_halo: int | None = None
    fill_batch_size: int = 8
    device: str | None = None
    threads: int | None = None
    amp: bool = True
    seed: int | None = None
    progress: str = "auto"

    _method: ClassVar[str] = "gan"

    def __post_init__(self) -> None:
        # Options may come back from JSON, where tuples are lists.
        super().__post_init__()
        self.betas = tuple(float(v) for v in self.betas)  # type: ignore[assignment]
        self.occlusion_options = dict(self.occlusion_options or {})

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad option."""

        super().validate()
        bad = self._bad
        for name in ("width", "d_width", "d_layers", "d_steps", "fill_batch_size", "guide_pool",
                     "fit_blocks"):
            if name == "width" and self.width is None:
                continue
            if int(getattr(self, name)) < 1:
                bad(name, "must be a positive integer")
        for name in ("n_down", "n_res_blocks", "guide_refresh"):
            if int(getattr(self, name)) < 0:
                bad(name, "must be >= 0")
        if self.guide not in GUIDES:
            bad("guide", f"must be one of {GUIDES}")
        if self.guide_modes is not None and self.guide_modes < 1:
            bad("guide_modes", "must be >= 1 or None")
        from gapfill.masks import PROCESSES

        if self.occlusion not in PROCESSES and self.occlusion != "auto":
            bad("occlusion", f"must be 'auto' or one of {sorted(PROCESSES)}")
        self._check_occlusion_options(
            *(("empirical", "cloud") if self.occlusion == "auto" else (self.occlusion,))
        )
        for name in ("coverage", "recon_coverage"):
            v = getattr(self, name)
            if v is not None and not 0 < v < 1:
                bad(name, "must be in (0, 1) or None")
        if self.recon_share is not None and not 0 < self.recon_share <= 1:
            bad("recon_share", "must be in (0, 1] or None")
        if self.loss not in LOSSES:
            bad("loss", f"must be one of {LOSSES}")
        if self.supervision not in SUPERVISION:
            bad("supervision", f"must be one of {SUPERVISION}")
        if self.noise not in NOISE:
            bad("noise", f"must be one of {NOISE}")
        if not 0 <= self.dropout < 1:
            bad("dropout", "must be in [0, 1)")
        if not 0 <= self.overlap < 1:
            bad("overlap", "must be in [0, 1)")
        if self.time_halo is not None and self.time_halo < 0:
            bad("time_halo", "must be >= 0 or None")
        if self.flips not in FLIPS:
            bad("flips", f"must be one of {FLIPS}")
        if not 0 <= self.val_share < 0.5:
            bad("val_share", "must be in [0, 0.5)")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            bad("betas", "must be two numbers in [0, 1)")
        if self.adv_weight < 0 or self.recon_weight < 0:
            bad("recon_weight" if self.recon_weight < 0 else "adv_weight", "must be >= 0")


class GAN(Method):
    """Unsupervised spatiotemporal GAN inpainting (Yin et al.); see the module docstring."""

    name = "gan"
    Options = GANOptions
    distributed = True
    stochastic = True

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.generator: Any = None
        self._meta: dict[str, Any] = {}
        #: The converged EM fit a ``"regem"`` guide starts from (``None``: the DINEOF fill).
        self._guide_start: RegemStart | None = None

    # -- setup helpers --------------------------------------------------------------
    def _process(
        self, missing: np.ndarray, never: np.ndarray, coverage: float | None, seed: int,
        streaming: bool = False,
    ) -> OcclusionProcess:
        """The occlusion process; ``"auto"`` is ``"empirical"`` when the data has enough
        gaps (and is in memory), else ``"cloud"``."""
        from gapfill import masks

        o = self.options
        name = o.occlusion
        if name == "auto":
            enough = missing.shape[0] > 1 and missing[:, ~never].mean() >= MIN_GAP_SHARE
            name = "empirical" if enough and not streaming and (~never).any() else "cloud"
        if name != "empirical" and coverage is None:  # the empirical process keeps None
            coverage = masks.missing_share(missing, never, 0.02, 0.9)
        return masks.for_data(name, missing, never, coverage, seed, **o.occlusion_options)

    def _extras(self, coords: Coords | None, shape: tuple[int, int, int]) -> np.ndarray:
        """Conditioning channels ``(E, T, H, W)`` (time of year, coordinates)."""
        t, h, w = shape
        meta = self._meta
        chans: list[np.ndarray] = []
        if meta["use_time"]:
            if coords is None or coords.time_of_year is None:
                raise ValueError(
                    "this gan model uses time-of-year channels: pass coords with a "
                    "time_of_year (datetime time axis)"
                )
            ang = 2 * np.pi * np.asarray(coords.time_of_year, dtype=np.float64)
            for f in (np.sin(ang), np.cos(ang)):
                chans.append(np.broadcast_to(f[:, None, None], shape))
        if meta["use_coords"]:
            if coords is None:
                raise ValueError("this gan model uses coordinate channels: pass coords")
            ym, ys, xm, xs = meta["coord_stats"]
            yy = (np.asarray(coords.y, dtype=np.float64) - ym) / ys
            xx = (np.asarray(coords.x, dtype=np.float64) - xm) / xs
            chans.append(np.broadcast_to(yy[None, :, None], shape))
            chans.append(np.broadcast_to(xx[None, None, :], shape))
        if not chans:
            return np.zeros((0, t, h, w), dtype=np.float32)
        return np.stack(chans).astype(np.float32)

    def _build(self, channels: int, extra: int, residual_scale: float = 1.0,
               base_scale: float = 1.0) -> None:
        from gapfill.models import Generator, GeneratorConfig

        o = self.options
        cfg = GeneratorConfig(
            channels=channels,
            extra_channels=extra + (1 if o.noise == "channel" else 0),
            guide=o.guide != "none",
            width=o.width,
            n_down=o.n_down,
            n_res_blocks=o.n_res_blocks,
            attention=o.attention,
            dropout=o.dropout if o.noise == "dropout" else 0.0,
            factorised=o.factorised,
            time_distances=True,
            residual_scale=float(residual_scale) if o.guide != "none" else 1.0,
            guide_base=o.guide_base and o.guide != "none",
            base_scale=float(base_scale),
        )
        self._meta["generator"] = dataclasses.asdict(cfg)
        self.generator = Generator(cfg)

    def chunking(self) -> Chunking:
        """One block (exact), or time chunks with a halo when ``time_halo`` is set."""
        if self.options.time_halo is None:
            return Chunking()
        window_t = int(self._meta.get("window", self.options.window)[0])
        return Chunking(whole=("y", "x"), halo={"time": max(int(self.options.time_halo), window_t)})

    # -- fit ------------------------------------------------------------------------
    def fit(self, cube: Cube, rng: np.random.Generator, clean: Any = None) -> None:
        self._fit(cube, rng, clean)

    def fit_streaming(self, cube: Cube, rng: np.random.Generator) -> None:
        """Train on ``fit_blocks`` sub-cubes sampled from a dask-backed ``cube``."""
        self._fit(cube, rng, blocks=self.options.fit_blocks)

    def _fit(
        self, cube: Cube, rng: np.random.Generator, clean: Any = None, blocks: int | None = None
    ) -> None:
        """Train on the observed pixels of ``cube``.

        Parameters
        ----------
        cube
            The gappy training cube.
        rng
            Source of the seed when ``seed`` is not set.
        clean
            For ``supervision="paired"``/``"unpaired"``: gap-free reference data, as
            a normalised ``(C, T, H, W)`` array, a :class:`~gapfill.cube.Cube` or a
            DataArray like ``cube`` (normalised with ``cube``'s statistics).
        blocks
            Train on this many sampled sub-cubes instead of the whole cube.
        """
        t0 = time.monotonic()  # time_budget counts from here
        import torch

        o = self.options
        device = pick_device(o.device)
        # the width is fixed before the run's identity, so a checkpoint resumes only at it
        if o.width is None:
            o.width = WIDTH_MIXED if amp_enabled(device, o.amp) else WIDTH_FLOAT32
        run = start_run(self, cube, rng, None if blocks else cube.values())
        setup = np.random.default_rng([run.seed, 0])
        deadline = None if o.time_budget is None else t0 + GUIDE_POOL_SHARE * o.time_budget
        data = TrainingData.build(self, cube, setup, clean, blocks, deadline)
        self._guide_start = data.guide_start
        devices = [device.index or 0] if device.type == "cuda" else []
        # Seeded torch RNG for initialisation and dropout, without disturbing the caller's.
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(run.seed)
            self._build(data.channels, data.extras.shape[1], data.guide_error(),
                        data.base_spread())
            # time_budget counts the whole fit: training gets what the set-up leaves, less
            # the estimated time of the guide choice and fills that ``fit`` does after it
            # (on the error model's validation window of the cube)
            trainer = GANTrainer(self, run, data,
                                 None if o.time_budget is None else t0 + o.time_budget,
                                 (window_frames(cube.shape), *cube.shape[2:]))
            if trainer.ddp.enabled:  # same initial weights everywhere, then per-rank noise
                torch.manual_seed(run.seed + 7919 * (trainer.ddp.rank + 1))
            info = trainer.fit()
        info["setup_seconds"] = round(data.setup_seconds, 2)
        info["reserved_seconds"] = round(float(trainer.reserved), 2)
        self.fit_info.update(info)
        if o.time_budget is not None:
            left = o.time_budget - data.setup_seconds - trainer.reserved
            if left < SHORT_TRAINING * o.time_budget:
                warnings.warn(
                    f"gan: time_budget={o.time_budget:g} s left training {max(left, 0):.0f} s "
                    f"({info['steps']} steps): its set-up took {data.setup_seconds:.0f} s and "
                    "what da.gapfill.fit does after training is estimated at "
                    f"{trainer.reserved:.0f} s. Raise time_budget for the generator to learn: "
                    "with so few steps the fill is its guide or close to it.",
                    UserWarning, stacklevel=2)

    def tune(
        self,
        x: np.ndarray,
        truth: np.ndarray,
        validation: np.ndarray,
        rng: np.random.Generator,
        coords: Coords | None = None,
    ) -> None:
        """Choose the guide and the share of the generator's correction of it.

        Both are scored on validation pixels filled from every other observation, the
        hold-out included, as dense as the fill's input. Training chose its guide and
        validated on pixels hidden from an input that also lacks the validation pixels
        of ``fit`` and its hold-out: on that sparser input the ranking of the guides can
        differ (a spatial interpolation loses more than a temporal one when gaps widen),
        and the correction that training chose overshoots where the guide is better.

        Two guides are tried: the one training used (a ``"regem"`` one starting from the
        EM fit of training's input, as the fill makes it), and the one
        :func:`~gapfill.guides.choose_guide` picks on these pixels (its ``"regem"``
        candidates from that fit where training's were; when it differs, and
        when ``x`` has at least as many frames as training chose its guide on: the
        first frames of a long cube do not choose its EOF modes). Under ``guide="auto"``
        that choice also tries the interpolation of the values themselves
        (``"harmonic"``), which training does not use: it gives the generator no EOF
        base. A guide the generator was not trained on is often best alone (share 0).
        With each, the generator fills once with its whole correction and the shares of
        :data:`TUNED_GAINS` are scored (0 keeps that guide alone; another share must score
        at least ``min_gain`` below it, as training's generator must). On training's guide
        the share is at most the one training chose: the fill's input is denser than
        training's and its guide better there, so it needs no more of the correction,
        and one bar of a video or a few gaps are too few pixels to say otherwise.
        The guide and share with the lowest MAE on ``validation`` are kept (ties keep
        the training's guide and the larger share); their MAEs are in
        ``fit_info["correction_gain_scores"]`` and ``fit_info["guide_scores"]``.

        The MAEs are weighted so that the pixels' distances to the nearest observation
        (:data:`TUNE_DISTANCES`) are distributed as those of the real gaps of ``x``
        (its missing pixels observed at some time,
        :func:`~gapfill.methods.gan_data.distance_weights`):
        validation pixels cut in small pieces sit nearer the observations than the
        real gaps, where an interpolation of the values is at its best and a learned
        correction matters least.

        Weights cannot stand in for pixels that are not there: where the real gaps last
        for months and ``validation`` holds few such pixels, a guide that interpolates
        in space can win on ``validation`` and lose in the gaps. So a guide other than
        training's is kept only if it also holds on pixels hidden in the shapes of the
        cube's own gaps (:meth:`_gap_shaped_change`, at most :data:`SWITCH_TOLERANCE`
        worse on average; ``fit_info["guide_switch"]``).
        """
        if self.generator is None or self.options.guide == "none" or not validation.any():
            return
        extras = self._extras(coords, x.shape[1:])
        trained_gain = self._share
        trained = Guide.from_dict(self._meta["guide"])
        # each guide, as the generator takes it
        candidates = [(trained, self._generator_guide(x)[0])]
        seen = np.isfinite(x)
        gaps = ~seen & seen.any(axis=1, keepdims=True) & ~validation
        weights = (distance_weights(seen, validation, gaps, TUNE_DISTANCES)
                   if TUNE_DISTANCES and gaps.any() else None)
        # where the regem guides start from a fit made before the choice, so do these
        first_start = self._guide_start if self._meta.get("guide_first_start") else None
        if x.shape[1] >= int(self._meta.get("guide_frames", x.shape[1] + 1)):
            dense, field, base = choose_guide(x, validation, truth, self.options.guide,
                                              self.options.guide_modes, values=True,
                                              weights=weights,
                                              grid=self._meta.get("guide_grid"),
                                              regem_steps=self._meta.get(
                                                  "guide_regem_steps", REGEM_STEPS[0]),
                                              start=first_start)
            if _recipe(dense) != _recipe(trained):
                with_base = bool(self._meta["generator"].get("guide_base"))
                candidates.append((dense, np.concatenate([field, base]) if with_base else field))
        seed = int(rng.integers(2**31 - 1))
        self._meta["correction_gain"] = 1.0
        results: list[tuple[float, Guide, float, list[float]]] = []
        for recipe, guide in candidates:
            # on training's guide, no more of the correction than training chose
            gain, scores = self._share_scores(x, guide, extras, seed, validation, truth, weights,
                                              self.options.min_gain,
                                              trained_gain if recipe is trained else None)
            results.append((scores[TUNED_GAINS.index(gain)], recipe, gain, scores))
        guide_scores = {str(r[1]): r[0] for r in results}
        best = min(results, key=lambda r: r[0])  # ties keep training's guide
        switch = None
        if best is not results[0]:
            change = self._gap_shaped_change(x, [trained, best[1]], extras, rng, seed)
            switch = {"guide": str(best[1]), "change": change,
                      "kept": bool(change <= SWITCH_TOLERANCE)}
            if not switch["kept"]:
                best = results[0]
        _, recipe, gain, scores = best
        # the start was fitted for training's guide (a first start: for every regem one)
        if recipe.kind != "regem" or (recipe is not trained and first_start is None):
            self._guide_start = None
            self._meta.pop("guide_start_steps", None)
        self._meta["guide"] = recipe.to_dict()
        self._meta["correction_gain"] = gain
        self.fit_info.update({
            "guide": recipe.to_dict(),
            "guide_training": trained.to_dict(),
            "guide_scores": guide_scores,
            "correction_gain": gain,
            "correction_gain_training": trained_gain,
            "correction_gain_scores": dict(zip(map(str, TUNED_GAINS), scores)),
            "guide_switch": switch,
        })

    def _gap_shaped_change(
        self, x: np.ndarray, recipes: list[Guide], extras: np.ndarray,
        rng: np.random.Generator, seed: int,
    ) -> float:
        """Mean relative change of the best MAE (over :data:`TUNED_GAINS`) from the first
        guide of ``recipes`` to the second, on observed pixels of ``x`` hidden in the
        shapes of its own gaps: :data:`SWITCH_DRAWS` draws of
        :func:`~gapfill.methods.gan_data.validation_pixels` (whole gaps, in runs of
        frames, as far from the data as the real gaps). 0 when no draw hides anything."""
        with_base = bool(self._meta["generator"].get("guide_base"))
        changes = []
        for hidden, pixels in self._gap_shaped_draws(x, rng, SWITCH_DRAWS):
            best = [min(self._share_scores(hidden, recipe.stacked(hidden, with_base), extras,
                                           seed, pixels, x)[1]) for recipe in recipes]
            changes.append(best[1] / max(best[0], 1e-12) - 1.0)
        return float(np.mean(changes)) if changes else 0.0

    def _gap_shaped_draws(
        self, x: np.ndarray, rng: np.random.Generator, draws: int,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(x with the pixels hidden, the pixels)`` for each of ``draws`` draws of
        observed pixels of ``x`` hidden in the shapes of its own gaps, each about
        :data:`SWITCH_SHARE` of the observations
        (:func:`~gapfill.methods.gan_data.validation_pixels`); draws that hide nothing
        are skipped."""
        seen = np.isfinite(x)
        missing = ~seen.any(0)
        never = ~seen.any(axis=(0, 1))
        process = self._process(missing, never, None, int(rng.integers(2**31 - 1)))
        for _ in range(draws):
            pixels = validation_pixels(missing, never, SWITCH_SHARE, rng, process)[0][None] & seen
            if pixels.any():
                yield np.where(pixels, np.nan, x).astype(np.float32), pixels

    def _share_scores(
        self, x: np.ndarray, guide: np.ndarray, extras: np.ndarray, seed: int,
        pixels: np.ndarray, truth: np.ndarray, weights: np.ndarray | None = None,
        min_gain: float = 0.0, largest: float | None = None,
    ) -> tuple[float, list[float]]:
        """Fill ``x`` with ``guide`` and the whole correction, and score each share of
        :data:`TUNED_GAINS` at ``pixels`` against ``truth`` (:func:`choose_gain`)."""
        with torch_threads(self.options.threads):
            whole = self._fill(x, guide, extras, 1, seed)
        return choose_gain(guide[: x.shape[0]][pixels], whole[pixels], truth[pixels],
                           TUNED_GAINS, weights, min_gain, largest)

    def _after_fit_seconds(
        self, data: TrainingData, after_shape: tuple[int, int, int], window_seconds: float,
    ) -> float:
        """Estimated seconds of what :func:`gapfill.accessor.fit_dataarray` does once
        training on ``data`` ends, on a cube of ``after_shape``, times
        :data:`AFTER_FIT_MARGIN`; ``window_seconds`` is the generator's time per window.

        :meth:`tune` chooses the guide again (as long as training's choice) and runs
        :data:`TUNE_FILLS` fills and :data:`TUNE_GUIDES` guides. The error model then
        fills its validation pixels and the hold-out's, with some of the generator's
        correction a fill and a guide each; with none of it (share 0) only the guide,
        for each of up to ``MAX_VALIDATION_DRAWS`` draws and the hold-out's. The larger
        of the two is reserved, and a guide for ``linear``'s control of the draw (five
        fills of ``linear``, 0.3 to 0.8 of a guide on the cubes measured).
        """
        share = np.prod(after_shape) / max(int(np.prod(data.x.shape[2:])), 1)
        fill = count_windows(after_shape, data.window, self.options.overlap) * window_seconds
        guide = share * data.guide_seconds
        error_model = max(2 * (fill + guide), (MAX_VALIDATION_DRAWS + 1) * guide) + guide
        return AFTER_FIT_MARGIN * (share * data.choice_seconds + TUNE_FILLS * fill
                                   + TUNE_GUIDES * guide + error_model)

    # -- fill -----------------------------------------------------------------------
    def fill(
        self,
        x: np.ndarray,
        rng: np.random.Generator,
        samples: int = 1,
        coords: Coords | None = None,
    ) -> FillResult:
        """Fill the NaNs of a normalised ``(C, T, H, W)`` array with overlapping windows.

        With ``samples > 1`` the generator runs that many times with its noise
        (dropout kept on, or fresh noise channels): ``values`` is their mean and
        ``error`` their standard deviation. With ``samples=1`` the fill is
        deterministic (dropout off, zero noise) and ``error`` is ``None``. Where
        validation chose none of the generator's correction (share 0), the fill is the
        guide and the generator does not run (``error`` is then 0). Under a ``regem``
        guide ``error`` is the guide's conditional spread, added in quadrature to the
        generator's with ``samples > 1``.
        """
        config = self._meta.get("generator", {})
        self._check_fill(x, samples, self.generator is not None, config.get("channels"))
        guide, spread = self._generator_guide(x)
        c = x.shape[0]
        seed = int(rng.integers(2**31 - 1))
        seen = np.isfinite(x)
        if guide is not None and self._share == 0.0:
            # none of the correction: the fill is the guide, the generator need not run
            values = np.where(seen, x, guide[:c]).astype(np.float32)
            error = spread
            if error is None and samples > 1:  # no spread of the generator's either
                error = np.zeros_like(values)
        else:
            extras = self._extras(coords, x.shape[1:])
            with torch_threads(self.options.threads):
                out = self._fill(x, guide, extras, samples, seed)
            runs = out.reshape(samples, c, *x.shape[1:])
            values = np.where(seen, x, runs.mean(0)).astype(np.float32)
            error = runs.std(0, ddof=1) if samples > 1 else None
            if spread is not None:  # the guide's and the generator's spreads, independent
                error = spread if error is None else np.sqrt(spread**2 + error**2)
        if error is not None:
            error = np.where(seen, 0.0, error).astype(np.float32)
        return FillResult(values, error)

    @property
    def provides_error(self) -> bool:  # type: ignore[override]
        """Whether :meth:`fill` gives an error with ``samples=1``: under a ``regem`` guide,
        the guide's conditional spread (:meth:`gapfill.guides.Guide.make_with_spread`),
        which the error model then takes as the method's own spread."""
        return self.options.guide != "none" and self._meta.get("guide", {}).get("kind") == "regem"

    @property
    def fills_without_training(self) -> bool:
        """Also when validation chose none of the generator's correction (gain 0): the
        fill is then the guide alone, which the generator does not touch."""
        return super().fills_without_training or (
            self.generator is not None and self.options.guide != "none"
            and self._share == 0.0)

    @property
    def _share(self) -> float:
        """The share of the generator's correction of its guide that the fill keeps."""
        return float(self._meta.get("correction_gain", 1.0))

    def _guide(self, x: np.ndarray) -> np.ndarray | None:
        """The guide of ``x`` with the kind and parameters chosen in ``fit``."""
        if self.options.guide == "none":
            return None
        return Guide.from_dict(self._meta["guide"]).make(x, self._guide_start)

    def _generator_guide(self, x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """What the generator takes as its guide (the guide, then with ``guide_base`` its
        base), and the guide's spread (:meth:`gapfill.guides.Guide.make_with_spread`)."""
        if self.options.guide == "none":
            return None, None
        with_base = bool(self._meta["generator"].get("guide_base"))
        return Guide.from_dict(self._meta["guide"]).stacked_with_spread(x, with_base,
                                                                        self._guide_start)

    def _fill(
        self,
        x: np.ndarray,
        guide: np.ndarray | None,
        extras: np.ndarray,
        samples: int,
        seed: int,
    ) -> np.ndarray:
        """Blend windowed generator outputs; ``(samples * C, T, H, W)``."""
        import torch

        from gapfill.windows import fill_windows

        gen = self.generator
        device = next(gen.parameters()).device
        if device.type == "cpu" and not gen.channels_last:
            gen.use_channels_last()
        c = x.shape[0]
        parts = [x] + ([guide] if guide is not None else []) + [extras]
        stacked = np.concatenate(parts, 0).astype(np.float32)
        gc = guide.shape[0] if guide is not None else 0  # the guide, and its base
        noise_channel = self.options.noise == "channel"
        gain = self._share if guide is not None else 1.0
        was_training = gen.training
        gen.eval()
        gen.set_sampling(samples > 1)
        devices = [device.index or 0] if device.type == "cuda" else []

        def fn(batch: np.ndarray) -> np.ndarray:
            b = torch.from_numpy(batch).to(device)
            y = b[:, :c]
            m = torch.isfinite(y).float()
            g = b[:, c : c + gc] if guide is not None else None
            e = b[:, c + gc :]
            outs = []
            for _ in range(samples):
                ex = e
                if noise_channel:
                    z = torch.randn_like(y[:, :1]) if samples > 1 else torch.zeros_like(y[:, :1])
                    ex = torch.cat([e, z], 1)
                with self._autocast(device):
                    out = gen(y, m, ex if ex.shape[1] else None, g).float()
                if gain != 1.0:  # the share of its correction of the guide validation chose
                    out = torch.where(m > 0, out, g[:, :c] + gain * (out - g[:, :c]))
                outs.append(out)
            return torch.cat(outs, 1).cpu().numpy()

        try:
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                out = fill_windows(
                    stacked,
                    fn,
                    size=tuple(self._meta["window"]),
                    overlap=self.options.overlap,
                    batch_size=self.options.fill_batch_size,
                )
        finally:
            gen.set_sampling(False)
            gen.train(was_training)
        return out

    def _autocast(self, device: torch.device) -> Any:
        import torch

        enabled = self.options.amp and device.type == "cuda"
        dtype = getattr(torch, amp_precision(device)) if enabled else torch.float16
        return torch.autocast(device.type, dtype=dtype, enabled=enabled)

    # -- state ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Generator weights plus what filling needs (config, EOF modes, channel stats, the
        EM fit a ``"regem"`` guide starts from)."""
        state = network_state("generator", self.generator, self._meta)
        if state and self._guide_start is not None:
            state["guide_start"] = self._guide_start.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the generator from :meth:`state_dict`'s output."""
        from gapfill.models import Generator, GeneratorConfig

        self._meta, gen = load_network(
            state, "generator", lambda meta: Generator(GeneratorConfig(**meta["generator"]))
        )
        self.generator = gen.to(pick_device(self.options.device))
        start = state.get("guide_start")
        self._guide_start = None if start is None else RegemStart.from_state(start)
