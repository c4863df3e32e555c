"""Box helpers: prior points, distance decoding, IoU. Boxes are xyxy in continuous pixels (no +1)."""

from __future__ import annotations

import torch


def grid_priors(sizes: list[tuple[int, int]], strides: tuple[int, ...], device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32, with_stride: bool = False) -> torch.Tensor:
    """Prior points of all levels, concatenated finest level first, row-major inside a level.

    A prior is the top-left corner of its cell, (j * s, i * s): MMDetection's point generator with offset 0.
    With ``with_stride`` each row is (x, y, s, s), as the assigner wants it.
    """
    out = []
    for (h, w), s in zip(sizes, strides):
        ys = torch.arange(h, device=device, dtype=dtype) * s
        xs = torch.arange(w, device=device, dtype=dtype) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        cols = [xx.reshape(-1), yy.reshape(-1)]
        if with_stride:
            cols += [torch.full_like(cols[0], s)] * 2
        out.append(torch.stack(cols, dim=-1))
    return torch.cat(out, dim=0)


def distance2bbox(points: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """(x, y) points and (left, top, right, bottom) distances -> xyxy boxes."""
    x, y = points[..., 0], points[..., 1]
    return torch.stack([x - distance[..., 0], y - distance[..., 1],
                        x + distance[..., 2], y + distance[..., 3]], dim=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Pairwise IoU ``[N, M]``, computed with the same float operations as MMCV's NMS kernel.

    The order (intersection from clamped width x height, union = area_a + area_b - inter) matters: NMS keeps
    or drops a box on a strict comparison with the threshold, so we reproduce the reference's rounding.
    """
    lt_x = torch.maximum(a[:, None, 0], b[None, :, 0])
    lt_y = torch.maximum(a[:, None, 1], b[None, :, 1])
    rb_x = torch.minimum(a[:, None, 2], b[None, :, 2])
    rb_y = torch.minimum(a[:, None, 3], b[None, :, 3])
    inter = (rb_x - lt_x).clamp_(min=0) * (rb_y - lt_y).clamp_(min=0)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    if eps:
        union = union.clamp(min=eps)
    return inter / union
