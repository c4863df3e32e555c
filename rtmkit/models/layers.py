"""Building blocks of CSPNeXt and its PAFPN neck.

Attribute names (``conv``, ``bn``, ``depthwise_conv``, ``main_conv`` ...) follow MMDetection's modules so that
official checkpoints load with ``strict=True``; see the key patterns in the RTMDet fact sheet (A.1, A.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Every released RTMDet config uses a bare SyncBN/BN: PyTorch's defaults, not MMDetection's class defaults.
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


class ConvBNAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> SiLU, stored as ``conv``, ``bn``, ``activate``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.activate = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


class DepthwiseSeparableConv(nn.Module):
    """k x k depthwise ConvBNAct followed by a 1x1 pointwise ConvBNAct (each with its own BN and SiLU)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.depthwise_conv = ConvBNAct(in_channels, in_channels, kernel_size, stride, groups=in_channels)
        self.pointwise_conv = ConvBNAct(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


def conv_block(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
               depthwise: bool = False) -> nn.Module:
    """The conv that MMDetection picks with ``use_depthwise``: depthwise-separable or a plain ConvBNAct."""
    if depthwise:
        return DepthwiseSeparableConv(in_channels, out_channels, kernel_size, stride)
    return ConvBNAct(in_channels, out_channels, kernel_size, stride)


class ChannelAttention(nn.Module):
    """Squeeze-excite without reduction: global average pool, 1x1 conv with bias, hard sigmoid, rescale."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)
        self.act = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The reference pools in fp32 even under autocast.
        with torch.autocast(device_type=x.device.type, enabled=False):
            pooled = F.adaptive_avg_pool2d(x.float(), 1)
        weights = self.act(self.fc(pooled.to(x.dtype)))
        return x * weights


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling with 5/9/13 max-pools, run as three chained 5x5 pools (identical values, cheaper)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = in_channels // 2
        self.conv1 = ConvBNAct(in_channels, mid, 1)
        self.conv2 = ConvBNAct(mid * 4, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        p5 = F.max_pool2d(x, 5, 1, 2)
        p9 = F.max_pool2d(p5, 5, 1, 2)
        p13 = F.max_pool2d(p9, 5, 1, 2)
        return self.conv2(torch.cat([x, p5, p9, p13], dim=1))


class CSPNeXtBlock(nn.Module):
    """3x3 conv, then a 5x5 depthwise-separable conv, with an optional residual."""

    def __init__(self, channels: int, *, add_identity: bool, depthwise: bool = False):
        super().__init__()
        self.conv1 = conv_block(channels, channels, 3, depthwise=depthwise)
        self.conv2 = DepthwiseSeparableConv(channels, channels, 5)
        self.add_identity = add_identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class CSPLayer(nn.Module):
    """Cross-stage partial layer: a main path through CSPNeXt blocks and a 1x1 shortcut, concatenated."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, *, add_identity: bool,
                 channel_attention: bool, depthwise: bool = False, expand_ratio: float = 0.5):
        super().__init__()
        mid = int(out_channels * expand_ratio)
        self.main_conv = ConvBNAct(in_channels, mid, 1)
        self.short_conv = ConvBNAct(in_channels, mid, 1)
        self.final_conv = ConvBNAct(2 * mid, out_channels, 1)
        self.blocks = nn.Sequential(*[CSPNeXtBlock(mid, add_identity=add_identity, depthwise=depthwise)
                                      for _ in range(num_blocks)])
        self.attention = ChannelAttention(2 * mid) if channel_attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([self.blocks(self.main_conv(x)), self.short_conv(x)], dim=1)
        if self.attention is not None:
            out = self.attention(out)
        return self.final_conv(out)
