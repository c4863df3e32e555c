"""RTMDet-Ins training through the user's commands: the run, its checkpoint and mask metrics, initialisation from
detection and Ins checkpoints, box-only data refused, and the NaN guard with the Ins criterion."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rtmkit import RTMDet
from rtmkit.checkpoint import load_checkpoint_file
from rtmkit.cli import main
from rtmkit.data.datasets import load_dataset
from rtmkit.data.synthetic import make_shapes_dataset
from rtmkit.engine.trainer import TrainArgs, Trainer, TrainingError


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=12, num_val=6, size=128, seed=0,
                               max_objects=2, scale=(0.35, 0.7), class_colours=True)


def _args(shapes, tmp_path, **kw) -> TrainArgs:
    base = dict(model="rtmdet-ins-tiny", data=str(shapes["train_json"]), val=str(shapes["val_json"]), epochs=2,
                batch=4, imgsz=128, lr=0.002, warmup_iters=4, workers=0, project=str(tmp_path / "runs"),
                name="exp", deterministic=True)
    base.update(kw)
    return TrainArgs(**base)


def test_cli_trains_ins_and_reports_mask_ap(shapes, tmp_path, capsys):
    """`rtmkit train --model rtmdet-ins-tiny --data ...`: the run directory, per-epoch mask AP next to box AP
    in results.csv, a checkpoint that loads as a segment model and predicts masks, and `rtmkit val` on it
    printing both APs, equal to the training's last validation."""
    project = tmp_path / "runs"
    assert main(["train", "--model", "rtmdet-ins-tiny", "--data", str(shapes["train_json"]), "--val",
                 str(shapes["val_json"]), "--epochs", "2", "--stage2-epochs", "1", "--batch", "4", "--imgsz", "128",
                 "--workers", "0", "--project", str(project)]) == 0
    out = capsys.readouterr().out
    run = project / "exp"
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert len(rows) == 2 and {"loss_mask", "mask_AP", "AP"} <= {k.strip() for k in rows[0]}
    losses = [float(r["loss_mask"]) for r in rows]
    assert all(0 < v < 2.5 for v in losses)  # Dice x 2 per positive: within [0, 2]
    model = RTMDet(run / "weights" / "best.pt", device="cpu")
    assert model.task == "segment" and model.names == {0: "rectangle", 1: "ellipse", 2: "triangle"}
    val_img = sorted(Path(shapes["val_images"]).glob("*.png"))[0]
    r = model.predict(str(val_img), preset="eval")[0]
    assert r.masks is not None and r.masks.shape == (len(r), 128, 128)
    assert "mask AP" in out or "mask_AP" in out
    assert main(["val", "--model", str(run / "weights" / "last.pt"), "--data", str(shapes["val_json"])]) == 0
    val_out = capsys.readouterr().out
    assert "box AP" in val_out and "mask AP" in val_out
    last = {k.strip(): v for k, v in rows[-1].items()}
    line = [ln for ln in val_out.splitlines() if ln.startswith("box AP")][0]
    box_ap, mask_ap = (float(part.split()[-1]) for part in line.split(","))
    assert abs(box_ap - float(last["AP"])) < 1e-3 and abs(mask_ap - float(last["mask_AP"])) < 1e-3


def test_detection_checkpoint_initialises_the_shared_parts(shared, shapes, tmp_path, capsys):
    """A detector's weights for an Ins model: backbone, neck and predictors loaded, the Ins head's one tower
    from the detector's box tower (loaded last, as MMDetection's loader does with the aliased names), the
    mask parts new; the message says which."""
    det = shared("reference/det_tiny/state_dict.pt")
    ckpt = tmp_path / "det_tiny.pth"
    torch.save({"state_dict": torch.load(det, weights_only=True)}, ckpt)
    trainer = Trainer(_args(shapes, tmp_path, weights=str(ckpt)))
    task = trainer._build_task(load_dataset(str(shapes["train_json"]), "train"))
    net = trainer._build_net(task)
    sd, official = net.state_dict(), torch.load(det, weights_only=True)
    for key in ("backbone.stem.0.conv.weight", "neck.out_convs.0.conv.weight", "bbox_head.rtm_reg.1.weight",
                "bbox_head.reg_convs.2.1.conv.weight"):
        assert torch.equal(sd[key], official[key]), key
    assert torch.equal(sd["bbox_head.cls_convs.0.0.conv.weight"], official["bbox_head.reg_convs.0.0.conv.weight"])
    assert net.bbox_head.rtm_cls[0].weight.shape[0] == 3  # the data's classes: re-initialised
    out = capsys.readouterr().out
    assert "a detection checkpoint" in out and "kernel towers, rtm_kernel and mask_head" in out
    assert "re-initialised" in out


