"""RTMDet-Ins instance masks: each kept detection's dynamic kernel applied to the shared prototypes (fact sheet
A.6), then brought to the original image as the reference does.

Frames: ``mask_feat`` is the stride-8 prototype map of the padded network input; logits come out at that stride;
:func:`paste_masks` upsamples them x8 to the padded input, resizes that to the original image's scale (the
reference's size formula, quirks included) and crops to the original image.
"""

from __future__ import annotations

import functools
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
    """``kernels`` ``[..., 169]`` -> per layer, weights ``[..., out, in]`` and biases ``[..., out]``. Layout of a
    kernel vector: every layer's weights (out-major), then every layer's biases."""
    lead = kernels.shape[:-1]
    shapes = dynamic_layer_shapes(num_prototypes, channels, num_layers)
    sizes = [o * i for o, i in shapes] + [o for o, _ in shapes]
    parts = torch.split(kernels, sizes, dim=-1)
    weights = [w.reshape(*lead, o, i) for w, (o, i) in zip(parts[:num_layers], shapes)]
    return weights, list(parts[num_layers:])


def mask_logits_batched(mask_feat: torch.Tensor, kernels: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Mask logits ``[B, K, h, w]`` at stride 8 for ``K`` instances per image (traceable: the exported graphs
    run it).

    ``mask_feat`` ``[B, P, h, w]`` prototypes; ``kernels`` ``[B, K, 169]``; ``priors`` ``[B, K, 3]`` (x, y,
    stride) of the prior each instance was decoded from, in input pixels. The dynamic head sees 2 + P channels:
    the position of every stride-8 location relative to the prior, ``(prior - location) / (stride * 8)`` as
    (x, y), then the prototypes; three 1x1 convs with ReLU between (the reference's grouped convs, here as matrix
    products: the same sums in another order)."""
    b, p, h, w = mask_feat.shape
    weights, biases = split_dynamic_params(kernels, num_prototypes=p)
    # Layer 1 as one matrix product per image, without building the [B, K, 2 + P, h, w] input: the prototypes
    # are shared by the instances, and the relative coordinates are affine in the location,
    # w_x (x_prior - x) / s + w_y (y_prior - y) / s = (-w_x / s) x + (-w_y / s) y + (w_x x_prior + w_y y_prior) / s,
    # so three more input rows (x, y, 1) carry them.
    w1 = weights[0]  # [B, K, C, 2 + P]: (x, y, prototypes)
    k, c = w1.shape[1], w1.shape[2]
    norm = (priors[..., 2:3] * 8).unsqueeze(-1)  # [B, K, 1, 1]
    wx, wy = w1[..., 0:1] / norm, w1[..., 1:2] / norm  # [B, K, C, 1]
    offset = wx * priors[..., None, 0:1] + wy * priors[..., None, 1:2] + biases[0].unsqueeze(-1)
    rows = torch.cat([w1[..., 2:], -wx, -wy, offset], dim=-1).reshape(b, k * c, p + 3)
    ys, xs = torch.meshgrid(torch.arange(h, device=mask_feat.device, dtype=mask_feat.dtype) * MASK_STRIDE,
                            torch.arange(w, device=mask_feat.device, dtype=mask_feat.dtype) * MASK_STRIDE,
                            indexing="ij")
    position = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones_like(xs).reshape(-1)])  # [3, h * w]
    inputs = torch.cat([mask_feat.reshape(b, p, h * w), position.expand(b, 3, h * w)], dim=1)
    x = torch.matmul(rows, inputs).relu().reshape(b * k, c, h * w)
    for i in range(1, len(weights)):
        wi = weights[i].reshape(b * k, weights[i].shape[-2], weights[i].shape[-1])
        x = torch.baddbmm(biases[i].reshape(b * k, biases[i].shape[-1], 1), wi, x)
        if i < len(weights) - 1:
            x = x.relu()
    return x.reshape(b, k, h, w)


def mask_logits(mask_feat: torch.Tensor, kernels: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """:func:`mask_logits_batched` for one image: ``mask_feat`` ``[P, h, w]``, ``kernels`` ``[N, 169]``,
    ``priors`` ``[N, 3]`` -> ``[N, h, w]``."""
    return mask_logits_batched(mask_feat[None], kernels[None], priors[None])[0]


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


@functools.lru_cache(maxsize=64)
def _axis_weights(low: int, up_scale: int, resized: int, keep: int, dtype: torch.dtype
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[keep, low]`` weights taking ``low`` stride-8 samples of one axis to the first ``keep`` pixels of that
    axis in the original image: the x``up_scale`` bilinear upsampling then the resize to ``resized`` pixels
    (both ``align_corners=False``, PyTorch's source-index rule, clamped at the edges), composed. Each row has at
    most four non-zero weights, non-negative and summing to one. Also, per output pixel, the first and last
    sample it depends on (``[keep]`` each, non-decreasing along the axis)."""

    def linear(n_in: int, n_out: int, scale: float) -> torch.Tensor:
        src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).clamp(min=0)
        i0 = src.floor().long().clamp(max=n_in - 1)
        i1 = (i0 + 1).clamp(max=n_in - 1)
        frac = src - i0
        m = torch.zeros(n_out, n_in, dtype=torch.float64)
        m[torch.arange(n_out), i0] += 1 - frac
        m[torch.arange(n_out), i1] += frac
        return m

    mid = low * up_scale
    first = linear(low, mid, 1 / up_scale)  # F.interpolate(scale_factor=8): scale 1/8
    second = linear(mid, resized, mid / resized)  # F.interpolate(size=...): scale in/out
    if keep > resized:
        raise ValueError(f"the resized mask ({resized} px) is smaller than the image ({keep} px): scale factor "
                         "does not match the image size")
    weights = (second[:keep] @ first).to(dtype)
    return (weights, *_support(weights))  # cached: callers must not modify them


