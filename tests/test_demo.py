"""The first ten minutes of a new user: `rtmkit train` and `rtmkit predict` with no arguments, offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from rtmkit.data.synthetic import SHAPE_CLASSES, draw_demo_picture, draw_shapes_image
from rtmkit.ops.boxes import box_iou


def test_class_colours_follow_the_class():
    """The demo dataset's cue: red rectangles, green ellipses, blue triangles (hue from the pixels themselves)."""
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(20):
        img, objects = draw_shapes_image(rng, 128, max_objects=3, class_colours=True)
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        for o in objects:
            hue = np.median(hsv[..., 0][o["mask"]].astype(int))
            distance = min(abs(hue - (0, 60, 120)[o["label"]]), 180 - abs(hue - (0, 60, 120)[o["label"]]))
            assert distance <= 10, (SHAPE_CLASSES[o["label"]], hue)
            seen.add(o["label"])
    assert seen == {0, 1, 2}


def test_predict_without_arguments_finds_the_demo_shapes(tmp_path, capsys):
    """`rtmkit predict` alone: the shipped demo model on the demo picture; every drawn shape is found with its
    class (truth: the geometry the picture was drawn from)."""
    from rtmkit.cli import main

    assert main(["predict", "--device", "cpu", "--project", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "found: " in out and f"look at {tmp_path / 'exp' / 'demo.jpg'}" in out
    record = json.loads((tmp_path / "exp" / "predictions.json").read_text())[0]
    dets = record["detections"]
    _, objects = draw_demo_picture()
    boxes = np.array([[d["box"][k] for k in ("x1", "y1", "x2", "y2")] for d in dets], np.float32).reshape(-1, 4)
    truth = np.array([o["bbox"] for o in objects], np.float32)
    import torch

    iou = box_iou(torch.from_numpy(truth), torch.from_numpy(boxes)).numpy()  # [objects, detections]
    matched = set()
    for k, o in enumerate(objects):
        match = int(iou[k].argmax())
        assert iou[k, match] > 0.75 and dets[match]["class"] == o["label"], (o["bbox"], o["label"], dets)
        assert dets[match]["score"] > 0.5
        matched.add(match)
    assert all(d["score"] < 0.5 for i, d in enumerate(dets) if i not in matched)  # anything else is unsure
    assert cv2.imread(str(tmp_path / "exp" / "demo.jpg")).shape == (192, 192, 3)


@pytest.mark.slow
def test_train_without_arguments_learns_the_demo(tmp_path):
    """README's main job, as typed: `rtmkit train` with no arguments, in a fresh folder, offline. It must end with
    box AP >= 0.5 on its own validation images (about 3 minutes on 2 CPU cores) and say what to look at."""
    proc = subprocess.run([sys.executable, "-m", "rtmkit", "train"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "train" / "exp"
    final = [line for line in proc.stdout.splitlines() if line.startswith("final: AP ")]
    assert final and float(final[0].split()[2]) >= 0.5, proc.stdout[-3000:]
    rows = (run / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 32  # every epoch validated
    assert "what to look at:" in proc.stdout
    assert len(list((run / "predictions").iterdir())) == 8
    # what those pictures show: the first 8 validation images each hold 1-2 shapes; nearly all get a box
    from rtmkit import RTMDet

    images = sorted((tmp_path / "runs" / "data" / "shapes" / "val").iterdir())[:8]
    results = RTMDet(run / "weights" / "best.pt", device="cpu").predict([str(p) for p in images], conf=0.3)
    assert sum(len(r) > 0 for r in results) >= 7
    assert Path(run / "results.png").is_file() and Path(run / "pr_curve.png").is_file()
