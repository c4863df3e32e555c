"""Structures layer: axis boxes, rotated boxes (le90), polygon masks and the Instances container, against
hand-computed geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rtmkit.data.synthetic import rbox_corners
from rtmkit.structures import (
    AxisBoxes,
    Instances,
    PolygonMasks,
    RotatedBoxes,
    polygon_to_rbox,
    rbox_to_polygon,
    regularize_le90,
)

HALF_PI32 = np.float32(np.pi / 2)  # float32(pi/2) > pi/2: the le90 interval is [-HALF_PI32, HALF_PI32)


def same_corners(a: np.ndarray, b: np.ndarray, atol: float = 1e-3) -> bool:
    """Two [N, 4, 2] corner sets describe the same rectangles (corner order and start free)."""
    d = np.linalg.norm(a[:, :, None] - b[:, None], axis=-1)  # [N, 4, 4]
    return bool((d.min(2) < atol).all() and (d.min(1) < atol).all())


def random_rboxes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.uniform(10, 60, n)
    h = w * rng.uniform(0.2, 0.7, n)  # clearly longer w: le90 unique, away from w == h
    return np.stack([rng.uniform(0, 200, n), rng.uniform(0, 150, n), w, h, rng.uniform(-1.5, 1.5, n)], 1)


# ------------------------------------------------------------------------------------------------- axis boxes


def test_axis_boxes_geometry_by_hand():
    b = AxisBoxes([[10, 20, 30, 40], [0, 0, 5, 5]])
    assert b.data.dtype == np.float32 and len(b) == 2
    np.testing.assert_array_equal(b.scale(2, 0.5).data, [[20, 10, 60, 20], [0, 0, 10, 2.5]])
    np.testing.assert_array_equal(b.translate(5, -5).data, [[15, 15, 35, 35], [5, -5, 10, 0]])
    # image 100 high, 200 wide: x1' = 200 - x2, x2' = 200 - x1; y1' = 100 - y2, y2' = 100 - y1
    np.testing.assert_array_equal(b.flip((100, 200), "horizontal").data, [[170, 20, 190, 40], [195, 0, 200, 5]])
    np.testing.assert_array_equal(b.flip((100, 200), "vertical").data, [[10, 60, 30, 80], [0, 95, 5, 100]])
    np.testing.assert_array_equal(b.flip((100, 200), "diagonal").data, [[170, 60, 190, 80], [195, 95, 200, 100]])
    with pytest.raises(ValueError, match="direction"):
        b.flip((100, 200), "sideways")
    c = AxisBoxes([[-5, 10, 30, 60], [40, 60, 50, 70]]).clip((50, 25))  # h = 50, w = 25
    np.testing.assert_array_equal(c.data, [[0, 10, 25, 50], [25, 50, 25, 50]])
    np.testing.assert_array_equal(b.areas, [400, 25])
    np.testing.assert_array_equal(b.wh, [[20, 20], [5, 5]])
    np.testing.assert_array_equal(b.bounding_xyxy(), b.data)
    # inside = overlaps the image (MMDetection): touching the border from outside is not inside
    t = AxisBoxes([[-10, 0, 0, 10], [-10, 0, 0.5, 10], [99, 49, 120, 60], [100, 10, 110, 20]])
    assert t.is_inside((50, 100)).tolist() == [False, True, True, False]


def test_axis_boxes_select_concat_and_inputs_untouched():
    data = np.array([[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]], np.float32)
    b = AxisBoxes(data)
    before = data.copy()
    np.testing.assert_array_equal(b.select([True, False, True]).data, data[[0, 2]])
    np.testing.assert_array_equal(b.select([2, 0]).data, data[[2, 0]])
    np.testing.assert_array_equal(b.select(np.zeros(3, bool)).data.shape, (0, 4))
    with pytest.raises(IndexError):
        b.select([True, False])
    b.scale(3, 3).translate(1, 1).flip((10, 10)).clip((2, 2))
    np.testing.assert_array_equal(data, before)  # operations never write into the wrapped array
    cat = AxisBoxes.concat([b, AxisBoxes(), AxisBoxes([[9, 9, 10, 10]])])
    assert cat.data.shape == (4, 4) and cat.data.dtype == np.float32 and cat.data[3].tolist() == [9, 9, 10, 10]


# ---------------------------------------------------------------------------------------------- rotated boxes


def test_le90_regularisation_edge_cases():
    r = regularize_le90([[0, 0, 20, 10, np.pi / 2],  # exactly pi/2 -> -pi/2
                         [0, 0, 20, 10, -np.pi / 2],  # exactly -pi/2 stays
                         [0, 0, 20, 10, HALF_PI32],  # float32(pi/2) -> float32(-pi/2)
                         [0, 0, 10, 20, 0.0],  # h > w: swap, angle + pi/2 = pi/2 -> -pi/2
                         [0, 0, 10, 20, 0.3],  # swap: 0.3 + pi/2 -> 0.3 - pi/2
                         [0, 0, 20, 10, np.pi],  # pi -> 0
                         [0, 0, 20, 10, 3.0],  # 3 -> 3 - pi
                         [0, 0, 20, 10, -2.0],  # -2 -> -2 + pi
                         [0, 0, 10, 10, 0.3],  # a square keeps its angle (no swap on ties)
                         [1, 2, 30, 10, 1.0]])  # already le90: unchanged
    assert r.dtype == np.float32
    assert r[0, 4] == -HALF_PI32 and r[1, 4] == -HALF_PI32 and r[2, 4] == -HALF_PI32 and r[3, 4] == -HALF_PI32
    np.testing.assert_array_equal(r[3, 2:4], [20, 10])
    np.testing.assert_allclose(r[4], [0, 0, 20, 10, 0.3 - np.pi / 2], atol=1e-6)
    np.testing.assert_allclose(r[5:8, 4], [0, 3 - np.pi, -2 + np.pi], atol=1e-6)
    np.testing.assert_array_equal(r[8], np.float32([0, 0, 10, 10, 0.3]))
    np.testing.assert_array_equal(r[9], np.float32([1, 2, 30, 10, 1.0]))
    # idempotent, in range, and the same rectangles for arbitrary inputs
    rng = np.random.default_rng(1)
    raw = np.stack([rng.uniform(0, 50, 500), rng.uniform(0, 50, 500), rng.uniform(1, 30, 500),
                    rng.uniform(1, 30, 500), rng.uniform(-10, 10, 500)], 1)
    once = regularize_le90(raw)
    np.testing.assert_array_equal(regularize_le90(once), once)
    assert (once[:, 4] >= -HALF_PI32).all() and (once[:, 4] < HALF_PI32).all() and (once[:, 2] >= once[:, 3]).all()
    assert same_corners(rbox_to_polygon(once), rbox_to_polygon(raw))


def test_rbox_to_polygon_by_hand_and_dataset_convention():
    c = rbox_to_polygon([[50, 40, 20, 10, 0]])
    # c + u + v, c + u - v, c - u - v, c - u + v with u = (10, 0), v = (0, 5)
    np.testing.assert_array_equal(c[0], [[60, 45], [60, 35], [40, 35], [40, 45]])
    # clockwise-positive in image coordinates (y down): angle pi/2 turns the w side onto +y
    np.testing.assert_allclose(rbox_to_polygon([[50, 40, 20, 10, np.pi / 2]])[0],
                               [[45, 50], [55, 50], [55, 30], [45, 30]], atol=1e-5)
    rb = random_rboxes(20)
    ours = rbox_to_polygon(rb)
    for r, corners in zip(rb, ours):  # the synthetic dataset's corners (mmrotate's rbox2qbox order)
        np.testing.assert_allclose(corners, rbox_corners(r), atol=1e-4)


def test_rbox_polygon_round_trips():
    rb = regularize_le90(random_rboxes(200))
    back = polygon_to_rbox(rbox_to_polygon(rb))  # cv2.minAreaRect, converted to le90
    np.testing.assert_allclose(back, rb, atol=2e-4)
    # boundary angles: -pi/2 and +pi/2 give the same le90 box
    vert = polygon_to_rbox([[45, 30, 55, 30, 55, 50, 45, 50]])  # a flat polygon, a 10 x 20 (w x h) rectangle
    np.testing.assert_allclose(vert, [[50, 40, 20, 10, -np.pi / 2]], atol=1e-5)
    assert vert[0, 4] == -HALF_PI32
    flat = polygon_to_rbox([np.array([[0, 0], [30, 0], [30, 10], [0, 10]], np.float32)])
    np.testing.assert_allclose(flat, [[15, 5, 30, 10, 0]], atol=1e-5)
    assert polygon_to_rbox([np.zeros((0, 2))]).tolist() == [[0, 0, 0, 0, 0]]
    assert polygon_to_rbox([]).shape == (0, 5)


def test_rotated_flip_by_hand():
    r = RotatedBoxes([[30, 25, 20, 10, 0.3]])
    # image 80 high, 100 wide: horizontal mirrors cx (100 - 30) and negates the angle
    np.testing.assert_allclose(r.flip((80, 100), "horizontal").data, [[70, 25, 20, 10, -0.3]], atol=1e-6)
    np.testing.assert_allclose(r.flip((80, 100), "vertical").data, [[30, 55, 20, 10, -0.3]], atol=1e-6)
    np.testing.assert_allclose(r.flip((80, 100), "diagonal").data, [[70, 55, 20, 10, 0.3]], atol=1e-6)
    # -pi/2 negated is pi/2, re-regularised to -pi/2
    v = RotatedBoxes([[30, 25, 20, 10, -np.pi / 2]]).flip((80, 100), "horizontal")
    assert v.data[0, 4] == -HALF_PI32 and v.data[0, :4].tolist() == [70, 25, 20, 10]
    # the flipped box's corners are the mirrored corners, for any box and direction
    rb = RotatedBoxes(random_rboxes(100))
    corners = rb.corners()
    for direction, mirror in (("horizontal", lambda p: np.stack([200 - p[..., 0], p[..., 1]], -1)),
                              ("vertical", lambda p: np.stack([p[..., 0], 150 - p[..., 1]], -1)),
                              ("diagonal", lambda p: np.stack([200 - p[..., 0], 150 - p[..., 1]], -1))):
        f = rb.flip((150, 200), direction)
        assert (f.data[:, 4] >= -HALF_PI32).all() and (f.data[:, 4] < HALF_PI32).all()
        assert same_corners(f.corners(), mirror(corners)), direction


def test_rotated_scale_translate_by_hand():
    r = RotatedBoxes([[10, 20, 8, 4, 0.5]])
    np.testing.assert_array_equal(r.translate(2.5, -20).data, np.float32([[12.5, 0, 8, 4, 0.5]]))  # exact
    np.testing.assert_array_equal(r.scale(2, 2).data, np.float32([[20, 40, 16, 8, 0.5]]))  # uniform: exact
    # non-uniform, axis-aligned: sides scale along their own axes
    np.testing.assert_allclose(RotatedBoxes([[10, 10, 20, 10, 0]]).scale(2, 3).data, [[20, 30, 40, 30, 0]])
    vert = RotatedBoxes([[10, 10, 20, 10, -np.pi / 2]]).scale(2, 3)  # the w side along y: 20 * 3, h side 10 * 2
    np.testing.assert_allclose(vert.data, [[20, 30, 60, 20, -np.pi / 2]], atol=1e-5)
    # a 10 x 10 square at 45 degrees, x2 in x: the rhombus (+-14.14, 0), (0, +-7.07) of area 200; the min-area
    # rectangle lies on a side (length sqrt(250)): w = sqrt(250) + 150 / sqrt(250), h = 200 / sqrt(250), angle
    # atan(1/2); the axis-aligned bound (28.28 x 14.14 = 400) is larger
    sq = RotatedBoxes([[0, 0, 10, 10, np.pi / 4]]).scale(2, 1)
    np.testing.assert_allclose(sq.data, [[0, 0, 400 / math.sqrt(250), 200 / math.sqrt(250), math.atan(0.5)]],
                               atol=1e-4)
    assert sq.areas[0] == pytest.approx(320, abs=1e-2)
    # against cv2.minAreaRect of the scaled corners, for random boxes and factors
    rb = RotatedBoxes(random_rboxes(300))
    for sx, sy in ((1.7, 0.6), (0.3, 0.9), (1.0001, 0.9999)):
        ref = polygon_to_rbox(rb.corners() * np.array([sx, sy], np.float32))
        got = rb.scale(sx, sy)
        assert same_corners(got.corners(), rbox_to_polygon(ref), atol=2e-3)
        np.testing.assert_allclose(got.areas, ref[:, 2] * ref[:, 3], rtol=1e-4)


def test_rotated_clip_inside_bounds_select():
    r = RotatedBoxes([[-5, 10, 20, 10, 0.2], [50, 50, 20, 10, 0], [100, 0, 6, 2, 0], [100.5, 10, 6, 2, 0]])
    assert r.clip((60, 100)) is r  # not clipped (MMRotate): the shape is kept across the border
    assert r.is_inside((60, 100)).tolist() == [False, True, True, False]  # centre in [0, W] x [0, H]
    b = RotatedBoxes([[50, 50, 20, 10, -np.pi / 2], [10, 10, 4, 2, np.pi / 4]]).bounding_xyxy()
    e = 3 * math.sqrt(0.5)  # |2 cos 45| + |1 sin 45|
    np.testing.assert_allclose(b, [[45, 40, 55, 60], [10 - e, 10 - e, 10 + e, 10 + e]], atol=1e-5)
    np.testing.assert_array_equal(r.areas, [200, 200, 12, 12])
    np.testing.assert_array_equal(r.select([False, True, False, True]).data, r.data[[1, 3]])
    assert len(RotatedBoxes.concat([r, r.select([0])])) == 5


# ---------------------------------------------------------------------------------------------- polygon masks


def tri(x, y, s=10):
    return np.array([[x, y], [x + s, y], [x, y + s]], np.float32)


def test_polygon_masks_geometry_by_hand():
    m = PolygonMasks([[[0, 0, 10, 0, 10, 20]], [tri(50, 50), tri(70, 70)], []])  # flat COCO polygons accepted
    assert len(m) == 3 and m.polygons[0][0].shape == (3, 2) and m.polygons[0][0].dtype == np.float32
    np.testing.assert_array_equal(m.scale(2, 0.5).polygons[0][0], [[0, 0], [20, 0], [20, 10]])
    np.testing.assert_array_equal(m.translate(1, -1).polygons[1][1], [[71, 69], [81, 69], [71, 79]])
    # image 100 high, 120 wide
    np.testing.assert_array_equal(m.flip((100, 120), "horizontal").polygons[0][0], [[120, 0], [110, 0], [110, 20]])
    np.testing.assert_array_equal(m.flip((100, 120), "vertical").polygons[0][0], [[0, 100], [10, 100], [10, 80]])
    np.testing.assert_array_equal(m.flip((100, 120), "diagonal").polygons[0][0], [[120, 100], [110, 100], [110, 80]])
    assert m.flip((100, 120)).polygons[2] == []
    np.testing.assert_array_equal(m.bounding_xyxy(), [[0, 0, 10, 20], [50, 50, 80, 80], [0, 0, 0, 0]])
    np.testing.assert_allclose(m.areas, [100, 100, 0])
    assert m.is_inside((100, 120)).tolist() == [True, True, False]  # no polygon: not inside
    # clip to 60 x 60: the first triangle stays, the second instance keeps a clipped part of its first triangle
    # (x, y >= 50, x + y <= 60 inside [0, 60]^2) and loses the second one (outside)
    c = m.clip((60, 60))
    np.testing.assert_array_equal(c.polygons[0][0], m.polygons[0][0])
    assert len(c.polygons[1]) == 1 and c.polygons[2] == []
    np.testing.assert_allclose(c.areas[1], 50)
    np.testing.assert_array_equal(c.bounding_xyxy()[1], [50, 50, 60, 60])
    # select and concat keep instances whole and in order
    s = m.select([2, 0])
    assert s.polygons[0] == [] and s.polygons[1][0] is m.polygons[0][0]
    assert len(m.select(np.array([False, True, False]))) == 1
    assert len(PolygonMasks.concat([m, s])) == 5
    # the minimum-area rectangle of an instance's points
    np.testing.assert_allclose(PolygonMasks([[rbox_to_polygon([[40, 30, 20, 6, 0.4]])[0]]]).min_area_rboxes(),
                               [[40, 30, 20, 6, 0.4]], atol=1e-4)


# -------------------------------------------------------------------------------------------------- Instances


def sample_instances() -> Instances:
    boxes = AxisBoxes([[10, 10, 30, 20], [40, 50, 60, 90], [-20, 0, -5, 10]])
    rboxes = RotatedBoxes([[20, 15, 20, 10, 0], [50, 70, 40, 20, -np.pi / 2], [-12.5, 5, 15, 10, 0]])
    masks = PolygonMasks([[tri(10, 10)], [tri(40, 50), tri(45, 60)], [tri(-20, 0)]])
    return Instances([3, 5, 7], boxes=boxes, rboxes=rboxes, masks=masks, ignore_boxes=AxisBoxes([[0, 0, 5, 5]]))


def test_polygon_masks_to_bitmaps_by_hand():
    """Rasterised as the Ins loss's targets (pycocotools, like MMDetection's PolygonMasks.to_ndarray): a 10 px
    square covers pixels 10..19; an instance's parts are united; no polygon gives an empty mask."""
    masks = PolygonMasks([[[10, 10, 20, 10, 20, 20, 10, 20]],
                          [[0, 0, 4, 0, 0, 4], [30, 30, 35, 30, 35, 35, 30, 35]],
                          []]).to_bitmaps(40, 40)
    assert masks.shape == (3, 40, 40) and masks.dtype == bool
    square = np.zeros((40, 40), bool)
    square[10:20, 10:20] = True
    assert np.array_equal(masks[0], square)
    assert masks[1, 30:35, 30:35].all() and masks[1, 0, :3].all() and masks[1, 2, 0] and not masks[1, 3, 1]
    assert masks[1].sum() == 25 + 6 and not masks[2].any()


