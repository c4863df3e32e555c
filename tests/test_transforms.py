"""Training transforms against hand-computed geometry; the pipeline, stages, seeding and the DataLoader."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from rtmkit.data.datasets import load_dataset
from rtmkit.data.loader import (
    EpochSampler,
    TrainDataset,
    ValDataset,
    build_train_loader,
    collate,
    normalize_batch,
)
from rtmkit.data.preprocess import letterbox
from rtmkit.data.transforms import (
    CachedMixUp,
    CachedMosaic,
    FilterAnnotations,
    Pad,
    RandomCrop,
    RandomFlip,
    RandomResize,
    YOLOXHSVRandomAug,
    build_train_pipeline,
    clip_polygon,
)
from rtmkit.structures import polygon_to_rbox, rbox_to_polygon


def rect(b):
    x1, y1, x2, y2 = b
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float32)


def make(h, w, boxes, colour=None, masks=True, labels=None, ignore=None, gradient=False):
    if gradient:
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = (np.arange(w) % 256)[None, :]
        img[..., 1] = (np.arange(h) % 256)[:, None]
        img[..., 2] = 77
    else:
        img = np.full((h, w, 3), colour if colour is not None else (0, 0, 255), np.uint8)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    s = {"image": img, "boxes": boxes,
         "labels": np.asarray(labels if labels is not None else np.arange(len(boxes)), np.int64),
         "ignore_boxes": np.asarray(ignore if ignore is not None else np.zeros((0, 4)), np.float32).reshape(-1, 4),
         "path": "mem", "image_id": 0, "orig_shape": (h, w)}
    if masks:
        s["masks"] = [[rect(b)] for b in boxes]
    return s


def mask_bounds(s):
    return np.array([[*np.concatenate(m).min(0), *np.concatenate(m).max(0)] for m in s["masks"]], np.float32)


def assert_masks_match_boxes(s):
    assert len(s["masks"]) == len(s["boxes"])
    if len(s["boxes"]):
        assert all(len(m) for m in s["masks"])
        np.testing.assert_allclose(mask_bounds(s), s["boxes"], atol=1e-3)


# --------------------------------------------------------------------------------------------- simple transforms


def test_flip_by_hand():
    s = make(100, 200, [[10, 20, 50, 60]], gradient=True)
    before = s["image"].copy()
    out = RandomFlip(1.0)(s, np.random.default_rng(0))
    np.testing.assert_array_equal(out["boxes"], [[150, 20, 190, 60]])  # x1' = W - x2, x2' = W - x1
    np.testing.assert_array_equal(out["image"], before[:, ::-1])
    np.testing.assert_array_equal(s["image"], before)  # input untouched
    assert_masks_match_boxes(out)
    assert RandomFlip(0.0)(s, np.random.default_rng(0)) is s
    for seed in range(6):  # p = 0.5: one uniform draw, flip when < 0.5
        flipped = RandomFlip(0.5)(s, np.random.default_rng(seed)) is not s
        assert flipped == (np.random.default_rng(seed).random() < 0.5)


def test_flip_directions_by_hand():
    s = make(100, 200, [[10, 20, 50, 60]], gradient=True)
    s["rboxes"] = np.array([[30, 40, 40, 20, 0.3]], np.float32)
    before = s["image"].copy()
    # image 100 high, 200 wide; a rotated box mirrors its centre and negates its angle (not for diagonal)
    for direction, box, rbox, img in (("horizontal", [150, 20, 190, 60], [170, 40, 40, 20, -0.3], before[:, ::-1]),
                                      ("vertical", [10, 40, 50, 80], [30, 60, 40, 20, -0.3], before[::-1]),
                                      ("diagonal", [150, 40, 190, 80], [170, 60, 40, 20, 0.3], before[::-1, ::-1])):
        out = RandomFlip.flip(s, direction)
        np.testing.assert_array_equal(out["boxes"], [box])
        np.testing.assert_allclose(out["rboxes"], [rbox], atol=1e-6)
        np.testing.assert_array_equal(out["image"], img)
        assert_masks_match_boxes(out)
    np.testing.assert_array_equal(RandomFlip(1.0)(s, np.random.default_rng(0))["rboxes"], RandomFlip.flip(s)["rboxes"])
    # several directions (RTMDet-R): prob 0.75 split evenly, one uniform draw against the cumulative bounds
    flip = RandomFlip(0.75, ["horizontal", "vertical", "diagonal"])
    for seed in range(12):
        u = np.random.default_rng(seed).random()
        out = flip(s, np.random.default_rng(seed))
        if u >= 0.75:
            assert out is s
        else:
            want = RandomFlip.flip(s, ["horizontal", "vertical", "diagonal"][int(u // 0.25)])
            np.testing.assert_array_equal(out["boxes"], want["boxes"])
    with pytest.raises(ValueError):
        RandomFlip(0.5, "sideways")
    with pytest.raises(ValueError):
        RandomFlip([0.5, 0.6], ["horizontal", "vertical"])


def test_pad_by_hand():
    s = make(300, 500, [[10, 20, 50, 60]], gradient=True)
    out = Pad(640, 114)(s)
    img = out["image"]
    assert img.shape == (640, 640, 3)
    np.testing.assert_array_equal(img[:300, :500], s["image"])
    assert (img[300:] == 114).all() and (img[:, 500:] == 114).all()
    np.testing.assert_array_equal(out["boxes"], s["boxes"])
    full = make(640, 640, [[1, 2, 3, 4]])
    assert Pad(640)(full) is full
    with pytest.raises(ValueError, match="larger"):
        Pad(640)(make(700, 100, []))


def test_random_resize_by_hand():
    s = make(427, 640, [[64, 42.7, 320, 213.5], [600, 400, 700, 500]], gradient=True)
    # explicit target 1000x1000: f = min(1000/640, 1000/427) = 1.5625 -> w 1000, h int(667.1875 + 0.5) = 667
    out = RandomResize(1280, (0.5, 2.0)).resize(s, (1000, 1000))
    assert out["image"].shape == (667, 1000, 3)
    np.testing.assert_array_equal(out["image"], cv2.resize(s["image"], (1000, 667), interpolation=cv2.INTER_LINEAR))
    # x scale 1000/640 = 1.5625, y scale 667/427: 42.7 -> 66.7, 213.5 -> 333.5, 400 -> 624.8244;
    # the second box is clipped to the image
    np.testing.assert_allclose(out["boxes"], [[100, 66.7, 500, 333.5], [937.5, 624.8244, 1000, 667]], atol=1e-3)
    assert_masks_match_boxes(out)
    # rounding: 500x427 -> f = 640/500 = 1.28, h = int(427 * 1.28 + 0.5) = int(547.06) = 547 (fact sheet B)
    out = RandomResize(640).resize(make(427, 500, [[0, 0, 500, 427]]), (640, 640))
    assert out["image"].shape == (547, 640, 3)
    np.testing.assert_allclose(out["boxes"], [[0, 0, 640, 547]])
    # with the generator: r = U(0.5, 2.0) from default_rng(0).random() = 0.63696... -> r = 1.45544,
    # target int(1280 r) = 1862, f = 1862 / 640 -> (h, w) = (int(427 f + .5), int(640 f + .5)) = (1242, 1862)
    out = RandomResize(1280, (0.5, 2.0))(s, np.random.default_rng(0))
    assert out["image"].shape == (1242, 1862, 3)
    np.testing.assert_allclose(out["boxes"][0], [64 * 1862 / 640, 42.7 * 1242 / 427, 320 * 1862 / 640,
                                                 213.5 * 1242 / 427], rtol=1e-6)


def test_random_crop_by_hand():
    s = make(800, 1000, [[400, 300, 500, 400], [0, 0, 30, 30]], gradient=True)
    # default_rng(1): offset_h = integers(0, 161) = 76 first, then offset_w = integers(0, 361) = 184
    out = RandomCrop(640)(s, np.random.default_rng(1))
    np.testing.assert_array_equal(out["image"], s["image"][76:716, 184:824])
    np.testing.assert_array_equal(out["boxes"], [[216, 224, 316, 324]])  # the corner box fell outside
    assert out["labels"].tolist() == [0]
    assert_masks_match_boxes(out)
    # explicit offset (100, 50): a partly outside box is clipped, a box beyond the crop removed
    s = make(800, 1000, [[80, 40, 200, 100], [900, 700, 950, 750]], labels=[3, 4])
    out = RandomCrop(640).crop(s, 100, 50)
    np.testing.assert_array_equal(out["boxes"], [[0, 0, 100, 50]])
    assert out["labels"].tolist() == [3]
    assert_masks_match_boxes(out)
    # no gt left -> rejected, unless allow_negative_crop; an ignore box left counts as gt (reference)
    s = make(800, 1000, [[900, 700, 950, 750]])
    assert RandomCrop(640).crop(s, 0, 0) is None
    neg = RandomCrop(640, allow_negative_crop=True).crop(s, 0, 0)
    assert neg["boxes"].shape == (0, 4) and neg["masks"] == []
    s_ign = make(800, 1000, [[900, 700, 950, 750]], ignore=[[10, 10, 20, 20]], masks=False)
    assert RandomCrop(640).crop(s_ign, 0, 0)["ignore_boxes"].tolist() == [[10, 10, 20, 20]]
    # smaller than the crop: no crop at all
    small = make(300, 500, [[1, 2, 30, 40]], gradient=True)
    out = RandomCrop(640)(small, np.random.default_rng(0))
    np.testing.assert_array_equal(out["image"], small["image"])
    # recompute_bbox (RTMDet-Ins): boxes from the cropped polygons (here a triangle)
    tri = make(800, 1000, [[0, 0, 200, 200]], masks=False)
    tri["masks"] = [[np.array([[0, 0], [200, 0], [0, 200]], np.float32)]]
    out = RandomCrop(640, recompute_bbox=True).crop(tri, 50, 50)
    np.testing.assert_allclose(out["boxes"], [[0, 0, 100, 100]], atol=1e-4)


def test_clip_polygon():
    sq = rect([-10, -10, 10, 10])
    c = clip_polygon(sq, 0, 0, 100, 100)
    np.testing.assert_allclose([*c.min(0), *c.max(0)], [0, 0, 10, 10])
    tri = np.array([[0, 0], [20, 0], [0, 20]], np.float32)
    c = clip_polygon(tri, 5, 0, 100, 100)  # x >= 5: the triangle (5, 0), (20, 0), (5, 15)
    assert len(c) == 3
    np.testing.assert_allclose(cv2.contourArea(c), 0.5 * 15 * 15)
    c = clip_polygon(tri, 0, 0, 100, 10)  # y <= 10: the quadrilateral (0, 0), (20, 0), (10, 10), (0, 10)
    assert len(c) == 4
    np.testing.assert_allclose(cv2.contourArea(c), 200 - 50)
    assert len(clip_polygon(tri, 30, 30, 50, 50)) == 0


def test_hsv_fixed_gains_vs_explicit_cv2():
    img = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    img[0, 0] = (0, 10, 250)  # a red with hue 1: a negative gain wraps to 176+
    s = make(48, 64, [[1, 1, 5, 5]])
    s["image"] = img
    for gains in [(3, -20, 11), (-5, 0, -30), (0, 30, 0), (0, 0, 0), (5, 30, 30)]:
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.int16)  # the reference's arithmetic
        hsv[..., 0] = (hsv[..., 0] + gains[0]) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] + gains[1], 0, 255)
        hsv[..., 2] = np.clip(hsv[..., 2] + gains[2], 0, 255)
        expected = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
        out = YOLOXHSVRandomAug.apply(s, np.array(gains, np.int16))
        np.testing.assert_array_equal(out["image"], expected)
    assert cv2.cvtColor(YOLOXHSVRandomAug.apply(s, (-5, 0, 0))["image"][:1, :1], cv2.COLOR_BGR2HSV)[0, 0, 0] > 170
    # the random gains: U(-1, 1) * (5, 30, 30), each kept with probability 1/2, truncated to int16
    r = np.random.default_rng(7)
    g = r.uniform(-1, 1, 3) * [5, 30, 30]
    g = (g * r.integers(0, 2, 3)).astype(np.int16)
    out = YOLOXHSVRandomAug()(s, np.random.default_rng(7))
    np.testing.assert_array_equal(out["image"], YOLOXHSVRandomAug.apply(s, g)["image"])
    np.testing.assert_array_equal(out["boxes"], s["boxes"])


# --------------------------------------------------------------------------------------------- mosaic and mixup


COLOURS = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255), (255, 0, 255), (255, 255, 0), (40, 90, 200),
           (200, 40, 90)]


def test_mosaic_forced_centre_by_hand():
    s0 = make(480, 640, [[100, 100, 200, 200]], COLOURS[0], labels=[0])  # r = 1
    s1 = make(320, 320, [[0, 0, 160, 160]], COLOURS[1], labels=[1])  # r = 2 -> 640x640
    s2 = make(640, 1280, [[1200, 600, 1280, 640], [0, 0, 60, 60]], COLOURS[2], labels=[2, 5])  # r = .5 -> 320x640
    s3 = make(800, 600, [[500, 700, 600, 800]], COLOURS[3], labels=[3])  # r = .8 -> 480 wide, 640 high
    out = CachedMosaic(640).combine(s0, [s1, s2, s3], (600, 500))
    img = out["image"]
    assert img.shape == (1280, 1280, 3)
    # top-left s0 at (600 - 640, 500 - 480) = (-40, 20); top-right s1 at (600, 500 - 640) = (600, -140);
    # bottom-left s2 at (600 - 640, 500) = (-40, 500); bottom-right s3 at (600, 500)
    expected = [[60, 120, 160, 220],  # s0 box + (-40, 20)
                [600, 0, 920, 180],  # s1 box x2 = [0, 0, 320, 320] + (600, -140), clipped at y = 0
                [560, 800, 600, 820],  # s2 box x.5 = [600, 300, 640, 320] + (-40, 500)
                [1000, 1060, 1080, 1140]]  # s3 box x.8 = [400, 560, 480, 640] + (600, 500)
    np.testing.assert_allclose(out["boxes"], expected, atol=1e-4)
    assert out["labels"].tolist() == [0, 1, 2, 3]  # s2's [0, 0, 60, 60] -> [-40, 500, -10, 530]: outside, removed
    assert_masks_match_boxes(out)
    for (y, x), c in [((300, 300), 0), ((100, 700), 1), ((700, 300), 2), ((900, 800), 3)]:
        assert tuple(img[y, x]) == COLOURS[c]
    assert (img[:20, :600] == 114).all()  # above s0
    assert (img[1140:, 600:] == 114).all() and (img[500:, 1080:] == 114).all()  # around s3
    assert (img[:500, 1240:] == 114).all()  # right of s1 (600 + 640 = 1240)
    # the paste region of each image is the canvas-clipped one: s1's bottom 140 rows are at y 0..499
    assert (img[0:500, 600:1240] == COLOURS[1]).all()


def test_mosaic_cache_and_random_centre():
    m = CachedMosaic(640, max_cached_images=20, random_pop=False)
    samples = [make(100 + i, 120, [[10, 10, 50, 50]], COLOURS[i % 8]) for i in range(25)]
    rng = np.random.default_rng(0)
    outs = [m(s, rng) for s in samples]
    assert all(o is s for o, s in zip(outs[:4], samples[:4]))  # unchanged while the cache has <= 4 entries
    assert all(o["image"].shape == (1280, 1280, 3) for o in outs[4:])
    assert len(m.cache) == 20 and all(a is b for a, b in zip(m.cache, samples[5:]))  # FIFO: oldest popped
    m = CachedMosaic(640, max_cached_images=6, random_pop=True)
    for s in samples:
        m(s, rng)
    assert len(m.cache) == 6
    # the centre is int(U(0.5, 1.5) * 640) per axis: the top-left image's box shows where it went
    m = CachedMosaic(640)
    for s in samples[:4]:
        m(s, rng)
    for seed in range(5):
        s = make(640, 640, [[630, 630, 640, 640]], COLOURS[0])
        r = np.random.default_rng(seed)
        out = m(s, r)
        m.cache.pop()
        r2 = np.random.default_rng(seed)
        r2.random()  # the prob test, then 3 cache indices, one at a time
        [r2.integers(0, 5) for _ in range(3)]
        cx, cy = int(r2.uniform(0.5, 1.5) * 640), int(r2.uniform(0.5, 1.5) * 640)
        assert 320 <= cx <= 960 and 320 <= cy <= 960
        np.testing.assert_allclose(out["boxes"][0], [cx - 10, cy - 10, cx, cy])


def test_mixup_fixed_draws_by_hand():
    cur = make(500, 600, [[10, 10, 100, 100]], (0, 0, 200), labels=[0])
    other = make(320, 480, [[48, 30, 96, 90]], (200, 100, 0), labels=[7])
    # fit into 640x640: r = min(640/320, 640/480) = 4/3 -> 640 x int(426.67) = 426 rows; flipped; offset (20, 100)
    out = CachedMixUp(640, ratio_range=(1.0, 1.0)).mix(cur, other, 4 / 3, True, (20, 100))
    assert out["image"].shape == (500, 600, 3)
    # other box: x4/3 = [64, 40, 128, 120]; flip in 640: [512, 40, 576, 120]; shift (-20, -100): [492, -60, 556, 20]
    np.testing.assert_allclose(out["boxes"], [[10, 10, 100, 100], [492, 0, 556, 20]], atol=1e-4)
    assert out["labels"].tolist() == [0, 7]
    assert_masks_match_boxes(out)
    # 0.5 / 0.5 blend truncated: rows 0..325 see the other image (426 - 100), below it the 114 padding
    assert tuple(out["image"][0, 0]) == ((0 + 200) // 2, (0 + 100) // 2, (200 + 0) // 2)
    assert tuple(out["image"][325, 300]) == (100, 50, 100)
    assert tuple(out["image"][326, 300]) == (57, 57, (200 + 114) // 2)
    # __call__ = the same with draws: prob, index (until one with gt), jitter, flip (> flip_ratio), y then x offset
    mix = CachedMixUp(640, ratio_range=(1.0, 1.0), max_cached_images=3, random_pop=False)
    empty = make(200, 200, [], (9, 9, 9))
    assert mix(other, np.random.default_rng(0)) is other  # a single cached sample: unchanged
    mix(empty, np.random.default_rng(0))
    for seed in range(4):
        cache_before = list(mix.cache)
        out = mix(cur, np.random.default_rng(seed))
        cache_after = list(mix.cache)
        mix.cache[:] = cache_before  # keep the same cache for each seed
        r = np.random.default_rng(seed)
        r.random()
        for _ in range(15):
            pick = cache_after[int(r.integers(0, 3))]
            if len(pick["boxes"]):
                break
        r.uniform(1.0, 1.0)
        flip = r.random() > 0.5
        h, w = pick["image"].shape[:2]
        scale = min(640 / h, 640 / w)
        y_off, x_off = int(r.integers(0, 141)), int(r.integers(0, 41))  # padded 640x640 over the 500x600 frame
        expected = CachedMixUp(640, ratio_range=(1.0, 1.0)).mix(cur, pick, scale, flip, (x_off, y_off))
        np.testing.assert_array_equal(out["image"], expected["image"])
        np.testing.assert_array_equal(out["boxes"], expected["boxes"])
    # cache: FIFO when random_pop is False
    mix = CachedMixUp(640, max_cached_images=3, random_pop=False)
    seq = [make(100, 100, [[1, 1, 9, 9]]) for _ in range(5)]
    for s in seq:
        mix(s, np.random.default_rng(0))
    assert [id(s) for s in mix.cache] == [id(s) for s in seq[2:]]
    # prob 0.5 (tiny): skipped when the draw is above it
    mix = CachedMixUp(640, prob=0.5)
    mix(seq[0], np.random.default_rng(0))
    seed = next(k for k in range(50) if np.random.default_rng(k).random() > 0.5)
    assert mix(cur, np.random.default_rng(seed)) is cur


def test_filter_annotations():
    s = make(100, 100, [[0, 0, 1, 5], [0, 0, 2, 2]])
    out = FilterAnnotations((1, 1))(s)
    assert out["boxes"].tolist() == [[0, 0, 2, 2]] and out["labels"].tolist() == [1] and len(out["masks"]) == 1
    assert FilterAnnotations((1, 1))(make(100, 100, [[0, 0, 1, 1]])) is None
    empty = make(100, 100, [])
    assert FilterAnnotations()(empty) is empty


# --------------------------------------------------------------------------------------------- pipelines


def test_build_train_pipeline_per_size():
    def kinds(p):
        return [type(t).__name__ for t in p.transforms]

    p = build_train_pipeline("tiny")
    assert kinds(p) == ["CachedMosaic", "RandomResize", "RandomCrop", "YOLOXHSVRandomAug", "RandomFlip", "Pad",
                        "CachedMixUp"]
    mosaic, resize, crop, _, flip, pad, mix = p.transforms
    assert (mosaic.img_scale, mosaic.max_cached_images, mosaic.random_pop, mosaic.pad_val) == ((640, 640), 20, False,
                                                                                               114)
    assert mosaic.center_ratio_range == (0.5, 1.5)
    assert (resize.scale, resize.ratio_range, resize.keep_ratio) == ((1280, 1280), (0.5, 2.0), True)
    assert (crop.crop_size, crop.allow_negative_crop) == ((640, 640), False)
    assert flip.prob == 0.5 and (pad.size, pad.pad_val) == ((640, 640), 114)
    assert (mix.max_cached_images, mix.random_pop, mix.prob, mix.ratio_range, mix.flip_ratio) == (10, False, 0.5,
                                                                                                  (1.0, 1.0), 0.5)
    s = build_train_pipeline("rtmdet-s").transforms
    assert s[1].ratio_range == (0.5, 2.0) and (s[0].max_cached_images, s[0].random_pop) == (40, True)
    assert (s[-1].max_cached_images, s[-1].random_pop, s[-1].prob) == (20, True, 1.0)
    for name in ("m", "l", "x"):
        t = build_train_pipeline(name).transforms
        assert t[1].ratio_range == (0.1, 2.0) and t[0].max_cached_images == 40 and t[-1].max_cached_images == 20
    st2 = build_train_pipeline("m", stage=2)
    assert kinds(st2) == ["RandomResize", "RandomCrop", "YOLOXHSVRandomAug", "RandomFlip", "Pad"]
    assert st2.transforms[0].scale == (640, 640) and st2.transforms[0].ratio_range == (0.1, 2.0)
    p6 = build_train_pipeline("x-p6", img_scale=1280).transforms
    assert p6[0].img_scale == (1280, 1280) and p6[1].scale == (2560, 2560) and p6[2].crop_size == (1280, 1280)
    ins = build_train_pipeline("rtmdet-ins-s", instance_masks=True)
    assert kinds(ins)[-1] == "FilterAnnotations" and ins.transforms[2].recompute_bbox
    with pytest.raises(ValueError, match="unknown RTMDet size"):
        build_train_pipeline("huge")


def test_pipeline_on_coco_boxes_inside(shared):
    ds = load_dataset(shared("data/coco_tiny/annotations/instances_train2017.json"), "train")
    for size in ("m", "tiny"):
        pipe = build_train_pipeline(size)
        rng = np.random.default_rng(0)
        n_out = 0
        for i in range(24):
            out = pipe(ds[i], rng)
            if out is None:
                continue
            n_out += 1
            assert out["image"].shape == (640, 640, 3) and out["image"].dtype == np.uint8
            b = out["boxes"]
            assert b.dtype == np.float32 and out["labels"].dtype == np.int64 and len(b) == len(out["labels"]) > 0
            assert (b >= 0).all() and (b <= 640).all() and (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
        assert n_out >= 18


def test_masks_move_like_boxes_through_the_pipeline():
    rng = np.random.default_rng(0)
    samples = []
    for i in range(12):
        h, w = int(rng.integers(200, 700)), int(rng.integers(200, 700))
        xy = rng.uniform(0, 1, (4, 2)) * [w, h]
        wh = rng.uniform(20, 200, (4, 2))
        boxes = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1)
        samples.append(make(h, w, boxes, COLOURS[i % 8]))
    for stage in (1, 2):
        pipe = build_train_pipeline("s", img_scale=320, stage=stage)
        r = np.random.default_rng(stage)
        checked = 0
        for k in range(30):
            out = pipe(samples[k % 12], r)
            if out is not None:
                assert_masks_match_boxes(out)
                checked += len(out["boxes"])
        assert checked > 20


def rbox_sample(rng, colour):
    """A sample whose masks are its rotated boxes' corners and whose boxes are their (clipped) bounds."""
    h, w = int(rng.integers(200, 600)), int(rng.integers(200, 600))
    n = 4
    bw = rng.uniform(30, 150, n)
    rb = np.stack([rng.uniform(0.1, 0.9, n) * w, rng.uniform(0.1, 0.9, n) * h, bw, bw * rng.uniform(0.3, 0.7, n),
                   rng.uniform(-1.5, 1.5, n)], 1).astype(np.float32)
    corners = rbox_to_polygon(rb)
    boxes = np.clip(np.concatenate([corners.min(1), corners.max(1)], 1), 0, [w, h, w, h])
    s = make(h, w, boxes, colour, masks=False)
    s["masks"] = [[c] for c in corners]
    s["rboxes"] = rb
    return s


