"""Rotated-box geometry (rtmkit.ops.rotated) against shapely on thousands of random pairs and the degenerate cases
(identical, nested, touching, collinear edges, zero area, huge aspect ratios), and rotated NMS against a literal
greedy loop with MMCV's rule (suppress at IoU >= threshold)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rtmkit.ops.rotated import batched_nms_rotated, nms_rotated, rbox_corners, rotated_iou

shapely = pytest.importorskip("shapely")
from shapely.geometry import Polygon  # noqa: E402


def _shapely_iou(a: np.ndarray, b: np.ndarray) -> float:
    pa, pb = Polygon(rbox_corners(torch.from_numpy(a)).numpy()), Polygon(rbox_corners(torch.from_numpy(b)).numpy())
    if a[2] * a[3] < 1e-14 or b[2] * b[3] < 1e-14:
        return 0.0
    inter = pa.intersection(pb).area
    return inter / (pa.area + pb.area - inter)


def _exact_iou(a: np.ndarray, b: np.ndarray) -> float:
    """The IoU of the two corner polygons (as float64 computes them) in exact rational arithmetic: Sutherland-
    Hodgman clipping with fractions. The arbiter where shapely's own overlay is not robust (it reports a full
    overlap for some rectangles that only touch along a nearly collinear edge)."""
    from fractions import Fraction

    def poly(box):
        return [(Fraction(float(x)), Fraction(float(y))) for x, y in rbox_corners(torch.from_numpy(box)).numpy()]

    def area(p):
        return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(p, p[1:] + p[:1]))) / 2

    def clip(subject, clipper):
        orient = 1 if sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(clipper, clipper[1:] + clipper[:1])) > 0 \
            else -1
        out = subject
        for (ax, ay), (bx, by) in zip(clipper, clipper[1:] + clipper[:1]):
            def side(p, ax=ax, ay=ay, bx=bx, by=by):
                return orient * ((bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax))
            pts, out = out, []
            for p, q in zip(pts, pts[1:] + pts[:1]):
                sp, sq = side(p), side(q)
                if sp >= 0:
                    out.append(p)
                if (sp >= 0) != (sq >= 0):
                    t = sp / (sp - sq)
                    out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
            if not out:
                return []
        return out

    if a[2] * a[3] < 1e-14 or b[2] * b[3] < 1e-14:
        return 0.0
    pa, pb = poly(a), poly(b)
    inter = clip(pa, pb)
    inter_area = area(inter) if len(inter) >= 3 else Fraction(0)
    return float(inter_area / (area(pa) + area(pb) - inter_area))


def _random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    c = rng.uniform(0, 100, (n, 2))
    wh = np.exp(rng.uniform(np.log(0.5), np.log(60), (n, 2)))
    a = rng.uniform(-math.pi / 2, math.pi / 2, (n, 1))
    return np.concatenate([c, wh, a], 1)


def _special_pairs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Degenerate cases: identical, nested, touching along an edge, sharing a collinear edge, zero area,
    huge aspect ratios, rotated by 90 degrees (the same rectangle), crossing thin strips."""
    base = _random_boxes(rng, 200)
    pairs = []
    for box in base:
        cx, cy, w, h, a = box
        u = np.array([math.cos(a), math.sin(a)])
        v = np.array([-math.sin(a), math.cos(a)])
        pairs += [
            (box, box.copy()),  # identical
            (box, np.array([cx, cy, w * 0.5, h * 0.3, a])),  # nested, same angle
            (box, np.array([cx, cy, min(w, h) * 0.3, min(w, h) * 0.3, a + 0.7])),  # nested, rotated
            (box, np.array([*(np.array([cx, cy]) + u * w), w, h, a])),  # touching along an edge
            (box, np.array([*(np.array([cx, cy]) + u * w * 0.5), w, h, a])),  # half overlap, collinear edges
            (box, np.array([*(np.array([cx, cy]) + v * h * 0.25), w * 2, h * 0.5, a])),  # collinear, wider
            (box, np.array([cx, cy, w, 0.0, a])),  # zero area
            (box, np.array([cx, cy, h, w, a + math.pi / 2])),  # the same rectangle, described rotated
            (np.array([cx, cy, 1000.0, 0.01, a]), np.array([cx, cy, 1000.0, 0.01, a + 0.3])),  # huge aspect
            (np.array([cx, cy, 500.0, 0.5, a]), np.array([cx + 1, cy, 0.5, 500.0, a])),  # crossing strips
        ]
    a, b = zip(*pairs)
    return np.array(a), np.array(b)


def test_corners_follow_mmcv_order_and_clockwise_angles():
    c = rbox_corners(torch.tensor([[10.0, 20.0, 4.0, 2.0, math.pi / 2]], dtype=torch.float64))[0].numpy()
    # angle pi/2, clockwise on screen (y down): the width axis points down
    np.testing.assert_allclose(c, [[9.0, 18.0], [11.0, 18.0], [11.0, 22.0], [9.0, 22.0]], atol=1e-12)


