"""Temporal group fusion network (Liu et al., IEEE TCSVT 2021), method ``"tgfnet"``.

Fills one target frame at a time from reference frames at fixed offsets
(``ref_offsets``, clamped at the ends of the sequence): a coarse alignment
module warps each reference onto the target, a pyramid encoder extracts
features at 1/2, 1/4 and 1/8 resolution, and at each scale a temporal
information fusion module fuses (target, reference) groups (3D convolution
over the pair, then 2D convolutions in kernel-size streams) and weighs the
groups with a temporal attention (softmax over groups per pixel); a decoder
goes from coarse to fine. The network is in :mod:`gapfill.models.tgfnet`.

Losses: the pyramid L1 loss (outputs at 1, 1/2, 1/4, 1/8 resolution against
mask-aware down-sampled targets, holes weighted by ``hole_weight``), the
self-supervised alignment L1 loss (warped reference vs. target on pixels valid
in both), and optionally perceptual and style losses on VGG16 features loaded
from a local file (``vgg_weights``; off by default, nothing is downloaded).

Training is self-supervised (:mod:`gapfill.methods.selfsup`): extra observed
pixels are hidden by the occlusion process and the hole losses are taken on
them. At fill time frames are filled in order and each filled frame becomes a
reference (flagged "filled") for the next; during training, earlier reference
frames stand in for that with their gaps filled by the guide (the linear
first guess with ``guide="none"``).
Filling runs on windows covering the whole time axis, overlapping in space.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gapfill.guides import linear_guide
from gapfill.methods.selfsup import (
    SelfSupervisedMethod,
    SelfSupervisedOptions,
)

if TYPE_CHECKING:
    import torch


@dataclass
class TGFNetOptions(SelfSupervisedOptions):
    """Options of the ``tgfnet`` method.

    The shared ones are documented in :class:`~gapfill.methods.selfsup.SelfSupervisedOptions`.

    Attributes
    ----------
    window
        Training window ``(T, H, W)``: targets are drawn from it, with their
        references inside it. Filling uses the whole time axis and ``(H, W)``.
    ref_offsets
        Time offsets of the reference frames from the target (non-zero, distinct).
    width
        Encoder channels at 1/2 resolution (x2 at 1/4, x4 at 1/8).
    kernels
        Kernel sizes of the intra-group fusion streams.
    align_width
        Channels of the coarse alignment CNN.
    align_weight
        Weight of the alignment L1 loss.
    pyramid_weights
        Weights of the L1 losses at scales 1, 1/2, 1/4, 1/8.
    vgg_weights
        Path of a local VGG16 weights file (torchvision-style ``features.N.*``
        keys, read with ``torch.load(weights_only=True)``) for the perceptual
        and style losses; ``None`` turns them off.
    perceptual_weight, style_weight
        Weights of the perceptual and style losses (used with ``vgg_weights``).
    """

    window: tuple[int, int, int] = (9, 64, 64)
    batch_size: int = 8
    ref_offsets: tuple[int, ...] = (-2, -1, 1, 2)
    width: int = 12
    kernels: tuple[int, ...] = (3, 5, 7)
    align_width: int = 12
    align_weight: float = 0.1
    pyramid_weights: tuple[float, float, float, float] = (1.0, 0.5, 0.25, 0.125)
    vgg_weights: str | None = None
    perceptual_weight: float = 0.05
    style_weight: float = 120.0

    _method = "tgfnet"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.ref_offsets = tuple(int(v) for v in self.ref_offsets)  # type: ignore[assignment]
        self.kernels = tuple(int(v) for v in self.kernels)  # type: ignore[assignment]
        self.pyramid_weights = tuple(  # type: ignore[assignment]
            float(v) for v in self.pyramid_weights)
        if self.vgg_weights is not None:
            self.vgg_weights = str(self.vgg_weights)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad option (the VGG file is checked by ``fit``)."""
        super().validate()
        offs = self.ref_offsets
        if not offs or 0 in offs or len(set(offs)) != len(offs):
            self._bad("ref_offsets", "must be one or more distinct non-zero integers")
        for name in ("width", "align_width"):
            if int(getattr(self, name)) < 1:
                self._bad(name, "must be a positive integer")
        if not self.kernels or min(self.kernels) < 1 or any(k % 2 == 0 for k in self.kernels):
            self._bad("kernels", "must be one or more odd positive integers")
        if len(self.pyramid_weights) != 4 or min(self.pyramid_weights) < 0:
            self._bad("pyramid_weights", "must be four numbers >= 0 (scales 1, 1/2, 1/4, 1/8)")
        for name in ("align_weight", "perceptual_weight", "style_weight"):
            if not getattr(self, name) >= 0:
                self._bad(name, "must be >= 0")


