"""RotatedRTMDetSepBNHead (RTMDet-R, fact sheet A.7): the detection head plus a 1x1 angle predictor per level on the
box tower's output."""

from __future__ import annotations

import torch
from torch import nn

from ..structures import RotOutputs
from .head import RTMDetSepBNHead


class RotatedRTMDetSepBNHead(RTMDetSepBNHead):
    """``forward`` returns :class:`~rtmkit.structures.RotOutputs` ``(cls_scores, bbox_preds, angle_preds)``: the
    class logits and side distances of :class:`RTMDetSepBNHead`, and ``rtm_ang`` (one output channel, no scale and
    no stride factor) applied to the same box-tower features as ``rtm_reg``. MMRotate's key names and order
    (``rtm_ang`` registered after ``rtm_reg``) and its init (N(0, 0.01), zero bias)."""

    def __init__(self, num_classes: int, in_channels: int, feat_channels: int, strides: tuple[int, ...],
                 stacked_convs: int = 2, share_conv: bool = True, exp_on_reg: bool = False,
                 depthwise: bool = False, pred_kernel_size: int = 1):
        super().__init__(num_classes, in_channels, feat_channels, strides, stacked_convs=stacked_convs,
                         share_conv=share_conv, exp_on_reg=exp_on_reg, depthwise=depthwise,
                         pred_kernel_size=pred_kernel_size)
        self.rtm_ang = nn.ModuleList(nn.Conv2d(feat_channels, 1, pred_kernel_size, padding=pred_kernel_size // 2)
                                     for _ in self.strides)
        self.init_weights()

    def forward(self, feats: list[torch.Tensor]) -> RotOutputs:
        cls_scores, bbox_preds, angle_preds = [], [], []
        for level, x in enumerate(feats):
            cls_feat, reg_feat = self.towers(level, x)
            cls_scores.append(self.rtm_cls[level](cls_feat))
            bbox_preds.append(self.distances(level, reg_feat))
            angle_preds.append(self.rtm_ang[level](reg_feat))
        return RotOutputs(cls_scores, bbox_preds, angle_preds)