def paste_masks(logits: torch.Tensor, scale_factor: tuple[float, float], orig_hw: tuple[int, int],
                threshold: float = 0.5, boxes: torch.Tensor | None = None) -> torch.Tensor:
    """Bool masks ``[N, H, W]`` of the original image: the bits of :func:`resize_mask_logits` then
    ``sigmoid > threshold`` (the reference's ``mask_thr_binary``), with far less work.

    The two bilinear resizes are linear maps with non-negative weights: per axis one small ``[H, h]`` matrix.
    A pixel can only be set where some stride-8 logit it depends on is above ``logit(threshold)`` (a convex
    combination of values at or below it stays at or below it), so each instance is computed only over the
    pixels its above-threshold logits reach, as two small matrix products, and compared in logit space (no
    sigmoid, no full-image float tensors). The arithmetic order differs from the reference's, so a pixel whose
    logit is within float rounding of the threshold may flip (counted in the tests: a handful per image).
    ``boxes`` ``[N, 4]`` xyxy original pixels: also clear everything outside each box (off by default: the
    reference does not crop)."""
    n, h, w = logits.shape
    orig_h, orig_w = orig_hw
    out = torch.zeros((n, orig_h, orig_w), dtype=torch.bool, device=logits.device)
    if n == 0:
        return out
    if threshold <= 0.0:
        return out.fill_(True) if boxes is None else crop_to_boxes(out.fill_(True), boxes)
    if threshold >= 1.0:
        return out
    t = math.log(threshold / (1 - threshold))
    inv_w, inv_h = 1 / scale_factor[0], 1 / scale_factor[1]
    rows, row_lo, row_hi = (t.to(logits.device) for t in
                            _axis_weights(h, MASK_STRIDE, math.ceil(h * MASK_STRIDE * inv_w), orig_h, logits.dtype))
    cols, col_lo, col_hi = (t.to(logits.device) for t in
                            _axis_weights(w, MASK_STRIDE, math.ceil(w * MASK_STRIDE * inv_h), orig_w, logits.dtype))
    above = logits > t
    row_any, col_any = above.any(2), above.any(1)  # [N, h], [N, w]
    has = row_any.any(1)
    k0, k1 = _first_last(row_any)
    m0, m1 = _first_last(col_any)
    # output ranges reached by the above-threshold samples: pixels whose support intersects [k0, k1]
    r0 = torch.searchsorted(row_hi, k0)
    r1 = torch.searchsorted(row_lo, k1, right=True)
    c0 = torch.searchsorted(col_hi, m0)
    c1 = torch.searchsorted(col_lo, m1, right=True)
    ranges = torch.stack([k0, k1 + 1, m0, m1 + 1, r0, r1, c0, c1], 1)[has].tolist()
    for i, (a0, a1, b0, b1, y0, y1, x0, x1) in zip(has.nonzero()[:, 0].tolist(), ranges):
        if y1 <= y0 or x1 <= x0:  # only the padding (cropped away) is above the threshold
            continue
        # the rows/cols of the region may depend on samples next to [a0, a1): widen the slice to their support
        a0, a1 = min(a0, int(row_lo[y0])), max(a1, int(row_hi[y1 - 1]) + 1)
        b0, b1 = min(b0, int(col_lo[x0])), max(b1, int(col_hi[x1 - 1]) + 1)
        region = rows[y0:y1, a0:a1] @ logits[i, a0:a1, b0:b1] @ cols[x0:x1, b0:b1].T
        out[i, y0:y1, x0:x1] = region > t
    return out if boxes is None else crop_to_boxes(out, boxes)