def test_rotated_boxes_move_with_their_objects_through_the_pipeline():
    rng = np.random.default_rng(0)
    samples = [rbox_sample(rng, COLOURS[i % 8]) for i in range(12)]
    checked = whole = 0
    for stage in (1, 2):
        pipe, plain = (build_train_pipeline("s", img_scale=320, stage=stage) for _ in range(2))
        r, r_plain = np.random.default_rng(stage), np.random.default_rng(stage)
        for k in range(30):
            out = pipe(samples[k % 12], r)
            ref = plain({key: v for key, v in samples[k % 12].items() if key != "rboxes"}, r_plain)
            assert (out is None) == (ref is None)
            if out is None:
                continue
            for key in ("image", "boxes", "labels", "ignore_boxes"):  # carrying rboxes changes nothing else
                np.testing.assert_array_equal(out[key], ref[key])
            assert len(out["rboxes"]) == len(out["labels"]) == len(out["masks"])
            assert (out["rboxes"][:, 2] >= out["rboxes"][:, 3]).all()  # le90
            assert (np.abs(out["rboxes"][:, 4]) <= np.float32(np.pi / 2)).all()
            for rbox, polys in zip(out["rboxes"], out["masks"]):
                cx, cy, bw, bh, a = rbox.astype(np.float64)
                for p in polys:  # the (possibly clipped) polygon lies in the rotated box
                    d = p - [cx, cy]
                    u = d @ [np.cos(a), np.sin(a)]
                    v = d @ [-np.sin(a), np.cos(a)]
                    assert (np.abs(u) <= bw / 2 + 1e-2).all() and (np.abs(v) <= bh / 2 + 1e-2).all()
                checked += 1
                if len(polys) == 1 and cv2.contourArea(polys[0]) >= 0.99 * bw * bh:  # never clipped: the same box
                    np.testing.assert_allclose(polygon_to_rbox(polys)[0, :4], rbox[:4], rtol=1e-3, atol=1e-2)
                    whole += 1
    assert checked > 100 and whole > 50
    # the DataLoader target carries them
    td = TrainDataset(ListDataset(samples), "tiny", img_scale=256)
    for i in range(8):
        _, t = td[i]
        assert t["rboxes"].dtype == torch.float32 and t["rboxes"].shape == (len(t["labels"]), 5)