def test_instances_move_every_field_together():
    inst = sample_instances()
    assert len(inst) == 3 and inst.num_gt == 4
    for name, args in (("scale", (2.0, 0.5)), ("translate", (3, -4)), ("flip", ((100, 120), "vertical")),
                       ("clip", ((60, 50),))):
        out = getattr(inst, name)(*args)
        np.testing.assert_array_equal(out.labels, [3, 5, 7])
        np.testing.assert_array_equal(out.boxes.data, getattr(inst.boxes, name)(*args).data)
        np.testing.assert_array_equal(out.rboxes.data, getattr(inst.rboxes, name)(*args).data)
        np.testing.assert_array_equal(out.ignore_boxes.data, getattr(inst.ignore_boxes, name)(*args).data)
        want = getattr(inst.masks, name)(*args).polygons
        assert [len(p) for p in out.masks.polygons] == [len(p) for p in want]
        for a, b in zip(out.masks.polygons, want):
            for p, q in zip(a, b):
                np.testing.assert_array_equal(p, q)
    # by hand: a horizontal flip in a 120-wide image
    f = inst.flip((100, 120))
    np.testing.assert_array_equal(f.boxes.data[0], [90, 10, 110, 20])
    np.testing.assert_array_equal(f.rboxes.data[0], [100, 15, 20, 10, 0])
    np.testing.assert_array_equal(f.masks.polygons[0][0], [[110, 10], [100, 10], [110, 20]])
    np.testing.assert_array_equal(f.ignore_boxes.data, [[115, 0, 120, 5]])


