"""CSPNeXtPAFPN neck (RTMDet fact sheet A.4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvBNAct, CSPLayer, conv_block


class CSPNeXtPAFPN(nn.Module):
    """Top-down then bottom-up path aggregation over the backbone outputs (finest first).

    Top-down, each coarser map is reduced by a 1x1 conv, and the reduced map *replaces* it for the
    bottom-up path (as in the reference). Concatenation order is always [resampled, lateral].
    """

    def __init__(self, in_channels: list[int], out_channels: int, num_csp_blocks: int,
                 depthwise: bool = False, expand_ratio: float = 0.5):
        super().__init__()
        self.in_channels = list(in_channels)
        n = len(in_channels)

        def csp(cin: int, cout: int) -> CSPLayer:
            return CSPLayer(cin, cout, num_csp_blocks, add_identity=False, channel_attention=False,
                            depthwise=depthwise, expand_ratio=expand_ratio)

        self.reduce_layers = nn.ModuleList()
        self.top_down_blocks = nn.ModuleList()
        for idx in range(n - 1, 0, -1):
            self.reduce_layers.append(ConvBNAct(in_channels[idx], in_channels[idx - 1], 1))
            self.top_down_blocks.append(csp(in_channels[idx - 1] * 2, in_channels[idx - 1]))
        self.downsamples = nn.ModuleList()
        self.bottom_up_blocks = nn.ModuleList()
        for idx in range(n - 1):
            self.downsamples.append(conv_block(in_channels[idx], in_channels[idx], 3, stride=2,
                                               depthwise=depthwise))
            self.bottom_up_blocks.append(csp(in_channels[idx] * 2, in_channels[idx + 1]))
        self.out_convs = nn.ModuleList(conv_block(c, out_channels, 3, depthwise=depthwise) for c in in_channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        n = len(self.in_channels)
        # inner[k] is the top-down feature of level k; the coarsest one is the reduced input.
        inner = [feats[-1]]
        for i, idx in enumerate(range(n - 1, 0, -1)):
            reduced = self.reduce_layers[i](inner[0])
            inner[0] = reduced
            up = F.interpolate(reduced, scale_factor=2.0, mode="nearest")
            inner.insert(0, self.top_down_blocks[i](torch.cat([up, feats[idx - 1]], dim=1)))
        outs = [inner[0]]
        for idx in range(n - 1):
            down = self.downsamples[idx](outs[-1])
            outs.append(self.bottom_up_blocks[idx](torch.cat([down, inner[idx + 1]], dim=1)))
        return [conv(x) for conv, x in zip(self.out_convs, outs)]