def test_iou_matches_shapely_on_random_and_degenerate_pairs():
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 3000), _random_boxes(rng, 3000)
    b[:1500, :2] = a[:1500, :2] + rng.normal(0, 10, (1500, 2))  # many overlapping pairs
    sa, sb = _special_pairs(rng)
    a, b = np.concatenate([a, sa]), np.concatenate([b, sb])
    ours = rotated_iou(torch.from_numpy(a), torch.from_numpy(b), aligned=True).numpy()
    truth = np.array([_shapely_iou(x, y) for x, y in zip(a, b)])
    disputed = np.nonzero(np.abs(ours - truth) > 1e-5)[0]
    assert len(disputed) <= 5  # shapely's robustness slips on touching boxes (counted), decided exactly:
    for k in disputed:
        truth[k] = _exact_iou(a[k], b[k])
    err = np.abs(ours - truth)
    assert err.max() <= 1e-5, (err.max(), a[err.argmax()], b[err.argmax()])
    assert (truth > 0.1).sum() > 1000  # the comparison covers real overlaps, not only zeros
    n = len(sa) // 10
    special = ours[-len(sa):].reshape(n, 10)
    np.testing.assert_allclose(special[:, 0], 1.0, atol=1e-9)  # identical
    np.testing.assert_allclose(special[:, 3], 0.0, atol=1e-9)  # touching: no area
    np.testing.assert_allclose(special[:, 4], 1 / 3, atol=1e-9)  # half overlap along collinear edges
    np.testing.assert_allclose(special[:, 6], 0.0, atol=0)  # zero area
    np.testing.assert_allclose(special[:, 7], 1.0, atol=1e-9)  # the same rectangle


def test_pairwise_matrix_equals_aligned_pairs_and_is_symmetric():
    rng = np.random.default_rng(1)
    a = torch.from_numpy(_random_boxes(rng, 70))
    b = torch.from_numpy(_random_boxes(rng, 50))
    m = rotated_iou(a, b)
    assert m.shape == (70, 50)
    ii, jj = torch.meshgrid(torch.arange(70), torch.arange(50), indexing="ij")
    aligned = rotated_iou(a[ii.reshape(-1)], b[jj.reshape(-1)], aligned=True).reshape(70, 50)
    torch.testing.assert_close(m, aligned, rtol=0, atol=1e-12)  # the circle pre-filter drops only zeros
    torch.testing.assert_close(rotated_iou(b, a), m.T, rtol=0, atol=1e-9)
    assert rotated_iou(a[:0], b).shape == (0, 50)


def _greedy(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> list[int]:
    """MMCV's loop, literally: by descending score, keep a box unless a kept one overlaps it at IoU >= thr (the
    IoUs from the aligned pair computation checked against shapely above)."""
    n = len(boxes)
    ii, jj = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    iou = rotated_iou(boxes[ii.reshape(-1)], boxes[jj.reshape(-1)], aligned=True).reshape(n, n).tolist()
    keep: list[int] = []
    for i in torch.sort(scores, descending=True, stable=True).indices.tolist():
        if all(iou[i][k] < thr for k in keep):
            keep.append(i)
    return keep


def test_nms_is_greedy_with_mmcv_rule_and_classes_stay_apart():
    rng = np.random.default_rng(2)
    boxes = torch.from_numpy(_random_boxes(rng, 300)).float()
    boxes[:, :2] = boxes[:, :2] * 0.3  # crowded
    scores = torch.from_numpy(rng.uniform(0, 1, 300)).float()
    for thr in (0.1, 0.5):
        assert nms_rotated(boxes, scores, thr).tolist() == _greedy(boxes, scores, thr)
    # IoU exactly at the threshold suppresses (MMCV's `>=`): a box and its copy shifted to IoU 1/3
    pair = torch.tensor([[0.0, 0.0, 4.0, 2.0, 0.0], [2.0, 0.0, 4.0, 2.0, 0.0]])
    iou = rotated_iou(pair[:1], pair[1:]).item()
    assert nms_rotated(pair, torch.tensor([0.9, 0.8]), iou).tolist() == [0]
    assert nms_rotated(pair, torch.tensor([0.9, 0.8]), float(np.nextafter(iou, 1, dtype=np.float32))).tolist() == [0, 1]
    # per class: the same boxes under two labels are kept in both
    labels = torch.tensor([0] * 150 + [1] * 150)
    both = torch.cat([boxes[:150], boxes[:150]])
    kept = batched_nms_rotated(both, torch.cat([scores[:150], scores[:150]]), labels, 0.1)
    single = nms_rotated(boxes[:150], scores[:150], 0.1)
    assert sorted(kept[labels[kept] == 0].tolist()) == sorted(single.tolist())
    assert sorted((kept[labels[kept] == 1] - 150).tolist()) == sorted(single.tolist())
