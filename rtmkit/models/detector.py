"""The RTMDet network: CSPNeXt backbone -> CSPNeXtPAFPN neck -> RTMDetSepBNHead."""

from __future__ import annotations

import torch
from torch import nn

from ..config import RTMDetConfig
from .backbone import CSPNeXt
from .head import RTMDetSepBNHead
from .neck import CSPNeXtPAFPN


class RTMDetNet(nn.Module):
    """Plain ``nn.Module`` with MMDetection's state-dict names (``backbone.*``, ``neck.*``, ``bbox_head.*``).

    ``forward(batch)`` takes a normalised NCHW batch and returns ``(cls_scores, bbox_preds)``, lists over levels
    (strides 8, 16, 32[, 64]) of raw logits ``[B, C, H, W]`` and distances ``[B, 4, H, W]`` in input pixels.
    """

    def __init__(self, cfg: RTMDetConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = CSPNeXt(cfg.arch, cfg.deepen_factor, cfg.widen_factor, depthwise=cfg.depthwise,
                                expand_ratio=cfg.expand_ratio, channel_attention=cfg.channel_attention)
        self.neck = CSPNeXtPAFPN(cfg.neck_in_channels, cfg.feat_channels, cfg.neck_blocks,
                                 depthwise=cfg.depthwise, expand_ratio=cfg.expand_ratio)
        self.bbox_head = RTMDetSepBNHead(cfg.num_classes, cfg.feat_channels, cfg.feat_channels, cfg.strides,
                                         stacked_convs=cfg.stacked_convs, share_conv=cfg.share_conv,
                                         exp_on_reg=cfg.exp_on_reg, depthwise=cfg.depthwise,
                                         pred_kernel_size=cfg.pred_kernel_size)

    @property
    def strides(self) -> tuple[int, ...]:
        return self.bbox_head.strides

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self.bbox_head(self.neck(self.backbone(x)))

    def loss(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]], *, return_details: bool = False):
        """Training losses ``{"loss_cls", "loss_bbox"}`` (each summed over levels) of a normalised NCHW batch.

        ``targets``: one ``{"boxes": [n, 4] xyxy in input pixels, "labels": [n]}`` per image (n may be 0). Runs
        the forward pass (call ``train()`` first for batch-statistics BN, as in training) and
        ``rtmkit.engine.criterion.RTMDetCriterion``, built on first use. With ``return_details`` also returns a
        ``LossDetails`` (per-level losses, assignment, targets, avg factors).
        """
        criterion = self.__dict__.get("_criterion")
        if criterion is None:
            from ..engine.criterion import RTMDetCriterion

            criterion = self._criterion = RTMDetCriterion(self.cfg.num_classes, self.strides)
        cls_scores, bbox_preds = self(images)
        return criterion(cls_scores, bbox_preds, targets, return_details=return_details)