def test_mosaic_and_mixup_drop_fields_one_image_lacks():
    rng = np.random.default_rng(1)
    parts = [rbox_sample(rng, COLOURS[i]) for i in range(4)]
    out = CachedMosaic(320).combine(parts[0], parts[1:], (320, 320))
    assert len(out["rboxes"]) == len(out["labels"]) == len(out["masks"]) > 0
    bare = {k: v for k, v in parts[1].items() if k not in ("rboxes", "masks")}
    out = CachedMosaic(320).combine(parts[0], [bare, *parts[2:]], (320, 320))
    assert "rboxes" not in out and "masks" not in out and len(out["boxes"]) == len(out["labels"])
    out = CachedMixUp(320, ratio_range=(1.0, 1.0)).mix(parts[0], bare, 0.5, False, (0, 0))
    assert "rboxes" not in out and "masks" not in out
    out = CachedMixUp(320, ratio_range=(1.0, 1.0)).mix(parts[0], parts[1], 0.5, True, (0, 0))
    assert len(out["rboxes"]) == len(out["labels"]) == len(out["masks"])


class ListDataset:
    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return dict(self.samples[i])


def solid_dataset(n=8):
    shapes = [(200, 300), (260, 180), (320, 320), (150, 400)]
    return ListDataset([make(*shapes[i % 4], [[20, 20, shapes[i % 4][1] - 20, shapes[i % 4][0] - 20]], COLOURS[i],
                             masks=False) for i in range(n)])


