"""Datasets: COCO json, YOLO txt, bad samples, the dataset check, the synthetic shapes set."""

from __future__ import annotations

import json
import shutil
import time
import warnings

import cv2
import numpy as np
import pytest

from rtmkit.data.check import check_dataset
from rtmkit.data.classes import COCO_CATEGORY_IDS
from rtmkit.data.datasets import (
    CocoDataset,
    DatasetError,
    DatasetWarning,
    YoloDataset,
    load_dataset,
    mask_to_polygons,
    rle_decode,
)
from rtmkit.data.images import ImageReadError
from rtmkit.data.synthetic import SHAPE_CLASSES, make_shapes_dataset, rbox_corners

VAL_JSON = "data/coco_tiny/annotations/instances_val2017.json"
TRAIN_JSON = "data/coco_tiny/annotations/instances_train2017.json"


def _by_id(ds):
    return {r["image_id"]: i for i, r in enumerate(ds.records)}


# ------------------------------------------------------------------------------------------------------ COCO


def test_coco_val_counts_crowd_labels(shared):
    ann = shared(VAL_JSON)
    data = json.loads(ann.read_text())
    ds = CocoDataset(ann, filter_empty_gt=False, min_size=0)
    assert len(ds) == len(data["images"]) == 80
    assert ds.img_dir == ann.parent.parent / "val2017"
    crowd = [a for a in data["annotations"] if a["iscrowd"]]
    n_boxes = sum(len(r["boxes"]) for r in ds.records)
    n_ignore = sum(len(r["ignore_boxes"]) for r in ds.records)
    assert n_ignore == len(crowd) == 11
    assert n_boxes + n_ignore == len(data["annotations"]) == 815  # none of them is degenerate
    # contiguous labels in category-id order, all 80 present in val
    assert ds.cat_ids == sorted(c["id"] for c in data["categories"]) == list(COCO_CATEGORY_IDS)
    labels = np.concatenate([r["labels"] for r in ds.records])
    assert labels.dtype == np.int64 and set(labels.tolist()) == set(range(80))
    # labels follow the category ids of the json, annotation by annotation
    counts = np.bincount(labels, minlength=80)
    expected = np.zeros(80, int)
    for a in data["annotations"]:
        if not a["iscrowd"]:
            expected[COCO_CATEGORY_IDS.index(a["category_id"])] += 1
    assert np.array_equal(counts, expected)
    assert ds.problems == [] and ds.num_skipped == 0


def test_coco_xyxy_by_hand_and_crowd_to_ignore(shared):
    ds = CocoDataset(shared(VAL_JSON), filter_empty_gt=False, min_size=0)
    ids = _by_id(ds)
    # annotation 508910: bbox [250.82, 168.26, 70.11, 64.88], category 1 (person) on image 532481
    s = ds[ids[532481]]
    assert s["image"].shape == (426, 640, 3) and s["image"].dtype == np.uint8 and s["orig_shape"] == (426, 640)
    assert s["path"].endswith("000000532481.jpg") and s["image_id"] == 532481
    hit = np.all(np.abs(s["boxes"] - np.array([250.82, 168.26, 320.93, 233.14], np.float32)) < 1e-3, axis=1)
    assert hit.sum() == 1 and s["labels"][hit][0] == 0
    assert s["boxes"].dtype == np.float32 and s["boxes"].shape[1] == 4
    # crowd annotation 900100184324: bbox [3, 199, 594, 225] person -> ignore box, not a gt box
    s = ds[ids[184324]]
    assert np.allclose(s["ignore_boxes"], [[3, 199, 597, 424]])
    assert not np.any(np.all(np.abs(s["boxes"] - np.array([3, 199, 597, 424])) < 1e-3, axis=1))
    assert len(s["masks"]) == len(s["boxes"])  # polygons for the gt boxes only


def test_coco_train_default_filters(shared):
    ann = shared(TRAIN_JSON)
    data = json.loads(ann.read_text())
    ds = CocoDataset(ann)  # filter_empty_gt=True, min_size=32 (the reference's training settings)
    with_ann = {a["image_id"] for a in data["annotations"]}
    expected = [im["id"] for im in data["images"] if im["id"] in with_ann and min(im["width"], im["height"]) >= 32]
    assert [r["image_id"] for r in ds.records] == expected
    assert len(ds.classes) == 80 and ds.classes[0] == "person"


