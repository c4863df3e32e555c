"""Detection post-processing, batched over images, levels and classes (fact sheet C).

Reference order per image: sigmoid -> per level keep (prior, class) pairs with score > score_thr, the
``nms_pre`` best of each level -> decode from prior points -> clamp to the padded input -> rescale to the
original image -> drop boxes with width or height <= min_bbox_size -> class-aware NMS -> best ``max_per_img``.
Here all images and levels are handled at once: the pairs above threshold are ranked inside their
(image, level) segment with two sorts instead of a loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import PostprocessConfig
from ..ops.boxes import distance2bbox, grid_priors
from ..ops.levels import flatten_levels, level_sizes, prior_level_ids
from ..ops.nms import batched_nms
from ..structures import DetOutputs

# MMCV's batched_nms switches from the coordinate-offset trick to one NMS per class at this many boxes.
# The offset trick rounds coordinates differently, so we reproduce the switch to get identical decisions.
SPLIT_THR = 10000


@dataclass
class Detections:
    """Detections of one image, in original-image pixels, sorted by descending score.

    ``prior_inds`` is the flattened prior (see :mod:`rtmkit.ops.levels`) each detection was decoded from, so task
    heads can gather their extra per-prior outputs (mask kernels, angles) for exactly the kept detections.
    """

    boxes: torch.Tensor  # [N, 4] xyxy float32; RTMDet-R: [N, 5] rotated boxes (cx, cy, w, h, angle le90)
    scores: torch.Tensor  # [N]
    labels: torch.Tensor  # [N] int64
    prior_inds: torch.Tensor | None = None  # [N] int64


@dataclass
class Candidates:
    """Decoded, not yet filtered predictions of a batch: what a raw exported graph outputs.

    ``scores`` [B, N, C] sigmoid; ``boxes`` [B, N, 4] xyxy in network-input pixels (decoded from the prior points,
    not clamped); ``level_ids`` [N] pyramid level of every prior; ``input_hw`` the padded network input size.
    """

    scores: torch.Tensor
    boxes: torch.Tensor
    level_ids: torch.Tensor
    input_hw: tuple[int, int]


def _rank_in_segment(segment: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Rank of every element inside its segment when the elements are visited in ``order``."""
    seg_sorted = segment[order]
    by_seg = torch.sort(seg_sorted, stable=True).indices  # keeps the visiting order inside a segment
    seg_in_seg_order = seg_sorted[by_seg]
    n = segment.numel()
    pos = torch.arange(n, device=segment.device)
    is_start = torch.ones(n, dtype=torch.bool, device=segment.device)
    is_start[1:] = seg_in_seg_order[1:] != seg_in_seg_order[:-1]
    start_pos = torch.cummax(torch.where(is_start, pos, torch.zeros_like(pos)), dim=0).values
    rank = torch.empty_like(pos)
    rank[order[by_seg]] = pos - start_pos
    return rank


