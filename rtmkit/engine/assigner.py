"""RTMDet's target assignment: MMDetection's ``DynamicSoftLabelAssigner``, batched over images (fact sheet D.1).

The reference runs once per image and builds a (candidates x gts x classes) tensor for the class cost. Here all
images of a batch go through together (gts padded to the batch maximum, with a validity mask), and the class cost
is split exactly into a per-prior term plus a per-(prior, gt) term, so nothing of size x classes is paired with
the gts. Pairwise tensors are (images x candidates x gts) and are processed in chunks of gts whose size is bounded
by ``max_pairs``: memory stays flat however many objects an image has.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

EPS = 1e-7  # mmdet's EPS inside the IoU cost's log
_FMAX = torch.finfo(torch.float32).max


@dataclass
class AssignResult:
    """Per-prior assignment of a batch, all ``[B, N]`` with priors in the network's flattening order.

    ``gt_inds``: 0-based index of the matched gt in its image, -1 for background (mmdet: 1-based, 0 = background).
    ``labels``: class of the matched gt, -1 for background. ``metrics``: IoU between the prediction and its
    matched gt for positives (mmdet's ``max_overlaps`` there; the soft label and box-loss weight), 0 elsewhere.
    """

    gt_inds: torch.Tensor
    labels: torch.Tensor
    metrics: torch.Tensor

    @property
    def pos_mask(self) -> torch.Tensor:
        return self.gt_inds >= 0


def box_overlaps(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """IoU of broadcastable xyxy boxes ``a[..., 4]`` and ``b[..., 4]`` (``a[:, :, None]`` x ``b[:, None]`` for
    pairwise), with the float operations of mmdet's ``bbox_overlaps`` (union clamped to >= eps). Elementwise and
    pairwise calls therefore give bit-identical values for the same box pair."""
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    # in place where possible: pairwise calls are the assigner's largest tensors
    w = torch.minimum(a[..., 2], b[..., 2]).sub_(torch.maximum(a[..., 0], b[..., 0])).clamp_(min=0)
    h = torch.minimum(a[..., 3], b[..., 3]).sub_(torch.maximum(a[..., 1], b[..., 1])).clamp_(min=0)
    overlap = w.mul_(h)
    del h
    union = (area_a + area_b).sub_(overlap).clamp_(min=eps)
    return overlap.div_(union)


def negative_class_cost(logits: torch.Tensor) -> torch.Tensor:
    """``sum_k BCEWithLogits(x_k, 0) * sigmoid(x_k)^2`` over the last (class) dim: the class cost of a prior
    against a soft label of zeros, i.e. its per-prior part."""
    zeros = logits.new_zeros(()).expand_as(logits)
    return F.binary_cross_entropy_with_logits(logits, zeros, reduction="none").mul_(logits.sigmoid().pow_(2)).sum(-1)


def soft_class_cost(neg_cost: torch.Tensor, logit_at_label: torch.Tensor, ious: torch.Tensor) -> torch.Tensor:
    """The reference's class cost ``sum_k BCE(x_k, soft_k) * |soft_k - sigmoid(x_k)|^2`` (soft = IoU at the gt's
    class c, 0 elsewhere) from its two parts: the per-prior ``neg_cost`` (all classes against 0), minus its term at
    class c, plus the term at c against the IoU. Broadcastable; exact up to float rounding of the sum. For the
    assigner (no gradient: temporaries are reused in place)."""
    sig = logit_at_label.sigmoid()
    zeros = logit_at_label.new_zeros(()).expand_as(logit_at_label)
    neg_c = F.binary_cross_entropy_with_logits(logit_at_label, zeros, reduction="none").mul_(sig.pow(2))
    pos_c = F.binary_cross_entropy_with_logits(logit_at_label, ious, reduction="none")
    pos_c.mul_(sig.neg_().add_(ious).abs_().pow_(2))  # |iou - sigmoid|^2
    return (neg_cost - neg_c).add_(pos_c)


def _chunk(num_gts: int, rows: int, max_pairs: int) -> int:
    """Gts per chunk: as few chunks as ``rows x chunk <= max_pairs`` allows, of equal size."""
    chunks = max(1, -(-num_gts * rows // max_pairs))
    return max(1, -(-num_gts // chunks))


class DynamicSoftLabelAssigner:
    """MMDetection's ``DynamicSoftLabelAssigner`` (RTMDet: ``topk=13``), for a whole batch at once.

    ``max_pairs`` bounds the number of (image, candidate, gt) elements of each pairwise tensor; gts are processed
    in chunks that respect it (the result does not depend on it).
    """

    def __init__(self, soft_center_radius: float = 3.0, topk: int = 13, iou_weight: float = 3.0,
                 max_pairs: int = 1 << 21):
        self.soft_center_radius = soft_center_radius
        self.topk = topk
        self.iou_weight = iou_weight
        self.max_pairs = max_pairs

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(soft_center_radius={self.soft_center_radius}, topk={self.topk}, "
                f"iou_weight={self.iou_weight}, max_pairs={self.max_pairs})")

    @torch.no_grad()
    def assign(self, priors: torch.Tensor, cls_logits: torch.Tensor, pred_boxes: torch.Tensor,
               gt_boxes: torch.Tensor, gt_labels: torch.Tensor, gt_valid: torch.Tensor | None = None,
               gt_centers: torch.Tensor | None = None) -> AssignResult:
        """Assign gts to priors.

        ``priors`` [N, 4] (x, y, stride_w, stride_h); ``cls_logits`` [B, N, C] raw logits; ``pred_boxes`` [B, N, 4]
        decoded xyxy predictions; ``gt_boxes`` [B, G, 4] xyxy, ``gt_labels`` [B, G], ``gt_valid`` [B, G] bool
        (False for padding; default all valid). ``gt_centers`` [B, G, 2] (x, y): the centres of the soft centre
        prior (default: box centres; RTMDet-Ins passes its masks' centres of mass). Predictions are detached and
        everything runs in float32, also under autocast.
        """
        device = priors.device
        with torch.autocast(device.type, enabled=False):
            return self._assign(priors.float(), cls_logits.detach().float(), pred_boxes.detach().float(),
                                gt_boxes.float(), gt_labels.long(),
                                torch.ones(gt_labels.shape, dtype=torch.bool, device=device)
                                if gt_valid is None else gt_valid.bool(),
                                None if gt_centers is None else gt_centers.float())

    def _assign(self, priors, logits, pred_boxes, gt_boxes, gt_labels, gt_valid, gt_centers=None) -> AssignResult:
        B, N, _ = logits.shape
        G = gt_boxes.shape[1]
        device = priors.device
        gt_inds = torch.full((B, N), -1, dtype=torch.long, device=device)
        metrics = torch.zeros((B, N), dtype=torch.float32, device=device)

        # Candidates: priors strictly inside at least one (valid) gt of their image.
        is_cand = self._inside_any_gt(priors, gt_boxes, gt_valid)
        num_cand = is_cand.sum(1)
        M = int(num_cand.max()) if G and N else 0
        if M == 0:
            return AssignResult(gt_inds, torch.full_like(gt_inds, -1), metrics)

        # Compact each image's candidates to the front (prior order kept); rows past num_cand are padding.
        order = torch.sort(is_cand.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :M]
        cand_ok = torch.arange(M, device=device) < num_cand[:, None]
        cand_priors = priors[order]  # [B, M, 4]
        cand_boxes = pred_boxes.gather(1, order[..., None].expand(-1, -1, 4))
        cand_logits = logits.gather(1, order[..., None].expand(-1, -1, logits.shape[-1]))  # [B, M, C]
        neg_cost = negative_class_cost(cand_logits)  # per-prior part of the class cost, [B, M]
        gt_center = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2.0 if gt_centers is None else gt_centers
        has_cand = (num_cand > 0)[:, None]

        # Running state per candidate, over gt chunks: how many gts selected it, which one (when only one did),
        # and the lowest cost over all gts with its gt (the reference's conflict resolution).
        count = torch.zeros((B, M), dtype=torch.int32, device=device)
        chosen_by = torch.full((B, M), -1, dtype=torch.long, device=device)
        best_cost = torch.full((B, M), float("inf"), device=device)
        best_gt = torch.zeros((B, M), dtype=torch.long, device=device)
        k = min(self.topk, M)
        ranks = torch.arange(k, device=device)[None, :, None]
        step = _chunk(G, B * M, self.max_pairs)
        for g0 in range(0, G, step):
            g1 = min(G, g0 + step)
            boxes, labels, valid = gt_boxes[:, g0:g1], gt_labels[:, g0:g1], gt_valid[:, g0:g1]

            # cost = class cost + IoU cost + centre cost, accumulated in place in the reference's order
            ious = box_overlaps(cand_boxes[:, :, None], boxes[:, None])  # [B, M, g]
            logit_at_label = cand_logits.gather(2, labels[:, None].expand(-1, M, -1))  # [B, M, g]
            cost = soft_class_cost(neg_cost[..., None], logit_at_label, ious)
            del logit_at_label
            cost.add_(torch.log(ious + EPS).mul_(-self.iou_weight))
            dx = cand_priors[..., 0, None] - gt_center[:, None, g0:g1, 0]
            dy = cand_priors[..., 1, None] - gt_center[:, None, g0:g1, 1]
            distance = dx.pow_(2).add_(dy.pow_(2)).sqrt_().div_(cand_priors[..., 2, None])
            del dy
            cost.add_(torch.pow(10, distance.sub_(self.soft_center_radius)))
            del distance, dx
            # A far prior's centre cost overflows to inf in the reference too; keep such real candidates ahead of
            # the padding (set to inf) so that top-k never picks padding.
            cost.clamp_(max=_FMAX).masked_fill_(~(cand_ok[:, :, None] & valid[:, None]), float("inf"))

            # Dynamic k per gt from its top-min(topk, #candidates) IoUs (padding rows count as IoU 0).
            top_ious = ious.masked_fill_(~cand_ok[:, :, None], 0).topk(k, dim=1).values
            dynamic_k = top_ious.sum(1).int().clamp_(min=1)
            dynamic_k = torch.where(valid & has_cand, dynamic_k, 0)
            del ious, top_ious

            # Each gt selects its dynamic_k lowest-cost candidates.
            picked = cost.topk(k, dim=1, largest=False).indices  # [B, k, g]
            keep = ranks < dynamic_k[:, None]
            gt_index = torch.arange(g0, g1, device=device).expand_as(picked)
            count.scatter_add_(1, picked.flatten(1), keep.flatten(1).to(torch.int32))
            chosen_by.scatter_reduce_(1, picked.flatten(1), torch.where(keep, gt_index, -1).flatten(1), "amax")

            chunk_min, chunk_arg = cost.min(dim=2)
            better = chunk_min < best_cost  # strict: ties keep the earlier gt, as argmin over the full row does
            best_cost = torch.where(better, chunk_min, best_cost)
            best_gt = torch.where(better, chunk_arg + g0, best_gt)
            del cost

        positive = count > 0
        assigned = torch.where(count > 1, best_gt, chosen_by).clamp_(min=0)
        assigned_boxes = gt_boxes.gather(1, assigned[..., None].expand(-1, -1, 4))
        ious = box_overlaps(cand_boxes, assigned_boxes)  # bit-identical to the pairwise IoU of that pair
        gt_inds.scatter_(1, order, torch.where(positive, assigned, -1))
        metrics.scatter_(1, order, torch.where(positive, ious, 0.0))
        labels = torch.where(gt_inds >= 0, gt_labels.gather(1, gt_inds.clamp(min=0)), -1)
        return AssignResult(gt_inds, labels, metrics)

    def _inside_any_gt(self, priors: torch.Tensor, gt_boxes: torch.Tensor, gt_valid: torch.Tensor) -> torch.Tensor:
        """[B, N] bool: prior point strictly inside some valid gt (min(l, t, r, b) > 0), chunked over gts.

        ``p > x1`` is the same test as the reference's ``p - x1 > 0`` for finite floats."""
        B, G = gt_boxes.shape[:2]
        N = priors.shape[0]
        inside = torch.zeros((B, N), dtype=torch.bool, device=priors.device)
        px, py = priors[None, :, 0, None], priors[None, :, 1, None]
        step = _chunk(G, B * N, self.max_pairs)
        for g0 in range(0, G, step):
            b = gt_boxes[:, None, g0:g0 + step]
            hit = (px > b[..., 0]) & (py > b[..., 1]) & (b[..., 2] > px) & (b[..., 3] > py)
            inside |= (hit & gt_valid[:, None, g0:g0 + step]).any(2)
        return inside
