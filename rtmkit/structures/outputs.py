"""Raw head outputs, one NamedTuple per task.

Field order is the reference head's ``forward`` order, so ``cls_scores, bbox_preds = net(x)`` unpacks as it does
for MMDetection's heads, while code that handles several tasks reads the fields by name.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class DetOutputs(NamedTuple):
    """RTMDet detection head outputs, lists over pyramid levels (strides 8, 16, 32[, 64], finest first).

    ``cls_scores``: ``[B, num_classes, H_l, W_l]`` class logits (before sigmoid).
    ``bbox_preds``: ``[B, 4, H_l, W_l]`` distances (left, top, right, bottom) from each prior point, in network-input
    pixels (already multiplied by the stride).
    """

    cls_scores: list[torch.Tensor]
    bbox_preds: list[torch.Tensor]