def select_candidates(scores: torch.Tensor, level_ids: torch.Tensor, cfg: PostprocessConfig
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (image, prior, class) triples with score > ``score_thr``, the ``nms_pre`` best of every (image, level),
    in descending score order: ``(image, prior, label, score)`` ``[K]`` each. ``scores`` ``[B, N, C]``."""
    batch, _, num_classes = scores.shape
    num_levels = int(level_ids.max()) + 1 if level_ids.numel() else 1
    img, flat = torch.nonzero(scores.view(batch, -1) > cfg.score_thr, as_tuple=True)
    cand_scores = scores.view(batch, -1)[img, flat]
    prior, label = flat // num_classes, flat % num_classes
    order = torch.sort(cand_scores, descending=True, stable=True).indices
    rank = _rank_in_segment(img * num_levels + level_ids[prior], order)
    order = order[rank[order] < cfg.nms_pre]
    return img[order], prior[order], label[order], cand_scores[order]


def decode(outputs: DetOutputs, strides: tuple[int, ...]) -> Candidates:
    """Raw head outputs -> :class:`Candidates` (sigmoid scores, boxes decoded from the prior points)."""
    cls_scores, bbox_preds = outputs.cls_scores, outputs.bbox_preds
    device = cls_scores[0].device
    sizes = level_sizes(cls_scores)
    priors = grid_priors(sizes, strides, device=device)
    scores = flatten_levels(cls_scores).sigmoid()
    boxes = distance2bbox(priors, flatten_levels(bbox_preds))
    input_hw = (sizes[0][0] * strides[0], sizes[0][1] * strides[0])
    return Candidates(scores, boxes, prior_level_ids(sizes, device), input_hw)


def postprocess(candidates: Candidates, cfg: PostprocessConfig, scale_factors: torch.Tensor,
                orig_sizes: torch.Tensor | None = None) -> list[Detections]:
    """Per-image detections from decoded :class:`Candidates` (``nms_pre`` applies per pyramid level; boxes are
    clamped in the padded input frame). ``scale_factors``: ``[B, 2]`` float64 (w_scale, h_scale) = resized /
    original size per image. ``orig_sizes``: ``[B, 2]`` (h, w) of the original images, for ``cfg.clip == "image"``.
    """
    scores, boxes = candidates.scores, candidates.boxes
    device = scores.device
    batch, _, num_classes = scores.shape
    in_h, in_w = candidates.input_hw
    img, prior, label, cand_scores = select_candidates(scores, candidates.level_ids, cfg)

    boxes = boxes[img, prior]
    if cfg.clip != "none":
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, in_w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, in_h)
    # float32(1 / scale), computed in double like the reference's ``scale_boxes``.
    inv_scale = (1.0 / scale_factors.to(device=device, dtype=torch.float64)).float()
    input_boxes = boxes
    boxes = boxes * inv_scale[img].repeat(1, 2)
    if cfg.clip == "image":
        if orig_sizes is None:
            raise ValueError("clip='image' needs the original image sizes")
        limit = orig_sizes.to(device=device, dtype=boxes.dtype).flip(1)[img]  # (w, h) per box
        boxes = torch.minimum(boxes.clamp(min=0), limit.repeat(1, 2))
    if cfg.min_bbox_size >= 0:
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        ok = (w > cfg.min_bbox_size) & (h > cfg.min_bbox_size)
        boxes, input_boxes = boxes[ok], input_boxes[ok]
        img, prior, label, cand_scores = img[ok], prior[ok], label[ok], cand_scores[ok]

    nms_boxes = input_boxes if cfg.nms_space == "input" else boxes
    if cfg.agnostic:
        groups = img
    else:
        groups = img * num_classes + label
        per_image = torch.bincount(img, minlength=batch)
        offset_images = per_image < SPLIT_THR
        if bool(offset_images.any()) and boxes.numel():
            max_coord = torch.full((batch,), float("-inf"), device=device).scatter_reduce(
                0, img, nms_boxes.max(dim=1).values, reduce="amax")
            offset = label.to(boxes.dtype) * (max_coord[img] + 1)
            offset = torch.where(offset_images[img], offset, torch.zeros_like(offset))
            nms_boxes = nms_boxes + offset[:, None]
    keep = batched_nms(nms_boxes, cand_scores, groups, cfg.iou_thr, images=img,
                       max_per_image=cfg.max_per_img, presorted=True)

    return per_image_detections(keep, img, batch, cfg.max_per_img, boxes, cand_scores, label, prior)


def per_image_detections(keep: torch.Tensor, img: torch.Tensor, batch: int, max_per_img: int, boxes: torch.Tensor,
                         scores: torch.Tensor, labels: torch.Tensor, priors: torch.Tensor) -> list[Detections]:
    """NMS's kept indices (descending score over the whole batch; ``img`` the image of every candidate) -> the
    first ``max_per_img`` of every image, one :class:`Detections` per image."""
    k_img = img[keep]
    rank = _rank_in_segment(k_img, torch.arange(keep.numel(), device=keep.device))
    keep = keep[rank < max_per_img]
    k_img = img[keep]
    keep = keep[torch.sort(k_img, stable=True).indices]
    counts = torch.bincount(k_img, minlength=batch).tolist()
    return [Detections(*fields) for fields in zip(boxes[keep].split(counts), scores[keep].split(counts),
                                                  labels[keep].split(counts), priors[keep].split(counts))]
