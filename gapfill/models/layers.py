"""Building blocks shared by the generator and the discriminators.

Plain PyTorch modules: a 3D ResNet block (full 3x3x3 or factorised
(1x3x3 then 3x1x1) convolutions), spectral-normalised convolution helpers, a
dropout that can be kept on at inference for Monte-Carlo sampling, and a
SAGAN-style self-attention layer applied over the spatial positions of each
frame of a ``(N, C, T, H, W)`` volume.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def sn(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Wrap ``module`` in spectral normalisation (Miyato et al. 2018) when ``enabled``."""
    return spectral_norm(module) if enabled else module


def conv2d(cin: int, cout: int, k: int = 3, stride: int = 1, spectral: bool = False) -> nn.Module:
    """A 2D convolution with 'same' padding, optionally spectral-normalised."""
    return sn(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2), spectral)


def conv3d(
    cin: int,
    cout: int,
    k: int | tuple[int, int, int] = 3,
    stride: int | tuple[int, int, int] = 1,
    spectral: bool = False,
) -> nn.Module:
    """A 3D convolution with 'same' padding, optionally spectral-normalised."""
    k3 = (k, k, k) if isinstance(k, int) else tuple(k)
    pad = tuple(s // 2 for s in k3)
    return sn(nn.Conv3d(cin, cout, k3, stride=stride, padding=pad), spectral)


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that normalises a channels-last 3D input in the standard layout.

    PyTorch's CPU backward of group normalisation is slow on channels-last 3D tensors (15%
    of a training step of the generator at width 8); the two layout copies cost less. The
    values, the parameters and the output's layout are the same.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = torch.channels_last_3d
        if x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=last):
            out = F.group_norm(x.contiguous(), self.num_groups, self.weight, self.bias, self.eps)
            return out.contiguous(memory_format=last)
        return super().forward(x)


def norm(channels: int) -> nn.GroupNorm:
    """Group normalisation with up to 8 groups (works with batch size 1)."""
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return GroupNorm(groups, channels)


class SampleDropout(nn.Module):
    """Dropout that stays on at inference while ``sampling`` is set (MC dropout).

    Parameters
    ----------
    p
        Drop probability; 0 makes the layer the identity.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)
        self.sampling = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p <= 0:
            return x
        return F.dropout(x, self.p, training=self.training or self.sampling)


class SpatioTemporalConv(nn.Module):
    """A 3x3x3 convolution, or its factorised (2+1)D form (1x3x3 then 3x1x1).

    The factorised form costs 12 instead of 27 multiply-adds per weight pair,
    which matters on CPUs.
    """

    def __init__(self, cin: int, cout: int, factorised: bool = False) -> None:
        super().__init__()
        if factorised:
            self.conv = nn.Sequential(conv3d(cin, cout, (1, 3, 3)), conv3d(cout, cout, (3, 1, 1)))
        else:
            self.conv = conv3d(cin, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ResBlock3d(nn.Module):
    """Pre-activation residual block: ``x + conv(act(norm(conv(act(norm(x))))))``.

    Parameters
    ----------
    channels
        Input and output channels.
    dropout
        Probability of the :class:`SampleDropout` between the two convolutions.
    factorised
        Use (2+1)D factorised convolutions.
    """

    def __init__(self, channels: int, dropout: float = 0.0, factorised: bool = False) -> None:
        super().__init__()
        self.norm1 = norm(channels)
        self.conv1 = SpatioTemporalConv(channels, channels, factorised)
        self.norm2 = norm(channels)
        self.drop = SampleDropout(dropout)
        self.conv2 = SpatioTemporalConv(channels, channels, factorised)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return x + h


class FrameSelfAttention(nn.Module):
    """SAGAN self-attention over the spatial positions of each frame.

    Every position of a frame attends to every other position of the same
    frame (basin-scale context); the output is ``x + gamma * attention(x)``
    with ``gamma`` starting at 0, so the layer starts as the identity.

    Parameters
    ----------
    channels
        Channels of the ``(N, C, T, H, W)`` input.
    spectral
        Spectral-normalise the 1x1 projections (as in SAGAN's discriminator).
    """

    def __init__(self, channels: int, spectral: bool = False) -> None:
        super().__init__()
        self.key_dim = max(channels // 8, 1)
        self.value_dim = max(channels // 2, 1)
        self.query = sn(nn.Conv2d(channels, self.key_dim, 1), spectral)
        self.key = sn(nn.Conv2d(channels, self.key_dim, 1), spectral)
        self.value = sn(nn.Conv2d(channels, self.value_dim, 1), spectral)
        self.out = sn(nn.Conv2d(self.value_dim, channels, 1), spectral)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(n * t, c, h, w)
        q = self.query(frames).flatten(2).transpose(1, 2)  # (NT, HW, k)
        k = self.key(frames).flatten(2).transpose(1, 2)
        v = self.value(frames).flatten(2).transpose(1, 2)  # (NT, HW, v)
        # SAGAN uses an unscaled dot product; keep the usual 1/sqrt(d) scaling for stability.
        att = F.scaled_dot_product_attention(q, k, v)
        att = att.transpose(1, 2).reshape(n * t, self.value_dim, h, w)
        out = self.out(att).reshape(n, t, c, h, w).transpose(1, 2)
        return x + self.gamma * out