def test_balloon_category_zero_and_polygons(shared):
    ann = shared("data/balloon/train.json")
    data = json.loads(ann.read_text())
    ds = CocoDataset(ann)
    assert ds.cat_ids == [0] and ds.classes == ("balloon",)
    assert len(ds) == 61 and sum(len(r["boxes"]) for r in ds.records) == 255
    s = ds[0]
    anns = [a for a in data["annotations"] if a["image_id"] == s["image_id"]]
    assert (s["labels"] == 0).all() and len(s["masks"]) == len(anns) == len(s["boxes"])
    poly = np.asarray(anns[0]["segmentation"][0], np.float32).reshape(-1, 2)
    assert np.array_equal(s["masks"][0][0], poly)
    x, y, w, h = anns[0]["bbox"]
    assert np.allclose(s["boxes"][0], [x, y, x + w, y + h])
    assert poly[:, 0].min() >= x - 1 and poly[:, 0].max() <= x + w + 1
    # detection-only copies drop the polygons (they stay out of the DataLoader workers)
    light = ds.without_masks()
    assert "masks" not in light[0] and "segs" not in light.records[0] and "segs" in ds.records[0]
    assert np.array_equal(light[0]["boxes"], s["boxes"])


def _tiny_coco(tmp_path, img_dir, images, anns, cats=None, name="ann.json"):
    data = {"images": images, "annotations": anns,
            "categories": cats if cats is not None else [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}]}
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return p


def _img(i, file, w=640, h=426):
    return {"id": i, "file_name": file, "width": w, "height": h}


def _ann(i, img, bbox, cat=1, **kw):
    area = bbox[2] * bbox[3] if len(bbox) == 4 else 1.0
    return {"id": i, "image_id": img, "category_id": cat, "bbox": bbox, "area": area, "iscrowd": 0, **kw}


def test_coco_filter_empty_gt_and_min_size(tmp_path, shared):
    img_dir = shared("data/coco_tiny/val2017")
    images = [_img(1, "000000532481.jpg"), _img(2, "000000184324.jpg"), _img(3, "000000005001.jpg", 20, 400),
              _img(4, "000000010764.jpg")]
    anns = [_ann(1, 1, [10, 10, 50, 50]), _ann(2, 3, [1, 1, 10, 10]), _ann(3, 4, [5, 5, 30, 30], iscrowd=1)]
    p = _tiny_coco(tmp_path, img_dir, images, anns)
    ids = lambda ds: [r["image_id"] for r in ds.records]  # noqa: E731
    assert ids(CocoDataset(p, img_dir)) == [1, 4]  # empty image 2 and small image 3 gone; crowd-only 4 kept (ref.)
    assert ids(CocoDataset(p, img_dir, filter_empty_gt=False)) == [1, 2, 4]
    assert ids(CocoDataset(p, img_dir, filter_empty_gt=True, min_size=0)) == [1, 3, 4]
    assert ids(CocoDataset(p, img_dir, filter_empty_gt=False, min_size=0)) == [1, 2, 3, 4]
    with pytest.raises(DatasetError, match="no usable samples"):
        CocoDataset(p, img_dir, min_size=500)
    # classes: a subset by name, labels in the order given
    ds = CocoDataset(p, img_dir, classes=["b", "a"], filter_empty_gt=False, min_size=0)
    assert ds.cat_ids == [3, 1] and ds.classes == ("b", "a") and ds[0]["labels"].tolist() == [1]
    with pytest.raises(DatasetError, match="not among its categories"):
        CocoDataset(p, img_dir, classes=["zebra"])
    # load_dataset: split decides the reference's filtering
    assert len(load_dataset(p, "train", img_dir=img_dir)) == 2
    assert len(load_dataset(p, "val", img_dir=img_dir)) == 4


