"""The RTMDet network: CSPNeXt backbone -> CSPNeXtPAFPN neck -> RTMDetSepBNHead (RTMDetInsSepBNHead for the
``segment`` task, RotatedRTMDetSepBNHead for ``rotated``)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import RTMDetConfig
from ..structures import DetOutputs, RotOutputs, SegOutputs
from .backbone import CSPNeXt
from .head import RTMDetSepBNHead
from .head_ins import RTMDetInsSepBNHead
from .head_rot import RotatedRTMDetSepBNHead
from .neck import CSPNeXtPAFPN


class RTMDetNet(nn.Module):
    """Plain ``nn.Module`` with MMDetection's state-dict names (``backbone.*``, ``neck.*``, ``bbox_head.*``).

    ``forward(batch)`` takes a normalised NCHW BGR batch and returns :class:`~rtmkit.structures.DetOutputs`
    ``(cls_scores, bbox_preds)``, lists over levels (strides 8, 16, 32[, 64]) of raw logits ``[B, C, H, W]`` and
    distances ``[B, 4, H, W]`` in input pixels. The training loss lives outside the network
    (:class:`rtmkit.engine.criterion.RTMDetCriterion`; ``RTMDet(...).loss(images, targets)``).
    """

    def __init__(self, cfg: RTMDetConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = CSPNeXt(cfg.net.arch, cfg.net.deepen_factor, cfg.net.widen_factor, depthwise=cfg.net.depthwise,
                                expand_ratio=cfg.net.expand_ratio, channel_attention=cfg.net.channel_attention)
        self.neck = CSPNeXtPAFPN(cfg.net.neck_in_channels, cfg.net.feat_channels, cfg.net.neck_blocks,
                                 depthwise=cfg.net.depthwise, expand_ratio=cfg.net.expand_ratio)
        if cfg.task == "segment":
            self.bbox_head = RTMDetInsSepBNHead(cfg.num_classes, cfg.net.feat_channels, cfg.net.feat_channels,
                                                cfg.strides, stacked_convs=cfg.net.stacked_convs,
                                                share_conv=cfg.net.share_conv,
                                                pred_kernel_size=cfg.net.pred_kernel_size)
            return
        head = RotatedRTMDetSepBNHead if cfg.task == "rotated" else RTMDetSepBNHead
        self.bbox_head = head(cfg.num_classes, cfg.net.feat_channels, cfg.net.feat_channels, cfg.strides,
                                         stacked_convs=cfg.net.stacked_convs, share_conv=cfg.net.share_conv,
                                         exp_on_reg=cfg.net.exp_on_reg, depthwise=cfg.net.depthwise,
                                         pred_kernel_size=cfg.net.pred_kernel_size)

    @property
    def strides(self) -> tuple[int, ...]:
        return self.bbox_head.strides

    def forward(self, x: torch.Tensor) -> DetOutputs | SegOutputs | RotOutputs:
        return self.bbox_head(self.neck(self.backbone(x)))
