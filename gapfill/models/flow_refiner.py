"""Flow completion by iterative refinement with partial convolutions.

After Chatillon, Ballester, Haro, Arias & Raad's flow-guided video inpainting:
each frame ``t`` carries a forward flow ``F_t`` (to ``t + 1``) and a backward
flow ``B_t`` (to ``t - 1``), known only where they are trustworthy (a
confidence in ``[0, 1]`` per flow). An encoder of partial convolutions turns
them (plus, with ``raw_input``, the raw flow estimate everywhere) into
per-frame features ``phi_t`` with a confidence ``m_t``; then, for
``iterations`` rounds, every frame

1. decodes its current flows and warps its neighbours' features and
   confidences onto itself (``phi_{t+1}`` along ``F_t``, ``phi_{t-1}`` along
   ``B_t``; bilinear ``grid_sample``),
2. computes an update ``delta`` with partial convolutions over its own and the
   warped features (each weighted by its confidence),
3. updates ``phi_t <- phi_t + (1 - m_t) * delta`` (confident pixels change
   little), and its confidence with a learnable rule: the larger of ``m_t``
   and the generalised mean ``(mean_i c_i^p)^(1/p)`` of the neighbours'
   confidences (``m_t`` blurred over 3 x 3 pixels and the two warped ones),
   with a learnable exponent ``p``.

Each round's decoded flows (with ``raw_input``: the raw estimate plus a
decoded correction) are returned, for a loss weighted over the rounds.
Flows are in units of ``flow_scale`` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class FlowRefinerConfig:
    """Shape of a :class:`FlowRefiner`.

    Attributes
    ----------
    features
        Channels of the per-frame features ``phi_t``.
    hidden
        Channels of the hidden layers of the update and decoder networks.
    iterations
        Refinement rounds.
    flow_scale
        Pixels per unit of the flows the network reads and writes.
    raw_input
        Also read the raw flow estimate everywhere (trusted or not) and predict
        a correction to it (the last layer starts at zero, so an untrained
        network returns the raw estimate).
    """

    features: int = 16
    hidden: int = 32
    iterations: int = 4
    flow_scale: float = 1.0
    raw_input: bool = True

    def __post_init__(self) -> None:
        if min(self.features, self.hidden, self.iterations) < 1:
            raise ValueError("features, hidden and iterations must be >= 1")
        if not self.flow_scale > 0:
            raise ValueError("flow_scale must be > 0")


class PartialConv2d(nn.Module):
    """A 3 x 3 convolution of ``x * m`` renormalised by the local sum of the confidence ``m``.

    ``y = W (x m) * (k / sum(m)) + b`` where the window's confidence sum is
    positive (Liu et al. 2018, with soft masks); 0 where it is not. Returns
    ``y`` and the output confidence ``min(1, sum(m) / cin)`` (1 as soon as one
    input pixel of the window is fully confident), ``(N, 1, H, W)``.
    """

    def __init__(self, cin: int, cout: int, k: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=True)
        self.register_buffer("ones", torch.ones(1, cin, k, k), persistent=False)
        self.area = float(cin * k * k)
        self.cin = float(cin)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``(N, cin, H, W)``, ``m`` broadcastable to it, in ``[0, 1]``."""
        m = m.expand_as(x)
        with torch.no_grad():
            total = F.conv2d(m, self.ones, padding=self.conv.padding)
        raw = F.conv2d(x * m, self.conv.weight, None, padding=self.conv.padding)
        ratio = self.area / total.clamp(min=1e-6)
        valid = (total > 1e-6).to(x.dtype)
        y = (raw * ratio + self.conv.bias.view(1, -1, 1, 1)) * valid
        # Liu et al.'s rule for soft masks: one fully confident input makes the output confident
        return y, (total / self.cin).clamp(0, 1).mean(1, keepdim=True)


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``x`` ``(N, C, H, W)`` at ``p + flow(p)`` (flow ``(N, 2, H, W)`` as (dy, dx) pixels).

    Bilinear, zeros outside the frame.
    """
    n, _, h, w = x.shape
    ys = torch.arange(h, dtype=x.dtype, device=x.device).view(1, h, 1)
    xs = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, w)
    py = ys + flow[:, 0]
    px = xs + flow[:, 1]
    gx = 2 * px / max(w - 1, 1) - 1
    gy = 2 * py / max(h - 1, 1) - 1
    grid = torch.stack([gx, gy], -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


class FlowRefiner(nn.Module):
    """Completes the flows ``(N, T, 4, H, W)`` given their trust ``(N, T, 2, H, W)``."""

    def __init__(self, cfg: FlowRefinerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        f, h = cfg.features, cfg.hidden
        self.enc1 = PartialConv2d(4, h)
        self.raw_enc = nn.Conv2d(4, h, 3, padding=1) if cfg.raw_input else None
        self.enc2 = PartialConv2d(h, f)
        self.upd1 = PartialConv2d(3 * f, h)
        self.upd2 = nn.Conv2d(h, f, 3, padding=1)
        self.dec = nn.Sequential(
            nn.Conv2d(f, h, 3, padding=1), nn.ReLU(), nn.Conv2d(h, 4, 3, padding=1)
        )
        if cfg.raw_input:  # start as the identity on the raw estimate
            nn.init.zeros_(self.dec[-1].weight)
            nn.init.zeros_(self.dec[-1].bias)
        #: log of the generalised-mean exponent of the confidence update (p = exp(.) = 1 at start)
        self.log_p = nn.Parameter(torch.zeros(()))

    @property
    def exponent(self) -> torch.Tensor:
        """The learnable exponent ``p`` of the confidence update."""
        return self.log_p.exp().clamp(0.05, 20.0)

    def _mask_update(self, m: torch.Tensor, nbrs: list[torch.Tensor]) -> torch.Tensor:
        p = self.exponent
        blur = F.avg_pool2d(m, 3, stride=1, padding=1, count_include_pad=False)
        stack = torch.stack([blur] + nbrs, 0).clamp(1e-6, 1.0)
        gmean = stack.pow(p).mean(0).pow(1.0 / p)
        return torch.maximum(m, gmean)

    def forward(
        self, flow: torch.Tensor, conf: torch.Tensor, raw: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Refine the flows.

        Parameters
        ----------
        flow
            ``(N, T, 4, H, W)``: forward (dy, dx) then backward (dy, dx), in
            flow-scale units; any value where the confidence is 0.
        conf
            ``(N, T, 2, H, W)`` confidences of the forward and backward flows.
        raw
            ``(N, T, 4, H, W)`` raw flow estimates everywhere (with ``raw_input``).

        Returns
        -------
        flows, conf
            The decoded flows of every round (a list of ``(N, T, 4, H, W)``)
            and the final per-frame confidence ``(N, T, 1, H, W)``.
        """
        n, t, _, h, w = flow.shape
        x = flow.reshape(n * t, 4, h, w)
        cm = conf.reshape(n * t, 2, h, w).repeat_interleave(2, 1)  # one mask per flow channel
        e, m1 = self.enc1(x, cm)
        base = None
        if self.raw_enc is not None:
            if raw is None:
                raise ValueError("this FlowRefiner reads raw flows: pass raw=")
            base = raw
            e = e + self.raw_enc(raw.reshape(n * t, 4, h, w))
        e, m = self.enc2(F.relu(e), m1)
        phi = e.reshape(n, t, -1, h, w)
        m = m.reshape(n, t, 1, h, w)
        outs: list[torch.Tensor] = []
        zeros_phi = torch.zeros_like(phi[:, :1])
        zeros_m = torch.zeros_like(m[:, :1])
        def decode(features: torch.Tensor) -> torch.Tensor:
            out = self.dec(features.reshape(n * t, -1, h, w)).reshape(n, t, 4, h, w)
            return out if base is None else base + out

        pred = decode(phi)
        for _ in range(self.cfg.iterations):
            fwd, bwd = pred[:, :, :2], pred[:, :, 2:]
            nxt_phi = torch.cat([phi[:, 1:], zeros_phi], 1)
            nxt_m = torch.cat([m[:, 1:], zeros_m], 1)
            prv_phi = torch.cat([zeros_phi, phi[:, :-1]], 1)
            prv_m = torch.cat([zeros_m, m[:, :-1]], 1)
            scale = self.cfg.flow_scale
            both = torch.cat([nxt_phi, nxt_m], 2).reshape(n * t, -1, h, w)
            wn = warp(both, fwd.reshape(n * t, 2, h, w) * scale)
            both = torch.cat([prv_phi, prv_m], 2).reshape(n * t, -1, h, w)
            wp = warp(both, bwd.reshape(n * t, 2, h, w) * scale)
            fdim = phi.shape[2]
            wn_phi, wn_m = wn[:, :fdim], wn[:, fdim:].clamp(0, 1)
            wp_phi, wp_m = wp[:, :fdim], wp[:, fdim:].clamp(0, 1)
            phi_f = phi.reshape(n * t, fdim, h, w)
            m_f = m.reshape(n * t, 1, h, w)
            inp = torch.cat([phi_f, wn_phi, wp_phi], 1)
            mask = torch.cat([m_f.expand(-1, fdim, -1, -1), wn_m.expand(-1, fdim, -1, -1),
                              wp_m.expand(-1, fdim, -1, -1)], 1)
            u, _ = self.upd1(inp, mask)
            delta = self.upd2(F.relu(u))
            phi_f = phi_f + (1 - m_f) * delta
            m_f = self._mask_update(m_f, [wn_m, wp_m])
            phi = phi_f.reshape(n, t, fdim, h, w)
            m = m_f.reshape(n, t, 1, h, w)
            pred = decode(phi)
            outs.append(pred)
        return outs, m
