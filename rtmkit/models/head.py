"""RTMDetSepBNHead: per-level towers whose convs are shared across levels while each level keeps its own BN
(RTMDet fact sheet A.5)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..structures import DetOutputs
from .layers import ConvBNAct, DepthwiseSeparableConv, conv_block


def _share_convs(src: nn.Module, dst: nn.Module) -> None:
    """Make ``dst`` use the conv weights of ``src`` while keeping its own BatchNorms."""
    if isinstance(src, ConvBNAct):
        dst.conv = src.conv
    elif isinstance(src, DepthwiseSeparableConv):
        dst.depthwise_conv.conv = src.depthwise_conv.conv
        dst.pointwise_conv.conv = src.pointwise_conv.conv


class RTMDetSepBNHead(nn.Module):
    """Classification and box-regression towers, one per level, with 1x1 (or ``pred_kernel_size``) predictors.

    ``forward`` returns :class:`~rtmkit.structures.DetOutputs` ``(cls_scores, bbox_preds)``: lists over levels of
    ``[B, num_classes, H, W]`` logits and ``[B, 4, H, W]`` distances (left, top, right, bottom) in input pixels,
    i.e. already multiplied by the stride (and exponentiated first when ``exp_on_reg``).
    """

    def __init__(self, num_classes: int, in_channels: int, feat_channels: int, strides: tuple[int, ...],
                 stacked_convs: int = 2, share_conv: bool = True, exp_on_reg: bool = False,
                 depthwise: bool = False, pred_kernel_size: int = 1):
        super().__init__()
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.exp_on_reg = exp_on_reg

        def tower() -> nn.ModuleList:
            return nn.ModuleList(conv_block(in_channels if i == 0 else feat_channels, feat_channels, 3,
                                            depthwise=depthwise) for i in range(stacked_convs))

        pad = pred_kernel_size // 2
        self.cls_convs = nn.ModuleList(tower() for _ in self.strides)
        self.reg_convs = nn.ModuleList(tower() for _ in self.strides)
        self.rtm_cls = nn.ModuleList(nn.Conv2d(feat_channels, num_classes, pred_kernel_size, padding=pad)
                                     for _ in self.strides)
        self.rtm_reg = nn.ModuleList(nn.Conv2d(feat_channels, 4, pred_kernel_size, padding=pad)
                                     for _ in self.strides)
        if share_conv:
            for level in range(1, len(self.strides)):
                for i in range(stacked_convs):
                    _share_convs(self.cls_convs[0][i], self.cls_convs[level][i])
                    _share_convs(self.reg_convs[0][i], self.reg_convs[level][i])
        self.init_weights()

    def init_weights(self) -> None:
        """MMDetection's head init: convs N(0, 0.01), BN identity, class bias at prior probability 0.01."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        prior_bias = -math.log((1 - 0.01) / 0.01)
        for conv in self.rtm_cls:
            nn.init.constant_(conv.bias, prior_bias)

    def towers(self, level: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The classification and box towers of one level: ``(cls_feat, reg_feat)``."""
        cls_feat, reg_feat = x, x
        for layer in self.cls_convs[level]:
            cls_feat = layer(cls_feat)
        for layer in self.reg_convs[level]:
            reg_feat = layer(reg_feat)
        return cls_feat, reg_feat

    def distances(self, level: int, reg_feat: torch.Tensor) -> torch.Tensor:
        """Box distances of one level in input pixels: ``rtm_reg`` (exponentiated with ``exp_on_reg``) x stride."""
        reg = self.rtm_reg[level](reg_feat)
        return (reg.exp() if self.exp_on_reg else reg) * self.strides[level]

    def forward(self, feats: list[torch.Tensor]) -> DetOutputs:
        cls_scores, bbox_preds = [], []
        for level, x in enumerate(feats):
            cls_feat, reg_feat = self.towers(level, x)
            cls_scores.append(self.rtm_cls[level](cls_feat))
            bbox_preds.append(self.distances(level, reg_feat))
        return DetOutputs(cls_scores, bbox_preds)
