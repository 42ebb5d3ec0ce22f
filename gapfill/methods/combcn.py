"""3DCN + CombCN video inpainting (Wang et al., AAAI 2019), method ``"combcn"``.

A 3D completion network fills a half-resolution copy of each window
(temporal structure); a 2D completion network fills each frame at full
resolution from the frame, its mask and the up-sampled 3D output (spatial
details). The networks are in :mod:`gapfill.models.combcn`; both are trained
jointly, end to end, with L1 losses on the holes and on the whole frame (the
3DCN's at half resolution, the CombCN's at full resolution).

Training is self-supervised (:mod:`gapfill.methods.selfsup`): the occlusion
process hides extra observed pixels, the hole losses are taken on those and the
whole-frame losses on every observed pixel, so no gap-free data is needed.
Filling runs on overlapping windows blended smoothly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gapfill.methods.selfsup import SelfSupervisedMethod, SelfSupervisedOptions

if TYPE_CHECKING:
    import torch


@dataclass
class CombCNOptions(SelfSupervisedOptions):
    """Options of the ``combcn`` method.

    The shared ones are documented in :class:`~gapfill.methods.selfsup.SelfSupervisedOptions`.

    Attributes
    ----------
    width3d
        Channels of the 3DCN at its first level (x2, x4 after its two strided levels).
    width2d
        Channels of the CombCN at its first level (x2, x4 likewise).
    dilations
        Dilation rates of the dilated convolutions (the paper's 2, 4, 8).
    low_weight
        Weight of the 3DCN's half-resolution losses relative to the CombCN's.
    """

    window: tuple[int, int, int] = (8, 64, 64)
    width3d: int = 12
    width2d: int = 12
    dilations: tuple[int, ...] = (2, 4, 8)
    low_weight: float = 1.0

    _method = "combcn"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.dilations = tuple(int(d) for d in self.dilations)  # type: ignore[assignment]

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad option."""
        super().validate()
        for name in ("width3d", "width2d"):
            if int(getattr(self, name)) < 1:
                self._bad(name, "must be a positive integer")
        if not self.dilations or min(self.dilations) < 1:
            self._bad("dilations", "must be one or more positive integers")
        if not self.low_weight >= 0:
            self._bad("low_weight", "must be >= 0")


class CombCN(SelfSupervisedMethod):
    """3DCN + CombCN (Wang et al. 2019) trained self-supervised; see the module docstring."""

    name = "combcn"
    Options = CombCNOptions

    def _config(self, channels: int) -> Any:
        from gapfill.models.combcn import CombCNConfig

        o = self.options
        return CombCNConfig(channels=channels, guide=o.guide != "none", width3d=o.width3d,
                            width2d=o.width2d, dilations=o.dilations)

    def _build(self, channels: int) -> Any:
        from gapfill.models.combcn import CombCN as Net

        cfg = self._config(channels)
        self._meta["network"] = dataclasses.asdict(cfg)
        return Net(cfg)

    def _rebuild(self) -> Any:
        from gapfill.models.combcn import CombCN as Net
        from gapfill.models.combcn import CombCNConfig

        return Net(CombCNConfig(**self._meta["network"]))

    def _forward(self, y_in: torch.Tensor, guide: torch.Tensor) -> tuple[torch.Tensor, ...]:
        import torch

        m = torch.isfinite(y_in).to(y_in.dtype)
        return self.net(y_in, m, guide if self.options.guide != "none" else None)

    def _loss(
        self, batch: dict[str, np.ndarray], rng: np.random.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Hole and whole-frame L1 losses of the CombCN (full) and the 3DCN (half resolution)."""
        import torch

        from gapfill.models.combcn import MULTIPLE
        from gapfill.models.losses import masked_l1
        from gapfill.models.masked import masked_pool, pad_to

        o = self.options
        y, y_in, guide = (self._tensor(batch[k]) for k in ("y", "y_in", "guide"))
        full, low, _ = self._forward(y_in, guide)
        obs = torch.isfinite(y)
        hole = obs & ~torch.isfinite(y_in)
        l_full = o.hole_weight * masked_l1(full, y, hole) + o.valid_weight * masked_l1(full, y, obs)
        # half resolution: mask-aware means of the observed values of each 2 x 2 cell
        yp = pad_to(torch.nan_to_num(y), MULTIPLE)
        target, share = masked_pool(yp, pad_to(obs.to(y.dtype), MULTIPLE), 2)
        _, hole_share = masked_pool(yp, pad_to(hole.to(y.dtype), MULTIPLE), 2)
        lo_obs, lo_hole = share > 0, hole_share > 0
        l_low = o.hole_weight * masked_l1(low, target, lo_hole) + o.valid_weight * masked_l1(
            low, target, lo_obs)
        loss = l_full + o.low_weight * l_low
        return loss, {"full": float(l_full.detach()), "low": float(l_low.detach())}

    def _predict(self, batch: np.ndarray, guide: np.ndarray) -> np.ndarray:
        """The CombCN output of each window."""
        full, _, _ = self._forward(self._tensor(batch), self._tensor(guide))
        return full.float().cpu().numpy()
