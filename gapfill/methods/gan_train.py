"""The training loop of the ``gan`` method: losses, steps, validation, checkpoints.

:class:`Trainer` runs one call of ``GAN.fit``: ``d_steps`` discriminator steps
(when the adversarial terms are on) and one generator step per iteration, an
exponential moving average of the generator's weights, validation on the
held-out pixels (:mod:`gapfill.methods.gan_data`) driving early stopping, the
pool of guides redrawn one by one as training goes (``guide_refresh``), and
checkpoints with resume. The untrained generator returns its guide, and the
generator kept is the one with the best validation MAE, step 0 included: the
fitted model is never worse than its guide on the validation pixels.

Each validation also scores the generator's correction of the guide scaled by
each of :data:`CORRECTION_GAINS`; the best of them is the validation's score and
its gain is kept (``correction_gain`` in the model). A network trained on hidden
pixels a little harder to fill than the real gaps learns corrections a little too
large for them. ``fit`` (the accessor's) then chooses the gain again
(:meth:`~gapfill.methods.gan.GAN.tune`) on its error model's validation pixels,
filled from the whole input of the fit, nearly as dense as the fill's.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from gapfill.training import Run, Trainer
from gapfill.windows import count_windows

if TYPE_CHECKING:
    import torch

    from gapfill.methods.gan import GAN
    from gapfill.methods.gan_data import TrainingData


#: The shares of the generator's correction of its guide each validation scores (ties
#: keep the first).
CORRECTION_GAINS = (1.0, 0.75, 0.5, 0.25)


def choose_gain(
    guide: np.ndarray, fill: np.ndarray, truth: np.ndarray, gains: tuple[float, ...],
    weights: np.ndarray | None = None, min_gain: float = 0.0, largest: float | None = None,
) -> tuple[float, list[float]]:
    """Find the share of the correction ``fill - guide`` with the lowest MAE against ``truth``.

    Returns the share (ties keep the first of ``gains``) and the MAE of each share,
    weighted by ``weights`` (one per value) when given. When 0 (the guide alone) is among
    ``gains``, another share is chosen only if its MAE is at least ``min_gain`` (a share)
    below the guide's: a smaller gain is within the noise of the pixels scored. With
    ``largest``, only the shares up to it are chosen from (every share is still scored).
    """
    scores = [float(np.average(np.abs(guide + g * (fill - guide) - truth), weights=weights))
              for g in gains]
    allowed = [i for i, g in enumerate(gains) if largest is None or g <= largest] or list(
        range(len(gains)))
    i = min(allowed, key=scores.__getitem__)
    best = gains[i]
    if 0.0 in gains and scores[i] > scores[gains.index(0.0)] * (1.0 - min_gain):
        best = 0.0
    return best, scores

#: With a time budget, redrawing the pool's guides (``guide_refresh``) takes at most this
#: share of the training time: on a large cube, where a guide is costly, it is done less often.
REFRESH_SHARE = 0.2

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


class GANTrainer(Trainer):
    """The training of :class:`GAN` (one call of ``fit``) on the shared trainer.

    The networks are the generator (kept at its best, averaged with ``ema``) and
    the two discriminators; ``deadline`` (a :func:`time.monotonic` time) ends the
    whole fit, the set-up before the loop and the work after it included: training
    stops early enough to leave the estimated time of
    :meth:`~gapfill.methods.gan.GAN._after_fit_seconds`.
    ``after_shape`` is the ``(T, H, W)`` of the cube that work fills (``None``: the
    training input's).
    """

    metrics = ("loss_d", "loss_g", "adv_g", "recon")
    shown = ("loss_d", "loss_g", "recon")
    best_key = "best_G"
    averaged_key = "G_avg"

    def __init__(
        self, method: GAN, run: Run, data: TrainingData, deadline: float | None = None,
        after_shape: tuple[int, int, int] | None = None,
    ) -> None:
        import torch

        from gapfill.methods.gan_data import validation_regions
        from gapfill.models import (
            FrameDiscriminator,
            FrameDiscriminatorConfig,
            SequenceDiscriminator,
            SequenceDiscriminatorConfig,
        )

        super().__init__(method, run)
        self.m, self.data, self.deadline = method, data, deadline
        o = self.o = method.options
        self.after_shape = after_shape or data.x.shape[2:]
        self.reserved = method._after_fit_seconds(data, self.after_shape, 0.0)
        c = data.channels
        # The bare networks (G_net, Df_net, Ds_net) and what the steps call (G, Df,
        # Ds): the same modules, wrapped for gradient averaging when distributed.
        self.G_net = method.generator.to(self.device)
        if self.device.type == "cpu":
            self.G_net.use_channels_last()
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
        self.recon = o.recon_weight > 0 and o.supervision != "paired"
        self.val_regions = validation_regions(data.val, data.window)  # where validate() fills
        # Training and validation use the whole correction; the best gain is kept at the end.
        method._meta["correction_gain"] = 1.0
        self.best_gain = 1.0
        self.refresh_seconds = 0.0

    def networks(self) -> dict[str, torch.nn.Module]:
        """The generator (first: kept at its best and averaged) and the discriminators."""
        return {"G": self.G_net, "Df": self.Df_net, "Ds": self.Ds_net}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_g": self.opt_g, "opt_d": self.opt_d}

    def before_loop(self) -> dict[str, Any]:
        """Give the loop what the set-up left of the whole fit's time budget."""
        budget = self.loop.budget
        if self.deadline is not None and budget is not None:
            budget.seconds = max(self.deadline - self.reserved - budget.start, 0.0)
        return {}

    # -- tensors --------------------------------------------------------------------
    def tensors(self, recon: bool) -> dict[str, torch.Tensor]:
        import torch

        b = self.data.batch(self.o.batch_size, self.rng, recon, fake=self.o.adv_weight > 0,
                            flips=self.o.flips)
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
        with torch.no_grad(), self.autocast():
            fill = self.generate(b)
        with self.autocast():
            real, fake = self.pairs(b, fill.float())
            # Real and fake in one call of each discriminator (one forward per backward,
            # as DistributedDataParallel expects); no batch statistics mix them.
            both = torch.cat([real, fake])
            n = real.shape[0]
            sf, ss = self.Df(both), self.Ds(both)
            loss = d_loss(self.o.loss, sf[:n], sf[n:]) + d_loss(self.o.loss, ss[:n], ss[n:])
        self.optimise(loss, self.opt_d)
        return float(loss.detach())

    def g_step(self) -> tuple[float, float, float]:
        import torch

        from gapfill.models.losses import masked_l1

        o = self.o
        b = self.tensors(self.recon)
        for p in list(self.Df_net.parameters()) + list(self.Ds_net.parameters()):
            p.requires_grad_(False)
        with self.autocast():
            fill = self.generate(b).float()
            if o.adv_weight > 0:  # the bare discriminators: they are not updated here
                _, fake = self.pairs(b, fill)
                adv = g_loss(o.loss, self.Df_net(fake)) + g_loss(o.loss, self.Ds_net(fake))
            else:
                adv = fill.new_zeros(())
            if o.supervision == "paired":
                target = b["clean"]
                sel = torch.isfinite(target) & ~torch.isfinite(b["y_in"])
                rec = masked_l1(fill, target, sel)
            elif self.recon:
                rec = masked_l1(fill, b["y"], b["hide"])
            else:
                rec = fill.new_zeros(())
            loss = o.adv_weight * adv + o.recon_weight * rec
        self.optimise(loss, self.opt_g)
        for p in list(self.Df_net.parameters()) + list(self.Ds_net.parameters()):
            p.requires_grad_(True)
        return float(loss.detach()), float(adv.detach()), float(rec.detach())

    def validate(self) -> float | None:
        """Validation MAE of the generator in place (the averaged one with ``ema``), computed
        on rank 0 and shared (every rank then decides alike)."""
        d = self.data
        if not d.val.any():
            return None
        mae, gain = None, 1.0
        start = time.monotonic()
        if self.ddp.is_main:
            fills, guides, truths, windows = [], [], [], 0
            for b, sl in self.val_regions:
                part = (slice(None), *sl)
                guide = d.guides[0][b][part] if d.guides[0] is not None else None
                out = self.m._fill(d.x[b][part], guide, d.extras[b][part], 1, 0)
                windows += count_windows(out.shape[1:], d.window, self.o.overlap)
                val = d.val[b][part]
                fills.append(out[val])
                guides.append(guide[:len(out)][val] if guide is not None else out[val])
                truths.append(d.truth[b][part][val])
            fill, guide, truth = map(np.concatenate, (fills, guides, truths))
            per_window = (time.monotonic() - start) / max(windows, 1)
            self.reserved = self.m._after_fit_seconds(d, self.after_shape, per_window)
            gains = CORRECTION_GAINS if d.guides[0] is not None else (1.0,)
            gain, scores = choose_gain(guide, fill, truth, gains)
            mae = min(scores)
        mae, gain, self.reserved = self.ddp.from_main((mae, gain, self.reserved))
        if mae is not None and self.loop.stopper.improves(mae):  # the step the loop will keep
            self.best_gain = gain
        budget = self.loop.budget
        if self.deadline is not None and budget is not None:
            # keep the time of one more validation (the one after the last step) and of
            # the work after training in budget
            spent = time.monotonic() - start
            budget.seconds = max(self.deadline - spent - self.reserved - budget.start, 0.0)
        return mae

    def state(self) -> dict[str, Any]:
        """The correction gain of the best validation so far."""
        return {"correction_gain": self.best_gain}

    def load_state(self, ckpt: Any) -> None:
        self.best_gain = float(ckpt.get("correction_gain", 1.0))
        # the pool as it was: each guide's latest redraw (a draw depends on its step only)
        every, pool, step = self.o.guide_refresh, len(self.data.guides) - 1, int(ckpt["step"])
        if every and pool:
            last = step // every
            for k in range(max(1, last - pool + 1), last + 1):
                self._refresh(k * every)

    # -- the pool of guides ---------------------------------------------------------
    def _refresh(self, step: int) -> None:
        """Redraw the pool guide whose turn comes at ``step`` (a multiple of ``guide_refresh``)."""
        pool = len(self.data.guides) - 1
        member = 1 + (step // self.o.guide_refresh - 1) % pool
        self.data.refresh(member, np.random.default_rng([self.seed, 2, step]))

    def maybe_refresh(self) -> None:
        """Every ``guide_refresh`` steps, replace the oldest guide of the pool (and its
        hide) by a fresh draw, so the generator sees new hides as it trains instead of
        learning the values under a few by heart; with a time budget, only while the
        redraws have taken at most :data:`REFRESH_SHARE` of the training time."""
        every, step, budget = self.o.guide_refresh, self.loop.step, self.loop.budget
        if not every or not step or step % every or len(self.data.guides) < 2 or not self.recon:
            return
        if budget.seconds is not None and self.refresh_seconds > REFRESH_SHARE * budget.elapsed:
            return
        start = time.monotonic()
        self._refresh(step)
        self.refresh_seconds += time.monotonic() - start

    # -- loop -----------------------------------------------------------------------
    def train_step(self) -> tuple[float, float, float, float]:
        """``d_steps`` discriminator steps, then one generator step; their losses."""
        o = self.o
        self.maybe_refresh()
        ld = np.mean([self.d_step() for _ in range(o.d_steps)]) if o.adv_weight > 0 else 0.0
        lg, adv, rec = self.g_step()
        return ld, lg, adv, rec

    def after_loop(self) -> dict[str, Any]:
        """The guide chosen, and the replicas' agreement under ``torchrun``."""
        self.m._meta["correction_gain"] = self.best_gain
        info = {key: self.m._meta.get(key) for key in (
            "guide", "guide_val_mae", "guide_start_steps", "validation_shapes",
            "correction_gain")}
        if self.ddp.enabled:
            in_sync = self.ddp.weights_in_sync(self.G_net)
            if in_sync is False:
                raise RuntimeError("distributed training: the generator replicas diverged")
            info["distributed"] = {
                "world_size": self.ddp.world_size,
                "backend": self.ddp.backend,
                "windows_per_step": self.ddp.world_size * self.o.batch_size,
                "weights_in_sync": in_sync,
            }
        return info
