"""Unsupervised GAN inpainting (Yin, Pajot, de Bézenac & Gallinari), method ``"gan"``.

Training needs no gap-free data. A generator ``G`` fills an observed sequence
``y`` (mask ``m``); the fill is re-occluded with a fresh mask ``m_hat`` from an
occlusion process (:mod:`gapfill.masks`), and two discriminators, one per frame
(2D PatchGAN) and one per sequence (3D PatchGAN, with frame differences when
the masks move), learn to tell real observed sequences ``(y, m)`` from
re-occluded fills ``(G(y) m_hat, m_hat)``. ``G`` learns to fool both. An
optional self-supervised term hides extra observed pixels (same process) and
adds an L1 loss on them, as DINCAE does.

Additions for geophysical cubes (see ``benchmarks/gan_ostia.py``):

- ``guide="eof_interp"`` (default): a DINEOF reconstruction of the whole cube
  (modes chosen on the validation pixels) plus a Gaussian interpolation of the
  observed residuals is a guide channel, and the generator predicts a
  correction to it. This gives basin-scale context a windowed network cannot
  see. Guides used in training are computed without the pixels hidden for
  the L1 term and without the validation pixels, so the network never learns
  to copy a guide that saw the answer.
- A validation share of the observed pixels is held out (gap patterns of the
  occlusion process inside random spatial tiles, all frames); its MAE drives early stopping and the
  best generator is kept (the untrained generator returns the guide, so the
  result is never worse than the guide on the validation pixels).
- ``ema``: validation and the fitted model use a moving average of the
  generator's weights (Polyak averaging, as GAN practice does). On OSTIA, in a
  300 s CPU training on the L1 term alone, it took the error in the real gaps
  from 0.312 K (above the guide's 0.310 K) to 0.295 K.

Options and defaults are in :class:`GANOptions`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import json
import time
from dataclasses import dataclass
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from gapfill.methods.base import (
    Chunking,
    Coords,
    FillResult,
    Method,
    Options,
    load_network,
    network_state,
)

if TYPE_CHECKING:
    import torch

    from gapfill.cube import Cube
    from gapfill.masks import OcclusionProcess

LOSSES = ("hinge", "log", "lsgan")
SUPERVISION = ("unsupervised", "paired", "unpaired")
NOISE = ("dropout", "channel", "none")
GUIDES = ("eof_interp", "eof", "none")
#: Gaussian widths (t, y, x) in pixels tried for the residual interpolation of the guide.
INTERP_SIGMAS = ((0.0, 1.0, 2.0), (0.0, 2.0, 4.0), (0.0, 3.0, 6.0), (1.0, 2.0, 4.0))


@dataclass
class GANOptions(Options):
    """Options of the ``gan`` method.

    Attributes
    ----------
    window
        Training and filling window ``(T, H, W)``, clipped to the cube.
    width
        Generator channels at full resolution (doubled at each of ``n_down`` halvings).
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
        ``"eof_interp"``: an EOF reconstruction plus a Gaussian interpolation of
        the observed residuals (observation minus EOF) into the gaps, its width
        chosen on the validation pixels; ``"eof"``: the EOF reconstruction
        alone; ``"none"``: the plain method of the paper. With a guide, the
        generator sees it as a channel and predicts a correction to it.
    guide_modes
        EOF modes of the guide; ``None`` chooses them on the validation pixels.
    guide_pool
        Guides precomputed with different extra-hidden pixels for the L1 term.
    occlusion
        Occlusion process re-occluding the fills: a :func:`gapfill.masks.make`
        name (``"cloud"``, ``"raindrops"``, ``"moving_bar"``, ``"remove_pixels"``)
        or ``"empirical"`` (the data's own gap patterns at other times).
    coverage
        Coverage of that process; ``None`` takes the data's missing fraction
        over the pixels observed at least once.
    occlusion_options
        Extra keyword arguments of the process (e.g. ``{"length_scale": 4}``).
    loss
        ``"hinge"``, ``"log"`` (the paper's objective, non-saturating) or ``"lsgan"``.
    adv_weight
        Weight of the adversarial terms in the generator loss.
    recon_weight
        Weight of the self-supervised L1 loss on extra-hidden observed pixels
        (0 turns it off). In ``"paired"`` mode, the weight of the L1 to the clean target.
    recon_coverage
        Coverage of the extra hiding; ``None`` uses ``coverage``.
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
    steps
        Generator steps (the step budget).
    time_budget
        Seconds of training in this call (``None``: steps only). Runs stopped by
        time are not bit-reproducible; set ``time_budget=None`` for that.
    supervision
        ``"unsupervised"``, ``"paired"`` (``fit(..., clean=)`` gives the matching
        gap-free cube: the discriminators see clean sequences, plus an L1 to it)
        or ``"unpaired"`` (clean sequences from other windows as the real ones).
    val_share
        Share of the observed pixels held out for validation (0 turns it off).
    fit_blocks
        For a dask-backed cube too large to fit in memory (the streaming fit,
        :mod:`gapfill.streaming`): train on this many sub-cubes of one ``window``
        in time and two in y and x, read from the cube tile by tile; the cube is
        never loaded.
    eval_every
        Steps between validation MAEs (and CSV log rows).
    early_stopping_patience
        Evaluations without improvement before stopping; ``None`` never stops.
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
        Mixed precision on CUDA (ignored on CPU).
    seed
        Seed of the whole fit; ``None`` draws one from the ``rng`` given to ``fit``.
    progress
        ``"auto"`` (bar on a terminal, log lines otherwise), ``"bar"``, ``"log"`` or ``"off"``.
    """

    window: tuple[int, int, int] = (24, 64, 64)
    width: int = 16
    n_down: int = 2
    n_res_blocks: int = 2
    attention: bool = True
    factorised: bool = False
    d_width: int = 32
    d_layers: int = 3
    coord_channels: bool = False
    time_channels: bool = True
    guide: str = "eof_interp"
    guide_modes: int | None = None
    guide_pool: int = 8
    fit_blocks: int = 16
    occlusion: str = "cloud"
    coverage: float | None = None
    occlusion_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    loss: str = "hinge"
    adv_weight: float = 1.0
    recon_weight: float = 10.0
    recon_coverage: float | None = 0.2
    lr: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.999)
    ema: float | None = 0.99
    d_steps: int = 2
    batch_size: int = 4
    steps: int = 5000
    time_budget: float | None = 600.0
    supervision: str = "unsupervised"
    val_share: float = 0.05
    eval_every: int = 100
    early_stopping_patience: int | None = 8
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

    def __post_init__(self) -> None:
        # Options may come back from JSON, where tuples are lists.
        self.window = tuple(int(v) for v in self.window)  # type: ignore[assignment]
        self.betas = tuple(float(v) for v in self.betas)  # type: ignore[assignment]
        self.occlusion_options = dict(self.occlusion_options or {})

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad option."""

        def bad(name: str, why: str) -> None:
            raise ValueError(f"gan option {name}={getattr(self, name)!r}: {why}")

        if len(self.window) != 3 or min(self.window) < 1:
            bad("window", "must be three positive integers (T, H, W)")
        for name in ("width", "d_width", "d_layers", "batch_size", "steps", "d_steps",
                     "eval_every", "checkpoint_every", "fill_batch_size", "guide_pool",
                     "fit_blocks"):
            if int(getattr(self, name)) < 1:
                bad(name, "must be a positive integer")
        for name in ("n_down", "n_res_blocks"):
            if int(getattr(self, name)) < 0:
                bad(name, "must be >= 0")
        if self.guide not in GUIDES:
            bad("guide", f"must be one of {GUIDES}")
        if self.guide_modes is not None and self.guide_modes < 1:
            bad("guide_modes", "must be >= 1 or None")
        from gapfill.masks import PROCESSES

        if self.occlusion not in PROCESSES:
            bad("occlusion", f"must be one of {sorted(PROCESSES)}")
        for name in ("coverage", "recon_coverage"):
            v = getattr(self, name)
            if v is not None and not 0 < v < 1:
                bad(name, "must be in (0, 1) or None")
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
        if not 0 <= self.val_share < 0.5:
            bad("val_share", "must be in [0, 0.5)")
        if self.threads is not None and self.threads < 1:
            bad("threads", "must be >= 1 or None")
        if self.lr <= 0:
            bad("lr", "must be > 0")
        if self.ema is not None and not 0 < self.ema < 1:
            bad("ema", "must be in (0, 1) or None")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            bad("betas", "must be two numbers in [0, 1)")
        if self.adv_weight < 0 or self.recon_weight < 0:
            bad("recon_weight" if self.recon_weight < 0 else "adv_weight", "must be >= 0")
        if self.time_budget is not None and self.time_budget <= 0:
            bad("time_budget", "must be > 0 or None")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            bad("early_stopping_patience", "must be >= 1 or None")
        if self.resume and not self.checkpoint_dir:
            bad("resume", "needs checkpoint_dir")
        if self.progress not in ("auto", "bar", "log", "off"):
            bad("progress", "must be auto, bar, log or off")


# ----------------------------------------------------------------------------- EOF guide
def eof_reconstruction(
    x: np.ndarray,
    modes: int,
    max_iter: int = 100,
    tol: float = 1e-3,
    val: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    patience: int | None = None,
) -> tuple[np.ndarray, list[float]] | np.ndarray:
    """DINEOF reconstruction of a gappy ``(C, T, H, W)`` array (Beckers & Rixen 2003).

    Per channel: remove the channel mean (one number, as DINEOF does; per-pixel
    means estimated from gappy series are biased), put 0 in the gaps, then for
    ``k = 1, ..., modes`` alternate a rank-``k`` reconstruction with
    re-inserting the observations until the RMS change of the gap values is
    below ``tol`` (units of ``x``), warm-starting each ``k`` from the previous.

    Parameters
    ----------
    x
        ``(C, T, H, W)`` with NaN in the gaps.
    modes
        Number of EOF modes (clipped to ``T - 1``).
    max_iter, tol
        Iterations per mode and the stopping threshold.
    val, truth
        Optional held-out pixels and their values: the MAE on them after each
        mode is returned too (for choosing ``modes``).
    patience
        With ``val`` (single channel): stop adding modes after this many modes
        without a better MAE (the reconstruction returned is then the last one).

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, list of float)
        ``(C, T, H, W)`` float32 rank-``modes`` reconstruction at every pixel
        (the channel mean at pixels never observed), and with ``val`` the MAE
        on ``val`` after each mode.
    """
    c, t = x.shape[:2]
    modes = max(1, min(int(modes), t - 1 if t > 1 else 1))
    out = np.zeros(x.shape, dtype=np.float32)
    scores = np.zeros((modes, 2))
    for ch in range(c):
        flat = x[ch].reshape(t, -1).astype(np.float64)
        obs = np.isfinite(flat)
        cols = obs.any(0)
        if not cols.any():
            continue
        mean = float(flat[obs].mean())
        out[ch] = mean
        z = np.where(obs, flat - mean, 0.0)[:, cols]
        gaps = ~obs[:, cols]
        if val is not None:
            vsel = val[ch].reshape(t, -1)[:, cols]
            vtrue = truth[ch].reshape(t, -1)[:, cols][vsel] - mean
        rec = z
        for k in range(1, modes + 1):
            for _ in range(max_iter):
                rec = _low_rank(z, k)
                change = float(np.sqrt(np.mean((rec[gaps] - z[gaps]) ** 2))) if gaps.any() else 0.0
                z[gaps] = rec[gaps]
                if change < tol:
                    break
            if val is not None and vsel.any():
                scores[k - 1] += (np.abs(rec[vsel] - vtrue).sum(), vsel.sum())
                maes = scores[:k, 0] / scores[:k, 1]
                if patience and c == 1 and k - 1 - int(np.argmin(maes)) >= patience:
                    scores = scores[:k]
                    break
        block = out[ch].reshape(t, -1)
        block[:, cols] = rec + mean
    if val is None:
        return out
    return out, [float(s / max(n, 1)) for s, n in scores]


def _low_rank(z: np.ndarray, k: int) -> np.ndarray:
    """Best rank-``k`` approximation of ``z`` (T x P, T small) via the T x T Gram matrix."""
    gram = z @ z.T
    _, vecs = np.linalg.eigh(gram)
    u = vecs[:, -k:]
    return u @ (u.T @ z)


def choose_eof_modes(x: np.ndarray, val: np.ndarray, truth: np.ndarray, max_modes: int = 20) -> int:
    """Number of EOF modes minimising the MAE on the held-out pixels ``val`` (``x`` hides them)."""
    _, maes = eof_reconstruction(x, max_modes, val=val, truth=truth, patience=3)
    return int(np.argmin(maes)) + 1


def interpolate_residuals(
    x: np.ndarray, base: np.ndarray, sigma: tuple[float, float, float] | list[float]
) -> np.ndarray:
    """``base`` plus a Gaussian-weighted average of the observed residuals ``x - base``.

    A normalised convolution (Knutsson & Westin 1993): residuals and the
    observation mask are smoothed with the same Gaussian of widths ``sigma``
    (t, y, x pixels) and divided; far from any observation the correction
    fades to 0. Observed pixels get their smoothed residual too, so the guide
    is a smooth field.
    """
    from scipy.ndimage import gaussian_filter

    out = np.empty_like(base)
    for c in range(x.shape[0]):
        obs = np.isfinite(x[c])
        r = np.where(obs, x[c] - base[c], 0.0)
        num = gaussian_filter(r, sigma, mode="nearest", truncate=3.0)
        den = gaussian_filter(obs.astype(np.float64), sigma, mode="nearest", truncate=3.0)
        corr = num / np.maximum(den, 1e-6) * np.minimum(1.0, den / 0.05)
        out[c] = base[c] + corr
    return out.astype(np.float32)


def choose_sigma(
    x: np.ndarray, base: np.ndarray, val: np.ndarray, truth: np.ndarray
) -> list[float] | None:
    """The width in :data:`INTERP_SIGMAS` minimising the MAE on ``val``.

    ``None`` when no width beats ``base`` alone.
    """
    best = float(np.abs(base[val] - truth[val]).mean())
    best_sigma = None
    for sigma in INTERP_SIGMAS:
        mae = float(np.abs(interpolate_residuals(x, base, sigma)[val] - truth[val]).mean())
        if mae < best:
            best, best_sigma = mae, list(sigma)
    return best_sigma


# ----------------------------------------------------------------------------- losses
def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss on raw scores of real and fake patches."""
    import torch.nn.functional as F

    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    if kind == "log":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    return ((real - 1) ** 2).mean() + (fake**2).mean()


def g_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """Generator's adversarial loss on raw scores of its (re-occluded) fills."""
    import torch.nn.functional as F

    if kind == "hinge":
        return -fake.mean()
    if kind == "log":
        return F.softplus(-fake).mean()
    return ((fake - 1) ** 2).mean()


# ----------------------------------------------------------------------------- the method
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

    # -- setup helpers --------------------------------------------------------------
    def _device(self) -> torch.device:
        import torch

        if self.options.device:
            return torch.device(self.options.device)
        if torch.cuda.is_available():
            from gapfill.distributed import context

            ctx = context()  # under torchrun: this process's GPU
            return torch.device("cuda", ctx.local_rank) if ctx.enabled else torch.device("cuda")
        return torch.device("cpu")

    def _process(
        self, missing: np.ndarray, never: np.ndarray, coverage: float | None, seed: int
    ) -> OcclusionProcess:
        from gapfill import masks

        o = self.options
        if o.occlusion == "empirical":
            return masks.Empirical(
                missing, coverage=coverage, seed=seed, exclude=never, **o.occlusion_options
            )
        cov = coverage if coverage is not None else _missing_share(missing, never)
        return masks.make(o.occlusion, coverage=cov, seed=seed, **o.occlusion_options)

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

    def _build(self, channels: int, extra: int) -> None:
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
        with _threads(self.options.threads):
            self._fit(cube, rng, clean)

    def fit_streaming(self, cube: Cube, rng: np.random.Generator) -> None:
        """Train on ``fit_blocks`` sub-cubes sampled from a dask-backed ``cube``."""
        with _threads(self.options.threads):
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
        import torch

        from gapfill.training import open_run

        o = self.options
        t0 = time.monotonic()
        manager, ckpt, seed = open_run(o.checkpoint_dir, o.resume, o.seed, rng)
        setup = np.random.default_rng([seed, 0])
        data = _TrainingData.build(self, cube, setup, clean, blocks)
        device = self._device()
        devices = [device.index or 0] if device.type == "cuda" else []
        # Seeded torch RNG for initialisation and dropout, without disturbing the caller's.
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            self._build(data.channels, data.extras.shape[1])
            trainer = _Trainer(self, data, seed, manager)
            if ckpt is not None:
                trainer.restore(ckpt)
            if trainer.ddp.enabled:  # same initial weights everywhere, then per-rank noise
                torch.manual_seed(seed + 7919 * (trainer.ddp.rank + 1))
            info = trainer.run()
        info["setup_seconds"] = round(data.setup_seconds, 2)
        info["seconds"] = round(time.monotonic() - t0, 2)
        self.fit_info.update(info)

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
        deterministic (dropout off, zero noise) and ``error`` is ``None``.
        """
        config = self._meta.get("generator", {})
        self._check_fill(x, samples, self.generator is not None, config.get("channels"))
        guide = self._guide(x)
        extras = self._extras(coords, x.shape[1:])
        seed = int(rng.integers(2**31 - 1))
        with _threads(self.options.threads):
            out = self._fill(x, guide, extras, samples, seed)
        c = x.shape[0]
        runs = out.reshape(samples, c, *x.shape[1:])
        values = runs.mean(0)
        error = runs.std(0, ddof=1) if samples > 1 else None
        values = np.where(np.isfinite(x), x, values).astype(np.float32)
        if error is not None:
            error = np.where(np.isfinite(x), 0.0, error).astype(np.float32)
        return FillResult(values, error)

    def _guide(self, x: np.ndarray) -> np.ndarray | None:
        if self.options.guide == "none":
            return None
        guide = eof_reconstruction(x, int(self._meta["guide_modes"]))
        sigma = self._meta.get("guide_sigma")
        return guide if sigma is None else interpolate_residuals(x, guide, sigma)

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
        c = x.shape[0]
        parts = [x] + ([guide] if guide is not None else []) + [extras]
        stacked = np.concatenate(parts, 0).astype(np.float32)
        noise_channel = self.options.noise == "channel"
        was_training = gen.training
        gen.eval()
        gen.set_sampling(samples > 1)
        devices = [device.index or 0] if device.type == "cuda" else []

        def fn(batch: np.ndarray) -> np.ndarray:
            b = torch.from_numpy(batch).to(device)
            y = b[:, :c]
            m = torch.isfinite(y).float()
            g = b[:, c : 2 * c] if guide is not None else None
            e = b[:, (2 * c if guide is not None else c) :]
            outs = []
            for _ in range(samples):
                ex = e
                if noise_channel:
                    z = torch.randn_like(y[:, :1]) if samples > 1 else torch.zeros_like(y[:, :1])
                    ex = torch.cat([e, z], 1)
                with self._autocast(device):
                    outs.append(gen(y, m, ex if ex.shape[1] else None, g).float())
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
        dtype = torch.bfloat16 if enabled and torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device.type, dtype=dtype, enabled=enabled)

    # -- state ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Generator weights plus what filling needs (config, EOF modes, channel stats)."""
        return network_state("generator", self.generator, self._meta)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the generator from :meth:`state_dict`'s output."""
        from gapfill.models import Generator, GeneratorConfig

        self._meta, gen = load_network(
            state, "generator", lambda meta: Generator(GeneratorConfig(**meta["generator"]))
        )
        self.generator = gen.to(self._device())


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch CPU threads (``None``: unchanged), restoring the setting after."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def validation_mask(
    pattern: np.ndarray, missing: np.ndarray, share: float, rng: np.random.Generator,
    tile: int = 32,
) -> np.ndarray:
    """Hold out ``share`` of the observed pixels: ``pattern`` inside random spatial tiles.

    ``pattern`` is a ``(T, H, W)`` gap pattern of the occlusion process. It is
    kept in every frame but only inside randomly chosen ``tile x tile`` spatial
    tiles, so held-out gaps persist in time like real ones and are spread over
    all frames. (Holding out whole frames instead gives few, temporally
    isolated gaps, whose MAE is noisy and favours too many EOF modes.) Tiles
    are large (32 pixels: four times the cloud process's correlation length) so
    that the validation gaps are as large as real ones: with 8-pixel tiles the
    validation favoured fills that are good in small gaps and worse in large
    ones (on OSTIA, a GAN early-stopped on them was 13% worse in 40% cloud gaps).
    """
    h, w = pattern.shape[1:]
    hidden = (pattern & ~missing).sum() / max(1, (~missing).sum())
    q = min(1.0, share / max(float(hidden), 1e-6))
    tiles = rng.random((-(-h // tile), -(-w // tile))) < q
    if not tiles.any():
        tiles[tuple(rng.integers(n) for n in tiles.shape)] = True
    keep = np.kron(tiles, np.ones((tile, tile), dtype=bool))[:h, :w]
    return pattern & ~missing & keep[None]


def _missing_share(missing: np.ndarray, never: np.ndarray) -> float:
    """Missing fraction over the pixels observed at least once, clipped to [0.02, 0.9]."""
    valid = ~never
    share = float(missing[:, valid].mean()) if valid.any() else 0.3
    return float(np.clip(share, 0.02, 0.9))


# ----------------------------------------------------------------------------- data
#: Pixels filled at each validation: a cube (or the blocks of a streaming fit) up to this
#: size is validated whole; a larger one on the regions richest in validation pixels, since
#: filling everything at every evaluation would cost more than the steps in between.
VALIDATION_PIXELS = 2**21


def validation_regions(
    val: np.ndarray, window: tuple[int, int, int], budget: int = VALIDATION_PIXELS
) -> list[tuple[int, tuple[slice, slice, slice]]]:
    """``(block, (t, y, x) slices)`` to validate on, at most ``budget`` pixels in all.

    ``val`` is ``(N, C, T, H, W)``. Blocks are taken whole while they fit; the rest are
    cut into regions of two windows per axis, taken by decreasing number of
    validation pixels.
    """
    n, _, t, h, w = val.shape
    if n * t * h * w <= budget:
        return [(b, (slice(None),) * 3) for b in range(n)]
    size = [min(2 * s, m) for s, m in zip(window, (t, h, w))]
    starts = itertools.product(range(n), *(range(0, m, s) for m, s in zip((t, h, w), size)))
    candidates = []
    for b, *corner in starts:
        sl = tuple(slice(a, a + s) for a, s in zip(corner, size))
        count = int(val[b][(slice(None), *sl)].sum())
        if count:
            candidates.append((count, b, sl))
    candidates.sort(key=lambda c: -c[0])
    chosen, used = [], 0
    for _, b, sl in candidates:
        volume = np.prod([s.stop - s.start for s in sl])
        if chosen and used + volume > budget:
            break
        chosen.append((b, sl))
        used += volume
    return chosen


@dataclass
class _TrainingData:
    """Everything fit() draws windows from (numpy, normalised units).

    The arrays have a leading *block* axis: one block, the whole cube, for a cube
    in memory; for a streaming fit (:meth:`GAN.fit_streaming`), ``fit_blocks``
    sub-cubes read from a dask-backed cube (:meth:`~gapfill.cube.Cube.sample_windows`).
    """

    x: np.ndarray  # (N, C, T, H, W) training input, validation pixels hidden
    truth: np.ndarray  # (N, C, T, H, W) all observed values (for the validation MAE)
    val: np.ndarray  # (N, C, T, H, W) validation pixels
    never: np.ndarray  # (N, H, W) never observed in any channel
    extras: np.ndarray  # (N, E, T, H, W)
    guides: list[np.ndarray | None]  # [0]: guide of x; [1:]: guides without hides[i]
    hides: list[np.ndarray | None]  # (N, T, H, W) extra-hidden pixels per guide
    process: Any
    recon_process: Any
    clean: np.ndarray | None  # (N, C, T, H, W)
    window: tuple[int, int, int]
    setup_seconds: float

    @property
    def channels(self) -> int:
        return self.x.shape[1]

    @classmethod
    def build(
        cls, method: GAN, cube: Cube, rng: np.random.Generator, clean: Any,
        blocks: int | None = None,
    ) -> _TrainingData:
        t0 = time.monotonic()
        o = method.options
        coords = cube.coords()
        if blocks:
            if o.supervision != "unsupervised" or o.occlusion == "empirical":
                raise ValueError(
                    "a streaming gan fit (sampled blocks of a large dask-backed cube) is "
                    "unsupervised with a synthetic occlusion process: use "
                    "occlusion='cloud' (or another process), or load the cube into memory"
                )
            # Blocks of one window in time (the guide of a long block is costly) and two in
            # space, so the training windows vary inside them.
            size = tuple(min(k * s, n) for k, s, n in zip((1, 2, 2), o.window, cube.shape[1:]))
            truth, offsets = cube.sample_windows(blocks, size, rng)
        else:
            truth = cube.values()[None]
            offsets = np.zeros((1, 3), dtype=np.int64)
        n, c, t, h, w = truth.shape
        observed = np.isfinite(truth)
        never = ~observed.any((1, 2))
        missing = ~observed.any(1)
        seeds = rng.integers(2**31 - 1, size=3)
        coverage = o.coverage
        if n > 1 and coverage is None:  # the blocks' own share of gaps
            coverage = float(np.clip(missing[np.broadcast_to(~never[:, None], missing.shape)]
                                     .mean(), 0.02, 0.9))
        process = method._process(missing[0], never[0], coverage, int(seeds[0]))
        val = np.zeros_like(observed)
        if o.val_share > 0:
            for b in range(n):
                pattern = process.sample((t, h, w), rng) & ~missing[b]
                val[b] = validation_mask(pattern, missing[b], o.val_share, rng) & observed[b]
            if val.sum() == 0 or (observed & ~val).sum() == 0:
                val = np.zeros_like(observed)
        x = np.where(val, np.nan, truth).astype(np.float32)

        if o.recon_weight > 0 or o.guide != "none":
            recon_cov = o.recon_coverage if o.recon_coverage is not None else coverage
            recon_process = method._process(missing[0], never[0], recon_cov, int(seeds[1]))
        else:
            recon_process = None

        meta = method._meta
        meta["window"] = [min(a, b) for a, b in zip(o.window, (t, h, w))]
        meta["use_time"] = bool(o.time_channels and coords.time_of_year is not None)
        meta["use_coords"] = bool(o.coord_channels)
        meta["coord_stats"] = [
            float(np.mean(coords.y)), float(np.std(coords.y) or 1.0),
            float(np.mean(coords.x)), float(np.std(coords.x) or 1.0),
        ]
        extras = np.stack([
            method._extras(coords.isel(*(slice(a, a + s) for a, s in zip(off, (t, h, w)))),
                           (t, h, w))
            for off in offsets
        ])

        guides: list[np.ndarray | None] = [None]
        hides: list[np.ndarray | None] = [None]
        if o.guide != "none":
            # Modes and interpolation scales are chosen on the block with most validation.
            ref = int(np.argmax(val.reshape(n, -1).sum(1)))
            if o.guide_modes is None and val.any():
                meta["guide_modes"] = choose_eof_modes(x[ref], val[ref], truth[ref])
            else:
                meta["guide_modes"] = int(o.guide_modes or min(10, max(1, t - 1)))
            meta["guide_sigma"] = None
            eof = eof_reconstruction(x[ref], meta["guide_modes"])
            if o.guide == "eof_interp":
                meta["guide_sigma"] = (choose_sigma(x[ref], eof, val[ref], truth[ref])
                                       if val.any() else [0, 2, 4])
            guides = [np.stack([method._guide(x[b]) for b in range(n)])]
            if val.any():
                meta["eof_val_mae"] = float(np.abs(eof[val[ref]] - truth[ref][val[ref]]).mean())
                meta["guide_val_mae"] = float(np.abs(guides[0][val] - truth[val]).mean())
            if o.recon_weight > 0 and o.supervision != "paired":
                # Sampled blocks share the pool: about guide_pool variants in all, at least 1
                # per block (each is an EOF reconstruction of every block).
                for _ in range(o.guide_pool if n == 1 else -(-o.guide_pool // n)):
                    hide = np.stack([recon_process.sample((t, h, w), rng) for _ in range(n)])
                    guides.append(np.stack([
                        method._guide(np.where(hide[b], np.nan, x[b])) for b in range(n)
                    ]))
                    hides.append(hide)
        clean_arr = _as_clean(clean, cube) if o.supervision != "unsupervised" else None
        if o.supervision != "unsupervised" and clean_arr is None:
            raise ValueError(f"supervision={o.supervision!r} needs fit(..., clean=...)")
        if clean_arr is not None and clean_arr.shape != truth.shape[1:]:
            raise ValueError(f"clean has shape {clean_arr.shape}, expected {truth.shape[1:]}")
        return cls(
            x, truth, val, never, extras, guides, hides, process, recon_process,
            None if clean_arr is None else clean_arr[None],
            tuple(meta["window"]), time.monotonic() - t0,
        )

    def _offset(self, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """A random block and window start in it."""
        b = int(rng.integers(0, len(self.x))) if len(self.x) > 1 else 0
        limits = [n - s + 1 for n, s in zip(self.x.shape[2:], self.window)]
        t0, y0, x0 = (int(rng.integers(0, lim)) for lim in limits)
        return b, t0, y0, x0

    def batch(self, n: int, rng: np.random.Generator, recon: bool) -> dict[str, np.ndarray]:
        """Random training windows: input, target, masks, guide, extras, fake mask."""
        wt, wh, ww = self.window
        out: dict[str, list[np.ndarray]] = {k: [] for k in (
            "y", "y_in", "hide", "guide", "extras", "fake_hidden", "valid", "clean", "real_clean")}
        pool = len(self.guides) - 1
        for _ in range(n):
            for _try in range(100):
                b, t0, y0, x0 = self._offset(rng)
                sl = (slice(t0, t0 + wt), slice(y0, y0 + wh), slice(x0, x0 + ww))
                y = self.x[b][(slice(None), *sl)]
                if np.isfinite(y).mean() >= 0.05:
                    break
            p = int(rng.integers(1, pool + 1)) if (recon and pool > 0) else 0
            if recon and pool == 0:
                hide = self.recon_process.sample((wt, wh, ww), rng)
            elif recon:
                hide = self.hides[p][b][sl]
            else:
                hide = np.zeros((wt, wh, ww), dtype=bool)
            never = self.never[b][sl[1:]]
            out["y"].append(y)
            out["y_in"].append(np.where(hide, np.nan, y))
            out["hide"].append(np.broadcast_to(hide, y.shape) & np.isfinite(y))
            g = self.guides[p]
            if g is not None:
                out["guide"].append(g[b][(slice(None), *sl)])
            out["extras"].append(self.extras[b][(slice(None), *sl)])
            kw = {"start": t0} if self.process.name == "empirical" else {}
            fake = self.process.sample((wt, wh, ww), rng, **kw) | never[None]
            out["valid"].append(np.broadcast_to(~never[None], y.shape))
            out["fake_hidden"].append(np.broadcast_to(fake, y.shape))
            if self.clean is not None:
                out["clean"].append(self.clean[b][(slice(None), *sl)])
                a, a0, b0, c0 = self._offset(rng)
                out["real_clean"].append(
                    self.clean[a][:, a0 : a0 + wt, b0 : b0 + wh, c0 : c0 + ww]
                )
        return {k: np.stack(v).astype(v[0].dtype) for k, v in out.items() if v}


def _as_clean(clean: Any, cube: Cube) -> np.ndarray | None:
    if clean is None:
        return None
    if isinstance(clean, np.ndarray):
        return clean.astype(np.float32)
    from gapfill.cube import Cube

    if not isinstance(clean, Cube):
        clean = Cube(clean, dims=cube.dims)
    raw = np.asarray(clean.da.values)
    raw = raw if raw.ndim == 4 else raw[None]
    return cube.normaliser.normalise(raw)


# ----------------------------------------------------------------------------- training
class _Trainer:
    """The adversarial training loop of :class:`GAN` (one call of ``fit``)."""

    def __init__(self, method: GAN, data: _TrainingData, seed: int, manager: Any) -> None:
        import torch

        from gapfill.models import (
            FrameDiscriminator,
            FrameDiscriminatorConfig,
            SequenceDiscriminator,
            SequenceDiscriminatorConfig,
        )
        from gapfill.distributed import context
        from gapfill.training import TrainLoop

        self.m, self.data, self.seed, self.manager = method, data, seed, manager
        o = self.o = method.options
        # Under torchrun every process draws its own windows and masks; the networks
        # start identical (same seed) and DistributedDataParallel keeps them so.
        self.ddp = context()
        self.rng = np.random.default_rng([seed, 1, self.ddp.rank] if self.ddp.enabled
                                         else [seed, 1])
        self.device = method._device()
        c = data.channels
        # The bare networks (G_net, Df_net, Ds_net) and what the steps call (G, Df,
        # Ds): the same modules, wrapped for gradient averaging when distributed.
        self.G_net = method.generator.to(self.device)
        self.Df_net = FrameDiscriminator(
            FrameDiscriminatorConfig(2 * c, o.d_width, o.d_layers)
        ).to(self.device)
        self.Ds_net = SequenceDiscriminator(
            SequenceDiscriminatorConfig(2 * c, bool(data.process.moving), o.d_width, o.d_layers)
        ).to(self.device)
        self.G = self.ddp.wrap(self.G_net, self.device)
        self.Df = self.ddp.wrap(self.Df_net, self.device)
        self.Ds = self.ddp.wrap(self.Ds_net, self.device)
        self.opt_g = torch.optim.Adam(self.G_net.parameters(), lr=o.lr, betas=o.betas)
        d_params = list(self.Df_net.parameters()) + list(self.Ds_net.parameters())
        self.opt_d = torch.optim.Adam(d_params, lr=o.lr, betas=o.betas)
        amp = o.amp and self.device.type == "cuda"
        fp16 = amp and not torch.cuda.is_bf16_supported()
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=fp16)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=fp16)
        self.recon = o.recon_weight > 0 and o.supervision != "paired"
        # The averaged generator (ema): what validation fills with and what the fit keeps.
        self.G_avg = copy.deepcopy(self.G_net).requires_grad_(False) if o.ema else None
        self.val_regions = validation_regions(data.val, data.window)  # where validate() fills
        # only rank 0 writes the log and shows progress; every rank takes part in the rest
        self.loop = TrainLoop(
            self.G_avg if self.G_avg is not None else self.G_net, self.validate,
            steps=o.steps, time_budget=o.time_budget,
            eval_every=o.eval_every, checkpoint_every=o.checkpoint_every,
            patience=o.early_stopping_patience, metrics=("loss_d", "loss_g", "adv_g", "recon"),
            shown=("loss_d", "loss_g", "recon"), desc="gan", progress=o.progress,
            log=manager.directory / "log.csv" if manager is not None else None, ddp=self.ddp,
        )

    # -- checkpoints ----------------------------------------------------------------
    def payload(self) -> dict[str, Any]:
        from gapfill.training import rng_state

        return {
            "format": "gapfill-gan-checkpoint",
            "step": self.loop.step,
            "seed": self.seed,
            "options": json.dumps(self.m.options_dict()),
            "meta": json.dumps(self.m._meta),
            "G": self.G_net.state_dict(),
            "Df": self.Df_net.state_dict(),
            "Ds": self.Ds_net.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
            "rng": rng_state(self.rng),
            # Every rank's sampling state (a collective call: all ranks build the payload).
            "rng_ranks": self.ddp.gather(rng_state(self.rng)) if self.ddp.enabled else [],
            "stopper": self.loop.stopper.state_dict(),
            "best_G": self.loop.best_state if self.loop.best_state is not None else {},
            "G_avg": self.G_avg.state_dict() if self.G_avg is not None else {},
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        from gapfill.training import load_weights, set_rng_state

        if ckpt.get("format") != "gapfill-gan-checkpoint":
            raise ValueError("the checkpoint was not written by the gan method")
        load_weights(ckpt, {"G": self.G_net, "Df": self.Df_net, "Ds": self.Ds_net})
        self.opt_g.load_state_dict(ckpt["opt_g"])
        self.opt_d.load_state_dict(ckpt["opt_d"])
        self.scaler_g.load_state_dict(ckpt["scaler_g"])
        self.scaler_d.load_state_dict(ckpt["scaler_d"])
        ranks = ckpt.get("rng_ranks") or []
        if self.ddp.enabled and len(ranks) == self.ddp.world_size:
            set_rng_state(self.rng, ranks[self.ddp.rank])
        elif self.ddp.enabled:  # written by a run with another number of processes
            self.rng = np.random.default_rng([self.seed, 1, self.ddp.rank, int(ckpt["step"])])
        else:
            set_rng_state(self.rng, ckpt["rng"])
        self.loop.stopper.load_state_dict(ckpt["stopper"])
        self.loop.best_state = dict(ckpt["best_G"]) or None
        if self.G_avg is not None:
            self.G_avg.load_state_dict(ckpt.get("G_avg") or self.G_net.state_dict())
        self.loop.step = int(ckpt["step"])

    # -- tensors --------------------------------------------------------------------
    def tensors(self, recon: bool) -> dict[str, torch.Tensor]:
        import torch

        b = self.data.batch(self.o.batch_size, self.rng, recon)
        return {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in b.items()}

    def generate(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        import torch

        y_in = b["y_in"]
        m_in = torch.isfinite(y_in).float()
        e = b["extras"]
        if self.o.noise == "channel":
            e = torch.cat([e, torch.randn_like(y_in[:, :1])], 1)
        return self.G(y_in, m_in, e if e.shape[1] else None, b.get("guide"))

    def pairs(
        self, b: dict[str, torch.Tensor], fill: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Discriminator inputs ``[values, mask]`` for real and fake sequences."""
        import torch

        sup = self.o.supervision
        if sup == "unsupervised":
            real_v = b["y"]
            fake_obs = ~b["fake_hidden"]
        elif sup == "paired":
            real_v = b["clean"]
            fake_obs = torch.isfinite(b["clean"])
        else:
            real_v = b["real_clean"]
            fake_obs = b["valid"]  # the whole fill, off never-observed pixels
        real_m = torch.isfinite(real_v)
        real = torch.cat([torch.where(real_m, real_v, 0.0), real_m.float()], 1)
        fake = torch.cat([torch.where(fake_obs, fill, 0.0), fake_obs.float()], 1)
        return real, fake

    # -- steps ----------------------------------------------------------------------
    def d_step(self) -> float:
        import torch

        b = self.tensors(self.recon)
        with torch.no_grad(), self.m._autocast(self.device):
            fill = self.generate(b)
        with self.m._autocast(self.device):
            real, fake = self.pairs(b, fill.float())
            # Real and fake in one call of each discriminator (one forward per backward,
            # as DistributedDataParallel expects); no batch statistics mix them.
            both = torch.cat([real, fake])
            n = real.shape[0]
            sf, ss = self.Df(both), self.Ds(both)
            loss = d_loss(self.o.loss, sf[:n], sf[n:]) + d_loss(self.o.loss, ss[:n], ss[n:])
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler_d.scale(loss).backward()
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()
        return float(loss.detach())

    def g_step(self) -> tuple[float, float, float]:
        import torch

        o = self.o
        b = self.tensors(self.recon)
        for p in list(self.Df_net.parameters()) + list(self.Ds_net.parameters()):
            p.requires_grad_(False)
        with self.m._autocast(self.device):
            fill = self.generate(b).float()
            real, fake = self.pairs(b, fill)
            if o.adv_weight > 0:  # the bare discriminators: they are not updated here
                adv = g_loss(o.loss, self.Df_net(fake)) + g_loss(o.loss, self.Ds_net(fake))
            else:
                adv = fill.new_zeros(())
            if o.supervision == "paired":
                target = b["clean"]
                sel = torch.isfinite(target) & ~torch.isfinite(b["y_in"])
                rec = _masked_l1(fill, target, sel)
            elif self.recon:
                rec = _masked_l1(fill, b["y"], b["hide"])
            else:
                rec = fill.new_zeros(())
            loss = o.adv_weight * adv + o.recon_weight * rec
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(loss).backward()
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        if self.G_avg is not None:
            self._update_average()
        for p in list(self.Df_net.parameters()) + list(self.Ds_net.parameters()):
            p.requires_grad_(True)
        return float(loss.detach()), float(adv.detach()), float(rec.detach())

    def _update_average(self) -> None:
        """Move the averaged generator towards the current weights (decay ``ema``)."""
        import torch

        with torch.no_grad():
            for avg, new in zip(self.G_avg.state_dict().values(),
                                self.G_net.state_dict().values()):
                if avg.is_floating_point():
                    avg.lerp_(new, 1.0 - self.o.ema)
                else:
                    avg.copy_(new)

    def validate(self) -> float | None:
        """Validation MAE, computed on rank 0 and shared (every rank then decides alike)."""
        d = self.data
        if not d.val.any():
            return None
        mae = None
        if self.ddp.is_main:
            raw = self.m.generator
            self.m.generator = self.G_avg if self.G_avg is not None else raw  # what is kept
            errors = []
            try:
                for b, sl in self.val_regions:
                    part = (slice(None), *sl)
                    guide = d.guides[0][b][part] if d.guides[0] is not None else None
                    out = self.m._fill(d.x[b][part], guide, d.extras[b][part], 1, 0)
                    val = d.val[b][part]
                    errors.append(np.abs(out[val] - d.truth[b][part][val]))
            finally:
                self.m.generator = raw
            mae = float(np.concatenate(errors).mean())
        return self.ddp.from_main(mae)

    # -- loop -----------------------------------------------------------------------
    def train_step(self) -> tuple[float, float, float, float]:
        """``d_steps`` discriminator steps, then one generator step; their losses."""
        o = self.o
        ld = np.mean([self.d_step() for _ in range(o.d_steps)]) if o.adv_weight > 0 else 0.0
        lg, adv, rec = self.g_step()
        return ld, lg, adv, rec

    def run(self) -> dict[str, Any]:
        o, loop = self.o, self.loop
        save = self._checkpoint if self.manager is not None else None
        reason = loop.run(self.train_step, save, first_eval=True)
        in_sync = self.ddp.weights_in_sync(self.G_net) if self.ddp.enabled else None
        if in_sync is False:
            raise RuntimeError("distributed training: the generator replicas diverged")
        loop.restore_best()
        if self.G_avg is not None:  # the fitted model is the (best) averaged generator
            self.G_net.load_state_dict(self.G_avg.state_dict())
        self.G_net.eval()
        info = loop.summary(reason)
        for key in ("guide_modes", "guide_sigma", "eof_val_mae", "guide_val_mae"):
            info[key] = self.m._meta.get(key)
        if self.ddp.enabled:
            info["distributed"] = {
                "world_size": self.ddp.world_size,
                "backend": self.ddp.backend,
                "windows_per_step": self.ddp.world_size * o.batch_size,
                "weights_in_sync": in_sync,
            }
        if loop.first_val is not None:
            info["initial_val_mae"] = loop.first_val
        return info

    def _checkpoint(self) -> None:
        payload = self.payload()  # collective under torchrun: every rank takes part
        if self.ddp.is_main:
            self.manager.save(self.loop.step, payload)


def _masked_l1(a: torch.Tensor, b: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    import torch

    n = sel.sum()
    diff = torch.where(sel, (a - torch.nan_to_num(b)).abs(), 0.0)
    return diff.sum() / n.clamp(min=1)