def test_instances_select_keeps_labels_aligned():
    inst = sample_instances()
    s = inst.select([True, False, True])
    assert s.labels.tolist() == [3, 7]
    np.testing.assert_array_equal(s.boxes.data, inst.boxes.data[[0, 2]])
    np.testing.assert_array_equal(s.rboxes.data, inst.rboxes.data[[0, 2]])
    assert s.masks.polygons[1][0] is inst.masks.polygons[2][0]
    assert len(s.ignore_boxes) == 1  # ignore boxes are not instances: only ignore_index selects them
    r = inst.select([2, 0], ignore_index=[False])
    assert r.labels.tolist() == [7, 3] and r.boxes.data[0].tolist() == [-20, 0, -5, 10] and len(r.ignore_boxes) == 0
    assert r.masks.polygons[0][0] is inst.masks.polygons[2][0]
    # inside: decided on the axis boxes when present, else on rotated box centres, else on the masks
    keep, keep_ign = inst.is_inside((100, 100))
    assert keep.tolist() == [True, True, False] and keep_ign.tolist() == [True]
    assert inst.filter_inside((100, 100)).labels.tolist() == [3, 5]
    only_r = Instances([1, 2], rboxes=RotatedBoxes([[-1, 5, 40, 10, 0], [5, 5, 4, 2, 0]]))
    assert only_r.is_inside((10, 10))[0].tolist() == [False, True]
    np.testing.assert_array_equal(only_r.wh, [[40, 10], [4, 2]])
    only_m = Instances([1, 2], masks=PolygonMasks([[tri(-20, -20)], [tri(0, 0, 4)]]))
    assert only_m.is_inside((10, 10))[0].tolist() == [False, True]
    np.testing.assert_array_equal(only_m.wh, [[10, 10], [4, 4]])
    with pytest.raises(ValueError, match="labels"):
        Instances([1, 2], boxes=AxisBoxes([[0, 0, 1, 1]]))


