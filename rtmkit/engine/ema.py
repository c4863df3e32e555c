"""Exponential moving average of the weights, as RTMDet trains it (fact sheet D.5: ExpMomentumEMA)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ExpMomentumEMA:
    """EMA whose momentum decays from ~1 to ``momentum``: m_t = (1 - momentum) * exp(-(1 + t) / gamma) + momentum,
    avg <- (1 - m_t) * avg + m_t * current. The first update copies the weights. BatchNorm running statistics are
    averaged too (``update_buffers``); integer buffers (``num_batches_tracked``) are copied.
    The averaged model (``self.module``) is what validation uses and what checkpoints store as ``state_dict``.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.0002, gamma: float = 2000, update_buffers: bool = True):
        if not 0.0 < momentum < 1.0:
            raise ValueError(f"momentum must be in (0, 1), got {momentum}")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.momentum, self.gamma, self.update_buffers = momentum, gamma, update_buffers
        self.steps = 0

    def _pairs(self, model: nn.Module):
        avg = list(self.module.parameters()) + (list(self.module.buffers()) if self.update_buffers else [])
        src = list(model.parameters()) + (list(model.buffers()) if self.update_buffers else [])
        return zip(avg, src)

    def momentum_at(self, steps: int) -> float:
        return (1 - self.momentum) * math.exp(-float(1 + steps) / self.gamma) + self.momentum

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        m = self.momentum_at(self.steps)
        floats, float_src, others, other_src = [], [], [], []
        for avg, src in self._pairs(model):
            src = src.detach()
            if self.steps == 0 or not avg.dtype.is_floating_point:
                others.append(avg)
                other_src.append(src)
            else:
                floats.append(avg)
                float_src.append(src.to(avg.dtype))
        if others:
            torch._foreach_copy_(others, other_src)
        if floats:  # one multi-tensor call per op; same arithmetic as avg.mul_(1 - m).add_(src, alpha=m)
            torch._foreach_mul_(floats, 1 - m)
            torch._foreach_add_(floats, float_src, alpha=m)
        self.steps += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.steps = int(state["steps"])