def n_sources(img_chw):
    """Colour clusters (L-inf distance <= 2: OpenCV's HSV->BGR rounds a constant image's SIMD tail differently)
    covering >= 1 % of the image, the 114 padding excluded."""
    colours, counts = np.unique(img_chw.reshape(3, -1).T.numpy().astype(int), axis=0, return_counts=True)
    centres: list[np.ndarray] = []
    shares: list[int] = []
    for k in np.argsort(-counts):
        near = [i for i, c in enumerate(centres) if np.abs(c - colours[k]).max() <= 2]
        if near:
            shares[near[0]] += counts[k]
        else:
            centres.append(colours[k])
            shares.append(counts[k])
    total = counts.sum()
    return sum(1 for c, n in zip(centres, shares) if n >= 0.01 * total and np.abs(c - 114).max() > 2)


def test_stage_switch_removes_mosaic_and_mixup():
    td = TrainDataset(solid_dataset(), "tiny", img_scale=320, max_epochs=10, stage2_epochs=2, normalize=False)
    assert td.stage == 1 and td.switch_epoch == 8
    assert any(type(t).__name__ == "CachedMosaic" for t in td.pipeline.transforms)
    sources = [n_sources(td[i % 8][0]) for i in range(16)]
    assert sources[:4] == [1] * 4 and max(sources[5:]) >= 2  # mosaic / mixup: several source images in one
    assert td.set_epoch(7) is False and td.stage == 1
    assert td.set_epoch(8) is True and td.stage == 2
    assert not any(type(t).__name__ in ("CachedMosaic", "CachedMixUp") for t in td.pipeline.transforms)
    for i in range(16):
        img, target = td[i % 8]
        assert img.shape == (3, 320, 320) and img.dtype == torch.uint8
        assert n_sources(img) == 1  # one source colour (HSV-shifted) besides the 114 padding
    assert td.set_epoch(9) is False
    resumed = TrainDataset(solid_dataset(), "tiny", img_scale=320, max_epochs=10, stage2_epochs=2, epoch=9)
    assert resumed.stage == 2
    td.set_stage(1)
    assert td.stage == 1 and len(td.pipeline.transforms) == 7


