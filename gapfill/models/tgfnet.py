"""TGFNet: a temporal group fusion network that fills one target frame from reference frames.

After Liu et al., "Temporal group fusion network for deep video inpainting"
(IEEE TCSVT 2021). For a target frame and ``K`` reference frames:

1. **Coarse alignment** (:class:`CoarseAlignment`): for each (target,
   reference) pair a small CNN predicts a dense flow at 1/4 resolution
   (up-sampled), and the reference, its mask and its "filled" flag are warped
   onto the target with ``grid_sample``. It is trained with the
   self-supervised alignment L1 loss on pixels valid in both frames.
2. **Pyramid frame encoder** (:class:`PyramidEncoder`, weights shared by all
   frames): features at 1/2, 1/4 and 1/8 resolution.
3. **Temporal information fusion** (:class:`TemporalFusion`, one per scale):
   *intra-group* fusion of each (target, reference) pair with a 3D
   convolution over the pair, then 2D convolutions in three streams of
   different kernel sizes (3, 5, 7 by default); *inter-group* temporal
   attention: a score per group and pixel, softmax over the groups, weighted
   sum.
4. **Decoder**, coarse to fine (1/8 -> 1/4 -> 1/2 -> 1), with an output image
   at every scale for the pyramid L1 loss.

Frames enter as values (0 where missing), a validity mask and a "filled"
flag (1 where a value is a previous fill rather than an observation), each
per data channel. An optional guide (a first guess of the target) is the base
every scale's output corrects. :class:`VGG16Features` is the small VGG16
feature extractor of the perceptual and style losses (weights from a local
file only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gapfill.models.masked import masked_pool, pad_to

#: Height and width are padded to a multiple of this (three halvings).
MULTIPLE = 8


@dataclass
class TGFNetConfig:
    """Configuration of :class:`TGFNet`.

    Attributes
    ----------
    channels
        Data channels (1 for SST, 3 for RGB video).
    n_refs
        Number of reference frames per target.
    guide
        Whether a guide (first guess of the target) is an input.
    width
        Encoder channels at 1/2 resolution (doubled at 1/4 and at 1/8).
    kernels
        Kernel sizes of the intra-group fusion streams.
    align_width
        Channels of the coarse alignment CNN.
    """

    channels: int = 1
    n_refs: int = 4
    guide: bool = True
    width: int = 16
    kernels: tuple[int, ...] = (3, 5, 7)
    align_width: int = 16

    def __post_init__(self) -> None:
        self.kernels = tuple(int(k) for k in self.kernels)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2), _act())


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp ``x`` ``(N, C, H, W)`` by ``flow`` ``(N, 2, H, W)`` (pixels; x then y).

    Samples outside the frame are 0 (so a warped mask marks them invalid).
    """
    n, _, h, w = x.shape
    ys = torch.arange(h, dtype=x.dtype, device=x.device)
    xs = torch.arange(w, dtype=x.dtype, device=x.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    px = gx[None] + flow[:, 0]
    py = gy[None] + flow[:, 1]
    grid = torch.stack([2 * px / max(w - 1, 1) - 1, 2 * py / max(h - 1, 1) - 1], -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


class CoarseAlignment(nn.Module):
    """Predicts the flow of a reference onto the target and warps the reference.

    Input of the flow CNN: target (values, mask) and reference (values, mask);
    the flow head starts at zero (identity warp).
    """

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(4 * channels, width, 3, 2), _conv(width, width, 3, 2),
            _conv(width, width), _conv(width, width, 3),
        )
        self.head = nn.Conv2d(width, 2, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, target: torch.Tensor, t_mask: torch.Tensor, ref: torch.Tensor, r_mask: torch.Tensor
    ) -> torch.Tensor:
        """Flow ``(N, 2, H, W)`` in pixels (``H, W`` multiples of 4)."""
        h, w = target.shape[-2:]
        low = self.head(self.body(torch.cat([target, t_mask, ref, r_mask], 1)))
        return 4.0 * F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)


