"""The frame discriminator: a 2D PatchGAN applied to every frame of a sequence.

It sees each frame's values and mask (channels ``[values, mask]``) and returns
one real/fake score per patch of every frame, so the generator is judged on the
plausibility of each image on its own. All layers are spectral-normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gapfill.models.layers import conv2d


@dataclass
class FrameDiscriminatorConfig:
    """Shape of a :class:`FrameDiscriminator`.

    Attributes
    ----------
    in_channels
        Channels per frame (``2 C``: values and mask).
    width
        Channels of the first layer; doubled at each downsampling.
    n_layers
        Stride-2 layers; the patch grows as ``2**n_layers``.
    spectral
        Spectral normalisation on every layer.
    """

    in_channels: int = 2
    width: int = 32
    n_layers: int = 3
    spectral: bool = True


class FrameDiscriminator(nn.Module):
    """2D PatchGAN over the frames of ``(N, C, T, H, W)`` input -> ``(N, T, h, w)`` scores."""

    def __init__(self, config: FrameDiscriminatorConfig) -> None:
        super().__init__()
        self.config = cfg = config
        layers: list[nn.Module] = []
        c = cfg.in_channels
        for i in range(cfg.n_layers):
            out = cfg.width * 2**i
            layers.append(conv2d(c, out, 3, stride=2, spectral=cfg.spectral))
            c = out
        self.body = nn.ModuleList(layers)
        self.score = conv2d(c, 1, 3, spectral=cfg.spectral)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Score every patch of every frame.

        Parameters
        ----------
        x
            ``(N, C, T, H, W)``.

        Returns
        -------
        torch.Tensor
            ``(N, T, h, w)`` raw scores (logits), one per patch.
        """
        n, c, t, h, w = x.shape
        f = x.transpose(1, 2).reshape(n * t, c, h, w)
        for layer in self.body:
            f = F.leaky_relu(layer(f), 0.2)
        s = self.score(f)
        return s.reshape(n, t, *s.shape[-2:])