def test_same_seed_same_samples_other_epoch_differs():
    order = [3, 1, 4, 1, 5, 0, 2, 6, 5, 3, 7, 7]

    def run(seed, epoch):
        td = TrainDataset(solid_dataset(), "s", img_scale=320, seed=seed, epoch=epoch)
        return [td[i] for i in order]

    a, b, c, d = run(0, 0), run(0, 0), run(0, 1), run(1, 0)
    for (ia, ta), (ib, tb) in zip(a, b):
        assert ia.dtype == torch.float32 and torch.equal(ia, ib)
        assert torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["labels"], tb["labels"])
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(a, c))
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(a, d))


def test_train_output_normalised_and_rejections_resampled():
    ds = solid_dataset()
    td = TrainDataset(ds, "tiny", img_scale=320, max_epochs=10, stage2_epochs=2, epoch=9)
    img, target = td[0]
    raw = td.get_sample(0)  # same seed, same index: the same sample (stage 2 has no cache)
    mean = torch.tensor([103.53, 116.28, 123.675]).view(3, 1, 1)
    std = torch.tensor([57.375, 57.12, 58.395]).view(3, 1, 1)
    expected = (torch.from_numpy(raw["image"]).permute(2, 0, 1).float() - mean) / std
    assert torch.equal(img, expected) and set(target) == {"boxes", "labels"}  # exactly the float32 arithmetic
    raw_u8 = TrainDataset(ds, "tiny", img_scale=320, max_epochs=10, stage2_epochs=2, epoch=9, normalize=False)[0][0]
    assert raw_u8.dtype == torch.uint8 and torch.equal(normalize_batch(raw_u8[None])[0], img)
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    # a sample without gt is always rejected by RandomCrop: another index is drawn until one passes
    bad = ListDataset([make(400, 400, [], masks=False)] + ds.samples[:1])
    td = TrainDataset(bad, "m", img_scale=320, max_epochs=10, stage2_epochs=2, epoch=9)
    _, t = td[0]
    assert len(t["boxes"]) == 1 and td.num_refetch >= 1


