"""Greedy non-maximum suppression in pure PyTorch, vectorised.

Greedy NMS keeps box i iff no kept box j ranked before i (same group) overlaps it with IoU > threshold.
That rule is a recurrence over the score order; we evaluate it block by block (``block`` boxes at a time):
each block is first checked against the boxes already kept, then resolved internally by fixed-point
iteration of ``keep = alive & ~any_j<i(keep_j & overlap_ij)``. The iteration is exact: after t rounds the
first t boxes of the block are final, and it stops as soon as nothing changes (a few rounds in practice).
Groups (image x class) never suppress each other, and once every image has ``max_per_image`` kept boxes
the rest of the list cannot change the output, so we stop early: at evaluation thresholds (tens of
thousands of candidates, 300 kept) one or two blocks are enough.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .boxes import box_iou

IoUFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _overlapping(iou: torch.Tensor, thr: float, inclusive: bool) -> torch.Tensor:
    return iou >= thr if inclusive else iou > thr


def _resolve_block(iou: torch.Tensor, same: torch.Tensor, alive: torch.Tensor, thr: float,
                   inclusive: bool = False) -> torch.Tensor:
    n = alive.numel()
    earlier = torch.ones(n, n, dtype=torch.bool, device=alive.device).tril_(-1)
    overlaps = _overlapping(iou, thr, inclusive) & same & earlier
    keep = alive.clone()
    for _ in range(n):
        new = alive & ~(overlaps & keep[None, :]).any(dim=1)
        if torch.equal(new, keep):
            break
        keep = new
    return keep


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_thr: float,
                images: torch.Tensor | None = None, max_per_image: int | None = None,
                presorted: bool = False, block: int = 1024, iou_fn: IoUFunction = box_iou,
                inclusive: bool = False) -> torch.Tensor:
    """Indices of the kept boxes, in descending score order.

    ``boxes``: ``[N, D]`` in any box type that ``iou_fn`` (pairwise ``[n, D] x [m, D] -> [n, m]`` IoU) understands:
    axis-aligned xyxy with the default :func:`~rtmkit.ops.boxes.box_iou`, rotated boxes with a rotated IoU.
    ``groups``: boxes of different groups never suppress each other (use image * num_classes + label for
    class-aware NMS over a batch). ``images`` with ``max_per_image``: stop once every image has that many kept
    boxes (the output may then hold more per image; take the first ``max_per_image`` of each).
    ``presorted``: the inputs are already in descending score order. ``inclusive``: suppress at IoU equal to the
    threshold too (MMCV's rotated NMS; its axis-aligned NMS suppresses above it only).
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.arange(n, device=boxes.device) if presorted else \
        torch.sort(scores, descending=True, stable=True).indices
    boxes, groups = boxes[order], groups[order]
    if images is not None:
        images = images[order]
        present = torch.bincount(images) > 0  # images with candidates (cheaper than unique: no sort)
        counts = torch.zeros(present.numel(), dtype=torch.long, device=boxes.device)
    kept_pos: list[torch.Tensor] = []
    kept_boxes = boxes.new_zeros((0, boxes.shape[1]))
    kept_groups = groups.new_zeros((0,))
    for start in range(0, n, block):
        stop = min(start + block, n)
        b, g = boxes[start:stop], groups[start:stop]
        alive = torch.ones(stop - start, dtype=torch.bool, device=boxes.device)
        if images is not None and max_per_image is not None:
            alive &= counts[images[start:stop]] < max_per_image  # full images can no longer change the output
        if kept_boxes.shape[0]:
            hit = _overlapping(iou_fn(b, kept_boxes), iou_thr, inclusive) & (g[:, None] == kept_groups[None, :])
            alive &= ~hit.any(dim=1)
        # only the boxes still alive can keep or suppress: resolve the block among them
        live = torch.nonzero(alive).squeeze(1)
        b, g = b[live], g[live]
        keep = _resolve_block(iou_fn(b, b), g[:, None] == g[None, :], torch.ones_like(live, dtype=torch.bool),
                              iou_thr, inclusive)
        pos = live[keep] + start
        kept_pos.append(pos)
        kept_boxes = torch.cat([kept_boxes, boxes[pos]])
        kept_groups = torch.cat([kept_groups, groups[pos]])
        if images is not None and max_per_image is not None:
            counts += torch.bincount(images[pos], minlength=counts.numel())
            if bool((counts[present] >= max_per_image).all()):
                break
    return order[torch.cat(kept_pos)]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thr: float, iou_fn: IoUFunction = box_iou) -> torch.Tensor:
    """Plain single-group NMS: indices of kept boxes, by descending score."""
    return batched_nms(boxes, scores, torch.zeros_like(scores, dtype=torch.long), iou_thr, iou_fn=iou_fn)
