"""RTMDet's training loss from the head outputs (MMDetection's ``RTMDetHead.loss_by_feat``, fact sheet D.2).

Everything is computed once over the flattened priors of all levels and images; the reference's per-level
reduction order is kept where it decides the float result (per-level sums over images x priors, the avg factors
summed level by level), so losses match it to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import torch
import torch.distributed as dist

from ..ops.boxes import distance2bbox, grid_priors
from ..ops.levels import flatten_levels, level_sizes
from ..structures import DetOutputs
from .assigner import AssignResult, DynamicSoftLabelAssigner
from .losses import giou_loss, quality_focal_loss

_EPS = torch.finfo(torch.float32).eps  # mmdet's weight_reduce_loss divides a sum by (avg_factor + eps)


def reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over processes when torch.distributed is initialised (mmdet's ``reduce_mean``), else the tensor."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor.div_(dist.get_world_size()), op=dist.ReduceOp.SUM)
    return tensor


def collate_targets(targets: list[dict[str, Any]], batch_size: int, device: torch.device | str,
                    num_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad per-image ``{"boxes": [n, 4] xyxy, "labels": [n]}`` to ``(boxes [B, G, 4], labels [B, G], valid [B, G])``
    with G the largest n of the batch."""
    if len(targets) != batch_size:
        raise ValueError(f"{len(targets)} targets for a batch of {batch_size} images")
    boxes = [torch.as_tensor(t["boxes"], dtype=torch.float32, device=device).reshape(-1, 4) for t in targets]
    labels = [torch.as_tensor(t["labels"], dtype=torch.long, device=device).reshape(-1) for t in targets]
    for i, (b, lab) in enumerate(zip(boxes, labels)):
        if len(b) != len(lab):
            raise ValueError(f"targets[{i}]: {len(b)} boxes but {len(lab)} labels")
        if num_classes is not None and len(lab) and (int(lab.min()) < 0 or int(lab.max()) >= num_classes):
            raise ValueError(f"targets[{i}]: labels must be in [0, {num_classes}), got {lab.tolist()}")
    G = max((len(b) for b in boxes), default=0)
    out_boxes = torch.zeros((batch_size, G, 4), dtype=torch.float32, device=device)
    out_labels = torch.zeros((batch_size, G), dtype=torch.long, device=device)
    valid = torch.zeros((batch_size, G), dtype=torch.bool, device=device)
    for i, (b, lab) in enumerate(zip(boxes, labels)):  # per image, not per box
        out_boxes[i, :len(b)], out_labels[i, :len(b)], valid[i, :len(b)] = b, lab, True
    return out_boxes, out_labels, valid


@dataclass
class LossDetails:
    """What the loss was computed from. Targets are ``[B, N]`` over the flattened priors (levels concatenated)."""

    per_level: dict[str, list[torch.Tensor]]  # "loss_cls" / "loss_bbox": one 0-d tensor per level
    assign: AssignResult
    labels: torch.Tensor  # class of positives, num_classes for background
    bbox_targets: torch.Tensor  # [B, N, 4] gt box of positives, zeros elsewhere
    assign_metrics: torch.Tensor  # soft label and box weight: IoU at positives, 0 elsewhere
    cls_avg_factor: float
    bbox_avg_factor: float
    priors: torch.Tensor = field(repr=False)  # [N, 4] (x, y, stride, stride)


