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


class SegOutputs(NamedTuple):
    """RTMDet-Ins head outputs (MMDetection's ``RTMDetInsSepBNHead.forward`` order).

    ``cls_scores``, ``bbox_preds``: as :class:`DetOutputs` (distances are ``ReLU(...) * stride``).
    ``kernel_preds``: ``[B, 169, H_l, W_l]`` per level, each prior's dynamic-conv parameters: weights of the three
    1x1 convs 10->8, 8->8, 8->1 (out-major), then their biases 8, 8, 1.
    ``mask_feat``: ``[B, 8, H/8, W/8]`` mask prototypes at stride 8 (one tensor, not a list).
    """

    cls_scores: list[torch.Tensor]
    bbox_preds: list[torch.Tensor]
    kernel_preds: list[torch.Tensor]
    mask_feat: torch.Tensor


class RotOutputs(NamedTuple):
    """RTMDet-R head outputs (MMRotate's ``RotatedRTMDetSepBNHead.forward`` order).

    ``cls_scores``, ``bbox_preds``: as :class:`DetOutputs` (distances ``rtm_reg(x) * stride``, exponentiated first
    for the sizes with ``exp_on_reg``), here the distances to the sides of the *rotated* box in its own frame.
    ``angle_preds``: ``[B, 1, H_l, W_l]`` per level, each prior's angle in radians (not scaled by the stride;
    decoded to le90 by the box coder).
    """

    cls_scores: list[torch.Tensor]
    bbox_preds: list[torch.Tensor]
    angle_preds: list[torch.Tensor]