def test_instances_concat_replace_and_sample_dicts():
    inst = sample_instances()
    plain = Instances([9], boxes=AxisBoxes([[1, 1, 2, 2]]), rboxes=RotatedBoxes([[1.5, 1.5, 1, 1, 0]]))
    cat = Instances.concat([inst, plain])
    assert cat.labels.tolist() == [3, 5, 7, 9] and len(cat.boxes) == len(cat.rboxes) == 4
    assert cat.masks is None  # one part without masks: no masks (as MMDetection's mosaic / mixup)
    assert len(cat.ignore_boxes) == 1
    assert inst.replace(masks=None).masks is None and inst.replace(masks=None).labels is inst.labels
    # sample dict round trip: other keys pass through, an absent field drops its key, the input is untouched
    sample = {"image": np.zeros((4, 4, 3), np.uint8), "path": "x", **inst.to_sample()}
    assert set(sample) == {"image", "path", "boxes", "rboxes", "masks", "labels", "ignore_boxes"}
    back = Instances.from_sample(sample)
    np.testing.assert_array_equal(back.rboxes.data, inst.rboxes.data)
    assert back.boxes.data is sample["boxes"]  # float32 arrays are wrapped, not copied
    out = back.select([0]).replace(rboxes=None).to_sample(sample, image=None)
    assert out["image"] is None and out["path"] == "x" and "rboxes" not in out and "rboxes" in sample
    assert out["labels"].tolist() == [3] and len(out["masks"]) == 1 and out["boxes"].shape == (1, 4)
    minimal = Instances.from_sample({"labels": np.zeros(0, np.int64), "boxes": np.zeros((0, 4), np.float32)})
    assert minimal.num_gt == 0 and set(minimal.to_sample()) == {"labels", "boxes", "ignore_boxes"}


