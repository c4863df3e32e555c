"""CSPNeXt backbone (RTMDet fact sheet A.2)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ARCHS
from .layers import ConvBNAct, CSPLayer, SPPBottleneck, conv_block


class CSPNeXt(nn.Module):
    """Stem (three 3x3 convs, stride 2) and 4 (P5) or 5 (P6) stages, each ``stage{i}`` = downsample conv,
    [SPP on the last stage], CSPLayer. Returns the outputs of the stages listed in ``out_indices``
    (0 is the stem), by default strides 8, 16, 32 (and 64 for P6)."""

    def __init__(self, arch: str = "P5", deepen_factor: float = 1.0, widen_factor: float = 1.0,
                 out_indices: tuple[int, ...] | None = None, depthwise: bool = False,
                 expand_ratio: float = 0.5, channel_attention: bool = True):
        super().__init__()
        setting = ARCHS[arch]
        self.out_indices = tuple(out_indices or range(2, len(setting) + 1))
        stem_out = int(setting[0][0] * widen_factor)
        stem_mid = int(setting[0][0] * widen_factor // 2)
        self.stem = nn.Sequential(
            ConvBNAct(3, stem_mid, 3, stride=2),
            ConvBNAct(stem_mid, stem_mid, 3),
            ConvBNAct(stem_mid, stem_out, 3),
        )
        self.stage_names = ["stem"]
        for i, (cin, cout, blocks, add_identity, use_spp) in enumerate(setting, start=1):
            cin, cout = int(cin * widen_factor), int(cout * widen_factor)
            num_blocks = max(round(blocks * deepen_factor), 1)
            layers: list[nn.Module] = [conv_block(cin, cout, 3, stride=2, depthwise=depthwise)]
            if use_spp:
                layers.append(SPPBottleneck(cout, cout))
            layers.append(CSPLayer(cout, cout, num_blocks, add_identity=add_identity,
                                   channel_attention=channel_attention, depthwise=depthwise, expand_ratio=expand_ratio))
            self.add_module(f"stage{i}", nn.Sequential(*layers))
            self.stage_names.append(f"stage{i}")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, name in enumerate(self.stage_names):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return outs
