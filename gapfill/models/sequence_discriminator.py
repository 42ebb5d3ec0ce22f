"""The sequence discriminator: a 3D PatchGAN on the whole sequence.

It sees the values and mask of the sequence and, for occlusions that move in
time (clouds, raindrops, a moving bar), also the frame differences
``y(t+1) - y(t)`` of values and mask, so temporal flicker of a fill is easy to
spot. It returns one score per spatio-temporal patch. All layers are
spectral-normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gapfill.models.layers import conv3d


@dataclass
class SequenceDiscriminatorConfig:
    """Shape of a :class:`SequenceDiscriminator`.

    Attributes
    ----------
    in_channels
        Channels of the sequence (``2 C``: values and mask).
    differences
        Append frame differences of the input channels (doubles the input).
    width
        Channels of the first layer; doubled at each downsampling.
    n_layers
        Stride-2 layers (in time, y and x).
    spectral
        Spectral normalisation on every layer.
    """

    in_channels: int = 2
    differences: bool = True
    width: int = 32
    n_layers: int = 3
    spectral: bool = True


def frame_differences(x: torch.Tensor) -> torch.Tensor:
    """``x(t+1) - x(t)`` along dim 2, with a zero last frame to keep ``T``."""
    d = x[:, :, 1:] - x[:, :, :-1]
    return F.pad(d, (0, 0, 0, 0, 0, 1))


class SequenceDiscriminator(nn.Module):
    """3D PatchGAN over ``(N, C, T, H, W)`` input -> ``(N, t, h, w)`` scores."""

    def __init__(self, config: SequenceDiscriminatorConfig) -> None:
        super().__init__()
        self.config = cfg = config
        c = cfg.in_channels * (2 if cfg.differences else 1)
        layers: list[nn.Module] = []
        for i in range(cfg.n_layers):
            out = cfg.width * 2**i
            layers.append(conv3d(c, out, 3, stride=2, spectral=cfg.spectral))
            c = out
        self.body = nn.ModuleList(layers)
        self.score = conv3d(c, 1, 3, spectral=cfg.spectral)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Score every spatio-temporal patch.

        Parameters
        ----------
        x
            ``(N, C, T, H, W)``.

        Returns
        -------
        torch.Tensor
            ``(N, t, h, w)`` raw scores (logits), one per patch of the volume.
        """
        if self.config.differences:
            x = torch.cat([x, frame_differences(x)], 1)
        for layer in self.body:
            x = F.leaky_relu(layer(x), 0.2)
        return self.score(x)[:, 0]