def test_loader_workers_see_epoch_and_match_main_process():
    ds = solid_dataset()
    td = TrainDataset(ds, "s", img_scale=256, seed=3)
    loader = build_train_loader(td, batch_size=4, num_workers=1, persistent_workers=True)
    got = []
    for epoch in (0, 1):
        td.set_epoch(epoch)
        for images, targets in loader:
            assert images.shape == (len(targets), 3, 256, 256) and images.dtype == torch.float32
            got.extend(images)
    # the same sequence in the main process (worker id 0, same sampler order, caches carried over)
    ref = TrainDataset(ds, "s", img_scale=256, seed=3)
    want = []
    for epoch in (0, 1):
        ref.set_epoch(epoch)
        order = list(EpochSampler(ref, shuffle=True, seed=3))
        want.extend(ref[i][0] for i in order)
    assert len(got) == len(want) == 16
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert not torch.equal(torch.stack(got[:8]), torch.stack(got[8:]))


def test_loader_two_workers_and_collate():
    td = TrainDataset(solid_dataset(), "tiny", img_scale=256)
    loader = build_train_loader(td, batch_size=3, num_workers=2, persistent_workers=False)
    batches = list(loader)
    assert [b[0].shape[0] for b in batches] == [3, 3, 2]
    for _, targets in batches:
        assert all(t["boxes"].shape[1] == 4 and len(t["boxes"]) == len(t["labels"]) for t in targets)
    images, targets = collate([(torch.zeros(3, 4, 4), {"boxes": torch.zeros(0, 4)})] * 2)
    assert images.shape == (2, 3, 4, 4) and len(targets) == 2


