"""One evaluator: the AP the trainer prints on a val json equals ``rtmkit val`` on the same weights and file, and
equals pycocotools run directly on that file (which holds boxes under 1 px that the training dataset drops)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from rtmkit import RTMDet
from rtmkit.cli import main as cli_main
from rtmkit.engine.trainer import TrainArgs, Trainer

NANO = "weights/rtmdet_nano_person/rtmdet_nano_person.pth"


def _pycocotools_ap(ann_file: Path, det_file: Path) -> float:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        ev = COCOeval(gt, gt.loadRes(str(det_file)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


@pytest.fixture(scope="module")
def val_json(shared, tmp_path_factory):
    """balloon's val split, plus a 0.5 x 0.8 px balloon in two images (the training dataset drops such boxes as
    degenerate; COCO evaluation counts them as ground truth)."""
    src = shared("data/balloon/val.json")
    data = json.loads(src.read_text())
    next_id = max(a["id"] for a in data["annotations"]) + 1
    for k, im in enumerate(data["images"][:2]):
        data["annotations"].append({"id": next_id + k, "image_id": im["id"], "category_id": 0 if any(
            c["id"] == 0 for c in data["categories"]) else data["categories"][0]["id"], "bbox": [10.0, 12.0, 0.5, 0.8],
            "area": 0.4, "iscrowd": 0, "segmentation": []})
    out = tmp_path_factory.mktemp("val") / "val.json"
    out.write_text(json.dumps(data))
    return out, src.parent / "val"


def test_trainer_val_and_pycocotools_agree(shared, val_json, tmp_path):
    ann, images = val_json
    args = TrainArgs(model="rtmdet-nano-person", weights=str(shared(NANO)), data=str(shared("data/balloon/val.json")),
                     val=str(ann), epochs=1, batch=4, imgsz=160, lr=0.001, warmup_iters=2, workers=0,
                     freeze_bn=True, project=str(tmp_path / "runs"), deterministic=True)
    # the val json's images live next to balloon's json, not next to the copy: point the dataset at them
    from rtmkit.data import datasets

    original = datasets._guess_img_dir
    datasets._guess_img_dir = lambda ann_file, ims: images if Path(ann_file) == ann else original(ann_file, ims)
    try:
        result = Trainer(args).fit()
        trainer_ap = result["metrics"]["AP"]
        best = Path(result["save_dir"]) / "weights" / "best.pt"
        stats = RTMDet(best, device="cpu").val(ann, save_json=tmp_path / "dets.json")
    finally:
        datasets._guess_img_dir = original
    direct = _pycocotools_ap(ann, tmp_path / "dets.json")
    assert trainer_ap > 0.005  # a real number, not an empty evaluation
    assert stats["AP"] == trainer_ap == direct


def test_cli_val_takes_yaml_and_folder(tmp_path, shared, capsys):
    """`rtmkit val` accepts a data.yaml and a dataset folder, as train and check do."""
    import shutil

    root = tmp_path / "ds"
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    src = shared("data/balloon/val.json")
    data = json.loads(src.read_text())
    by_image: dict = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for im in data["images"][:4]:
        shutil.copy(src.parent / "val" / im["file_name"], root / "images" / "val" / im["file_name"])
        lines = []
        for a in by_image.get(im["id"], []):
            x, y, w, h = a["bbox"]
            cx, cy = (x + w / 2) / im["width"], (y + h / 2) / im["height"]
            lines.append(f"0 {cx:.6f} {cy:.6f} {w / im['width']:.6f} {h / im['height']:.6f}")
        (root / "labels" / "val" / (Path(im["file_name"]).stem + ".txt")).write_text("\n".join(lines))
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/val\nval: images/val\nnames: ['balloon']\n")
    # the person model on balloons: names differ, so a mapping by order must be asked for
    assert cli_main(["val", "--model", "rtmdet-nano-person", "--weights", str(shared(NANO)), "--data",
                     str(root / "data.yaml"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "'person' are not among the annotation categories ('balloon')" in err and "--map-classes-by-order" in err
    for data_arg in (root / "data.yaml", root):
        assert cli_main(["val", "--model", "rtmdet-nano-person", "--weights", str(shared(NANO)),
                         "--data", str(data_arg), "--device", "cpu", "--map-classes-by-order"]) == 0
        out = capsys.readouterr().out
        assert "per-class AP" in out and "person -> balloon" in out  # asked for: mapped by order, and said so
