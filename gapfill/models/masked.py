"""Mask-aware tensor helpers shared by the ``combcn`` and ``tgfnet`` networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_pool(v: torch.Tensor, m: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask-aware ``k x k`` average pooling over the last two dims.

    Parameters
    ----------
    v
        Values, ``(..., H, W)`` (``H`` and ``W`` multiples of ``k``); anything where ``m`` is 0.
    m
        Mask broadcastable to ``v``, 1 where valid.
    k
        Pooling factor.

    Returns
    -------
    mean, share
        The mean of the valid values of each cell (0 where none) and the valid
        share of each cell, both ``(..., H / k, W / k)``.
    """
    m = m.expand_as(v).to(v.dtype)
    v = torch.where(m > 0, v, torch.zeros((), dtype=v.dtype, device=v.device))
    if k == 1:
        return v, m
    lead = v.shape[:-2]
    sv = F.avg_pool2d((v * m).reshape(-1, 1, *v.shape[-2:]), k)
    sm = F.avg_pool2d(m.reshape(-1, 1, *v.shape[-2:]), k)
    mean = sv / sm.clamp(min=1e-6)
    shape = (*lead, *sv.shape[-2:])
    return mean.reshape(shape), sm.reshape(shape)


def pad_to(a: torch.Tensor, multiple: int, mode: str = "constant") -> torch.Tensor:
    """Pad the last two dims of ``a`` at the bottom/right to a multiple of ``multiple``."""
    h, w = a.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not (ph or pw):
        return a
    if mode == "constant":
        return F.pad(a, (0, pw, 0, ph))
    flat = a.reshape(-1, 1, h, w)
    return F.pad(flat, (0, pw, 0, ph), mode=mode).reshape(*a.shape[:-2], h + ph, w + pw)