class RTMDetCriterion:
    """Targets and losses of RTMDet: DynamicSoftLabelAssigner, QFL (beta 2) and GIoU (weight 2), normalised by the
    (all-reduced) sum of the positives' IoUs.

    ``criterion(outputs, targets)`` takes the head outputs (:class:`~rtmkit.structures.DetOutputs`: lists over
    levels of ``[B, C, H, W]`` logits and ``[B, 4, H, W]`` distances in input pixels) and ``targets`` (one
    ``{"boxes", "labels"}`` per image, boxes xyxy in input pixels), and returns ``{"loss_cls", "loss_bbox"}``
    summed over levels. It runs in float32, also under autocast. All priors count as inside the image (the
    reference's ``allowed_border=-1``).
    """

    def __init__(self, num_classes: int, strides: tuple[int, ...], assigner: DynamicSoftLabelAssigner | None = None,
                 beta: float = 2.0, cls_weight: float = 1.0, bbox_weight: float = 2.0, giou_eps: float = 1e-6):
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.assigner = assigner if assigner is not None else DynamicSoftLabelAssigner(topk=13)
        self.beta, self.cls_weight, self.bbox_weight, self.giou_eps = beta, cls_weight, bbox_weight, giou_eps
        self._priors: dict[tuple, torch.Tensor] = {}

    def priors(self, sizes: list[tuple[int, int]], device: torch.device | str) -> torch.Tensor:
        """[N, 4] priors (x, y, stride, stride) of all levels, cached per feature-map sizes and device."""
        key = (tuple(sizes), str(device))
        if key not in self._priors:
            self._priors[key] = grid_priors(list(sizes), self.strides, device=device, with_stride=True)
        return self._priors[key]

    def __call__(self, outputs: DetOutputs, targets: list[dict[str, Any]], *, return_details: bool = False):
        cls_scores, bbox_preds = outputs.cls_scores, outputs.bbox_preds
        device = cls_scores[0].device
        with torch.autocast(device.type, enabled=False):
            return self._loss([c.float() for c in cls_scores], [b.float() for b in bbox_preds], targets,
                              return_details)

    def _loss(self, cls_scores, bbox_preds, targets, return_details, gt_centers=None):
        B, C = cls_scores[0].shape[:2]
        device = cls_scores[0].device
        if C != self.num_classes:
            raise ValueError(f"head has {C} classes, criterion {self.num_classes}")
        sizes = level_sizes(cls_scores)
        priors = self.priors(sizes, device)
        bounds = list(accumulate((h * w for h, w in sizes), initial=0))  # level l is priors bounds[l]:bounds[l + 1]
        logits = flatten_levels(cls_scores)  # [B, N, C]
        distances = flatten_levels(bbox_preds)
        boxes = distance2bbox(priors[:, :2], distances)  # [B, N, 4], not clamped

        gt_boxes, gt_labels, gt_valid = collate_targets(targets, B, device, self.num_classes)
        assign = self.assigner.assign(priors, logits, boxes, gt_boxes, gt_labels, gt_valid, gt_centers)
        pos = assign.pos_mask
        labels = torch.where(pos, assign.labels, self.num_classes)
        metrics = assign.metrics
        bbox_targets = torch.zeros_like(boxes)
        if gt_boxes.shape[1]:  # a batch without any object has nothing to gather from
            matched = gt_boxes.gather(1, assign.gt_inds.clamp(min=0)[..., None].expand(-1, -1, 4))
            bbox_targets = torch.where(pos[..., None], matched, bbox_targets)

        qfl = quality_focal_loss(logits, labels, metrics, self.beta)  # [B, N]
        pos_img, pos_prior = pos.nonzero(as_tuple=True)  # ordered by image, then prior: the reference's order
        pos_level = torch.bucketize(pos_prior, torch.tensor(bounds[1:-1], device=device), right=True)
        weights = metrics[pos_img, pos_prior]
        pos_boxes = boxes[pos_img, pos_prior]
        box_terms = giou_loss(pos_boxes, bbox_targets[pos_img, pos_prior], self.giou_eps) * weights

        losses_cls, losses_bbox, cls_factors, bbox_factors = [], [], [], []
        for level, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            # Per level, as the reference: sums over (image, prior) in that order, reduced with avg_factor=1.0.
            losses_cls.append(self.cls_weight * (qfl[:, a:b].reshape(-1).sum() / (1.0 + _EPS)))
            cls_factors.append(metrics[:, a:b].reshape(-1).sum())
            in_level = pos_level == level
            w = weights[in_level]
            bbox_sum = self.bbox_weight * (box_terms[in_level].sum() / (1.0 + _EPS))
            # mmdet's GIoULoss returns (pred * weight).sum() when no weight is > 0: zero, without the eps and weight.
            no_weight = (pos_boxes[in_level] * w[:, None]).sum()
            losses_bbox.append(torch.where((w > 0).any(), bbox_sum, no_weight))
            bbox_factors.append(w.sum())
        cls_avg = reduce_mean(sum(cls_factors)).clamp_(min=1).item()
        bbox_avg = reduce_mean(sum(bbox_factors)).clamp_(min=1).item()
        losses_cls = [loss / cls_avg for loss in losses_cls]
        losses_bbox = [loss / bbox_avg for loss in losses_bbox]
        losses = {"loss_cls": sum(losses_cls), "loss_bbox": sum(losses_bbox)}
        if not return_details:
            return losses
        return losses, LossDetails({"loss_cls": losses_cls, "loss_bbox": losses_bbox}, assign, labels, bbox_targets,
                                   metrics, cls_avg, bbox_avg, priors)