def test_coco_bad_samples_warn_skip_and_error(tmp_path, shared):
    img_dir = shared("data/coco_tiny/val2017")
    images = [_img(1, "000000532481.jpg"), _img(2, "missing_image.jpg"), _img(3, "000000184324.jpg", 640, 425),
              _img(4, "000000005001.jpg"), _img(5, "000000010764.jpg"), _img(6, "000000020992.jpg")]
    anns = [_ann(1, 1, [600, 400, 100, 100]),  # partly outside: clipped to [600, 400, 640, 426]
            _ann(2, 1, [700, 10, 20, 20]),  # outside the image: zero size after clipping -> dropped
            _ann(3, 2, [10, 10, 20, 20]),
            _ann(4, 3, [10, 10, 20, 20], cat=99),  # unknown category -> sample skipped
            _ann(5, 4, [10, 10, float("nan"), 20]),  # non-finite -> sample skipped
            _ann(6, 5, [10, 10, 20]),  # malformed bbox -> sample skipped
            _ann(7, 6, [10, 10, 0.5, 20])]  # narrower than 1 px (reference drops it) -> dropped
    p = _tiny_coco(tmp_path, img_dir, images, anns)
    with pytest.warns(DatasetWarning) as rec:
        ds = CocoDataset(p, img_dir)
    msgs = [str(w.message) for w in rec]
    assert any("missing_image.jpg" in m and "not found" in m for m in msgs)
    assert any("annotation id 4" in m and "unknown category id 99" in m for m in msgs)
    assert any("annotation id 5" in m and "non-finite" in m for m in msgs)
    assert any("annotation id 6" in m and "not [x, y, w, h]" in m for m in msgs)
    assert any("annotation id 2" in m and "no area inside" in m and "dropped box" in m for m in msgs)
    assert any("annotation id 7" in m and "dropped box" in m for m in msgs)
    assert not any("annotation id 1" in m for m in msgs)  # clipping is not warned about
    assert ds.num_skipped == 4  # missing image, unknown class, non-finite, malformed
    # 6 lost its only box but is kept: the reference's filter_empty_gt looks at the json's annotations
    assert [r["image_id"] for r in ds.records] == [1, 6] and ds.records[1]["boxes"].shape == (0, 4)
    assert np.allclose(ds.records[0]["boxes"], [[600, 400, 640, 426]])
    assert {p.kind for p in ds.problems} >= {"missing_image", "unknown_class", "non_finite", "malformed",
                                             "out_of_image", "zero_size", "clipped"}
    # everything bad -> error naming the problems
    p2 = _tiny_coco(tmp_path, img_dir, [_img(1, "nope.jpg")], [_ann(1, 1, [1, 1, 5, 5])], name="bad.json")
    with pytest.raises(DatasetError, match="nope.jpg"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        CocoDataset(p2, img_dir)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DatasetError, match="broken.json"):
        CocoDataset(tmp_path / "broken.json", img_dir)


def test_corrupt_image_raises_then_check_reports(tmp_path, shared):
    src = shared("data/coco_tiny/val2017/000000532481.jpg")
    (tmp_path / "imgs").mkdir()
    shutil.copy(src, tmp_path / "imgs" / "good.jpg")
    (tmp_path / "imgs" / "bad.jpg").write_bytes(src.read_bytes()[:5000])  # truncated
    p = _tiny_coco(tmp_path, None, [_img(1, "good.jpg"), _img(2, "bad.jpg")],
                   [_ann(1, 1, [10, 10, 50, 50]), _ann(2, 2, [10, 10, 50, 50])])
    ds = CocoDataset(p, tmp_path / "imgs")
    assert len(ds) == 2  # only decoding finds it
    with pytest.raises(ImageReadError, match="bad.jpg"):
        ds[1]
    report = check_dataset(p, img_dir=tmp_path / "imgs")
    assert not report.ok and report.num_images == 2 and report.num_usable == 1
    assert [(q.kind, q.action) for q in report.problems] == [("corrupt_image", "skipped sample")]
    assert report.problems[0].file.endswith("bad.jpg") and "bad.jpg" in str(report)
    assert check_dataset(CocoDataset(p, tmp_path / "imgs"), verify_images=False).ok


