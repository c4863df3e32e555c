"""Task-generic ``Result``: JSON, plots and filtering per field, checked against hand-computed values and
pycocotools' own RLE decoder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rtmkit.results import Result, rbox_corners

NAMES = {0: "cat", 1: "dog"}


def _masks() -> np.ndarray:
    m = np.zeros((2, 40, 60), bool)
    m[0, 5:15, 10:30] = True  # a 20 x 10 rectangle
    m[1, 20:35, 40:55] = True
    return m


def test_masks_to_json_rle_decodes_to_the_same_pixels():
    from pycocotools import mask as mask_utils

    masks = _masks()
    r = Result(np.array([[10, 5, 30, 15], [40, 20, 55, 35]], np.float32), np.array([0.9, 0.6], np.float32),
               np.array([0, 1]), NAMES, (40, 60), masks=masks)
    assert r.task == "segment"
    dets = json.loads(r.to_json())
    assert [d["name"] for d in dets] == ["cat", "dog"] and dets[0]["box"] == {"x1": 10, "y1": 5, "x2": 30, "y2": 15}
    for d, m in zip(dets, masks):
        rle = {"size": d["mask"]["size"], "counts": d["mask"]["counts"].encode()}
        assert d["mask"]["size"] == [40, 60]
        assert np.array_equal(mask_utils.decode(rle).astype(bool), m)
        assert int(mask_utils.area(rle)) == int(m.sum())
    polys = json.loads(r.to_json(masks="polygons"))[0]["polygons"]
    xs, ys = [p[0] for p in polys[0]], [p[1] for p in polys[0]]
    assert (min(xs), max(xs), min(ys), max(ys)) == (10, 29, 5, 14)  # pixel centres of the rectangle's border


def test_filter_keeps_fields_aligned():
    masks = _masks()
    rboxes = np.array([[10, 10, 4, 2, 0.1], [20, 20, 6, 3, -0.2]], np.float32)
    r = Result(None, np.array([0.9, 0.2], np.float32), np.array([1, 0]), NAMES, (40, 60), masks=masks, rboxes=rboxes)
    f = r.filter(0.5)
    assert len(f) == 1 and f.labels.tolist() == [1]
    assert np.array_equal(f.masks[0], masks[0]) and np.array_equal(f.rboxes[0], rboxes[0])


def test_rotated_corners_and_json():
    # a 4 x 2 box at (10, 20) turned by 90 degrees clockwise (image coordinates): its long side is vertical
    corners = rbox_corners(np.array([[10, 20, 4, 2, math.pi / 2]]))[0]
    np.testing.assert_allclose(corners, [[11, 18], [11, 22], [9, 22], [9, 18]], atol=1e-5)
    r = Result(None, np.array([0.8], np.float32), np.array([0]), NAMES, (50, 50),
               rboxes=np.array([[10, 20, 4, 2, 0.0]], np.float32))
    d = json.loads(r.to_json())[0]
    assert d["rbox"] == {"cx": 10, "cy": 20, "w": 4, "h": 2, "angle": 0}
    assert d["polygon"] == [[8, 19], [12, 19], [12, 21], [8, 21]] and "box" not in d


def test_probs_json_and_plot():
    probs = np.array([0.1, 0.6, 0.05, 0.25], np.float32)
    r = Result(None, np.zeros(0, np.float32), np.zeros(0, int), {0: "a", 1: "b", 2: "c", 3: "d"}, (32, 32),
               probs=probs, orig_img=np.zeros((64, 64, 3), np.uint8))
    assert r.task == "classify" and r.top5 == [1, 3, 0, 2] and len(r) == 0
    top = json.loads(r.to_json())["top5"]
    assert [t["name"] for t in top] == ["b", "d", "a", "c"] and top[0]["score"] == pytest.approx(0.6)
    assert r.plot().any()  # the class names are written on the image


def test_plot_fills_masks_translucently_and_outlines_rotated_boxes():
    img = np.full((40, 60, 3), 200, np.uint8)
    masks = _masks()
    r = Result(None, np.array([0.9, 0.6], np.float32), np.array([0, 1]), NAMES, (40, 60), masks=masks, orig_img=img)
    out = r.plot(labels=False, conf=False)
    inside, outside = out[8:12, 15:25], out[0:3, 0:5]
    assert (outside == 200).all()  # untouched background
    assert not (inside == 200).all() and (inside == inside[0, 0]).all()  # a uniform translucent fill
    rr = Result(None, np.array([0.9], np.float32), np.array([0]), NAMES, (40, 60),
                rboxes=np.array([[30, 20, 20, 10, 0.0]], np.float32), orig_img=img)
    drawn = rr.plot(labels=False, conf=False)
    assert (drawn[15, 25:35] != 200).any() and (drawn[20, 30] == 200).all()  # outline drawn, centre untouched
