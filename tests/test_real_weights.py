"""The real trained RTMDet-nano person model (shared/weights): against the official ONNX export run by ONNX
Runtime, and person AP against the reference's figure."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from rtmkit import RTMDet
from rtmkit.data.preprocess import preprocess
from rtmkit.eval.coco import coco_evaluate, label_to_category, to_coco_detections
from rtmkit.ops.boxes import box_iou

WEIGHTS = "weights/rtmdet_nano_person"
# The end-to-end graph's own post-processing (read from its NonMaxSuppression/TopK nodes): score > 0.05,
# IoU 0.6, 100 per image, no clamping, NMS in network-input pixels, no size filter.
GRAPH_POST = dict(conf=0.05, iou=0.6, max_det=100, clip="none", nms_space="input", min_size=-1)


@pytest.fixture(scope="module")
def person_images(shared):
    gt = json.loads(shared("data/coco_tiny/annotations/instances_val2017.json").read_text())
    ids = sorted({a["image_id"] for a in gt["annotations"] if a["category_id"] == 1})
    files = {i["id"]: i["file_name"] for i in gt["images"]}
    root = shared("data/coco_tiny/val2017")
    return gt, [(i, str(root / files[i])) for i in ids]


@pytest.fixture(scope="module")
def nano(shared):
    return RTMDet("rtmdet-nano-person", weights=shared(f"{WEIGHTS}/rtmdet_nano_person.pth"), device="cpu")


def _match(a_boxes, a_scores, b_boxes, b_scores, box_tol, score_tol):
    """Greedy one-to-one matching; returns indices of unmatched rows of a and of b."""
    used = np.zeros(len(b_boxes), bool)
    unmatched_a = []
    for i in range(len(a_boxes)):
        err = np.abs(b_boxes - a_boxes[i]).max(1) if len(b_boxes) else np.zeros(0)
        ok = (~used) & (err <= box_tol) & (np.abs(b_scores - a_scores[i]) <= score_tol)
        if ok.any():
            used[np.flatnonzero(ok)[np.argmin(err[ok])]] = True
        else:
            unmatched_a.append(i)
    return unmatched_a, list(np.flatnonzero(~used))


def test_matches_official_onnx_export(shared, nano, person_images):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(shared(f"{WEIGHTS}/end2end.onnx")), providers=["CPUExecutionProvider"])
    _, images = person_images
    total, flipped_images, worst_box, worst_score = 0, [], 0.0, 0.0
    for _, path in images:
        ours = nano.predict(path, **GRAPH_POST)[0]
        img = cv2.imread(path)
        batch, scales = preprocess([img], 320, nano.cfg.data.mean, nano.cfg.data.std)
        dets = sess.run(None, {"input": batch.numpy()})[0][0]
        dets = dets[dets[:, 4] > 0]
        theirs = dets[:, :4] / np.tile(scales[0].numpy(), 2)
        total += len(dets)
        un_t, un_o = _match(theirs, dets[:, 4], ours.boxes, ours.scores, box_tol=0.5, score_tol=1e-3)
        if un_t or un_o:
            # Only a borderline NMS decision may differ: some pair of detections must overlap at IoU within
            # 1e-3 of the threshold (the folded-BN graph's outputs differ from ours by ~1e-5).
            union = torch.from_numpy(np.concatenate([theirs, ours.boxes])).float() * torch.tensor(
                np.tile(scales[0].numpy(), 2)).float()
            iou = box_iou(union, union)
            assert ((iou - 0.6).abs() < 1e-3).any(), f"{path}: detections differ without a borderline IoU"
            flipped_images.append(path)
        matched_t = [i for i in range(len(dets)) if i not in un_t]
        for i in matched_t:
            j = np.argmin(np.abs(ours.boxes - theirs[i]).max(1))
            worst_box = max(worst_box, float(np.abs(ours.boxes[j] - theirs[i]).max()))
            worst_score = max(worst_score, float(abs(ours.scores[j] - dets[i, 4])))
    print(f"\n{total} ONNX detections, worst box {worst_box:.4f} px, worst score {worst_score:.2e}, "
          f"images with a borderline NMS flip: {len(flipped_images)}")
    assert total > 1000
    assert worst_box <= 0.5 and worst_score <= 1e-3
    assert len(flipped_images) <= 2


def test_person_ap_equals_reference(nano, person_images):
    pytest.importorskip("pycocotools")
    gt, images = person_images
    assert len(images) == 49
    label_map = label_to_category(list(nano.names.values()), gt["categories"])
    results = nano.predict([p for _, p in images], preset="eval", batch=4)
    dets = []
    for (image_id, _), r in zip(images, results):
        dets += to_coco_detections(image_id, r.boxes, r.scores, r.labels, label_map)
    stats = coco_evaluate(gt, dets, image_ids=[i for i, _ in images], category_ids=[1])
    print(f"\nperson AP {stats['AP']:.4f}, AP50 {stats['AP50']:.4f}")
    assert abs(stats["AP"] - 0.4012) <= 0.002
    assert abs(stats["AP50"] - 0.6688) <= 0.005


def test_batched_equals_one_by_one(nano, person_images):
    _, images = person_images
    paths = [p for _, p in images[:6]]
    batched = nano.predict(paths, preset="eval", batch=6)
    for path, rb in zip(paths, batched):
        rs = nano.predict(path, preset="eval")[0]
        assert len(rs) == len(rb)
        np.testing.assert_allclose(rs.boxes, rb.boxes, atol=1e-3)
        np.testing.assert_allclose(rs.scores, rb.scores, atol=1e-5)
        np.testing.assert_array_equal(rs.labels, rb.labels)


def test_val_uses_eval_preset_and_matches_reference_ap(nano, person_images, shared, tmp_path):
    gt, images = person_images
    ann = shared("data/coco_tiny/annotations/instances_val2017.json")
    stats = nano.val(ann, image_ids=[i for i, _ in images], batch=8, save_json=tmp_path / "dets.json")
    assert abs(stats["AP"] - 0.4012) <= 0.001  # the default (BN-folded, channels-last) path
    eager = nano.val(ann, image_ids=[i for i, _ in images], batch=8, fuse=False)
    assert abs(eager["AP"] - 0.4012) <= 0.001
    assert set(stats["per_class_AP"]) == {"person"}
    dets = json.loads((tmp_path / "dets.json").read_text())
    assert min(d["score"] for d in dets) > 0.05 - 1e-9 and {d["category_id"] for d in dets} == {1}
