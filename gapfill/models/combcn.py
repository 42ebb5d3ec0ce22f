"""3DCN + CombCN: video inpainting by jointly learning temporal structure and spatial details.

After Wang, Huang, Hu & Tan, "Video inpainting by jointly learning temporal
structure and spatial details" (AAAI 2019):

- a 3D completion network (:class:`Completion3D`, "3DCN") fills a
  down-sampled copy of the whole sequence and its mask: strided 3D
  convolutions, dilated 3D convolutions (rates 2, 4, 8), fractionally strided
  (transposed) 3D convolutions back up, with skip connections;
- a 2D completion network (:class:`Completion2D`, "CombCN") fills every frame
  at full resolution from the frame, its mask and the up-sampled 3DCN output
  (the temporal structure), with the same encoder / dilated / decoder layout
  in 2D, and predicts the spatial details as a correction to the up-sampled
  3DCN output.

Missing values enter as 0 with a mask channel per data channel. Down-sampling
is mask-aware (mean of the observed values in each cell, and the observed
share as the low-resolution mask). Inputs are padded to a multiple of
:data:`MULTIPLE` pixels and cropped back. An optional guide (a first guess
of the whole window) is an extra input of both networks; the 3DCN then
predicts a low-resolution correction of the guide, and the full-resolution
base is the guide plus that correction up-sampled (so the guide's own detail
is kept). Without a guide the guide is 0 and this is the plain architecture.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gapfill.models.masked import masked_pool, pad_to

#: Height and width are padded to a multiple of this (2 for the down-sampling, 4 in the 3DCN).
MULTIPLE = 8


@dataclass
class CombCNConfig:
    """Configuration of :class:`CombCN`.

    Attributes
    ----------
    channels
        Data channels (1 for SST, 3 for RGB video).
    guide
        Whether a guide (first guess) is an input.
    width3d
        Channels of the 3DCN at its first level (doubled at each of 2 strided levels).
    width2d
        Channels of the CombCN at its first level (doubled at each of 2 strided levels).
    dilations
        Dilation rates of the dilated convolutions of both networks.
    """

    channels: int = 1
    guide: bool = True
    width3d: int = 16
    width2d: int = 16
    dilations: tuple[int, ...] = (2, 4, 8)

    def __post_init__(self) -> None:
        self.dilations = tuple(int(d) for d in self.dilations)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


class Completion3D(nn.Module):
    """The 3DCN: completes a half-resolution ``(N, C, T, h, w)`` sequence (h, w multiples of 4)."""

    def __init__(self, cin: int, cout: int, width: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        w = width
        s2 = (1, 2, 2)
        self.enc1 = nn.Sequential(nn.Conv3d(cin, w, 3, padding=1), _act())
        self.enc2 = nn.Sequential(nn.Conv3d(w, 2 * w, 3, stride=s2, padding=1), _act(),
                                  nn.Conv3d(2 * w, 2 * w, 3, padding=1), _act())
        self.enc3 = nn.Sequential(nn.Conv3d(2 * w, 4 * w, 3, stride=s2, padding=1), _act())
        self.dilated = nn.Sequential(*[
            m for r in dilations
            for m in (nn.Conv3d(4 * w, 4 * w, 3, padding=(1, r, r), dilation=(1, r, r)), _act())
        ])
        self.mid = nn.Sequential(nn.Conv3d(4 * w, 4 * w, 3, padding=1), _act())
        self.up1 = nn.Sequential(nn.ConvTranspose3d(4 * w, 2 * w, (3, 4, 4), stride=s2,
                                                    padding=(1, 1, 1)), _act())
        self.dec1 = nn.Sequential(nn.Conv3d(4 * w, 2 * w, 3, padding=1), _act())
        self.up2 = nn.Sequential(nn.ConvTranspose3d(2 * w, w, (3, 4, 4), stride=s2,
                                                    padding=(1, 1, 1)), _act())
        self.dec2 = nn.Sequential(nn.Conv3d(2 * w, w, 3, padding=1), _act())
        self.head = nn.Conv3d(w, cout, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, cin, T, h, w)`` -> ``(N, cout, T, h, w)``."""
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.mid(self.dilated(self.enc3(e2)))
        d1 = self.dec1(torch.cat([self.up1(e3), e2], 1))
        d2 = self.dec2(torch.cat([self.up2(d1), e1], 1))
        return self.head(d2)


