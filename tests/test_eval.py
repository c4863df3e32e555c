"""COCO evaluation: rtmkit's summary and per-class AP against independent pycocotools runs."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from rtmkit.eval.coco import STAT_NAMES, coco_evaluate

pytest.importorskip("pycocotools")


def _noisy_detections(gt: dict, seed: int = 0) -> list[dict]:
    """Detections made from the ground truth: jittered boxes, some dropped, some with the wrong class, plus
    false positives, with random scores: every class gets a non-trivial AP between 0 and 1."""
    rng = np.random.default_rng(seed)
    cat_ids = [c["id"] for c in gt["categories"]]
    dets = []
    for a in gt["annotations"]:
        if a.get("iscrowd") or rng.random() < 0.2:
            continue
        x, y, w, h = a["bbox"]
        jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
        cat = a["category_id"] if rng.random() > 0.1 else int(rng.choice(cat_ids))
        dets.append({"image_id": a["image_id"], "category_id": cat, "score": float(rng.uniform(0.05, 1)),
                     "bbox": [float(v) for v in np.maximum([x, y, w, h] + jitter, [0, 0, 1, 1])]})
    for im in gt["images"]:
        for _ in range(3):
            w, h = rng.uniform(10, 200, 2)
            dets.append({"image_id": im["id"], "category_id": int(rng.choice(cat_ids)),
                         "score": float(rng.uniform(0, 0.6)),
                         "bbox": [float(rng.uniform(0, im["width"] - w)), float(rng.uniform(0, im["height"] - h)),
                                  float(w), float(h)]})
    return dets


def _pycocotools(gt: dict, dets: list[dict], cat_ids: list[int] | None = None) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(gt))
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(json.loads(json.dumps(dets))), "bbox")
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_summary_and_per_class_ap_equal_pycocotools(shared):
    gt = json.loads(shared("data/coco_tiny/annotations/instances_val2017.json").read_text())
    dets = _noisy_detections(gt)
    ours = coco_evaluate(gt, dets)
    theirs = _pycocotools(gt, dets)
    assert [ours[n] for n in STAT_NAMES] == pytest.approx(list(theirs), abs=1e-12)
    assert 0.2 < ours["AP"] < 0.9
    present = sorted({a["category_id"] for a in gt["annotations"]})
    checked = 0
    for cat in present[:12]:  # per class: COCOeval restricted to that one category
        alone = _pycocotools(gt, dets, [cat])[0]
        assert ours["per_class_AP"][cat] == pytest.approx(alone, abs=1e-12), cat
        checked += 0 < alone < 1
    assert checked >= 6  # most of those classes have a non-trivial AP
    # categories without ground truth: NaN (pycocotools' -1), left out of the mean
    absent = [c["id"] for c in gt["categories"] if c["id"] not in present]
    if absent:
        assert np.isnan(ours["per_class_AP"][absent[0]])
    assert np.nanmean(list(ours["per_class_AP"].values())) == pytest.approx(ours["AP"], abs=1e-12)


def test_no_detections_gives_zeros(shared):
    gt = json.loads(shared("data/coco_tiny/annotations/instances_val2017.json").read_text())
    stats = coco_evaluate(gt, [])
    assert all(stats[n] == 0.0 for n in STAT_NAMES)


def test_segm_evaluation_equals_pycocotools_directly(shared, tmp_path):
    """Mask AP through coco_evaluate(iou_type="segm") equals pycocotools run on the file, for masks that are the
    ground-truth polygons eroded by a few pixels (imperfect, so AP is between 0 and 1)."""
    import contextlib
    import io
    import json

    import cv2
    import numpy as np
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from rtmkit.eval.coco import coco_evaluate

    ann = shared("data/balloon/val.json")
    gt = json.loads(ann.read_text())
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    dets = []
    for k, a in enumerate(gt["annotations"]):
        h, w = sizes[a["image_id"]]
        m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], h, w)))
        m = cv2.erode(m, np.ones((3, 3), np.uint8), iterations=1 + k % 12)
        rle = mask_utils.encode(np.asfortranarray(m))
        rle = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}
        dets.append({"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": rle,
                     "score": 1.0 - k / 100})
    ours = coco_evaluate(gt, dets, iou_type="segm")
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(ann))
        ev = COCOeval(coco, coco.loadRes(str(tmp_path / "dets.json")), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert 0.0 < ours["AP"] < 1.0
    assert [ours[k] for k in ("AP", "AP50", "AP75", "AR100")] == [float(ev.stats[i]) for i in (0, 1, 2, 8)]
