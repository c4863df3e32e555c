"""RTMDet-Ins training losses: the detection losses with the soft centre prior at each mask's centre of mass, and
the Dice loss of the positives' masks (fact sheet D.2)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..models.masks import MASK_STRIDE, mask_logits
from ..ops.levels import flatten_levels
from ..structures import SegOutputs
from .criterion import _EPS, RTMDetCriterion, reduce_mean

MASK_LOSS_STRIDE = 4  # masks are compared at stride 4: logits upsampled x2, ground truth subsampled


def center_of_mass(masks: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``[n, H, W]`` bool -> ``[n, 2]`` (x, y) mean pixel position on the integer pixel grid (no +0.5), as the
    reference computes it; an empty mask gives (0, 0). The moments come from the per-row and per-column pixel
    counts (exact integers, as the reference's sums over ``masks * grid``, without its ``[n, H, W]`` int64
    temporaries: 1 GB at 300 instances of 640 x 640)."""
    _, h, w = masks.shape
    per_row, per_col = masks.sum(dim=2), masks.sum(dim=1)  # [n, H], [n, W] int64
    area = per_row.sum(dim=1).float().clamp(min=eps)
    moment_x = (per_col * torch.arange(w, device=masks.device)).sum(dim=1)
    moment_y = (per_row * torch.arange(h, device=masks.device)).sum(dim=1)
    return torch.stack([moment_x / area, moment_y / area], dim=1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 5e-6) -> torch.Tensor:
    """Per instance ``1 - 2 sum(p t) / (sum(p^2) + eps + sum(t^2) + eps)``, ``p = sigmoid(logits)``; ``[n]``."""
    p = logits.sigmoid().flatten(1)
    t = targets.flatten(1).float()
    return 1 - 2 * (p * t).sum(1) / (((p * p).sum(1) + eps) + ((t * t).sum(1) + eps))


class RTMDetInsCriterion(RTMDetCriterion):
    """``criterion(outputs, targets)`` with :class:`~rtmkit.structures.SegOutputs` and targets ``{"boxes",
    "labels", "masks"}`` (masks ``[n, H, W]`` bool in padded-input pixels) -> ``{"loss_cls", "loss_bbox",
    "loss_mask"}``, each summed over levels as the reference reports them. ``loss_mask``: Dice (weight 2) of every
    positive prior's mask, its logits upsampled x2 to stride 4, the matched ground truth sampled at rows and
    columns 2, 6, 10 ...; averaged over the (all-reduced) number of positives."""

    def __init__(self, num_classes: int, strides: tuple[int, ...], mask_weight: float = 2.0, dice_eps: float = 5e-6,
                 **kwargs: Any):
        super().__init__(num_classes, strides, **kwargs)
        self.mask_weight, self.dice_eps = mask_weight, dice_eps

    def __call__(self, outputs: SegOutputs, targets: list[dict[str, Any]], *, return_details: bool = False):
        device = outputs.cls_scores[0].device
        masks = [torch.as_tensor(t["masks"], device=device).bool() for t in targets]
        centers = [center_of_mass(m) for m in masks]
        g = max((len(c) for c in centers), default=0)
        gt_centers = torch.zeros((len(targets), g, 2), device=device)
        for i, c in enumerate(centers):
            gt_centers[i, :len(c)] = c
        with torch.autocast(device.type, enabled=False):
            losses, details = self._loss([c.float() for c in outputs.cls_scores],
                                         [b.float() for b in outputs.bbox_preds], targets, True, gt_centers)
            losses["loss_mask"] = self._mask_loss(outputs, masks, details)
        return (losses, details) if return_details else losses

    def _mask_loss(self, outputs: SegOutputs, masks: list[torch.Tensor], details) -> torch.Tensor:
        kernels = flatten_levels([k.float() for k in outputs.kernel_preds])  # [B, N, 169]
        mask_feat = outputs.mask_feat.float()
        assign = details.assign
        start = MASK_LOSS_STRIDE // 2
        logits, gt = [], []
        for i in range(mask_feat.shape[0]):  # per image: the dynamic convs of its positives at once
            pos = assign.pos_mask[i].nonzero(as_tuple=True)[0]  # ascending prior index: the reference's order
            logits.append(mask_logits(mask_feat[i], kernels[i, pos], details.priors[pos, :3]))
            # subsample before gathering per positive: [P, H/4, W/4], not [P, H, W] (the same values)
            sampled = masks[i][:, start::MASK_LOSS_STRIDE, start::MASK_LOSS_STRIDE]
            gt.append(sampled[assign.gt_inds[i, pos]] if len(pos) else sampled[:0])
        logits, gt = torch.cat(logits), torch.cat(gt)
        num_pos = reduce_mean(mask_feat.new_tensor([float(len(logits))])).clamp_(min=1).item()
        if len(logits) == 0:
            return mask_feat.sum() * 0
        scale = MASK_STRIDE // MASK_LOSS_STRIDE
        logits = F.interpolate(logits[None], scale_factor=scale, mode="bilinear", align_corners=False)[0]
        return self.mask_weight * (dice_loss(logits, gt, self.dice_eps).sum() / (num_pos + _EPS))