class Completion2D(nn.Module):
    """The CombCN: completes ``(N, cin, H, W)`` frames (``H, W`` multiples of 4)."""

    def __init__(self, cin: int, cout: int, width: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        w = width
        self.enc1 = nn.Sequential(nn.Conv2d(cin, w, 5, padding=2), _act())
        self.enc2 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), _act(),
                                  nn.Conv2d(2 * w, 2 * w, 3, padding=1), _act())
        self.enc3 = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), _act())
        self.dilated = nn.Sequential(*[
            m for r in dilations
            for m in (nn.Conv2d(4 * w, 4 * w, 3, padding=r, dilation=r), _act())
        ])
        self.mid = nn.Sequential(nn.Conv2d(4 * w, 4 * w, 3, padding=1), _act())
        self.up1 = nn.Sequential(nn.ConvTranspose2d(4 * w, 2 * w, 4, stride=2, padding=1), _act())
        self.dec1 = nn.Sequential(nn.Conv2d(4 * w, 2 * w, 3, padding=1), _act())
        self.up2 = nn.Sequential(nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1), _act())
        self.dec2 = nn.Sequential(nn.Conv2d(2 * w, w, 3, padding=1), _act())
        self.head = nn.Conv2d(w, cout, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, cin, H, W)`` -> ``(N, cout, H, W)``."""
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.mid(self.dilated(self.enc3(e2)))
        d1 = self.dec1(torch.cat([self.up1(e3), e2], 1))
        d2 = self.dec2(torch.cat([self.up2(d1), e1], 1))
        return self.head(d2)


def _up(a: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 up-sampling of ``(N, C, h, w)``."""
    return F.interpolate(a, scale_factor=2, mode="bilinear", align_corners=False)


def _frames(a: torch.Tensor) -> torch.Tensor:
    """``(N, C, T, H, W)`` -> ``(N * T, C, H, W)``."""
    n, c, t, h, w = a.shape
    return a.transpose(1, 2).reshape(n * t, c, h, w)


class CombCN(nn.Module):
    """3DCN (low-resolution sequence) + CombCN (full-resolution frames), trained jointly.

    Parameters
    ----------
    config
        A :class:`CombCNConfig`.
    """

    def __init__(self, config: CombCNConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        g = c if config.guide else 0
        self.net3d = Completion3D(2 * c + g, c, config.width3d, config.dilations)
        self.net2d = Completion2D(3 * c + g, c, config.width2d, config.dilations)

    def forward(
        self, y: torch.Tensor, m: torch.Tensor, guide: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Complete a gappy sequence.

        Parameters
        ----------
        y
            ``(N, C, T, H, W)`` values; anything (even NaN) where ``m`` is 0.
        m
            ``(N, C, T, H, W)`` mask, 1 where observed.
        guide
            ``(N, C, T, H, W)`` first guess, when the config has ``guide``.

        Returns
        -------
        full
            ``(N, C, T, H, W)`` CombCN output (every pixel).
        low
            ``(N, C, T, h, w)`` 3DCN output at half resolution (of the padded frame).
        low_mask
            ``(N, C, T, h, w)`` observed share of each low-resolution cell.
        """
        n, c, t, h, w = y.shape
        if self.config.guide and guide is None:
            raise ValueError("this CombCN was built with a guide input: pass guide")
        if not self.config.guide:
            guide = torch.zeros_like(y)
        y = torch.where(m > 0, y, torch.zeros((), dtype=y.dtype, device=y.device))
        y, m = pad_to(y, MULTIPLE), pad_to(m, MULTIPLE)
        guide = pad_to(guide, MULTIPLE, mode="replicate")

        # 3DCN on the mask-aware down-sampled sequence.
        y_lo, m_lo = masked_pool(y, m, 2)
        g_lo = F.avg_pool3d(guide, (1, 2, 2))
        parts = [y_lo, m_lo] + ([g_lo] if self.config.guide else [])
        low = g_lo + self.net3d(torch.cat(parts, 1))

        # CombCN per frame: frame, mask, up-sampled 3DCN output (+ guide).
        up = _up(_frames(low))
        parts2 = [_frames(y), _frames(m), up] + ([_frames(guide)] if self.config.guide else [])
        # the 3DCN's correction of the guide, up-sampled, plus the CombCN's details
        base = _frames(guide) + _up(_frames(low - g_lo))
        full = base + self.net2d(torch.cat(parts2, 1))
        full = full.reshape(n, t, c, *full.shape[-2:]).transpose(1, 2)
        return full[..., :h, :w], low, m_lo
