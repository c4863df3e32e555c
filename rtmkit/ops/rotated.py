"""Rotated-box geometry in plain, vectorised PyTorch: corners, exact IoU by convex-polygon clipping, rotated NMS.

A rotated box is ``(cx, cy, w, h, angle)`` in pixels and radians (le90 in RTMDet-R), clockwise in image
coordinates (y down): its corners are ``c -/+ u -/+ v`` with ``u = (w/2)(cos a, sin a)`` and
``v = (h/2)(-sin a, cos a)``, as MMCV's ``box_iou_rotated`` (``clockwise=True``) and MMRotate's ``rbox2qbox``
place them.

The IoU follows MMCV's ``box_iou_rotated`` semantics: the intersection polygon's vertices are the edge crossings
(segment parameters in ``[0, 1]``, parallel edges skipped) and the corners of each box inside the other (borders
included); boxes are shifted by the mean of the two centres first (fewer lost digits far from the origin); a box of
area below 1e-14 has IoU 0; ``IoU = inter / (area_a + area_b - inter)``. Two rounding guards where MMCV has none or
an absolute one: the border tests have a slack of a few ulps (a corner computed on a border is not lost, so
identical boxes described in different ways overlap fully), and edges parallel within a few ulps relative to their
lengths count as parallel (with MMCV's absolute 1e-14, float64 lets long collinear edges through with meaningless
crossings: the shapely property test found a touching pair at IoU 1/3). Instead of MMCV's per-pair Graham scan,
the (at most 24) candidate vertices of every pair are ordered by angle around their mean, which orders a convex
polygon's vertices the same way, and the area is the shoelace sum: no Python loop over boxes.
"""

from __future__ import annotations

import torch

from .nms import batched_nms

_AREA_EPS = 1e-14  # MMCV: a box with a smaller area overlaps nothing
_PAIR_CHUNK = 1 << 16  # pairs per vectorised step (about 30 MB of float64 temporaries)
# NMS blocks: smaller than for axis boxes (each rotated IoU costs more), so that most candidates are suppressed by
# the boxes already kept before their block's own IoUs are computed
_NMS_BLOCK = 256


def rbox_corners(rboxes: torch.Tensor) -> torch.Tensor:
    """``[..., 5]`` rotated boxes -> ``[..., 4, 2]`` corners in MMCV's order: ``c - u + v``, ``c - u - v``,
    ``c + u - v``, ``c + u + v`` (a closed loop; see the module docstring for ``u`` and ``v``)."""
    c = rboxes[..., None, 0:2]
    half_w, half_h, a = rboxes[..., 2, None] / 2, rboxes[..., 3, None] / 2, rboxes[..., 4, None]
    cos, sin = torch.cos(a), torch.sin(a)
    u = torch.cat([half_w * cos, half_w * sin], dim=-1)[..., None, :]
    v = torch.cat([-half_h * sin, half_h * cos], dim=-1)[..., None, :]
    return torch.cat([c - u + v, c - u - v, c + u - v, c + u + v], dim=-2)


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1]


def _tolerance(dtype: torch.dtype) -> float:
    """Relative slack of the on-border tests: a few dozen ulps, so that a corner computed on a border (touching,
    identical or collinear boxes, a rectangle described with swapped sides) is not lost to rounding."""
    return 64 * torch.finfo(dtype).eps


def _corners_inside(points: torch.Tensor, rect: torch.Tensor) -> torch.Tensor:
    """bool ``[P, 4]``: which of ``points`` ``[P, 4, 2]`` lie in the rectangle ``rect`` ``[P, 4, 2]`` (corners
    in loop order), borders included: ``0 <= AP.AB <= AB.AB`` and ``0 <= AP.AD <= AD.AD`` (MMCV's test, with a
    slack of a few ulps relative to the sides)."""
    a = rect[:, 0:1]
    ab, ad = rect[:, 1:2] - a, rect[:, 3:4] - a
    ap = points - a
    p_ab, p_ad = _dot(ap, ab), _dot(ap, ad)
    ab2, ad2 = _dot(ab, ab), _dot(ad, ad)
    tol = _tolerance(points.dtype)
    return (p_ab >= -tol * ab2) & (p_ad >= -tol * ad2) & (p_ab <= (1 + tol) * ab2) & (p_ad <= (1 + tol) * ad2)


