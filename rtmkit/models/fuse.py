"""Inference-only speed-ups: fold BatchNorm into the preceding convolution; compile with frozen weights."""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from .layers import ConvBNAct


@torch.no_grad()
def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv (with bias) computing bn(conv(x)) with the BN's running statistics."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, device=conv.weight.device, dtype=conv.weight.dtype)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


def fuse_model(net: nn.Module) -> nn.Module:
    """An eval-mode copy of ``net`` with every ConvBNAct folded into a single conv.

    Convs shared across head levels get one folded copy per level, since each level has its own BN.
    The copy no longer has MMDetection's state-dict layout: keep the original for saving and training.
    """
    fused = copy.deepcopy(net).eval()
    for module in fused.modules():
        if isinstance(module, ConvBNAct) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv = fold_bn(module.conv, module.bn)
            module.bn = nn.Identity()
    return fused


def compile_for_inference(net: nn.Module, size: int, device: torch.device | str = "cpu",
                          channels_last: bool = True) -> nn.Module:
    """``torch.compile`` an eval-mode net with inductor's weight freezing, compiled for a batch of one at
    ``size``; the eager ``net`` is returned, with a warning, when compilation fails.

    Freezing treats the weights as constants, folded in at compile time; inductor fuses the elementwise work
    around the convs (SiLU, concatenation, channel-attention products) into generated kernels, which is where the
    eager overhead is (the convs themselves run near the CPU's peak FLOP rate).
    It only applies under ``torch.no_grad``/``inference_mode``. Other shapes trigger a recompile on first use
    (the fallback covers this first compilation only).
    """
    compiled = torch.compile(net, dynamic=False, options={"freezing": True})
    x = torch.zeros(1, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            compiled(x)
    except Exception as e:  # the compiler stack raises many types (missing compiler, backend errors)
        first_line = (str(e).splitlines() or [""])[0][:200]
        warnings.warn(f"torch.compile failed ({type(e).__name__}: {first_line}); "
                      "running the fused model eagerly", stacklevel=2)
        return net
    return compiled
