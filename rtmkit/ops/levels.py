"""Pyramid-level bookkeeping shared by the criterion, post-processing and export.

Priors are ordered level by level (finest first) and row-major inside a level, the order of
:func:`rtmkit.ops.boxes.grid_priors` and of the reference's ``torch.cat`` over levels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def flatten_levels(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-level maps ``[B, C, H_l, W_l]`` -> one ``[B, sum_l H_l * W_l, C]`` tensor in prior order."""
    batch, channels = maps[0].shape[:2]
    return torch.cat([m.permute(0, 2, 3, 1).reshape(batch, -1, channels) for m in maps], 1)


def level_sizes(maps: Sequence[torch.Tensor]) -> list[tuple[int, int]]:
    """``(H_l, W_l)`` of every level."""
    return [(m.shape[-2], m.shape[-1]) for m in maps]


def prior_level_ids(sizes: Sequence[tuple[int, int]], device: torch.device | str = "cpu") -> torch.Tensor:
    """``[N]`` pyramid level of every prior."""
    return torch.cat([torch.full((h * w,), i, device=device, dtype=torch.long) for i, (h, w) in enumerate(sizes)])


def input_level_sizes(height: int, width: int, strides: Sequence[int]) -> list[tuple[int, int]]:
    """Feature-map sizes of a ``height x width`` input (sizes are multiples of the largest stride)."""
    return [(height // s, width // s) for s in strides]
