"""The training loop of the ``gan`` method: losses, steps, validation, checkpoints.

:class:`Trainer` runs one call of ``GAN.fit``: ``d_steps`` discriminator steps
(when the adversarial terms are on) and one generator step per iteration, an
exponential moving average of the generator's weights, validation on the
held-out pixels (:mod:`gapfill.methods.gan_data`) driving early stopping, and
checkpoints with resume. The untrained generator returns its guide, and the
generator kept is the one with the best validation MAE, step 0 included: the
fitted model is never worse than its guide on the validation pixels.
"""

from __future__ import annotations

import copy
import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from gapfill.methods.gan import GAN
    from gapfill.methods.gan_data import TrainingData


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


class Trainer:
    """The adversarial training loop of :class:`GAN` (one call of ``fit``)."""

    def __init__(
        self, method: GAN, data: TrainingData, seed: int, manager: Any,
        deadline: float | None = None,
    ) -> None:
        import torch

        from gapfill.models import (
            FrameDiscriminator,
            FrameDiscriminatorConfig,
            SequenceDiscriminator,
            SequenceDiscriminatorConfig,
        )
        from gapfill.distributed import context
        from gapfill.methods.gan_data import validation_regions
        from gapfill.training import TrainLoop

        self.m, self.data, self.seed, self.manager = method, data, seed, manager
        self.deadline = deadline  # time.monotonic() time the whole fit must end by
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
            steps=o.steps, time_budget=None,
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

        b = self.data.batch(self.o.batch_size, self.rng, recon, fake=self.o.adv_weight > 0)
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

        from gapfill.models.losses import masked_l1

        o = self.o
        b = self.tensors(self.recon)
        for p in list(self.Df_net.parameters()) + list(self.Ds_net.parameters()):
            p.requires_grad_(False)
        with self.m._autocast(self.device):
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
        start = time.monotonic()
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
        budget = self.loop.budget
        if self.deadline is not None and budget is not None:
            # keep the time of one more validation (the one after the last step) in budget
            spent = time.monotonic() - start
            budget.seconds = max(self.deadline - spent - budget.start, 0.0)
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
        if self.deadline is not None:  # what the set-up left of the fit's time budget
            loop.time_budget = max(self.deadline - time.monotonic(), 0.0)
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
        for key in ("guide", "guide_val_mae", "validation_shapes"):
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