def test_instances_fields_stay_consistent_through_a_chain():
    # masks drawn as the rotated boxes' corners, axis boxes as their bounds: exact operations (translations,
    # uniform scales, flips in every direction) keep the corners on the polygons and the bounds on the boxes
    rb = RotatedBoxes(random_rboxes(50, seed=3))
    start = Instances(np.arange(50), boxes=AxisBoxes(rb.bounding_xyxy()), rboxes=rb,
                      masks=PolygonMasks([[c] for c in rb.corners()]))

    def chain(inst: Instances) -> Instances:
        inst = inst.translate(-7, 11).flip((150, 200), "diagonal").scale(0.5, 0.5).flip((90, 100), "horizontal")
        return inst.translate(3.5, 2).flip((120, 110), "vertical").scale(1.25, 1.25)

    inst = chain(start)
    assert inst.labels.tolist() == list(range(50))
    assert same_corners(inst.rboxes.corners(), np.stack([p[0] for p in inst.masks.polygons]), atol=2e-3)
    np.testing.assert_allclose(inst.boxes.data, inst.masks.bounding_xyxy(), atol=1e-4)
    # a non-uniform scale turns the polygons into parallelograms: the rotated boxes become their minimum-area
    # rectangles, and stay so through the chain
    inst = chain(start.scale(1.3, 0.8))
    assert same_corners(inst.rboxes.corners(), rbox_to_polygon(inst.masks.min_area_rboxes()), atol=2e-3)
    np.testing.assert_allclose(inst.boxes.data, inst.masks.bounding_xyxy(), atol=1e-4)