class TGFNet(SelfSupervisedMethod):
    """Temporal group fusion network trained self-supervised; see the module docstring."""

    name = "tgfnet"
    Options = TGFNetOptions

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._vgg: Any = None

    # -- network --------------------------------------------------------------------------
    def _build(self, channels: int) -> Any:
        from gapfill.models.tgfnet import TGFNet as Net
        from gapfill.models.tgfnet import TGFNetConfig

        o = self.options
        cfg = TGFNetConfig(channels=channels, n_refs=len(o.ref_offsets), guide=o.guide != "none",
                           width=o.width, kernels=o.kernels, align_width=o.align_width)
        self._meta["network"] = dataclasses.asdict(cfg)
        self._meta["ref_offsets"] = list(o.ref_offsets)
        return Net(cfg)

    def _rebuild(self) -> Any:
        from gapfill.models.tgfnet import TGFNet as Net
        from gapfill.models.tgfnet import TGFNetConfig

        return Net(TGFNetConfig(**self._meta["network"]))

    def _setup_training(self) -> None:
        o = self.options
        if o.vgg_weights is not None and (o.perceptual_weight > 0 or o.style_weight > 0):
            from gapfill.models.tgfnet import VGG16Features

            self._vgg = VGG16Features.from_file(o.vgg_weights).to(self._device())

    def _teardown_training(self) -> None:
        self._vgg = None

    def _fill_size(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The whole time axis (frames are filled in order), the training window in space."""
        _, h, w = self._meta["window"]
        return (shape[0], h, w)

    # -- inputs ---------------------------------------------------------------------------
    @staticmethod
    def _refs(t: int, n_frames: int, offsets: tuple[int, ...]) -> np.ndarray:
        return np.clip(t + np.asarray(offsets), 0, n_frames - 1)

    def _targets(
        self, t0: np.ndarray, flip_t: np.ndarray, wt: int, n_frames: int, rng: np.random.Generator
    ) -> list[int]:
        """A target per window whose references stay in the window (or stop at the cube's ends)."""
        offs = np.asarray(self._meta["ref_offsets"])
        out = []
        for start, flipped in zip(t0, flip_t):
            taus = np.arange(wt)
            idx = taus[:, None] + offs[None, :]
            cube_idx = start + (wt - 1 - idx if flipped else idx)
            ok = ((idx >= 0) & (idx < wt)) | (cube_idx < 0) | (cube_idx >= n_frames)
            allowed = taus[ok.all(1)]
            out.append(int(rng.choice(allowed if allowed.size else taus)))
        return out

    # -- training ---------------------------------------------------------------------------
    def _loss(
        self, batch: dict[str, np.ndarray], rng: np.random.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Pyramid L1 + alignment L1 (+ perceptual and style) on one target frame per window."""
        import torch

        from gapfill.models.losses import masked_l1
        from gapfill.models.tgfnet import pyramid_targets

        o = self.options
        offsets = tuple(self._meta["ref_offsets"])
        y, y_in, guide = batch["y"], batch["y_in"], batch["guide"]
        b, c, wt = y.shape[:3]
        taus = self._targets(batch["t0"], batch["flip_t"], wt, int(batch["frames"]), rng)
        tgt, t_in, t_guide, refs, r_mask, r_flag = [], [], [], [], [], []
        for i, tau in enumerate(taus):
            prefill = guide[i] if o.guide != "none" else None
            tgt.append(y[i, :, tau])
            t_in.append(y_in[i, :, tau])
            t_guide.append(guide[i, :, tau])
            rv, rm, rf = [], [], []
            for j in self._refs(tau, wt, offsets):
                frame = y_in[i, :, j]
                obs = np.isfinite(frame)
                if j < tau:  # an earlier frame: at fill time it is already filled
                    if prefill is None:
                        prefill = linear_guide(y_in[i])
                    rv.append(np.where(obs, frame, prefill[:, j]))
                    rm.append(np.ones_like(frame))
                    rf.append((~obs).astype(np.float32))
                else:
                    rv.append(frame)
                    rm.append(obs.astype(np.float32))
                    rf.append(np.zeros_like(frame))
            refs.append(np.stack(rv))
            r_mask.append(np.stack(rm))
            r_flag.append(np.stack(rf))
        y_t, y_in_t, g_t = (self._tensor(np.stack(a)) for a in (tgt, t_in, t_guide))
        refs_t, rm_t, rf_t = (self._tensor(np.stack(a)) for a in (refs, r_mask, r_flag))
        t_mask = torch.isfinite(y_in_t).to(y_t.dtype)
        res = self.net(y_in_t, t_mask, refs_t, rm_t, rf_t, g_t if o.guide != "none" else None)

        valid = torch.isfinite(y_t)
        hole = valid & (t_mask == 0)
        parts: dict[str, float] = {}
        loss = y_t.new_zeros(())
        targets = pyramid_targets(torch.nan_to_num(y_t), valid.to(y_t.dtype), hole.to(y_t.dtype))
        for weight, out, (target, v, h) in zip(o.pyramid_weights, res["out"], targets):
            if weight > 0:
                loss = loss + weight * (o.hole_weight * masked_l1(out, target, h)
                                        + o.valid_weight * masked_l1(out, target, v))
        parts["pyramid"] = float(loss.detach())
        if o.align_weight > 0:
            both = (t_mask[:, None] > 0) & (res["warped_mask"] > 0)
            target = y_in_t[:, None].expand_as(res["warped"])
            align = masked_l1(res["warped"], target, both)
            loss = loss + o.align_weight * align
            parts["align"] = float(align.detach())
        if self._vgg is not None:
            perc, style = self._vgg_losses(res["out"][0], y_in_t, t_mask, y_t, valid)
            loss = loss + o.perceptual_weight * perc + o.style_weight * style
            parts["perceptual"], parts["style"] = float(perc.detach()), float(style.detach())
        return loss, parts

    def _vgg_losses(
        self, out: torch.Tensor, y_in: torch.Tensor, t_mask: torch.Tensor, y: torch.Tensor,
        valid: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Perceptual and style losses of the output and the composite (Liu et al. 2018 style).

        The reference image is the target's observations, with the (detached)
        output where nothing is observed, so only the hidden observed pixels
        make a difference.
        """
        import torch

        from gapfill.models.tgfnet import gram

        comp = torch.where(t_mask > 0, torch.nan_to_num(y_in), out)
        ref = torch.where(valid, torch.nan_to_num(y), out.detach())
        f_ref = self._vgg(_rgb(ref))
        perc = out.new_zeros(())
        style = out.new_zeros(())
        for img in (out, comp):
            for fa, fb in zip(self._vgg(_rgb(img)), f_ref):
                perc = perc + (fa - fb).abs().mean()
                style = style + (gram(fa) - gram(fb)).abs().mean()
        return perc, style

    # -- filling ------------------------------------------------------------------------------
    def _predict(self, batch: np.ndarray, guide: np.ndarray) -> np.ndarray:
        """Fill the frames of each window in order; each filled frame is a reference for the next.

        ``batch`` and ``guide`` are ``(n, C, T, h, w)``; returns the filled windows.
        """
        import torch

        offsets = tuple(self._meta["ref_offsets"])
        x = self._tensor(batch)
        g = self._tensor(guide)
        obs = torch.isfinite(x)
        obs_f = obs.to(x.dtype)
        state = torch.nan_to_num(x)
        n_frames = x.shape[2]
        use_guide = self.options.guide != "none"
        for tau in range(n_frames):
            idx = self._refs(tau, n_frames, offsets)
            rv, rm, rf = [], [], []
            for j in idx:
                if j < tau:
                    rv.append(state[:, :, j])
                    rm.append(torch.ones_like(obs_f[:, :, j]))
                    rf.append(1 - obs_f[:, :, j])
                else:
                    rv.append(state[:, :, j])
                    rm.append(obs_f[:, :, j])
                    rf.append(torch.zeros_like(obs_f[:, :, j]))
            res = self.net(state[:, :, tau], obs_f[:, :, tau], torch.stack(rv, 1),
                           torch.stack(rm, 1), torch.stack(rf, 1),
                           g[:, :, tau] if use_guide else None)
            state[:, :, tau] = torch.where(obs[:, :, tau], state[:, :, tau], res["out"][0])
        return state.float().cpu().numpy()


def _rgb(img: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> 3-channel images for VGG (each channel as grey unless ``C == 3``)."""
    n, c, h, w = img.shape
    if c == 3:
        return img
    return img.reshape(n * c, 1, h, w).expand(n * c, 3, h, w)
