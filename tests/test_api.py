"""The RTMDet class and Result: building, checkpoints (both real nano files, wrong architecture, save/reload),
post-processing presets and overrides, and Result's drawing / export helpers."""

from __future__ import annotations

import json
import re
import sys

import cv2
import numpy as np
import pytest
import torch

from rtmkit import RTMDet, get_config
from rtmkit.checkpoint import CheckpointError, load_checkpoint_file
from rtmkit.models.detector import RTMDetNet

NANO = "weights/rtmdet_nano_person/rtmdet_nano_person.pth"
NANO_TRAIN = "weights/rtmdet_nano_person/rtmdet_nano_person_mmengine_training.pth"
VAL = "data/coco_tiny/val2017"
IMAGES = ["000000064523.jpg", "000000005001.jpg", "000000376322.jpg"]  # all with several people


@pytest.fixture(scope="module")
def nano(shared):
    return RTMDet("rtmdet-nano-person", weights=shared(NANO), device="cpu")


@pytest.fixture(scope="module")
def images(shared):
    root = shared(VAL)
    out = {}
    for name in IMAGES:
        img = cv2.imread(str(root / name))
        assert img is not None
        out[name] = img
    return out


@pytest.fixture(scope="module")
def crowd_result(nano, images):
    r = nano.predict(images[IMAGES[0]])[0]
    assert len(r) >= 5
    return r