def intersection_area(pa: torch.Tensor, pb: torch.Tensor) -> torch.Tensor:
    """Area ``[P]`` of the intersection of convex quadrilaterals ``pa`` and ``pb`` (``[P, 4, 2]`` each, corners in
    loop order; rectangles for the inside test), pair by pair."""
    p = pa.shape[0]
    a0, b0 = pa, pb
    da, db = pa.roll(-1, dims=1) - pa, pb.roll(-1, dims=1) - pb  # edge vectors [P, 4, 2]
    # edge i of a against edge j of b: a0_i + t da_i = b0_j + s db_j
    det = _cross(db[:, None, :, :], da[:, :, None, :])  # [P, 4, 4]
    diff = b0[:, None, :, :] - a0[:, :, None, :]
    tol = _tolerance(pa.dtype)
    # parallel edges (also within rounding: MMCV's absolute 1e-14 lets long, collinear edges through with
    # meaningless crossing parameters) have no crossing; their shared points are the corners found inside
    norms = (_dot(da, da)[:, :, None] * _dot(db, db)[:, None, :]).sqrt()
    crosses = det.abs() > torch.maximum(tol * norms, torch.full_like(norms, _AREA_EPS))
    safe = torch.where(crosses, det, torch.ones_like(det))
    t = _cross(db[:, None, :, :], diff) / safe
    s = _cross(da[:, :, None, :], diff) / safe
    crossing = crosses & (t >= -tol) & (t <= 1 + tol) & (s >= -tol) & (s <= 1 + tol)
    crossing_pts = a0[:, :, None, :] + t[..., None] * da[:, :, None, :]
    points = torch.cat([crossing_pts.reshape(p, 16, 2), pa, pb], dim=1)  # [P, 24, 2]
    valid = torch.cat([crossing.reshape(p, 16), _corners_inside(pa, pb), _corners_inside(pb, pa)], dim=1)
    count = valid.sum(dim=1)
    w = valid.to(points.dtype)[..., None]
    centre = (points * w).sum(dim=1, keepdim=True) / count.clamp(min=1)[:, None, None].to(points.dtype)
    rel = points - centre
    # order by a pseudo-angle (monotonic in atan2, in (-2, 2], without the transcendental function)
    dx, dy = rel[..., 0], rel[..., 1]
    ratio = dx / (dx.abs() + dy.abs()).clamp(min=torch.finfo(rel.dtype).tiny)
    angle = torch.where(dy >= 0, 1 - ratio, ratio - 1)
    angle = torch.where(valid, angle, torch.full_like(angle, 10.0))  # invalid points sort last
    order = angle.argsort(dim=1)
    rel = rel.gather(1, order[..., None].expand(-1, -1, 2))
    valid = valid.gather(1, order)
    # shoelace over the valid points in angular order; the last valid point closes onto the first
    nxt = rel.roll(-1, dims=1)
    nxt = torch.where(valid.roll(-1, dims=1)[..., None], nxt, rel[:, :1].expand_as(rel))
    area = (_cross(rel, nxt) * valid).sum(dim=1).abs() / 2
    return torch.where(count > 2, area, torch.zeros_like(area))