def test_instance_masks_reach_the_target():
    ds = ListDataset([make(300 + 20 * i, 400, [[10, 10, 200, 150], [150, 100, 390, 290]], COLOURS[i])
                      for i in range(8)])
    td = TrainDataset(ds, "tiny", img_scale=256, with_masks=True)
    assert type(td.pipeline.transforms[-1]).__name__ == "FilterAnnotations"
    for i in range(12):
        image, t = td[i % 8]
        assert len(t["masks"]) == len(t["boxes"]) == len(t["labels"])
        assert t["masks"].dtype == torch.bool and t["masks"].shape[1:] == image.shape[1:] == (256, 256)
        sample = td.get_sample(i % 8)  # the same draw (seeded by index and epoch): its polygons
        for poly, box in zip(sample["masks"], sample["boxes"]):  # recompute_bbox: boxes are the polygons' bounds
            pts = np.concatenate(poly)
            np.testing.assert_allclose([*pts.min(0), *pts.max(0)], box, atol=1e-3)
        for mask, box in zip(t["masks"].numpy(), t["boxes"].numpy()):  # bitmaps fill their boxes' pixels
            ys, xs = np.nonzero(mask)
            assert abs(xs.min() - box[0]) <= 1 and abs(xs.max() + 1 - box[2]) <= 1
            assert abs(ys.min() - box[1]) <= 1 and abs(ys.max() + 1 - box[3]) <= 1
    assert "masks" not in TrainDataset(ds, "tiny", img_scale=256)[0][1]


def test_val_dataset_is_letterbox():
    s = make(427, 640, [[64, 42.7, 320, 213.5]], gradient=True)
    val = ValDataset(ListDataset([s]), img_scale=320)
    img, target = val[0]
    canvas, (ws, hs) = letterbox(s["image"], 320)
    assert (ws, hs) == (0.5, 214 / 427) and target["scale_factor"] == (ws, hs)
    mean = torch.tensor([103.53, 116.28, 123.675]).view(3, 1, 1)
    std = torch.tensor([57.375, 57.12, 58.395]).view(3, 1, 1)
    assert torch.equal(img, (torch.from_numpy(canvas).permute(2, 0, 1).float() - mean) / std)
    np.testing.assert_allclose(target["boxes"].numpy(), [[32, 42.7 * hs, 160, 213.5 * hs]], rtol=1e-6)
