"""The spatial-temporal generative ConvNet (Xie, Zhu & Wu, CVPR 2017): an energy-based model.

The model is a distribution over sequences ``I`` of shape ``(C, T, H, W)``::

    p(I; w) = exp(f(I; w)) q(I) / Z(w),      q = N(0, sigma^2 I)  (Gaussian white noise)

where ``f`` is a bottom-up spatio-temporal ConvNet (3D convolutions, ReLU),
summed over all positions and channels of its top layer, so it is a sum of
local terms and applies to sequences of any size. Sampling is Langevin
dynamics on ``log p``::

    I <- I + (delta^2 / 2) (df/dI - I / sigma^2) + delta * N(0, 1)

run on every pixel (synthesis) or only on the missing ones with the observed
pixels clamped (recovery). Learning moves ``w`` by the difference of the mean
``df/dw`` over the (recovered) data and over synthesised sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

ACTIVATIONS = ("relu", "silu")


@dataclass
class STEnergyConfig:
    """Shape of a :class:`STEnergy`.

    Attributes
    ----------
    channels
        Data channels ``C``.
    widths
        Filters per layer (bottom to top).
    kernels
        ``(t, h, w)`` kernel of each layer (padded by half, so any input size works).
    strides
        ``(t, h, w)`` sub-sampling of each layer.
    activation
        ``"relu"`` (the paper's) or ``"silu"`` (smooth, so ``df/dI`` is continuous).
    scale
        Constant multiplying the summed responses (``1 / sigma^2`` lets the
        network work with outputs of order one when ``q`` is narrow).
    """

    channels: int = 1
    widths: tuple[int, ...] = (32, 64, 32)
    kernels: tuple[tuple[int, int, int], ...] = ((3, 5, 5), (3, 5, 5), (3, 3, 3))
    strides: tuple[tuple[int, int, int], ...] = ((1, 2, 2), (1, 2, 2), (1, 1, 1))
    activation: str = "relu"
    scale: float = 1.0

    def __post_init__(self) -> None:
        self.widths = tuple(int(v) for v in self.widths)
        self.kernels = tuple(tuple(int(k) for k in ks) for ks in self.kernels)  # type: ignore[misc]
        self.strides = tuple(tuple(int(s) for s in ss) for ss in self.strides)  # type: ignore[misc]
        n = len(self.widths)
        if n < 1 or len(self.kernels) != n or len(self.strides) != n:
            raise ValueError("widths, kernels and strides must have the same length >= 1")
        if any(len(k) != 3 or min(k) < 1 for k in self.kernels + self.strides):
            raise ValueError("kernels and strides must be positive (t, h, w) triples")
        if not self.scale > 0:
            raise ValueError("scale must be > 0")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}")


class STEnergy(nn.Module):
    """``f(I; w)``: a 3D ConvNet whose top-layer responses are summed, one number per sequence."""

    def __init__(self, cfg: STEnergyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        act = nn.ReLU if cfg.activation == "relu" else nn.SiLU
        layers: list[nn.Module] = []
        cin = cfg.channels
        for width, k, s in zip(cfg.widths, cfg.kernels, cfg.strides):
            layers += [nn.Conv3d(cin, width, k, stride=s, padding=tuple(v // 2 for v in k)), act()]
            cin = width
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``f`` of each sequence of a ``(N, C, T, H, W)`` batch: a ``(N,)`` tensor."""
        return self.net(x).flatten(1).sum(1) * self.cfg.scale

    def energies(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``f`` ``(N,)`` and the mean top-layer response per sequence ``(N,)`` (unscaled)."""
        r = self.net(x).flatten(1)
        return r.sum(1) * self.cfg.scale, r.mean(1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``df/dI`` of a batch (the model's parameters get no gradient)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self(x).sum(), x)
        return grad


@dataclass
class Langevin:
    """Langevin dynamics on ``log p(I) = f(I) + log q(I)``.

    Attributes
    ----------
    step_size
        ``delta``.
    sigma
        Standard deviation of the reference distribution ``q``.
    noise
        Scale of the injected noise (1: Langevin; 0: gradient ascent on ``log p``).
    """

    step_size: float = 0.3
    sigma: float = 1.0
    noise: float = 1.0

    def run(
        self,
        model: STEnergy,
        x: torch.Tensor,
        steps: int,
        free: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        keep_last: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Run ``steps`` Langevin steps from ``x``.

        Parameters
        ----------
        model
            The energy ``f``.
        x
            ``(N, C, T, H, W)`` start; the values where ``free`` is False stay fixed.
        steps
            Number of steps.
        free
            Boolean mask of the pixels to update (``None``: all, i.e. synthesis).
        generator
            Torch generator of the noise.
        keep_last
            Also return the mean and variance of the last ``keep_last`` iterates
            (a stable estimate of the conditional mean, and its spread).

        Returns
        -------
        x, mean, var
            The last iterate, and the mean and variance of the last
            ``keep_last`` iterates (``None`` when ``keep_last`` is 0).
        """
        delta = float(self.step_size)
        inv_var = 1.0 / float(self.sigma) ** 2
        fixed = None if free is None else x.detach().clone()
        x = x.detach().clone()
        start = x.clone()
        keep_last = min(int(keep_last), int(steps))
        s1 = s2 = None
        if keep_last > 0:
            s1, s2 = torch.zeros_like(x), torch.zeros_like(x)
        for i in range(steps):
            grad = model.score(x)
            step = 0.5 * delta * delta * (grad - x * inv_var)
            if self.noise > 0:
                z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                step = step + self.noise * delta * z
            x = x + step
            if free is not None:
                x = torch.where(free, x, fixed)
            if s1 is not None and i >= steps - keep_last:
                dev = x - start  # moments about the start: exact 0 where x is clamped
                s1 += dev
                s2 += dev * dev
        if s1 is None:
            return x.detach(), None, None
        mean = s1 / keep_last
        var = (s2 / keep_last - mean * mean).clamp(min=0)
        return x.detach(), start + mean, var