def _support(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of ``[L, l]`` weights, the first and last column with a non-zero weight (``[L]`` each)."""
    nz = weights != 0
    idx = torch.arange(weights.shape[1], device=weights.device)
    lo = torch.where(nz, idx, weights.shape[1]).amin(1)
    hi = torch.where(nz, idx, -1).amax(1)
    return lo.contiguous(), hi.contiguous()


def _first_last(flags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, L]`` bool -> first and last True index per row (``[N]`` each; meaningless for rows without one)."""
    idx = torch.arange(flags.shape[1], device=flags.device)
    return torch.where(flags, idx, flags.shape[1]).amin(1), torch.where(flags, idx, -1).amax(1)


def crop_to_boxes(masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Clear the pixels of ``masks`` ``[N, H, W]`` whose centre lies outside the instance's xyxy box."""
    _, h, w = masks.shape
    ys = torch.arange(h, device=masks.device, dtype=torch.float32) + 0.5
    xs = torch.arange(w, device=masks.device, dtype=torch.float32) + 0.5
    b = boxes.float().to(masks.device)
    inside_y = (ys >= b[:, 1:2]) & (ys <= b[:, 3:4])
    inside_x = (xs >= b[:, 0:1]) & (xs <= b[:, 2:3])
    return masks & inside_y[:, :, None] & inside_x[:, None, :]


def instance_masks(mask_feat: torch.Tensor, kernels: torch.Tensor, priors: torch.Tensor,
                   detections: list[Detections], scale_factors: torch.Tensor, orig_sizes: torch.Tensor,
                   threshold: float = 0.5, crop: bool = False) -> list[torch.Tensor]:
    """Bool masks ``[N_i, H_i, W_i]`` in the original images for the detections of a batch (their
    ``prior_inds`` select each instance's kernel and prior).

    ``mask_feat`` ``[B, P, h, w]``; ``kernels`` ``[B, N, 169]`` and ``priors`` ``[N, 3]`` (x, y, stride) of all
    priors, levels flattened (:func:`seg_inputs` makes them from the network's outputs); ``scale_factors``
    ``[B, 2]`` (w_scale, h_scale); ``orig_sizes`` ``[B, 2]`` (h, w). ``crop``: clear each mask outside its box."""
    masks = []
    for i, det in enumerate(detections):
        inds = det.prior_inds.to(kernels.device)
        logits = mask_logits(mask_feat[i], kernels[i, inds], priors[inds])
        scale = (float(scale_factors[i, 0]), float(scale_factors[i, 1]))
        masks.append(paste_masks(logits, scale, (int(orig_sizes[i, 0]), int(orig_sizes[i, 1])), threshold,
                                 boxes=det.boxes if crop else None))
    return masks


def seg_inputs(outputs: SegOutputs, strides: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What :func:`instance_masks` needs from the network's outputs: ``mask_feat`` ``[B, P, h, w]``, the kernels
    ``[B, N, 169]`` and the priors ``[N, 3]`` (x, y, stride), levels flattened in the decoding's order."""
    priors = grid_priors(level_sizes(outputs.cls_scores), strides, device=outputs.mask_feat.device,
                         with_stride=True)[:, :3]
    return outputs.mask_feat, flatten_levels(outputs.kernel_preds), priors


def input_masks_to_image(probs: torch.Tensor, scale_factor: tuple[float, float], orig_hw: tuple[int, int],
                         threshold: float = 0.5) -> torch.Tensor:
    """Masks an end-to-end graph gives at network-input resolution (``[K, H_in, W_in]`` probabilities: the x8
    upsampled logits through a sigmoid, MMDeploy's contract) -> bool ``[K, H, W]`` in the original image, as the
    reference finishes them: back to logits, resized to the rescaled padded size, cropped, thresholded."""
    orig_h, orig_w = orig_hw
    if probs.shape[0] == 0:
        return torch.zeros((0, orig_h, orig_w), dtype=torch.bool)
    eps = 1e-7  # saturated probabilities give finite logits (a 0 * inf in the interpolation would be NaN)
    logits = torch.logit(probs.float().clamp(eps, 1 - eps))
    size = [math.ceil(probs.shape[-2] / scale_factor[0]), math.ceil(probs.shape[-1] / scale_factor[1])]
    resized = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0, :, :orig_h, :orig_w]
    return resized > math.log(threshold / (1 - threshold)) if 0 < threshold < 1 else resized.sigmoid() > threshold
