"""RTMDet-Ins instance masks: each kept detection's dynamic kernel applied to the shared prototypes (fact sheet
A.6), then brought to the original image as the reference does.

Frames: ``mask_feat`` is the stride-8 prototype map of the padded network input; logits come out at that stride;
:func:`paste_masks` upsamples them x8 to the padded input, resizes that to the original image's scale (the
reference's size formula, quirks included) and crops to the original image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..ops.boxes import grid_priors
from ..ops.levels import flatten_levels, level_sizes
from ..structures import SegOutputs
from .head_ins import dynamic_layer_shapes
from .postprocess import Detections

MASK_STRIDE = 8  # the prototypes' stride: pyramid level 0


def split_dynamic_params(kernels: torch.Tensor, num_prototypes: int = 8, channels: int = 8, num_layers: int = 3
                         ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``kernels`` ``[N, 169]`` -> per layer, grouped-conv weights ``[N * out, in, 1, 1]`` and biases ``[N * out]``.
    Layout of a kernel vector: every layer's weights (out-major), then every layer's biases."""
    n = kernels.shape[0]
    shapes = dynamic_layer_shapes(num_prototypes, channels, num_layers)
    sizes = [o * i for o, i in shapes] + [o for o, _ in shapes]
    parts = torch.split(kernels, sizes, dim=1)
    weights = [w.reshape(n * o, i, 1, 1) for w, (o, i) in zip(parts[:num_layers], shapes)]
    biases = [b.reshape(n * o) for b, (o, _) in zip(parts[num_layers:], shapes)]
    return weights, biases


def mask_logits(mask_feat: torch.Tensor, kernels: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Mask logits ``[N, h, w]`` at stride 8 for ``N`` instances of one image.

    ``mask_feat`` ``[P, h, w]`` prototypes; ``kernels`` ``[N, 169]``; ``priors`` ``[N, 3]`` (x, y, stride) of the
    prior each instance was decoded from, in input pixels. The dynamic head sees 2 + P channels: the position of
    every stride-8 location relative to the prior, ``(prior - location) / (stride * 8)`` as (x, y), then the
    prototypes; three 1x1 convs with ReLU between (one grouped conv per layer: one group per instance)."""
    n = priors.shape[0]
    p, h, w = mask_feat.shape
    if n == 0:
        return mask_feat.new_zeros((0, h, w))
    ys = torch.arange(h, device=mask_feat.device, dtype=mask_feat.dtype) * MASK_STRIDE
    xs = torch.arange(w, device=mask_feat.device, dtype=mask_feat.dtype) * MASK_STRIDE
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1).reshape(1, -1, 2)  # (x, y), row-major
    relative = (priors[:, None, :2] - grid).permute(0, 2, 1) / (priors[:, 2].reshape(-1, 1, 1) * 8)
    x = torch.cat([relative.reshape(n, 2, h, w), mask_feat.expand(n, p, h, w)], dim=1).reshape(1, -1, h, w)
    weights, biases = split_dynamic_params(kernels, num_prototypes=p)
    for i, (weight, bias) in enumerate(zip(weights, biases)):
        x = F.conv2d(x, weight, bias, groups=n)
        if i < len(weights) - 1:
            x = F.relu(x)
    return x.reshape(n, h, w)


def resize_mask_logits(logits: torch.Tensor, scale_factor: tuple[float, float], orig_hw: tuple[int, int]
                       ) -> torch.Tensor:
    """Stride-8 logits ``[N, h, w]`` -> logits ``[N, H, W]`` in the original image, as the reference resizes
    them: bilinear x8 to the padded input, bilinear to ``(ceil(H_pad / w_scale), ceil(W_pad / h_scale))`` (its
    height uses the width scale and vice versa; equal scales with keep-ratio resizing, up to rounding), then crop
    to the original size. ``scale_factor``: (w_scale, h_scale) = resized / original."""
    orig_h, orig_w = orig_hw
    if logits.shape[0] == 0:
        return logits.new_zeros((0, orig_h, orig_w))
    up = F.interpolate(logits[None], scale_factor=MASK_STRIDE, mode="bilinear", align_corners=False)
    inv_w, inv_h = 1 / scale_factor[0], 1 / scale_factor[1]
    size = [math.ceil(up.shape[-2] * inv_w), math.ceil(up.shape[-1] * inv_h)]
    return F.interpolate(up, size=size, mode="bilinear", align_corners=False)[0, :, :orig_h, :orig_w]


def paste_masks(logits: torch.Tensor, scale_factor: tuple[float, float], orig_hw: tuple[int, int],
                threshold: float = 0.5) -> torch.Tensor:
    """Bool masks ``[N, H, W]`` of the original image: :func:`resize_mask_logits`, then ``sigmoid > threshold``
    (the reference's ``mask_thr_binary``)."""
    return resize_mask_logits(logits, scale_factor, orig_hw).sigmoid() > threshold


def instance_masks(outputs: SegOutputs, detections: list[Detections], strides: tuple[int, ...],
                   scale_factors: torch.Tensor, orig_sizes: torch.Tensor, threshold: float = 0.5
                   ) -> list[torch.Tensor]:
    """Bool masks ``[N_i, H_i, W_i]`` in the original images for the detections of a batch (their
    ``prior_inds`` select each instance's kernel and prior). ``scale_factors`` ``[B, 2]`` (w_scale, h_scale);
    ``orig_sizes`` ``[B, 2]`` (h, w)."""
    priors = grid_priors(level_sizes(outputs.cls_scores), strides, device=outputs.mask_feat.device,
                         with_stride=True)[:, :3]
    kernels = flatten_levels(outputs.kernel_preds)
    masks = []
    for i, det in enumerate(detections):
        inds = det.prior_inds.to(kernels.device)
        logits = mask_logits(outputs.mask_feat[i], kernels[i, inds], priors[inds])
        scale = (float(scale_factors[i, 0]), float(scale_factors[i, 1]))
        masks.append(paste_masks(logits, scale, (int(orig_sizes[i, 0]), int(orig_sizes[i, 1])), threshold))
    return masks