class PyramidEncoder(nn.Module):
    """Frame encoder: features at 1/2 (``w``), 1/4 (``2w``) and 1/8 (``4w``) resolution."""

    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        w = width
        self.stem = _conv(cin, w, 5)
        self.s2 = nn.Sequential(_conv(w, w, 3, 2), _conv(w, w))
        self.s4 = nn.Sequential(_conv(w, 2 * w, 3, 2), _conv(2 * w, 2 * w))
        self.s8 = nn.Sequential(_conv(2 * w, 4 * w, 3, 2), _conv(4 * w, 4 * w))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features ``[1/2, 1/4, 1/8]`` of ``(N, cin, H, W)``."""
        f2 = self.s2(self.stem(x))
        f4 = self.s4(f2)
        return [f2, f4, self.s8(f4)]


class TemporalFusion(nn.Module):
    """Temporal information fusion at one scale: intra-group fusion, then attention over groups."""

    def __init__(self, width: int, kernels: tuple[int, ...]) -> None:
        super().__init__()
        self.pair = nn.Sequential(nn.Conv3d(width, width, (2, 3, 3), padding=(0, 1, 1)), _act())
        self.streams = nn.ModuleList([_conv(width, width, k) for k in kernels])
        self.merge = nn.Sequential(nn.Conv2d(len(kernels) * width, width, 1), _act())
        self.score = nn.Sequential(_conv(2 * width, width), nn.Conv2d(width, 1, 3, padding=1))

    def forward(
        self, target: torch.Tensor, refs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fuse ``refs`` ``(N, K, F, h, w)`` with ``target`` ``(N, F, h, w)``.

        Returns
        -------
        fused
            ``(N, F, h, w)``.
        attention
            ``(N, K, h, w)`` softmax weights of the groups.
        """
        n, k, f, h, w = refs.shape
        tgt = target[:, None].expand(n, k, f, h, w)
        pair = torch.stack([tgt, refs], 3).reshape(n * k, f, 2, h, w)  # (NK, F, 2, h, w)
        g = self.pair(pair)[:, :, 0]
        g = self.merge(torch.cat([s(g) for s in self.streams], 1))  # (NK, F, h, w)
        score = self.score(torch.cat([g, tgt.reshape(n * k, f, h, w)], 1)).reshape(n, k, h, w)
        att = torch.softmax(score, 1)
        fused = (g.reshape(n, k, f, h, w) * att[:, :, None]).sum(1)
        return fused, att


