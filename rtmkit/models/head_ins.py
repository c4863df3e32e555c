"""RTMDetInsSepBNHead: the detection head plus a dynamic-kernel branch and a mask-prototype module (RTMDet fact
sheet A.6). Masks themselves are assembled in post-processing and the loss, from a prior's kernel and the
prototypes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..structures import SegOutputs
from .head import RTMDetSepBNHead, _share_convs
from .layers import ConvBNAct


def dynamic_layer_shapes(num_prototypes: int = 8, dyconv_channels: int = 8, num_dyconvs: int = 3
                         ) -> list[tuple[int, int]]:
    """(out, in) channels of each 1x1 conv of an instance's mask head: prototypes + 2 coordinates ->
    dyconv_channels -> ... -> 1."""
    shapes, channels_in = [], num_prototypes + 2
    for i in range(num_dyconvs):
        channels_out = 1 if i == num_dyconvs - 1 else dyconv_channels
        shapes.append((channels_out, channels_in))
        channels_in = channels_out
    return shapes


def dynamic_kernel_size(num_prototypes: int = 8, dyconv_channels: int = 8, num_dyconvs: int = 3) -> int:
    """Parameters of one instance's mask head, weights and biases (169 with the defaults: 10*8 + 8*8 + 8*1
    weights, 8 + 8 + 1 biases)."""
    return sum(o * i + o for o, i in dynamic_layer_shapes(num_prototypes, dyconv_channels, num_dyconvs))


class MaskFeatModule(nn.Module):
    """Mask prototypes from the neck: levels 1..n-1 resized (bilinear) to level 0, concatenated, fused by a 1x1
    conv (with bias, no BN), refined by ``stacked_convs`` 3x3 ConvBNAct and projected to ``num_prototypes``
    channels. Input: neck outputs, finest first; output ``[B, num_prototypes, H_0, W_0]`` (stride 8)."""

    def __init__(self, in_channels: int, feat_channels: int, stacked_convs: int = 4, num_levels: int = 3,
                 num_prototypes: int = 8):
        super().__init__()
        self.num_levels = num_levels
        self.fusion_conv = nn.Conv2d(num_levels * in_channels, in_channels, 1)
        self.stacked_convs = nn.Sequential(*(ConvBNAct(in_channels if i == 0 else feat_channels, feat_channels, 3)
                                             for i in range(stacked_convs)))
        self.projection = nn.Conv2d(feat_channels, num_prototypes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        feats = feats[:self.num_levels]
        size = feats[0].shape[-2:]
        fused = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
        return self.projection(self.stacked_convs(self.fusion_conv(torch.cat(fused, dim=1))))


class RTMDetInsSepBNHead(RTMDetSepBNHead):
    """The RTMDet-Ins head (MMDetection's state-dict names, in its order: ``cls_convs``, ``reg_convs``,
    ``kernel_convs``, ``rtm_cls``, ``rtm_reg``, ``rtm_kernel``, ``mask_head``).

    As in the reference (and the official checkpoints), ``reg_convs[l]`` *is* ``cls_convs[l]``: box regression
    runs the classification tower a second time (same convs, same BNs, so training updates those BN statistics
    twice per step and their gradients sum over both branches). ``kernel_convs`` are not shared across levels.
    Box distances are ``ReLU(rtm_reg(feat)) * stride``.

    ``forward`` returns :class:`~rtmkit.structures.SegOutputs` ``(cls_scores, bbox_preds, kernel_preds,
    mask_feat)``.
    """

    def __init__(self, num_classes: int, in_channels: int, feat_channels: int, strides: tuple[int, ...],
                 stacked_convs: int = 2, share_conv: bool = True, pred_kernel_size: int = 1,
                 num_prototypes: int = 8, dyconv_channels: int = 8, num_dyconvs: int = 3, mask_stacked_convs: int = 4):
        nn.Module.__init__(self)
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.exp_on_reg = False
        self.num_prototypes, self.dyconv_channels, self.num_dyconvs = num_prototypes, dyconv_channels, num_dyconvs
        self.kernel_size = dynamic_kernel_size(num_prototypes, dyconv_channels, num_dyconvs)

        def tower() -> nn.ModuleList:
            return nn.ModuleList(ConvBNAct(in_channels if i == 0 else feat_channels, feat_channels, 3)
                                 for i in range(stacked_convs))

        pad = pred_kernel_size // 2
        self.cls_convs = nn.ModuleList(tower() for _ in self.strides)
        self.reg_convs = nn.ModuleList(list(self.cls_convs))  # the same module lists (see the class docstring)
        self.kernel_convs = nn.ModuleList(tower() for _ in self.strides)
        self.rtm_cls = nn.ModuleList(nn.Conv2d(feat_channels, num_classes, pred_kernel_size, padding=pad)
                                     for _ in self.strides)
        self.rtm_reg = nn.ModuleList(nn.Conv2d(feat_channels, 4, pred_kernel_size, padding=pad)
                                     for _ in self.strides)
        self.rtm_kernel = nn.ModuleList(nn.Conv2d(feat_channels, self.kernel_size, pred_kernel_size, padding=pad)
                                        for _ in self.strides)
        self.mask_head = MaskFeatModule(in_channels, feat_channels, mask_stacked_convs, len(self.strides),
                                        num_prototypes)
        if share_conv:
            for level in range(1, len(self.strides)):
                for i in range(stacked_convs):
                    _share_convs(self.cls_convs[0][i], self.cls_convs[level][i])
        self.init_weights()

    def init_weights(self) -> None:
        """The detection head's init (convs N(0, 0.01), class bias at prior 0.01), mask branch included, and the
        box-regression bias at 1 (the reference's Ins init)."""
        super().init_weights()
        for conv in self.rtm_reg:
            nn.init.constant_(conv.bias, 1.0)

    def forward(self, feats: list[torch.Tensor]) -> SegOutputs:
        cls_scores, bbox_preds, kernel_preds = [], [], []
        mask_feat = self.mask_head(feats)
        for level, (x, stride) in enumerate(zip(feats, self.strides)):
            cls_feat, kernel_feat, reg_feat = x, x, x
            for layer in self.cls_convs[level]:
                cls_feat = layer(cls_feat)
            for layer in self.kernel_convs[level]:
                kernel_feat = layer(kernel_feat)
            for layer in self.reg_convs[level]:
                reg_feat = layer(reg_feat)
            cls_scores.append(self.rtm_cls[level](cls_feat))
            kernel_preds.append(self.rtm_kernel[level](kernel_feat))
            bbox_preds.append(F.relu(self.rtm_reg[level](reg_feat)) * stride)
        return SegOutputs(cls_scores, bbox_preds, kernel_preds, mask_feat)
