"""RTMDet's losses, elementwise (fact sheet D.2): Quality Focal Loss and GIoU loss, with the float operations of
MMDetection's ``quality_focal_loss`` and ``bbox_overlaps(mode='giou', is_aligned=True)``. Reduction and
normalisation are the criterion's job."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def quality_focal_loss(logits: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor,
                       beta: float = 2.0) -> torch.Tensor:
    """QFL per prior, summed over classes.

    ``logits`` [..., C]; ``labels`` [...] (a class in [0, C) for positives, anything else, e.g. C, for background);
    ``scores`` [...] soft targets (the IoU) of the positives. Every (prior, class) pair is a negative,
    ``BCE(x, 0) * sigmoid(x)^beta``, except a positive's own class: ``BCE(x, q) * |q - sigmoid(x)|^beta``.
    """
    num_classes = logits.shape[-1]
    sig = logits.sigmoid()
    loss = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none") * sig.pow(beta)
    positive = (labels >= 0) & (labels < num_classes)
    cls = labels.clamp(0, num_classes - 1)[..., None]
    x = logits.gather(-1, cls).squeeze(-1)
    pos_loss = F.binary_cross_entropy_with_logits(x, scores, reduction="none") * \
        (scores - sig.gather(-1, cls).squeeze(-1)).abs().pow(beta)
    # One-hot select instead of indexing the positives: no host sync, same values, same gradients.
    at_label = F.one_hot(cls.squeeze(-1), num_classes).bool() & positive[..., None]
    return torch.where(at_label, pos_loss[..., None], loss).sum(-1)


def giou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``1 - GIoU`` of aligned xyxy boxes ``[..., 4]`` (union and enclosing area clamped to >= eps). ``pred`` is
    used as is: decoded boxes with negative width are not clamped, as in the reference."""
    area_p = (pred[..., 2] - pred[..., 0]) * (pred[..., 3] - pred[..., 1])
    area_t = (target[..., 2] - target[..., 0]) * (target[..., 3] - target[..., 1])
    lt = torch.max(pred[..., :2], target[..., :2])
    rb = torch.min(pred[..., 2:], target[..., 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    eps_t = pred.new_tensor([eps])
    union = torch.max(area_p + area_t - overlap, eps_t)
    ious = overlap / union
    enclose_wh = (torch.max(pred[..., 2:], target[..., 2:]) - torch.min(pred[..., :2], target[..., :2])).clamp(min=0)
    enclose_area = torch.max(enclose_wh[..., 0] * enclose_wh[..., 1], eps_t)
    return 1 - (ious - (enclose_area - union) / enclose_area)