def test_check_dataset_reports_by_file(tmp_path, shared):
    img_dir = shared("data/coco_tiny/val2017")
    p = _tiny_coco(tmp_path, img_dir, [_img(1, "000000532481.jpg"), _img(2, "gone.jpg"), _img(3, "000000184324.jpg")],
                   [_ann(1, 1, [600, 400, 100, 100]), _ann(2, 1, [700, 10, 20, 20]), _ann(3, 3, [1, 1, 9, 9], cat=7)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the check itself does not warn
        report = check_dataset(p, img_dir=img_dir)
    assert report.fatal is None and not report.ok
    files = report.by_file()
    assert set(k.rsplit("/", 1)[-1] for k in files) == {"000000532481.jpg", "gone.jpg", "000000184324.jpg"}
    assert report.by_kind() == {"clipped": 1, "out_of_image": 1, "missing_image": 1, "unknown_class": 1}
    text = str(report)
    for needle in ("gone.jpg", "annotation id 2", "unknown category id 7", "skipped sample", "dropped box"):
        assert needle in text
    # a dataset where everything is bad: a report with the fatal error, not an exception
    p2 = _tiny_coco(tmp_path, img_dir, [_img(1, "gone.jpg")], [_ann(1, 1, [1, 1, 5, 5])], name="all_bad.json")
    report = check_dataset(p2, img_dir=img_dir)
    assert report.fatal and "no usable samples" in report.fatal and "ERROR" in str(report)
    assert check_dataset(shared("data/balloon/val.json")).ok


def test_cli_check_command(tmp_path, shared, capsys):
    from rtmkit.cli import main

    img_dir = shared("data/coco_tiny/val2017")
    p = _tiny_coco(tmp_path, img_dir, [_img(1, "000000532481.jpg"), _img(2, "gone.jpg")],
                   [_ann(1, 1, [10, 10, 100, 100]), _ann(2, 1, [1, 1, 5, 5])])
    assert main(["check", "--data", str(p), "--images", str(img_dir)]) == 0
    out = capsys.readouterr().out
    assert "gone.jpg" in out and "missing_image" in out and "1 usable images of 2" in out
    p2 = _tiny_coco(tmp_path, img_dir, [_img(1, "gone.jpg")], [_ann(1, 1, [1, 1, 5, 5])], name="all_bad.json")
    assert main(["check", "--data", str(p2), "--images", str(img_dir)]) == 1
    assert "no usable samples" in capsys.readouterr().out
    assert main(["check", "--data", str(tmp_path / "data.yaml"), "--images", str(img_dir)]) == 2
    assert "--images applies to a COCO json" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------ YOLO


@pytest.fixture
def yolo_root(tmp_path, shared):
    """A YOLO dataset made of 3 real COCO images (640x426, 640x425, and one more), labels written here."""
    src = shared("data/coco_tiny/val2017")
    root = tmp_path / "yolo"
    for split, names in (("train", ["000000532481.jpg", "000000184324.jpg"]), ("val", ["000000005001.jpg"])):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for n in names:
            shutil.copy(src / n, root / "images" / split / n)
    return root


def _write_yaml(root, names="{0: cat, 1: dog}", path=None, extra=""):
    text = f"path: {path or root}\ntrain: images/train\nval: images/val\nnames: {names}\n{extra}"
    (root / "data.yaml").write_text(text)
    return root / "data.yaml"


def test_yolo_pixel_boxes(yolo_root):
    # 532481 is 640x426: box (x1, y1, x2, y2) = (64, 42.6, 320, 213) -> cx .3 cy .3 w .4 h .4
    (yolo_root / "labels/train/000000532481.txt").write_text("1 0.3 0.3 0.4 0.4\n0 0.5 0.5 1.0 1.0\n")
    (yolo_root / "labels/train/000000184324.txt").write_text("")  # background image
    (yolo_root / "labels/val/000000005001.txt").write_text("0 0.1 0.2 0.3 0.2 0.2 0.4\n")  # a polygon
    ds = YoloDataset(_write_yaml(yolo_root), "train")
    assert ds.classes == ("cat", "dog") and len(ds) == 2 and ds.problems == []
    s = ds[0] if ds.records[0]["path"].endswith("532481.jpg") else ds[1]
    assert s["orig_shape"] == (426, 640)
    assert np.allclose(s["boxes"], [[64, 42.6, 320, 213], [0, 0, 640, 426]], atol=1e-3)
    assert s["labels"].tolist() == [1, 0] and s["boxes"].dtype == np.float32 and s["ignore_boxes"].shape == (0, 4)
    empty = ds[1] if s is ds[0] else ds[0]
    assert empty["boxes"].shape == (0, 4)
    assert len(YoloDataset(yolo_root / "data.yaml", "train", filter_empty_gt=True)) == 1
    # val: the polygon line -> its bounds, polygon kept as mask; names as a list
    ds = YoloDataset(_write_yaml(yolo_root, names="[cat, dog]"), "val")
    s = ds[0]
    h, w = s["orig_shape"]
    assert np.allclose(s["boxes"], [[0.1 * w, 0.2 * h, 0.3 * w, 0.4 * h]], atol=1e-3)
    assert np.allclose(s["masks"][0][0], [[0.1 * w, 0.2 * h], [0.3 * w, 0.2 * h], [0.2 * w, 0.4 * h]], atol=1e-3)
    # load_dataset dispatches on the suffix; a relative path is taken relative to the yaml
    assert isinstance(load_dataset(_write_yaml(yolo_root, path="."), "train"), YoloDataset)


def test_yolo_bad_lines(yolo_root):
    lab = yolo_root / "labels/train"
    (lab / "000000532481.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2\n")  # line 2 malformed
    (lab / "000000184324.txt").write_text("0 0.95 0.5 0.2 0.2\n0 0.5 0.5 0.0 0.3\n")  # clipped, zero-size
    with pytest.warns(DatasetWarning) as rec:
        ds = YoloDataset(_write_yaml(yolo_root), "train")
    msgs = [str(w.message) for w in rec]
    assert any("000000532481.txt:2" in m and "4 values" in m and "skipped sample" in m for m in msgs)
    assert any("000000184324.txt:2" in m and "zero size" in m and "dropped box" in m for m in msgs)
    assert len(ds) == 1 and ds.num_skipped == 1
    s = ds[0]
    assert np.allclose(s["boxes"], [[0.85 * 640, 0.4 * 425, 640, 0.6 * 425]], atol=1e-3)  # clipped at x = W

    (lab / "000000184324.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    cases = {"7 0.5 0.5 0.2 0.2": "unknown class id 7", "0 nan 0.5 0.2 0.2": "non-finite",
             "0 0.5 0.5 1.5 0.2": "not normalised", "x 0.5 0.5 0.2 0.2": "not a number",
             "-1 0.5 0.5 0.2 0.2": "unknown class id -1"}
    for line, needle in cases.items():
        (lab / "000000532481.txt").write_text(f"0 0.5 0.5 0.2 0.2\n{line}\n")
        with pytest.warns(DatasetWarning, match=rf"000000532481\.txt:2: .*{needle}"):
            ds = YoloDataset(yolo_root / "data.yaml", "train")
        assert len(ds) == 1 and ds.records[0]["path"].endswith("000000184324.jpg")
    # every sample bad -> error naming the files
    (lab / "000000184324.txt").write_text("5 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DatasetError, match="000000184324.txt:1"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        YoloDataset(yolo_root / "data.yaml", "train")
    report = check_dataset(yolo_root / "data.yaml", "train")
    assert report.fatal and {q.kind for q in report.problems} == {"unknown_class"}
    # missing image listed in a txt split, missing split, bad yaml
    (yolo_root / "list.txt").write_text("images/train/000000532481.jpg\nimages/train/nothere.jpg\n")
    (lab / "000000532481.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    _write_yaml(yolo_root, extra="test: list.txt\n")
    with pytest.warns(DatasetWarning, match="nothere.jpg"):
        assert len(YoloDataset(yolo_root / "data.yaml", "test")) == 1
    with pytest.raises(DatasetError, match="no 'extra' split"):
        YoloDataset(yolo_root / "data.yaml", "extra")
    (yolo_root / "bad.yaml").write_text("names: {0: a, 2: b}\ntrain: images/train\n")
    with pytest.raises(DatasetError, match="keys must be 0..1"):
        YoloDataset(yolo_root / "bad.yaml")


# ------------------------------------------------------------------------------------------------------ RLE


def test_rle_decode_matches_pycocotools():
    mask_util = pytest.importorskip("pycocotools.mask")
    m = np.zeros((37, 53), np.uint8)
    cv2.circle(m, (20, 15), 9, 1, -1)
    m[30:35, 40:50] = 1
    rle = mask_util.encode(np.asfortranarray(m))
    assert np.array_equal(rle_decode({"size": rle["size"], "counts": rle["counts"].decode()}), m)
    flat = m.T.reshape(-1)  # uncompressed counts, column-major
    change = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    assert np.array_equal(rle_decode({"size": [37, 53], "counts": counts}), m)
    polys = mask_to_polygons(m)
    assert len(polys) == 2 and all(p.dtype == np.float32 and p.shape[1] == 2 for p in polys)


def test_non_crowd_rle_becomes_polygons(tmp_path, shared):
    img_dir = shared("data/coco_tiny/val2017")
    m = np.zeros((426, 640), np.uint8)
    m[10:60, 20:80] = 1
    flat = m.T.reshape(-1)
    change = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    ann = _ann(1, 1, [20, 10, 60, 50], segmentation={"size": [426, 640], "counts": counts})
    p = _tiny_coco(tmp_path, img_dir, [_img(1, "000000532481.jpg")], [ann])
    s = CocoDataset(p, img_dir)[0]
    (poly,) = s["masks"][0]
    np.testing.assert_array_equal([*poly.min(0), *poly.max(0)], [20, 10, 79, 59])  # pixel centres of the mask


# ------------------------------------------------------------------------------------------------------ synthetic


def test_synthetic_shapes_dataset(tmp_path):
    t0 = time.perf_counter()
    a = make_shapes_dataset(tmp_path / "a", num_train=30, num_val=10, size=256, seed=3)
    elapsed = time.perf_counter() - t0
    b = make_shapes_dataset(tmp_path / "b", num_train=30, num_val=10, size=256, seed=3)
    c = make_shapes_dataset(tmp_path / "c", num_train=30, num_val=10, size=256, seed=4)
    assert elapsed < 5.0
    ja, jb, jc = (json.loads(x["train_json"].read_text()) for x in (a, b, c))
    assert ja == jb and ja["annotations"] != jc["annotations"]
    for name in ("000000.png", "000017.png"):
        ia, ib = cv2.imread(str(a["train_images"] / name)), cv2.imread(str(b["train_images"] / name))
        assert ia.shape == (256, 256, 3) and np.array_equal(ia, ib)
    # image i does not depend on the number of images
    d = make_shapes_dataset(tmp_path / "d", num_train=5, num_val=1, size=256, seed=3)
    assert np.array_equal(cv2.imread(str(d["train_images"] / "000004.png")),
                          cv2.imread(str(a["train_images"] / "000004.png")))

    assert [c["name"] for c in ja["categories"]] == list(SHAPE_CLASSES)
    per_image = {im["id"]: 0 for im in ja["images"]}
    for ann in ja["annotations"]:
        per_image[ann["image_id"]] += 1
    assert per_image[10] == 0 and per_image[20] == 0  # every tenth image is empty
    assert sum(n > 1 for n in per_image.values()) > 5
    assert {a_["category_id"] for a_ in ja["annotations"]} == {1, 2, 3}

    overlapping = 0
    for ann in ja["annotations"]:
        x, y, w, h = ann["bbox"]
        pts = np.concatenate([np.reshape(p, (-1, 2)) for p in ann["segmentation"]])
        # masks inside boxes (contours run through pixel centres: x in [x, x + w - 1])
        assert pts[:, 0].min() == x and pts[:, 0].max() == x + w - 1
        assert pts[:, 1].min() == y and pts[:, 1].max() == y + h - 1
        assert 0 < ann["area"] <= w * h
        # the polygon lies in the rotated box (within a pixel), and covers enough of it
        cx, cy, rw, rh, ang = ann["rbox"]
        assert -np.pi / 2 <= ang < np.pi / 2
        c, s = np.cos(ang), np.sin(ang)
        u = (pts[:, 0] - cx) * c + (pts[:, 1] - cy) * s
        v = -(pts[:, 0] - cx) * s + (pts[:, 1] - cy) * c
        assert np.all(np.abs(u) <= rw / 2 + 1.5) and np.all(np.abs(v) <= rh / 2 + 1.5)
        full = {1: 1.0, 2: np.pi / 4, 3: 0.5}[ann["category_id"]] * rw * rh
        assert ann["area"] >= 0.55 * full
        overlapping += ann["area"] < 0.97 * full
        corners = rbox_corners(ann["rbox"])
        assert np.allclose(corners.mean(0), [cx, cy]) and np.isclose(np.linalg.norm(corners[0] - corners[1]), rh)
    assert overlapping > 0  # some objects are partly hidden by others

    ds = CocoDataset(a["val_json"], filter_empty_gt=False, min_size=0)
    assert len(ds) == 10 and ds.classes == SHAPE_CLASSES and ds.problems == []
    assert len(load_dataset(a["root"], "train")) == 27  # training filters drop the 3 empty images
    coco = pytest.importorskip("pycocotools.coco")
    api = coco.COCO(str(a["train_json"]))
    ann = api.loadAnns(api.getAnnIds())[0]
    mask_util = pytest.importorskip("pycocotools.mask")
    assert mask_util.area(api.annToRLE(ann)) >= 0.9 * ann["area"]