def _pair_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of aligned pairs ``[P, 5]`` x ``[P, 5]`` -> ``[P]`` (MMCV's ``single_box_iou_rotated``)."""
    out = a.new_zeros(a.shape[0])
    for start in range(0, a.shape[0], _PAIR_CHUNK):
        x, y = a[start:start + _PAIR_CHUNK], b[start:start + _PAIR_CHUNK]
        shift = (x[:, :2] + y[:, :2]) / 2  # both boxes around the origin: fewer digits lost
        x = torch.cat([x[:, :2] - shift, x[:, 2:]], dim=1)
        y = torch.cat([y[:, :2] - shift, y[:, 2:]], dim=1)
        area_x, area_y = x[:, 2] * x[:, 3], y[:, 2] * y[:, 3]
        inter = intersection_area(rbox_corners(x), rbox_corners(y))
        iou = inter / (area_x + area_y - inter).clamp(min=torch.finfo(a.dtype).tiny)
        out[start:start + _PAIR_CHUNK] = torch.where((area_x < _AREA_EPS) | (area_y < _AREA_EPS),
                                                     torch.zeros_like(iou), iou)
    return out


def rotated_iou(a: torch.Tensor, b: torch.Tensor, aligned: bool = False) -> torch.Tensor:
    """IoU of rotated boxes: pairwise ``[N, M]`` for ``a`` ``[N, 5]`` and ``b`` ``[M, 5]``, or ``[N]`` for aligned
    pairs. Exact up to rounding (the arithmetic is in the inputs' dtype). Pairs whose axis-aligned bounding boxes
    (slightly enlarged) do not meet are 0 without computing their polygons."""
    if aligned:
        return _pair_iou(a, b)
    out = a.new_zeros((a.shape[0], b.shape[0]))
    if out.numel() == 0:
        return out
    box_a, box_b = _bounds(a), _bounds(b)
    near = ((box_a[:, None, 0] <= box_b[None, :, 2]) & (box_b[None, :, 0] <= box_a[:, None, 2])
            & (box_a[:, None, 1] <= box_b[None, :, 3]) & (box_b[None, :, 1] <= box_a[:, None, 3]))
    if b is a:  # one set against itself (NMS): each unordered pair once, mirrored
        near.triu_(diagonal=1)
        i, j = near.nonzero(as_tuple=True)
        values = _pair_iou(a[i], a[j])
        out[i, j] = values
        out[j, i] = values
        k = torch.arange(a.shape[0], device=a.device)
        out[k, k] = _pair_iou(a, a)
        return out
    i, j = near.nonzero(as_tuple=True)
    out[i, j] = _pair_iou(a[i], b[j])
    return out


def _bounds(rboxes: torch.Tensor) -> torch.Tensor:
    """``[N, 4]`` xyxy bounds of rotated boxes, enlarged by a relative 1e-6 (the pre-filter must never drop a
    touching pair to rounding)."""
    cos, sin = torch.cos(rboxes[:, 4]).abs(), torch.sin(rboxes[:, 4]).abs()
    half_x = (rboxes[:, 2] * cos + rboxes[:, 3] * sin) / 2
    half_y = (rboxes[:, 2] * sin + rboxes[:, 3] * cos) / 2
    pad = (half_x + half_y) * 1e-6 + 1e-6
    return torch.stack([rboxes[:, 0] - half_x - pad, rboxes[:, 1] - half_y - pad,
                        rboxes[:, 0] + half_x + pad, rboxes[:, 1] + half_y + pad], dim=1)


def nms_rotated(rboxes: torch.Tensor, scores: torch.Tensor, iou_thr: float) -> torch.Tensor:
    """Greedy rotated NMS: indices of the kept boxes by descending score; a box is suppressed by a kept
    higher-scoring one when their IoU is at least ``iou_thr`` (MMCV's ``nms_rotated``: ``>=``)."""
    return batched_nms(rboxes, scores, torch.zeros_like(scores, dtype=torch.long), iou_thr, iou_fn=rotated_iou,
                       inclusive=True, block=_NMS_BLOCK)


def batched_nms_rotated(rboxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_thr: float, *,
                        images: torch.Tensor | None = None, num_images: int = 1, max_per_image: int | None = None,
                        presorted: bool = False) -> torch.Tensor:
    """Class-aware rotated NMS as MMCV's ``batched_nms`` runs it for rotated boxes, per image: every class's
    centres moved by ``label * (max centre coordinate + max side + 1)`` (maxima over the image's boxes), added in
    the boxes' dtype so the centres round as the reference's do; boxes of different labels (or ``images``) never
    suppress each other. ``images`` ``[N]`` (of ``num_images``) and ``max_per_image``, ``presorted``: as
    :func:`~rtmkit.ops.nms.batched_nms`. Indices of the kept boxes by descending score."""
    if rboxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=rboxes.device)
    if images is None:
        images = torch.zeros_like(labels)
    amax = torch.full((num_images,), float("-inf"), dtype=rboxes.dtype, device=rboxes.device)
    max_ctr = amax.scatter_reduce(0, images, rboxes[:, :2].max(dim=1).values, reduce="amax")
    max_side = amax.clone().scatter_reduce(0, images, rboxes[:, 2:4].max(dim=1).values, reduce="amax")
    offset = labels.to(rboxes.dtype) * (max_ctr[images] + max_side[images] + 1)
    moved = torch.cat([rboxes[:, :2] + offset[:, None], rboxes[:, 2:]], dim=1)
    groups = images * (int(labels.max()) + 1) + labels
    return batched_nms(moved, scores, groups, iou_thr, images=images, max_per_image=max_per_image,
                       presorted=presorted, iou_fn=rotated_iou, inclusive=True, block=_NMS_BLOCK)