def test_ins_checkpoint_with_other_classes_reinitialises_rtm_cls_only(shared, shapes, tmp_path, capsys):
    ins = shared("reference/ins_tiny/state_dict.pt")
    ckpt = tmp_path / "ins_tiny.pth"
    official = torch.load(ins, weights_only=True)
    torch.save({"state_dict": official}, ckpt)
    trainer = Trainer(_args(shapes, tmp_path, weights=str(ckpt)))
    net = trainer._build_net(trainer._build_task(load_dataset(str(shapes["train_json"]), "train")))
    sd = net.state_dict()
    for key, value in official.items():
        if key.startswith("bbox_head.rtm_cls."):
            assert sd[key].shape[0] == 3
        else:
            assert torch.equal(sd[key], value), key
    out = capsys.readouterr().out
    assert "80 classes, the data 3" in out and "a detection checkpoint" not in out


def test_box_only_data_is_refused_for_ins(tmp_path, capsys):
    boxes_only = Path(make_shapes_dataset(tmp_path / "s", num_train=4, num_val=0, size=64)["train_json"])
    data = json.loads(boxes_only.read_text())
    for ann in data["annotations"]:
        del ann["segmentation"]
    boxes_only.write_text(json.dumps(data))
    assert main(["train", "--model", "rtmdet-ins-tiny", "--data", str(boxes_only), "--epochs", "1",
                 "--project", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err
    assert str(boxes_only) in err and "boxes only" in err
    assert not list(tmp_path.rglob("*.pt"))


def test_non_finite_ins_loss_is_skipped_and_reported(shapes, tmp_path, monkeypatch, capsys):
    from rtmkit.engine.criterion_ins import RTMDetInsCriterion

    real = RTMDetInsCriterion.__call__

    def nan_mask_loss(self, outputs, targets, **kw):
        out = real(self, outputs, targets, **kw)
        out["loss_mask"] = out["loss_mask"] * float("nan")
        return out

    monkeypatch.setattr(RTMDetInsCriterion, "__call__", nan_mask_loss)
    with pytest.raises(TrainingError, match="non-finite losses in 3 steps of epoch 1"):
        Trainer(_args(shapes, tmp_path, epochs=1)).fit()
    assert not list(tmp_path.rglob("*.pt"))
    assert "loss_mask=nan" in capsys.readouterr().out


def test_yolo_seg_labels_give_the_coco_polygons_targets(shapes, tmp_path):
    """The shapes' COCO polygons written as YOLO-seg labels (`class x1 y1 x2 y2 ...`, normalised): the Ins
    training targets (the same seed, index and epoch) equal those of the COCO json but for pixels on the
    polygons' edges (the normalised coordinates are rounded to 6 decimals)."""
    from rtmkit.data.loader import TrainDataset

    data = json.loads(Path(shapes["train_json"]).read_text())
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for img in data["images"]:
        (root / "images" / img["file_name"]).symlink_to(Path(shapes["train_images"]) / img["file_name"])
        w, h = img["width"], img["height"]
        lines = []
        for ann in (a for a in data["annotations"] if a["image_id"] == img["id"]):
            for poly in ann["segmentation"][:1]:  # YOLO-seg: one polygon per instance
                pts = " ".join(f"{v / (w if k % 2 == 0 else h):.6f}" for k, v in enumerate(poly))
                lines.append(f"{ann['category_id'] - 1} {pts}")
        (root / "labels" / img["file_name"]).with_suffix(".txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text("path: .\ntrain: images\nval: images\nnames: [rectangle, ellipse, triangle]\n")
    coco = load_dataset(str(shapes["train_json"]), "train", filter_empty_gt=False)
    yolo = load_dataset(str(root / "data.yaml"), "train")
    assert yolo.has_masks and len(yolo) == len(coco)
    assert [Path(r["path"]).name for r in yolo.records] == [Path(r["path"]).name for r in coco.records]
    a = TrainDataset(coco, "tiny", img_scale=128, seed=3, with_masks=True, max_epochs=1, stage2_epochs=1)
    b = TrainDataset(yolo, "tiny", img_scale=128, seed=3, with_masks=True, max_epochs=1, stage2_epochs=1)
    compared = 0
    for i in range(len(coco)):
        (img_a, ta), (img_b, tb) = a[i], b[i]
        assert torch.equal(img_a, img_b) and torch.equal(ta["labels"], tb["labels"])
        assert ta["masks"].shape == tb["masks"].shape
        if any(len(a_["segmentation"]) > 1 for a_ in data["annotations"] if a_["image_id"] == i + 1):
            continue  # an occluded shape in several parts: YOLO-seg keeps one
        differ = (ta["masks"] != tb["masks"]).sum().item()
        assert differ <= 0.01 * max(int(ta["masks"].sum()), 1)
        torch.testing.assert_close(ta["boxes"], tb["boxes"], atol=0.01, rtol=0)
        compared += int(len(ta["masks"]) > 0)
    assert compared >= len(coco) // 2


def test_ins_main_job_without_data(tmp_path, capsys, monkeypatch):
    """`rtmkit train --model rtmdet-ins-tiny` with no data: the built-in shapes with their polygons, mask AP in
    the final line, and mask predictions drawn on validation pictures (two epochs here; the full job is 32)."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--model", "rtmdet-ins-tiny", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "with their masks" in out and "mask AP" in out.splitlines()[[i for i, ln in enumerate(out.splitlines())
                                                                     if ln.startswith("final:")][0]]
    assert "masks and boxes with class and score" in out
    pictures = sorted((tmp_path / "runs/train/exp/predictions").glob("*.png"))
    assert len(pictures) == 8
    assert "--model rtmdet-ins-tiny --weights rtmdet-ins-tiny" in out


class _PerturbedTruth:
    """A stand-in predictor for the evaluator: each image's true masks, some shifted by a few pixels, some
    dropped, plus a false positive, with fixed scores (masks and boxes of known, non-trivial quality)."""

    names = {0: "rectangle", 1: "ellipse", 2: "triangle"}

    def __init__(self, dataset):
        self.by_path = {r["path"]: i for i, r in enumerate(dataset.records)}
        self.dataset = dataset

    def __call__(self, images, post, imgsz=None):
        from rtmkit.results import Result
        from rtmkit.structures.masks import PolygonMasks

        out = []
        for img in images:
            i = next(k for k in range(len(self.dataset)) if np.array_equal(self.dataset[k]["image"], img))
            s = self.dataset[i]
            h, w = s["orig_shape"]
            rng = np.random.default_rng(i)
            masks = PolygonMasks(s["masks"]).to_bitmaps(h, w)
            keep = rng.random(len(masks)) > 0.15
            masks, labels = masks[keep], np.asarray(s["labels"])[keep]
            masks = np.stack([np.roll(m, int(rng.integers(-6, 7)), axis=1) for m in masks]) if len(masks) else masks
            fp = np.zeros((1, h, w), bool)
            fp[10:40, 10:50] = True
            masks, labels = np.concatenate([masks, fp]), np.concatenate([labels, [1]])
            nonempty = masks.any((1, 2))
            masks, labels = masks[nonempty], labels[nonempty]
            boxes = np.array([[np.where(m.any(0))[0].min(), np.where(m.any(1))[0].min(),
                               np.where(m.any(0))[0].max() + 1, np.where(m.any(1))[0].max() + 1] for m in masks],
                             np.float32).reshape(-1, 4)
            scores = rng.uniform(0.3, 0.95, len(masks)).astype(np.float32)
            out.append(Result(boxes, scores, labels.astype(np.int64), self.names, (h, w), masks=masks))
        return out


def test_mask_ap_equals_pycocotools_on_known_predictions(shapes, tmp_path):
    """The evaluator's segm numbers on predictions of known quality (true masks shifted, dropped, a false
    positive) equal pycocotools' COCOeval(iouType="segm") on the saved RLEs and the annotation file: all 12
    numbers and the per-class APs; mask AP and box AP differ and are neither 0 nor 1."""
    from conftest import pycocotools_eval

    from rtmkit.config import PostprocessConfig
    from rtmkit.eval.detection import evaluate

    ds = load_dataset(str(shapes["val_json"]), "val", filter_empty_gt=False)
    saved = tmp_path / "dets.json"
    stats = evaluate(_PerturbedTruth(ds), ds, post=PostprocessConfig(), batch=4, save_json=saved, masks=True)
    theirs, ev = pycocotools_eval(shapes["val_json"], saved, "segm")
    for name, value in theirs.items():
        assert stats[f"mask_{name}"] == pytest.approx(value, abs=1e-12), name
    for k, cat in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, -1]
        name = ev.cocoGt.loadCats([int(cat)])[0]["name"]
        assert stats["per_class_mask_AP"][name] == pytest.approx(float(p[p > -1].mean()), abs=1e-12)
    assert 0.2 < stats["mask_AP"] < 0.95 and 0.2 < stats["AP"] < 0.95 and stats["mask_AP"] != stats["AP"]


def test_ddp_two_processes_equal_one_process_for_ins(shared, tmp_path):
    """torchrun with 2 CPU processes (gloo, SyncBN) and 2 images each vs 1 process with 4: the same weights after
    two SGD steps of RTMDet-Ins (the Dice normaliser is the all-reduced positive count). Starts from the golden
    Ins weights (class head re-initialised for the 3 shapes), so every rank has positives of real quality."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    start = tmp_path / "ins.pth"
    torch.save({"state_dict": torch.load(shared("reference/ins_tiny/state_dict.pt"), weights_only=True)}, start)
    data = make_shapes_dataset(tmp_path / "shapes", num_train=8, num_val=0, size=128, seed=1, max_objects=2,
                               scale=(0.35, 0.7))  # 8 images with objects: one step, no padding of the shards
    common = ["--model", "rtmdet-ins-tiny", "--data", str(data["train_json"]), "--imgsz", "128", "--workers", "0",
              "--name", "exp", "--weights", str(start), "--epochs", "1", "--batch", "4", "--lr", "0.001",
              "--optimizer", "SGD", "--warmup-iters", "1", "--stage2-epochs", "1"]
    single, multi = tmp_path / "single", tmp_path / "multi"
    subprocess.run([sys.executable, "-m", "rtmkit", "train", *common, "--project", str(single)], env=env,
                   check=True, capture_output=True, timeout=600)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "rtmkit", "train", *common, "--project", str(multi)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = (load_checkpoint_file(p / "exp/weights/last.pt")["train_state"]["model"] for p in (single, multi))
    init = torch.load(shared("reference/ins_tiny/state_dict.pt"), weights_only=True)
    moved = max((a[k] - init[k]).abs().max().item() for k in a if a[k].is_floating_point() and k in init
                and a[k].shape == init[k].shape and "running" not in k)
    assert moved > 1e-4  # the steps really changed the weights
    # the updates themselves agree (not only weights that hardly moved): relative difference of the whole update
    keys = [k for k in a if a[k].is_floating_point() and k in init and a[k].shape == init[k].shape
            and "running" not in k]
    upd_a = torch.cat([(a[k] - init[k]).flatten() for k in keys])
    upd_b = torch.cat([(b[k] - init[k]).flatten() for k in keys])
    assert float((upd_b - upd_a).norm() / upd_a.norm()) < 1e-3
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
        else:
            assert torch.equal(a[k], b[k]), k