def pairwise_iou(b: np.ndarray) -> np.ndarray:
    b = b.astype(np.float64)
    x1 = np.maximum(b[:, None, 0], b[None, :, 0])
    y1 = np.maximum(b[:, None, 1], b[None, :, 1])
    x2 = np.minimum(b[:, None, 2], b[None, :, 2])
    y2 = np.minimum(b[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iou = inter / (area[:, None] + area[None, :] - inter)
    np.fill_diagonal(iou, 0)
    return iou


def assert_same(a, b, box_atol=0.0, score_atol=0.0):
    assert len(a) == len(b), f"{len(a)} vs {len(b)} detections"
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=box_atol, rtol=0)
    np.testing.assert_allclose(a.scores, b.scores, atol=score_atol, rtol=0)


# ---------------------------------------------------------------------------------------------- building


def test_fresh_rtmdet_s_forward_shapes():
    torch.manual_seed(0)
    model = RTMDet("rtmdet-s", device="cpu")
    assert model.weights is None and model.cfg.num_classes == 80 and len(model.names) == 80
    assert model.names[0] == "person"
    with torch.inference_mode():
        cls_scores, bbox_preds = model.net(torch.randn(1, 3, 320, 320))
    assert isinstance(cls_scores, (list, tuple)) and isinstance(bbox_preds, (list, tuple))
    assert [tuple(t.shape) for t in cls_scores] == [(1, 80, 40, 40), (1, 80, 20, 20), (1, 80, 10, 10)]
    assert [tuple(t.shape) for t in bbox_preds] == [(1, 4, 40, 40), (1, 4, 20, 20), (1, 4, 10, 10)]
    assert all(torch.isfinite(t).all() for t in [*cls_scores, *bbox_preds])


def test_get_config_num_classes_and_names():
    cfg = get_config("rtmdet-s", num_classes=3)
    assert cfg.num_classes == 3 and cfg.class_names is None
    assert get_config("rtmdet-s").num_classes == 80  # the registry is not mutated
    net = RTMDetNet(cfg).eval()
    with torch.inference_mode():
        cls_scores, bbox_preds = net(torch.randn(2, 3, 64, 64))
    assert [tuple(t.shape) for t in cls_scores] == [(2, 3, 8, 8), (2, 3, 4, 4), (2, 3, 2, 2)]
    assert [t.shape[1] for t in bbox_preds] == [4, 4, 4]

    model = RTMDet("rtmdet-tiny", num_classes=3, device="cpu")
    assert model.names == {0: "class0", 1: "class1", 2: "class2"}
    named = RTMDet("rtmdet-tiny", num_classes=2, class_names=["cat", "dog"], device="cpu")
    assert named.names == {0: "cat", 1: "dog"}
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        get_config("rtmdet-s", num_classes=3, class_names=("a", "b"))
    with pytest.raises(KeyError, match="unknown model"):
        get_config("rtmdet-huge")


def test_imgsz_must_be_multiple_of_stride(nano, images):
    img = images[IMAGES[0]]
    with pytest.raises(ValueError, match="multiple of 32"):
        nano.predict(img, imgsz=300)
    r = nano.predict(img, imgsz=256)[0]  # a valid other size works
    assert r.orig_shape == img.shape[:2]
    assert (r.boxes[:, 0::2] <= 640 * 320 / 256 + 1).all()


def test_bad_preset_and_overrides_refused(nano, images):
    img = images[IMAGES[0]]
    with pytest.raises(ValueError, match="unknown preset"):
        nano.predict(img, preset="fast")
    with pytest.raises(ValueError, match="clip must be one of"):
        nano.predict(img, clip="box")
    with pytest.raises(ValueError, match=re.escape("iou (NMS IoU threshold) must be in [0, 1], got 1.5")):
        nano.predict(img, iou=1.5)
    with pytest.raises(TypeError):
        nano.predict(img, confidence=0.5)


# ---------------------------------------------------------------------------------------------- checkpoints


def test_training_checkpoint_gives_identical_detections(shared, nano, images):
    train = RTMDet("rtmdet-nano-person", weights=shared(NANO_TRAIN), device="cpu")
    assert train.names == nano.names == {0: "person"}
    for name, img in images.items():
        a, b = nano.predict(img, preset="eval")[0], train.predict(img, preset="eval")[0]
        assert len(a) > 0, name
        assert_same(a, b)

    # It took "state_dict" (the EMA weights), not the deliberately different "ema_state_dict".
    ckpt = load_checkpoint_file(shared(NANO_TRAIN))
    key = "bbox_head.rtm_cls.0.bias"
    assert not torch.equal(ckpt["state_dict"][key], ckpt["ema_state_dict"]["module." + key])
    loaded = train.net.state_dict()[key]
    assert torch.equal(loaded, ckpt["state_dict"][key])
    assert "mmengine" not in sys.modules


def test_wrong_architecture_checkpoint_names_keys(shared):
    with pytest.raises(CheckpointError) as info:
        RTMDet("rtmdet-tiny", weights=shared(NANO), device="cpu")
    msg = str(info.value)
    assert str(shared(NANO)) in msg
    assert "different shape" in msg
    assert "backbone.stem.0.conv.weight" in msg and "checkpoint (8, 3, 3, 3)" in msg


def test_num_classes_taken_from_checkpoint(shared, nano):
    # Asking for 80 classes explicitly on a 1-class checkpoint is a shape mismatch in the classifier.
    with pytest.raises(CheckpointError, match="rtm_cls"):
        RTMDet("rtmdet-nano-person", weights=shared(NANO), num_classes=80, device="cpu")
    assert nano.cfg.num_classes == 1


def test_save_and_reload(nano, images, tmp_path):
    path = nano.save(tmp_path / "nano_rtmkit.pth")
    assert path.is_file()
    reloaded = RTMDet(str(path), device="cpu")
    assert reloaded.cfg.to_dict() == nano.cfg.to_dict()
    assert reloaded.names == nano.names
    assert reloaded.weights == str(path)
    for img in images.values():
        assert_same(reloaded.predict(img, preset="eval")[0], nano.predict(img, preset="eval")[0])
    # Custom names survive too.
    custom = RTMDet("rtmdet-tiny", num_classes=2, class_names=("cat", "dog"), device="cpu")
    again = RTMDet(str(custom.save(tmp_path / "custom.pth")), device="cpu")
    assert again.names == {0: "cat", 1: "dog"} and again.cfg.name == "rtmdet-tiny"
    with pytest.raises(ValueError, match="not both"):
        RTMDet(str(path), weights=str(path), device="cpu")


def test_official_checkpoint_as_model_is_refused_with_hint(shared):
    with pytest.raises(CheckpointError) as info:
        RTMDet(str(shared(NANO)), device="cpu")
    msg = str(info.value)
    assert msg.startswith(str(shared(NANO)))
    assert "does not say which architecture" in msg
    assert "RTMDet('<config name>', weights=" in msg


def test_official_checkpoint_hint_shows_the_path(shared):
    with pytest.raises(CheckpointError) as info:
        RTMDet(str(shared(NANO)), device="cpu")
    assert f"weights='{shared(NANO)}'" in str(info.value)
    assert "{model_str}" not in str(info.value)


# ---------------------------------------------------------------------------------------------- presets, overrides


def test_deploy_vs_eval_presets(nano, images):
    for name, img in images.items():
        dep = nano.predict(img)[0]
        ev = nano.predict(img, preset="eval")[0]
        assert len(ev) >= len(dep) > 0, name
        assert (dep.scores > 0.3).all() and len(dep) <= 100
        assert (ev.scores > 0.05).all() and len(ev) <= 100  # nano's test_cfg
        assert (np.diff(dep.scores) <= 0).all() and (np.diff(ev.scores) <= 0).all()  # sorted
        # Greedy NMS keeps a box depending only on higher-scored boxes: deploy = eval above 0.3.
        assert_same(dep, ev.filter(0.3 + 1e-7), box_atol=1e-4, score_atol=1e-6)


def test_conf_iou_max_det_overrides(nano, images):
    img = images[IMAGES[0]]
    dep = nano.predict(img)[0]
    hi = nano.predict(img, conf=0.5)[0]
    assert 0 < len(hi) < len(dep) and (hi.scores > 0.5).all()
    assert_same(hi, dep.filter(0.5 + 1e-7), box_atol=1e-4, score_atol=1e-6)

    top2 = nano.predict(img, max_det=2)[0]
    assert len(top2) == 2
    assert_same(top2, dep.filter(dep.scores[1]), box_atol=1e-4, score_atol=1e-6)

    ev = nano.predict(img, preset="eval")[0]
    assert pairwise_iou(ev.boxes).max() > 0.3  # the next check is not trivially true
    strict = nano.predict(img, preset="eval", iou=0.3)[0]
    assert len(strict) < len(ev)
    assert pairwise_iou(strict.boxes).max() <= 0.3 + 1e-4
    assert pairwise_iou(ev.boxes).max() <= 0.6 + 1e-4


@pytest.fixture(scope="module")
def two_class_nano(nano):
    """The nano person model with its classifier duplicated: class 1 is class 0 with a slightly lower logit."""
    model = RTMDet("rtmdet-nano-person", num_classes=2, class_names=("person", "person_copy"), device="cpu")
    sd = nano.net.state_dict()
    for key in list(sd):
        if key.startswith("bbox_head.rtm_cls."):
            if key.endswith("weight"):
                sd[key] = torch.cat([sd[key], sd[key]])
            else:
                sd[key] = torch.cat([sd[key], sd[key] - 0.05])
    model.net.load_state_dict(sd)
    return model


def test_agnostic_nms(two_class_nano, nano, images):
    img = images[IMAGES[0]]
    aware = two_class_nano.predict(img, preset="eval", max_det=300)[0]
    # Class-aware NMS keeps the duplicate of every box under the other label.
    assert set(aware.labels.tolist()) == {0, 1}
    assert pairwise_iou(aware.boxes).max() > 0.99

    agn = two_class_nano.predict(img, preset="eval", max_det=300, agnostic=True)[0]
    assert len(agn) > 0
    assert pairwise_iou(agn.boxes).max() <= 0.6 + 1e-4
    for iou in (0.3, 0.45):
        r = two_class_nano.predict(img, preset="eval", agnostic=True, iou=iou)[0]
        assert pairwise_iou(r.boxes).max() <= iou + 1e-4
    # Class 0 always scores higher, so agnostic NMS reproduces the one-class model.
    assert (agn.labels == 0).all()
    assert_same(agn, nano.predict(img, preset="eval", max_det=300)[0], box_atol=1e-4, score_atol=1e-6)


def test_clip_modes(nano, images):
    img = images["000000005001.jpg"]  # people cut by the bottom edge
    h, w = img.shape[:2]
    scale = 320 / max(h, w)
    default = nano.predict(img, preset="eval")[0]
    # The reference's clamp is to the padded input: boxes may go past the image, but not past the padding.
    assert default.boxes[:, 3].max() > h
    assert (default.boxes >= 0).all()
    assert (default.boxes[:, 0::2] <= 320 / scale + 1e-3).all() and (default.boxes[:, 1::2] <= 320 / scale + 1e-3).all()

    clipped = nano.predict(img, preset="eval", clip="image")[0]
    assert len(clipped) > 0
    assert (clipped.boxes >= 0).all()
    assert (clipped.boxes[:, 0::2] <= w).all() and (clipped.boxes[:, 1::2] <= h).all()
    assert clipped.boxes[:, 3].max() == pytest.approx(h)

    unclamped = nano.predict(img, preset="eval", clip="none")[0]
    assert len(unclamped) > 0 and np.isfinite(unclamped.boxes).all()


# ---------------------------------------------------------------------------------------------- Result


def test_result_fields(crowd_result, nano):
    r = crowd_result
    n = len(r)
    assert r.boxes.shape == (n, 4) and r.boxes.dtype == np.float32
    assert r.scores.shape == (n,) and r.scores.dtype == np.float32
    assert r.labels.shape == (n,) and np.issubdtype(r.labels.dtype, np.integer)
    assert r.names == nano.names and r.class_names == ["person"] * n
    assert r.orig_shape == (444, 640)
    assert set(r.speed) == {"preprocess", "forward", "postprocess"} and all(v >= 0 for v in r.speed.values())
    assert f"{n} detections" in repr(r)


def test_plot_draws_on_a_copy_inside_the_boxes(crowd_result, images):
    r = crowd_result
    img = images[IMAGES[0]]
    before = img.copy()
    plotted = r.plot()
    assert plotted.shape == img.shape and plotted.dtype == np.uint8
    np.testing.assert_array_equal(img, before)  # the original is not drawn on
    assert (plotted != img).any()

    lw = 2
    outline = r.plot(line_width=lw, labels=False, conf=False)
    changed = (outline != img).any(axis=2)
    allowed = np.zeros(img.shape[:2], np.uint8)
    for x1, y1, x2, y2 in np.round(r.boxes).astype(int):
        cv2.rectangle(allowed, (x1, y1), (x2, y2), 255, lw + 4)
    assert changed.any()
    assert not (changed & (allowed == 0)).any(), "pixels changed away from the box outlines"
    hit = 0
    for x1, y1, x2, _ in np.round(r.boxes).astype(int):
        yy, xx = min(max(y1, 0), img.shape[0] - 1), (x1 + x2) // 2
        hit += bool(changed[max(yy - 1, 0):yy + 2, xx].any())
    assert hit == len(r)
    # Captions add pixels outside the outlines.
    assert ((plotted != img).any(axis=2) & (allowed == 0)).any()


def test_save_writes_readable_image(crowd_result, tmp_path):
    out = crowd_result.save(tmp_path / "sub" / "annotated.png")
    assert out.is_file()
    back = cv2.imread(str(out))
    np.testing.assert_array_equal(back, crowd_result.plot())  # PNG is lossless
    jpg = crowd_result.save(tmp_path / "annotated.jpg")
    assert cv2.imread(str(jpg)).shape == (444, 640, 3)

    # OpenCV raises cv2.error for an extension without an encoder; save() turns that into its documented OSError.
    with pytest.raises(OSError, match="could not write image"):
        crowd_result.save(tmp_path / "annotated.unknownext")


def test_to_json_and_to_list(crowd_result):
    r = crowd_result
    data = json.loads(r.to_json())
    assert len(data) == len(r)
    assert data == r.to_list()
    boxes = np.array([[d["box"][k] for k in ("x1", "y1", "x2", "y2")] for d in data], np.float32)
    np.testing.assert_array_equal(boxes, r.boxes)
    np.testing.assert_array_equal(np.array([d["score"] for d in data], np.float32), r.scores)
    assert all(d["name"] == "person" and d["class"] == 0 for d in data)
    assert json.loads(r.to_json(indent=2)) == data


def test_filter(crowd_result):
    r = crowd_result
    thr = float(np.median(r.scores))
    f = r.filter(thr)
    keep = r.scores >= thr
    assert 0 < len(f) < len(r) and len(f) == int(keep.sum())
    np.testing.assert_array_equal(f.boxes, r.boxes[keep])
    np.testing.assert_array_equal(f.scores, r.scores[keep])
    assert f.orig_shape == r.orig_shape and f.names == r.names
    assert len(r.filter(1.01)) == 0 and len(r.filter(0.0)) == len(r)
    assert len(r) >= 5  # the original is unchanged


def test_to_supervision_without_package(crowd_result, monkeypatch):
    monkeypatch.setitem(sys.modules, "supervision", None)  # import fails as if not installed
    with pytest.raises(ImportError, match="pip install supervision"):
        crowd_result.to_supervision()


def test_to_supervision_with_package(crowd_result):
    sv = pytest.importorskip("supervision")
    det = crowd_result.to_supervision()
    assert isinstance(det, sv.Detections)
    np.testing.assert_array_equal(det.xyxy, crowd_result.boxes)
    np.testing.assert_array_equal(det.confidence, crowd_result.scores)
    assert list(det.data["class_name"]) == crowd_result.class_names
