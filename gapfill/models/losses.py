"""Loss terms shared by the trained methods."""

from __future__ import annotations

import torch


def masked_l1(a: torch.Tensor, b: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """Mean ``|a - b|`` over ``sel`` (0 when ``sel`` is empty); NaN in ``b`` off ``sel`` is fine."""
    diff = torch.where(sel, (a - torch.nan_to_num(b)).abs(), 0.0)
    return diff.sum() / sel.sum().clamp(min=1)
