"""RTMDet-R decoding and post-processing, batched over images, levels and classes (fact sheet A.7).

Reference order per image (MMRotate's ``RotatedRTMDetHead._predict_by_feat_single`` and MMDetection's
``_bbox_post_process``): sigmoid -> per level the ``nms_pre`` best (prior, class) pairs with score > score_thr ->
decode with ``DistanceAnglePointCoder`` (le90, no clamping) -> rescale the rotated boxes to the original image ->
drop boxes with width or height <= min_bbox_size -> class-aware rotated NMS (centres offset per class, suppress at
IoU >= threshold) -> best ``max_per_img``.
"""

from __future__ import annotations

import math

import torch

from ..config import PostprocessConfig
from ..ops.boxes import grid_priors
from ..ops.levels import flatten_levels, level_sizes, prior_level_ids
from ..ops.rotated import batched_nms_rotated
from ..structures import RotOutputs
from .postprocess import Candidates, Detections, per_image_detections, select_candidates


def distance_angle_to_rbox(points: torch.Tensor, distance: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """``DistanceAnglePointCoder.decode`` (le90): prior points ``[..., 2]``, distances ``[..., 4]`` (left, top,
    right, bottom, in the box's own frame) and angles ``[..., 1]`` -> rotated boxes ``[..., 5]``. The centre is the
    point plus the rotated offset ``R(a) ((r - l) / 2, (b - t) / 2)``; the angle is wrapped into ``[-pi/2, pi/2)``.
    The 2x2 rotation is a matrix product, as the reference computes it (the same rounding)."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.cat([cos, -sin, sin, cos], dim=-1).reshape(*angle.shape[:-1], 2, 2)
    wh = distance[..., :2] + distance[..., 2:]
    offset = torch.matmul(rotation, ((distance[..., 2:] - distance[..., :2]) / 2)[..., None])[..., 0]
    le90 = torch.remainder(angle + math.pi / 2, math.pi) - math.pi / 2
    return torch.cat([points[..., :2] + offset, wh, le90], dim=-1)


def decode_rotated(outputs: RotOutputs, strides: tuple[int, ...]) -> Candidates:
    """Raw RTMDet-R head outputs -> :class:`Candidates` whose ``boxes`` are rotated boxes ``[B, N, 5]`` (cx, cy, w,
    h, angle) in network-input pixels."""
    cls_scores = outputs.cls_scores
    device = cls_scores[0].device
    sizes = level_sizes(cls_scores)
    priors = grid_priors(sizes, strides, device=device)
    scores = flatten_levels(cls_scores).sigmoid()
    rboxes = distance_angle_to_rbox(priors, flatten_levels(outputs.bbox_preds), flatten_levels(outputs.angle_preds))
    input_hw = (sizes[0][0] * strides[0], sizes[0][1] * strides[0])
    return Candidates(scores, rboxes, prior_level_ids(sizes, device), input_hw)


def rescale_rboxes(rboxes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Rotated boxes ``[N, 5]`` scaled by ``scale`` ``[N, 2]`` (sx, sy) per box (MMRotate's ``RotatedBoxes.rescale_``):
    centres times (sx, sy), ``w * |(sx cos, sy sin)|``, ``h * |(sx sin, sy cos)|``, angle ``atan2(sx sin, sy cos)``."""
    sx, sy = scale[:, 0:1], scale[:, 1:2]
    ctr, w, h, t = rboxes[:, :2], rboxes[:, 2:3], rboxes[:, 3:4], rboxes[:, 4:5]
    cos, sin = torch.cos(t), torch.sin(t)
    return torch.cat([ctr * scale, w * torch.sqrt((sx * cos) ** 2 + (sy * sin) ** 2),
                      h * torch.sqrt((sx * sin) ** 2 + (sy * cos) ** 2), torch.atan2(sx * sin, sy * cos)], dim=1)


def postprocess_rotated(candidates: Candidates, cfg: PostprocessConfig, scale_factors: torch.Tensor
                        ) -> list[Detections]:
    """Per-image rotated detections (``Detections.boxes`` are ``[N, 5]`` rotated boxes in original-image pixels)
    from :class:`Candidates` of :func:`decode_rotated`. ``scale_factors``: ``[B, 2]`` float64 (w_scale, h_scale) =
    resized / original size per image."""
    scores, rboxes = candidates.scores, candidates.boxes
    device = scores.device
    batch = scores.shape[0]
    img, prior, label, cand_scores = select_candidates(scores, candidates.level_ids, cfg)

    # float32(1 / scale), computed in double as the reference's Python floats
    inv_scale = (1.0 / scale_factors.to(device=device, dtype=torch.float64)).float()
    boxes = rescale_rboxes(rboxes[img, prior], inv_scale[img])
    if cfg.min_bbox_size >= 0:
        ok = (boxes[:, 2] > cfg.min_bbox_size) & (boxes[:, 3] > cfg.min_bbox_size)
        boxes, img, prior, label, cand_scores = boxes[ok], img[ok], prior[ok], label[ok], cand_scores[ok]

    nms_labels = torch.zeros_like(label) if cfg.agnostic else label
    keep = batched_nms_rotated(boxes, cand_scores, nms_labels, cfg.iou_thr, images=img, num_images=batch,
                               max_per_image=cfg.max_per_img, presorted=True)
    return per_image_detections(keep, img, batch, cfg.max_per_img, boxes, cand_scores, label, prior)