class TGFNet(nn.Module):
    """Fill a target frame from ``K`` reference frames; see the module docstring.

    Parameters
    ----------
    config
        A :class:`TGFNetConfig`.
    """

    def __init__(self, config: TGFNetConfig) -> None:
        super().__init__()
        self.config = config
        c, w = config.channels, config.width
        self.align = CoarseAlignment(c, config.align_width)
        self.encoder = PyramidEncoder(3 * c, w)
        widths = (w, 2 * w, 4 * w)
        self.fusion = nn.ModuleList([TemporalFusion(f, config.kernels) for f in widths])
        self.dec8 = nn.Sequential(_conv(8 * w, 4 * w), _conv(4 * w, 4 * w))
        self.dec4 = nn.Sequential(_conv(4 * w + 4 * w, 2 * w), _conv(2 * w, 2 * w))
        self.dec2 = nn.Sequential(_conv(2 * w + 2 * w, w), _conv(w, w))
        g = c if config.guide else 0
        self.dec1 = nn.Sequential(_conv(w + 2 * c + g, w), _conv(w, w))
        self.heads = nn.ModuleList([nn.Conv2d(f, c, 3, padding=1) for f in (4 * w, 2 * w, w, w)])
        for head in self.heads:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(
        self,
        target: torch.Tensor,
        t_mask: torch.Tensor,
        refs: torch.Tensor,
        r_mask: torch.Tensor,
        r_filled: torch.Tensor,
        guide: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Fill ``target``.

        Parameters
        ----------
        target, t_mask
            ``(N, C, H, W)`` target values (anything where the mask is 0) and mask.
        refs, r_mask, r_filled
            ``(N, K, C, H, W)`` reference values, validity (observed or filled)
            and filled flags.
        guide
            ``(N, C, H, W)`` first guess of the target (config ``guide``).

        Returns
        -------
        dict
            ``"out"``: ``[full, 1/2, 1/4, 1/8]`` outputs (``(N, C, ., .)``; the
            coarse ones of the padded frame), ``"warped"``, ``"warped_mask"``
            (``(N, K, C, H, W)``), ``"attention"`` (per scale, ``(N, K, h, w)``).
        """
        n, k, c, h, w = refs.shape
        zero = torch.zeros((), dtype=target.dtype, device=target.device)
        if self.config.guide and guide is None:
            raise ValueError("this TGFNet was built with a guide input: pass guide")
        if not self.config.guide:
            guide = torch.zeros_like(target)
        target = pad_to(torch.where(t_mask > 0, target, zero), MULTIPLE)
        t_mask = pad_to(t_mask, MULTIPLE)
        refs = pad_to(torch.where(r_mask > 0, refs, zero), MULTIPLE)
        r_mask, r_filled = pad_to(r_mask, MULTIPLE), pad_to(r_filled, MULTIPLE)
        guide = pad_to(guide, MULTIPLE, mode="replicate")
        hp, wp = target.shape[-2:]

        # 1. coarse alignment of every reference onto the target
        t_rep = target[:, None].expand(n, k, c, hp, wp)
        tm_rep = t_mask[:, None].expand(n, k, c, hp, wp)
        flow = self.align(_flat(t_rep), _flat(tm_rep), _flat(refs), _flat(r_mask))
        stack = torch.cat([_flat(refs) * _flat(r_mask), _flat(r_mask), _flat(r_filled)], 1)
        stack = warp(stack, flow)
        wm = stack[:, c : 2 * c]
        wv = stack[:, :c] / wm.clamp(min=1e-3) * (wm > 1e-3)
        valid = (wm > 0.5).to(target.dtype)
        wf = stack[:, 2 * c :] * valid

        # 2. pyramid features of the target and the aligned references
        feats_t = self.encoder(torch.cat([target, t_mask, torch.zeros_like(target)], 1))
        feats_r = self.encoder(torch.cat([wv * valid, valid, wf], 1))

        # 3. temporal fusion per scale, 4. decoding coarse to fine
        fused, atts = [], []
        for fusion, ft, fr in zip(self.fusion, feats_t, feats_r):
            f, a = fusion(ft, fr.reshape(n, k, *fr.shape[1:]))
            fused.append(f)
            atts.append(a)
        guides = [F.avg_pool2d(guide, s) for s in (8, 4, 2)]
        d = self.dec8(torch.cat([fused[2], feats_t[2]], 1))
        out8 = guides[0] + self.heads[0](d)
        d = self.dec4(torch.cat([_up(d), fused[1], feats_t[1]], 1))
        out4 = guides[1] + self.heads[1](d)
        d = self.dec2(torch.cat([_up(d), fused[0], feats_t[0]], 1))
        out2 = guides[2] + self.heads[2](d)
        parts = [_up(d), target, t_mask] + ([guide] if self.config.guide else [])
        d = self.dec1(torch.cat(parts, 1))
        out1 = guide + self.heads[3](d)
        return {
            "out": [out1[..., :h, :w], out2, out4, out8],
            "warped": wv.reshape(n, k, c, hp, wp)[..., :h, :w],
            "warped_mask": valid.reshape(n, k, c, hp, wp)[..., :h, :w],
            "attention": atts,
        }


def _flat(a: torch.Tensor) -> torch.Tensor:
    """``(N, K, ...)`` -> ``(N * K, ...)``."""
    return a.reshape(a.shape[0] * a.shape[1], *a.shape[2:])


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def pyramid_targets(
    y: torch.Tensor, valid: torch.Tensor, hole: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Targets of the pyramid loss at scales 1, 1/2, 1/4, 1/8 of a frame padded to :data:`MULTIPLE`.

    Returns ``(target, valid, hole)`` per scale: the mask-aware mean of the
    valid values, cells with any valid value, and cells holding a hole pixel.
    At full resolution the frame is not padded.
    """
    out = [(y, valid > 0, hole > 0)]
    yp, vp, hp = pad_to(y, MULTIPLE), pad_to(valid, MULTIPLE), pad_to(hole, MULTIPLE)
    for s in (2, 4, 8):
        mean, share = masked_pool(yp, vp, s)
        _, hshare = masked_pool(hp, torch.ones_like(hp), s)
        out.append((mean, share > 0, (hshare > 0) & (share > 0)))
    return out


# ----------------------------------------------------------------------------- VGG16 features
#: VGG16 ``features`` convolutions up to relu3_3: (index in torchvision's
#: ``vgg16().features``, cin, cout).
_VGG_CONVS = ((0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
              (14, 256, 256))
#: Indices (after their ReLU) of relu1_2, relu2_2, relu3_3.
_VGG_TAPS = (3, 8, 15)


class VGG16Features(nn.Module):
    """The first three blocks of VGG16 (up to relu3_3), frozen, for perceptual and style losses.

    Layer names follow torchvision's ``vgg16().features`` (``features.0.weight``,
    ...), so its state dict (or the ``features.*`` part of it) loads directly.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for idx, cin, cout in _VGG_CONVS:
            while len(layers) < idx:
                layers.append(nn.MaxPool2d(2) if len(layers) in (4, 9) else nn.ReLU())
            layers.append(nn.Conv2d(cin, cout, 3, padding=1))
        layers.append(nn.ReLU())
        self.features = nn.Sequential(*layers)
        self.requires_grad_(False)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> VGG16Features:
        """Load weights from a local file (``torch.load(weights_only=True)``).

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If the file holds no usable VGG16 ``features`` weights.
        """
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"vgg_weights={str(path)!r}: no such file. The perceptual and style losses need "
                "pretrained VGG16 weights in a local file (a state dict with 'features.N.weight' "
                "keys, e.g. torchvision's vgg16 weights saved with torch.save); nothing is "
                "downloaded. Leave vgg_weights=None to train without those losses."
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many exception types for bad files
            raise ValueError(f"vgg_weights={str(path)!r} cannot be read: {err}") from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"vgg_weights={str(path)!r} does not hold a state dict")
        net = cls()
        wanted = net.state_dict().keys()
        picked = {k: v for k, v in state.items() if k in wanted}
        missing = sorted(set(wanted) - set(picked))
        if missing:
            raise ValueError(
                f"vgg_weights={str(path)!r} lacks VGG16 layers {missing[:4]}...; expected "
                "torchvision-style keys such as 'features.0.weight'"
            )
        try:
            net.load_state_dict(picked)
        except RuntimeError as err:
            raise ValueError(f"vgg_weights={str(path)!r} has wrong shapes: {err}") from None
        return net.eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations relu1_2, relu2_2, relu3_3 of ``(N, 3, H, W)`` images."""
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _VGG_TAPS:
                out.append(x)
        return out


def gram(f: torch.Tensor) -> torch.Tensor:
    """Normalised Gram matrices ``(N, F, F)`` of features ``(N, F, H, W)``."""
    n, c, h, w = f.shape
    f = f.reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)
