"""The command line: ``rtmkit predict`` through ``rtmkit.cli.main`` (in-process) and ``python -m rtmkit``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import read_video

from rtmkit import RTMDet
from rtmkit.cli import main

NANO = "weights/rtmdet_nano_person/rtmdet_nano_person.pth"
VAL = "data/coco_tiny/val2017"
IMAGES = ["000000064523.jpg", "000000005001.jpg", "000000376322.jpg"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def nano(shared):
    return RTMDet("rtmdet-nano-person", weights=shared(NANO), device="cpu")


@pytest.fixture
def folder(shared, tmp_path):
    src = tmp_path / "images"
    src.mkdir()
    for name in IMAGES:
        shutil.copy(shared(VAL) / name, src / name)
    return src


def run(shared, *args: str) -> int:
    return main(["predict", "--model", "rtmdet-nano-person", "--weights", str(shared(NANO)), "--device", "cpu",
                 *args])


def load_records(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "predictions.json").read_text())


def test_predict_folder_writes_run_dir(shared, nano, folder, tmp_path, capsys):
    project = tmp_path / "runs"
    assert run(shared, "--source", str(folder), "--project", str(project)) == 0
    out = capsys.readouterr().out
    assert "3 images" in out and str(project / "exp") in out

    exp = project / "exp"
    assert sorted(p.name for p in exp.iterdir()) == sorted(IMAGES + ["predictions.json"])
    for name in IMAGES:
        annotated = cv2.imread(str(exp / name))
        original = cv2.imread(str(folder / name))
        assert annotated is not None and annotated.shape == original.shape
        assert np.abs(annotated.astype(int) - original.astype(int)).max() > 60  # boxes were drawn

    records = load_records(exp)
    assert [Path(r["source"]).name for r in records] == sorted(IMAGES)
    api = nano.predict(folder)
    total = 0
    for rec, res in zip(records, api):
        assert rec["source"] == res.path and rec["frame"] is None
        assert rec["orig_shape"] == list(res.orig_shape)
        assert set(rec["speed_ms"]) == {"preprocess", "forward", "postprocess"}
        dets = rec["detections"]
        assert len(dets) == len(res) > 0
        total += len(dets)
        boxes = np.array([[d["box"][k] for k in ("x1", "y1", "x2", "y2")] for d in dets])
        np.testing.assert_allclose(boxes, res.boxes, atol=1e-3)
        np.testing.assert_allclose([d["score"] for d in dets], res.scores, atol=1e-5)
        assert [d["class"] for d in dets] == res.labels.tolist()
        assert all(d["name"] == "person" for d in dets)
    assert f"{total} detections" in out

    # A second run gets a fresh folder; the first is untouched.
    assert run(shared, "--source", str(folder), "--project", str(project)) == 0
    assert (project / "exp2" / "predictions.json").is_file()
    assert load_records(project / "exp2") == [dict(r, speed_ms=r2["speed_ms"]) for r, r2 in
                                              zip(records, load_records(project / "exp2"))]
    assert run(shared, "--source", str(folder), "--project", str(project), "--no-save") == 0
    assert sorted(p.name for p in project.iterdir()) == ["exp", "exp2", "exp3"]
    assert [p.name for p in (project / "exp3").iterdir()] == ["predictions.json"]


def test_conf_and_no_save(shared, folder, tmp_path):
    project = tmp_path / "runs"
    assert run(shared, "--source", str(folder), "--project", str(project), "--name", "base", "--no-save") == 0
    assert [p.name for p in (project / "base").iterdir()] == ["predictions.json"]
    assert run(shared, "--source", str(folder), "--project", str(project), "--name", "high", "--no-save",
               "--conf", "0.7") == 0
    base, high = load_records(project / "base"), load_records(project / "high")
    assert sum(len(r["detections"]) for r in high) < sum(len(r["detections"]) for r in base)
    for b, h in zip(base, high):
        assert len(h["detections"]) <= len(b["detections"])
        assert all(d["score"] > 0.7 for d in h["detections"])
        # The high-confidence detections are exactly the base ones above 0.7.
        assert h["detections"] == [d for d in b["detections"] if d["score"] > 0.7]

    assert run(shared, "--source", str(folder), "--project", str(project), "--name", "top1", "--no-save",
               "--max-det", "1", "--preset", "eval", "--clip", "image") == 0
    top1 = load_records(project / "top1")
    assert [len(r["detections"]) for r in top1] == [1, 1, 1]
    for r in top1:
        h, w = r["orig_shape"]
        box = r["detections"][0]["box"]
        assert 0 <= box["x1"] <= box["x2"] <= w and 0 <= box["y1"] <= box["y2"] <= h


def test_save_dir_and_glob_source(shared, folder, tmp_path):
    target = tmp_path / "exactly" / "here"
    assert run(shared, "--source", str(folder / "*23.jpg"), "--save-dir", str(target)) == 0
    assert sorted(p.name for p in target.iterdir()) == ["000000064523.jpg", "predictions.json"]


def test_video_source_writes_mp4(shared, tmp_path):
    img = cv2.imread(str(shared(VAL) / IMAGES[0]))
    video = tmp_path / "walk.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (img.shape[1], img.shape[0]))
    assert writer.isOpened()
    for i in range(5):
        writer.write(np.roll(img, 10 * i, axis=1))
    writer.release()

    project = tmp_path / "runs"
    assert run(shared, "--source", str(video), "--project", str(project), "--batch", "2") == 0
    exp = project / "exp"
    assert sorted(p.name for p in exp.iterdir()) == ["predictions.json", "walk.mp4"]
    frames = read_video(exp / "walk.mp4")
    assert len(frames) == 5 and frames[0].shape == img.shape
    records = load_records(exp)
    assert [r["frame"] for r in records] == [0, 1, 2, 3, 4]
    assert all(r["source"] == str(video) for r in records)
    assert sum(len(r["detections"]) for r in records) > 0


def test_default_demo_image_without_weights(tmp_path, capsys):
    project = tmp_path / "runs"
    assert main(["predict", "--model", "rtmdet-nano-person", "--device", "cpu", "--project", str(project)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "no --weights" in err
    exp = project / "exp"
    assert sorted(p.name for p in exp.iterdir()) == ["demo.jpg", "predictions.json"]
    assert cv2.imread(str(exp / "demo.jpg")).shape == (192, 192, 3)
    records = load_records(exp)
    assert len(records) == 1 and records[0]["source"] == "array0" and records[0]["orig_shape"] == [192, 192]


def test_missing_source_fails_cleanly(tmp_path, capsys):
    missing = tmp_path / "does_not_exist.jpg"
    project = tmp_path / "runs"
    code = main(["predict", "--model", "rtmdet-nano-person", "--device", "cpu", "--source", str(missing),
                 "--project", str(project)])
    assert code == 1
    err = capsys.readouterr().err
    assert "rtmkit predict: error:" in err and str(missing) in err
    assert "Traceback" not in err
    assert not project.exists()  # no empty run folder left behind


def test_corrupt_image_is_named_and_fails_a_strict_run(shared, folder, tmp_path, capsys):
    bad = folder / "000000000001.jpg"
    bad.write_bytes(b"\x00" * 100)
    assert run(shared, "--source", str(folder), "--project", str(tmp_path / "runs")) == 0  # skipped, named
    assert f"warning: skipped: {bad}: not a readable image" in capsys.readouterr().err
    assert run(shared, "--source", str(folder), "--project", str(tmp_path / "runs"), "--strict") == 1
    assert f"{bad}: not a readable image" in capsys.readouterr().err


def test_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict", "--preset", "fastest"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    code = main(["predict", "--model", "rtmdet-nano-person", "--device", "cpu", "--imgsz", "100",
                 "--project", str(tmp_path / "runs")])
    assert code == 1
    assert "multiple of 32" in capsys.readouterr().err
    code = main(["predict", "--model", "no-such-model", "--project", str(tmp_path / "runs")])
    assert code == 1
    assert "unknown model" in capsys.readouterr().err


def test_same_stem_different_extension_not_overwritten(shared, tmp_path):
    src = tmp_path / "images"
    src.mkdir()
    img = cv2.imread(str(shared(VAL) / IMAGES[0]))
    cv2.imwrite(str(src / "a.jpg"), img)
    cv2.imwrite(str(src / "a.png"), img[:, ::-1])
    project = tmp_path / "runs"
    assert run(shared, "--source", str(src), "--project", str(project)) == 0
    outputs = [p for p in (project / "exp").iterdir() if p.name != "predictions.json"]
    assert len(outputs) == 2


def test_python_m_rtmkit_help():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "rtmkit", "predict", "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--source" in proc.stdout and "--weights" in proc.stdout and "--no-save" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "rtmkit"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "required" in bad.stderr
