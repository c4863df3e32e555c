"""Faults must never leave a silently wrong file: poisoned batches, divergent learning rates."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from rtmkit.checkpoint import load_checkpoint_file
from rtmkit.data.synthetic import make_shapes_dataset
from rtmkit.engine import trainer as trainer_module
from rtmkit.engine.trainer import TrainArgs, Trainer, TrainingError


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=16, num_val=4, size=128, seed=0)


def _args(shapes, tmp_path, name, **kw) -> TrainArgs:
    base = dict(model="rtmdet-tiny", data=str(shapes["train_json"]), val=None, epochs=1, batch=4, imgsz=128,
                lr=0.002, warmup_iters=2, workers=0, project=str(tmp_path / "runs"), name=name, deterministic=True)
    base.update(kw)
    return TrainArgs(**base)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint_file(path)
    out = {f"state_dict.{k}": v for k, v in ckpt["state_dict"].items()}
    out.update({f"model.{k}": v for k, v in ckpt["train_state"]["model"].items()})
    return out


POISONED = 2  # the third batch of the epoch


def test_poisoned_batch_leaves_no_trace(shapes, tmp_path, monkeypatch, capsys):
    """A batch of NaN pixels: the step is skipped and reported, and the saved weights, BN statistics and EMA are
    finite and equal to those of a run that never saw that batch (before the fix, the skipped forward pass had
    already written NaN into BatchNorm's running statistics)."""
    real_normalize = trainer_module.normalize_batch
    calls = {"n": 0}

    def poisoned(images, *args, **kw):
        out = real_normalize(images, *args, **kw)
        calls["n"] += 1
        return out * float("nan") if calls["n"] == POISONED + 1 else out

    monkeypatch.setattr(trainer_module, "normalize_batch", poisoned)
    run_a = Path(Trainer(_args(shapes, tmp_path, "poisoned")).fit()["save_dir"])
    assert "non-finite loss at epoch 1, step 2" in capsys.readouterr().out
    monkeypatch.setattr(trainer_module, "normalize_batch", real_normalize)

    real_build = Trainer._build_loader

    class Skipping:  # the same loader, without the poisoned batch, reporting the same length (same schedule)
        def __init__(self, loader):
            self.loader, self.sampler = loader, loader.sampler

        def __len__(self):
            return len(self.loader)

        def __iter__(self):
            return (b for i, b in enumerate(self.loader) if i != POISONED)

    monkeypatch.setattr(Trainer, "_build_loader", lambda self, ds: Skipping(real_build(self, ds)))
    run_b = Path(Trainer(_args(shapes, tmp_path, "skipped")).fit()["save_dir"])

    a, b = _tensors(run_a / "weights" / "last.pt"), _tensors(run_b / "weights" / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            assert torch.isfinite(a[k]).all(), k
        assert torch.equal(a[k], b[k]), k


def test_divergent_learning_rate_never_writes_a_non_finite_checkpoint(shapes, tmp_path):
    with pytest.raises(TrainingError) as err:
        Trainer(_args(shapes, tmp_path, "diverge", epochs=3, lr=1e12, warmup_iters=0, optimizer="SGD")).fit()
    message = str(err.value)
    assert "non-finite" in message or "not finite" in message
    for path in (tmp_path / "runs").rglob("*.pt"):
        for k, v in _tensors(path).items():
            if v.is_floating_point():
                assert torch.isfinite(v).all(), (path, k)
    if "last good checkpoint is" in message:  # a checkpoint it names must exist and be the finite one above
        named = Path(message.split("last good checkpoint is ")[1].split(" ")[0])
        assert named.is_file()


# ------------------------------------------------------------------------------------------- dataset mistakes

def _coco(tmp_path, shapes, edit) -> Path:
    import json

    src = Path(shapes["val_json"])
    data = json.loads(src.read_text())
    edit(data)
    root = tmp_path / "edited"
    (root / "annotations").mkdir(parents=True)
    (root / "val").symlink_to(src.parent.parent / "val")  # COCO layout: annotations/val.json -> val/
    out = root / "annotations" / "val.json"
    out.write_text(json.dumps(data))
    return out


@pytest.mark.parametrize("mistake, expected", [
    ("image_ids", "duplicate image ids"),
    ("category_ids", "duplicate category ids"),
    ("category_names", "duplicate category names"),
    ("file_names", "duplicate image file names"),
])
def test_duplicate_ids_are_errors_naming_file_and_entries(shapes, tmp_path, capsys, mistake, expected):
    from rtmkit.cli import main

    def edit(data):
        images, cats = data["images"], data["categories"]
        if mistake == "image_ids":
            images[1]["id"] = images[0]["id"]
        elif mistake == "category_ids":
            cats[1]["id"] = cats[0]["id"]
        elif mistake == "category_names":
            cats[1]["name"] = cats[0]["name"]
        else:
            images[1]["file_name"] = images[0]["file_name"]

    path = _coco(tmp_path, shapes, edit)
    assert main(["check", "--data", str(path), "--no-images"]) == 1
    out = capsys.readouterr().out
    assert str(path) in out and expected in out
    assert main(["train", "--data", str(path), "--epochs", "1", "--workers", "0",
                 "--project", str(tmp_path / "runs")]) == 1
    assert expected in capsys.readouterr().err


def test_invalid_image_size_is_reported(shapes, tmp_path):
    from rtmkit.data.datasets import CocoDataset

    def edit(data):
        data["images"][0]["width"] = 0
        data["images"][1]["height"] = -5

    with pytest.warns(UserWarning, match="invalid image size 0x"):
        ds = CocoDataset(_coco(tmp_path, shapes, edit), filter_empty_gt=False, min_size=0)
    assert ds.num_skipped == 2 and len(ds) == 2


# ------------------------------------------------------------------------------------------------ integrity

def _flip_byte_in_largest_member(path: Path) -> None:
    import struct
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset)
        header = f.read(30)
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        at = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x10]))


def test_flipped_bytes_in_checkpoints_are_caught(shared, tmp_path, capsys):
    import shutil

    from rtmkit import RTMDet
    from rtmkit.checkpoint import CheckpointError, load_checkpoint_file
    from rtmkit.cli import main

    nano = shared("weights/rtmdet_nano_person/rtmdet_nano_person.pth")
    own = RTMDet("rtmdet-nano-person", weights=nano, device="cpu").save(tmp_path / "own.pth")
    foreign = tmp_path / "foreign.pth"  # an official-style file: no rtmkit hash, only the zip's CRCs
    shutil.copyfile(nano, foreign)
    for path in (own, foreign):
        load_checkpoint_file(path)  # intact: loads
        _flip_byte_in_largest_member(path)
        with pytest.raises(CheckpointError, match="fails its CRC-32 check"):
            load_checkpoint_file(path)
        assert load_checkpoint_file(path, verify=False)  # torch alone would not notice
    assert main(["predict", "--model", str(own), "--no-save"]) == 1
    assert str(own) in capsys.readouterr().err

    # re-saved by hand with a changed tensor (valid zip, valid CRCs): the recorded SHA-256 no longer matches
    fresh = RTMDet("rtmdet-nano-person", weights=nano, device="cpu").save(tmp_path / "edited.pth")
    ckpt = load_checkpoint_file(fresh)
    ckpt["state_dict"]["bbox_head.rtm_cls.0.bias"] += 1.0
    torch.save(ckpt, fresh)
    with pytest.raises(CheckpointError, match="do not match the SHA-256 recorded"):
        RTMDet(fresh, device="cpu")


def test_tampered_or_broken_onnx_is_refused(shared, tmp_path, capsys):
    import onnx
    from onnx import numpy_helper

    from rtmkit import RTMDet
    from rtmkit.cli import main

    nano = RTMDet("rtmdet-nano-person", weights=shared("weights/rtmdet_nano_person/rtmdet_nano_person.pth"),
                  device="cpu")
    path = nano.export("onnx", tmp_path / "nano.onnx", nms=False)
    RTMDet(path)  # intact: loads
    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.01, init.name))
    onnx.save(model, str(path))
    with pytest.raises(ValueError, match="does not match the SHA-256 recorded at export"):
        RTMDet(path)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(path.read_bytes()[: 5000])
    assert main(["predict", "--model", str(broken), "--no-save"]) == 1
    err = capsys.readouterr().err
    assert str(broken) in err and "not a readable ONNX file" in err


# --------------------------------------------------------------------------------------- options and settings

@pytest.mark.parametrize("flags, message", [
    (["--conf", "1.5"], "conf (score threshold) must be in [0, 1], got 1.5"),
    (["--conf", "nan"], "conf (score threshold) must be in [0, 1], got nan"),
    (["--iou", "-0.1"], "iou (NMS IoU threshold) must be in [0, 1]"),
    (["--max-det", "0"], "max_det must be a positive integer"),
    (["--imgsz", "0"], "imgsz must be a positive multiple of 32, got 0"),
    (["--imgsz", "-32"], "imgsz must be a positive multiple of 32, got -32"),
])
def test_nonsense_predict_options_are_refused(tmp_path, capsys, flags, message):
    from rtmkit import RTMDet
    from rtmkit.cli import main

    assert main(["predict", "--model", "rtmdet-nano", "--no-save", "--project", str(tmp_path), *flags]) == 1
    assert message in capsys.readouterr().err
    key = {"--conf": "conf", "--iou": "iou", "--max-det": "max_det", "--imgsz": "imgsz"}[flags[0]]
    value = float(flags[1]) if key in ("conf", "iou") else int(flags[1])
    with pytest.raises(ValueError, match=re.escape(message.split(", got")[0])):
        RTMDet("rtmdet-nano", device="cpu").predict(np.zeros((64, 64, 3), np.uint8), **{key: value})


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
    (["--imgsz", "100"], "--imgsz must be a positive multiple of 32, got 100"),
    (["--lr", "nan"], "--lr must be a positive finite number, got nan"),
    (["--batch", "-4"], "--batch must be a positive integer, got -4"),
])
def test_nonsense_train_options_are_refused(shapes, tmp_path, capsys, flags, message):
    from rtmkit.cli import main

    assert main(["train", "--data", str(shapes["train_json"]), "--project", str(tmp_path), *flags]) == 1
    assert message in capsys.readouterr().err


def test_end2end_graph_says_what_it_cannot_honour(shared, tmp_path, capsys):
    from rtmkit import RTMDet
    from rtmkit.cli import main

    weights = shared("weights/rtmdet_nano_person/rtmdet_nano_person.pth")
    path = RTMDet("rtmdet-nano-person", weights=weights, device="cpu").export("onnx", tmp_path / "e2e.onnx")
    model = RTMDet(path)
    img = np.full((240, 320, 3), 114, np.uint8)
    with pytest.warns(UserWarning, match="NMS IoU is baked into the graph at 0.6; iou=0.3 cannot be applied"):
        model.predict(img, iou=0.3)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.predict(img, preset="eval")  # this model's eval preset is what was baked: nothing to say
    assert not [w for w in caught if "baked" in str(w.message)]
    with pytest.warns(UserWarning, match="at most 100 detections per image \\(baked\\); max_det=300"):
        model.predict(img, max_det=300)
    ann = shared("data/coco_tiny/annotations/instances_val2017.json")
    assert main(["val", "--model", str(path), "--data", str(ann), "--batch", "16"]) == 0
    out = capsys.readouterr().out
    assert "end-to-end graph: NMS baked at score > 0.05, IoU 0.6, at most 100 per image" in out


# ------------------------------------------------------------------------------------------------ resume

@pytest.fixture()
def interrupted_run(shapes, tmp_path, monkeypatch):
    """A 2-epoch run stopped by an exception during its second epoch (last.pt holds epoch 1)."""
    real = Trainer._train_epoch

    def stop_in_second(self, epoch, loader):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(self, epoch, loader)

    monkeypatch.setattr(Trainer, "_train_epoch", stop_in_second)
    with pytest.raises(KeyboardInterrupt):
        Trainer(_args(shapes, tmp_path, "exp", epochs=2)).fit()
    monkeypatch.setattr(Trainer, "_train_epoch", real)
    run = tmp_path / "runs" / "exp"
    assert (run / "weights" / "last.pt").is_file() and not (run / ".lock").exists()  # released on the way out
    return run


def test_resume_keeps_the_runs_own_settings(interrupted_run, capsys):
    from rtmkit.cli import main

    assert main(["train", "--resume", str(interrupted_run), "--epochs", "5"]) == 1
    err = capsys.readouterr().err
    assert "--epochs 5 differs from the run's own 2" in err and "rtmkit train --weights" in err
    assert main(["train", "--resume", str(interrupted_run), "--lr", "0.1"]) == 1
    assert "--lr 0.1 differs from the run's own 0.002" in capsys.readouterr().err


def test_two_processes_never_write_one_run(interrupted_run, capsys):
    import subprocess
    import sys

    from rtmkit.cli import main

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (interrupted_run / ".lock").write_text(str(other.pid))  # a live writer
        assert main(["train", "--resume", str(interrupted_run)]) == 1
        assert f"being written by another process (pid {other.pid})" in capsys.readouterr().err
    finally:
        other.kill()
        other.wait()
    # its writer is gone (killed): the lock is stale and the resume takes over
    assert main(["train", "--resume", str(interrupted_run)]) == 0
    assert not (interrupted_run / ".lock").exists()
    state = load_checkpoint_file(interrupted_run / "weights" / "last.pt")["train_state"]
    assert state["epoch"] == 1  # both epochs done


def test_sigterm_stops_cleanly(shapes, tmp_path):
    """SIGTERM mid-epoch: exit 143 with a message naming the resumable checkpoint; no lock, no temp file, no
    worker left; last.pt complete (it loads, all finite) and the run resumes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    project = tmp_path / "runs"
    cmd = [sys.executable, "-m", "rtmkit", "train", "--data", str(shapes["train_json"]), "--epochs", "3",
           "--batch", "4", "--imgsz", "128", "--warmup-iters", "2", "--project", str(project)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = project / "exp" / "weights" / "last.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not last.exists():
        time.sleep(0.2)
    time.sleep(1.0)  # into the second epoch
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert f"stopped by SIGTERM: {last} holds the last complete epoch" in err
    assert f"rtmkit train --resume {project / 'exp'}" in err
    run = project / "exp"
    assert not (run / ".lock").exists() and not list(run.rglob("*.tmp"))
    state = load_checkpoint_file(last)["train_state"]
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    env = dict(os.environ)
    done = subprocess.run([sys.executable, "-m", "rtmkit", "train", "--resume", str(run)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert load_checkpoint_file(last)["train_state"]["epoch"] == 2


def test_hung_rank_is_named_after_the_timeout(shapes, tmp_path):
    """torchrun with 2 CPU processes; rank 1 hangs (sleeps) at the start of epoch 2: with --dist-timeout 15 the run
    stops within about a minute, naming rank 1, instead of blocking the others for the default half hour."""
    import os
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parent.parent
    script = tmp_path / "hung_rank.py"
    script.write_text(
        "import os, sys, time\n"
        "from rtmkit.engine.trainer import Trainer\n"
        "real = Trainer._train_epoch\n"
        "def hang(self, epoch, loader):\n"
        "    if epoch == 1 and os.environ.get('RANK') == '1':\n"
        "        time.sleep(300)\n"
        "    return real(self, epoch, loader)\n"
        "Trainer._train_epoch = hang\n"
        "from rtmkit.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           "train", "--data", str(shapes["train_json"]), "--epochs", "2", "--batch", "8", "--imgsz", "128",
           "--workers", "0", "--warmup-iters", "1", "--project", str(tmp_path / "runs"), "--dist-timeout", "15"]
    start = time.time()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    took = time.time() - start
    assert out.returncode != 0
    assert "stopped answering: rank 1 (last began step 2" in out.stderr and "others began step 3" in out.stderr
    assert took < 150


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(shapes, tmp_path, monkeypatch, capsys):
    """ENOSPC while writing last.pt of epoch 2 (mocked: the machines here cannot mount a small tmpfs): a message
    naming the file, no .tmp left, and epoch 1's last.pt intact and loadable."""
    import errno

    from rtmkit import checkpoint
    from rtmkit.cli import main

    real_save = checkpoint.torch.save
    calls = {"n": 0}

    def full_disk(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] >= 3:  # epoch 1 writes last.pt and best.pt; epoch 2's last.pt hits the full disk
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    project = tmp_path / "runs"
    code = main(["train", "--data", str(shapes["train_json"]), "--val", str(shapes["val_json"]), "--epochs", "2",
                 "--batch", "4", "--imgsz", "128", "--workers", "0", "--warmup-iters", "1", "--project", str(project)])
    err = capsys.readouterr().err
    last = project / "exp" / "weights" / "last.pt"
    assert code == 1 and f"{last}: could not write the checkpoint (No space left on device)" in err
    assert "previous last.pt is unchanged" in err
    assert not list(project.rglob("*.tmp"))
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert load_checkpoint_file(last)["train_state"]["epoch"] == 0


# ----------------------------------------------------------------------------------------- damaged inputs

def _corrupt_jpeg(path: Path) -> Path:
    import cv2

    img = np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    data = bytearray(cv2.imencode(".jpg", img)[1].tobytes())
    mid = len(data) // 2
    for i in range(mid, mid + 40):  # damaged entropy-coded data; the end-of-image marker stays
        data[i] = 0xFF if i % 7 == 0 else data[i] ^ 0x55
    path.write_bytes(bytes(data))
    return path


def test_corrupt_but_decodable_jpeg_is_reported(tmp_path, capsys):
    import json
    import shutil

    import cv2

    from rtmkit import RTMDet
    from rtmkit.cli import main
    from rtmkit.data.check import check_dataset
    from rtmkit.data.images import CorruptImageWarning

    folder = tmp_path / "images"
    folder.mkdir()
    bad = _corrupt_jpeg(folder / "bad.jpg")
    cv2.imwrite(str(folder / "good.jpg"), np.zeros((100, 100, 3), np.uint8))
    with pytest.warns(CorruptImageWarning, match="bad.jpg: corrupt JPEG, decoded with errors \\(Corrupt JPEG data"):
        results = RTMDet("rtmdet-nano", device="cpu").predict(folder)
    assert len(results) == 2  # reported, still predicted
    # check: a COCO json over the folder
    ann = {"images": [{"id": 1, "file_name": "bad.jpg", "width": 300, "height": 200},
                      {"id": 2, "file_name": "good.jpg", "width": 100, "height": 100}],
           "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "images.json").write_text(json.dumps(ann))
    report = check_dataset(tmp_path / "images.json")
    assert [(p.file, p.kind) for p in report.problems] == [(str(bad), "corrupt_jpeg")]
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)
    assert main(["check", "--data", str(tmp_path / "images.json")]) == 0
    assert "corrupt JPEG, decoded with errors" in capsys.readouterr().out


def test_truncated_video_says_how_many_frames_were_read(tmp_path):
    import cv2

    from rtmkit.data.sources import VideoWarning, iter_frames

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(20):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    index = data.rfind(b"idx1")  # keep the header and the index (they announce 20 frames), lose the second half
    data[len(data) // 2: index] = bytes(index - len(data) // 2)
    path.write_bytes(bytes(data))
    with pytest.warns(VideoWarning, match=r"clip.avi: read \d+ of the 20 frames its header announces"):
        frames = list(iter_frames(str(path)))
    assert 0 < len(frames) < 20


def _mixed_folder(folder: Path) -> Path:
    """Three good pictures and three bad files (garbage, empty, truncated JPEG), the bad ones sorted in between."""
    import cv2

    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "c.png", "e.jpg"):
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    (folder / "b.jpg").write_bytes(b"not an image")
    (folder / "d.png").write_bytes(b"")
    (folder / "d2.jpg").write_bytes((folder / "a.jpg").read_bytes()[:400])
    return folder


PREDICT = ["predict", "--model", "rtmdet-nano", "--device", "cpu", "--imgsz", "128"]


def test_cli_predict_skips_unreadable_files_and_keeps_the_rest(tmp_path, capsys):
    import json

    from rtmkit.cli import main

    folder = _mixed_folder(tmp_path / "mixed")
    assert main([*PREDICT, "--source", str(folder), "--save-dir", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    for bad, why in [("b.jpg", "not a readable image"), ("d.png", "file is empty"), ("d2.jpg", "truncated JPEG")]:
        assert f"warning: skipped: {folder / bad}: {why}" in err
    assert "3 input(s) could not be read and were skipped" in err
    out = tmp_path / "out"
    records = json.loads((out / "predictions.json").read_text())
    assert [Path(r["source"]).name for r in records] == ["a.jpg", "c.png", "e.jpg"]
    assert all(r["orig_shape"] == [90, 120] for r in records)
    failures = json.loads((out / "failures.json").read_text())
    assert [Path(f["source"]).name for f in failures] == ["b.jpg", "d.png", "d2.jpg"]
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "c.png", "e.jpg", "failures.json", "predictions.json"]

    # --strict: the same outputs, but the exit status says that something failed
    assert main([*PREDICT, "--source", str(folder), "--save-dir", str(tmp_path / "strict"), "--strict"]) == 1
    assert len(json.loads((tmp_path / "strict" / "predictions.json").read_text())) == 3
    # nothing readable at all: an error, with the failures still listed
    for good in ("a.jpg", "c.png", "e.jpg"):
        (folder / good).unlink()
    assert main([*PREDICT, "--source", str(folder), "--save-dir", str(tmp_path / "none")]) == 1
    assert "rtmkit predict: error: no input could be read" in capsys.readouterr().err
    assert json.loads((tmp_path / "none" / "predictions.json").read_text()) == []
    assert len(json.loads((tmp_path / "none" / "failures.json").read_text())) == 3


def test_cli_predict_on_a_full_disk_names_the_file_and_keeps_what_was_done(tmp_path, monkeypatch, capsys):
    """ENOSPC (mocked: no small tmpfs can be mounted here) while writing the second annotated picture: the error
    names it, no partial picture or .tmp file is left, and the first picture's predictions are saved."""
    import errno
    import json
    import os

    from rtmkit.cli import main

    folder = _mixed_folder(tmp_path / "mixed")
    real_fsync = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("c.png.tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "out"
    assert main([*PREDICT, "--source", str(folder), "--save-dir", str(out)]) == 1
    assert f"rtmkit predict: error: {out / 'c.png'}: could not write (No space left on device)" in \
        capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "failures.json", "predictions.json"]
    assert [Path(r["source"]).name for r in json.loads((out / "predictions.json").read_text())] == ["a.jpg"]


@pytest.mark.parametrize("command", ["predict", "train"])
def test_read_only_output_folder_is_a_clear_error(command, shapes, tmp_path, monkeypatch, capsys):
    """A read-only --project: one line naming the folder, exit 1, no traceback. As root (CI) permissions do not
    apply, so the refusal is emulated at os.mkdir with the error a read-only file system gives."""
    import errno
    import os

    from rtmkit.cli import main

    project = tmp_path / "read-only"
    project.mkdir()
    if os.geteuid() == 0:
        real_mkdir = os.mkdir

        def mkdir(path, *a, **kw):
            if str(path).startswith(str(project)):
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            return real_mkdir(path, *a, **kw)

        monkeypatch.setattr(os, "mkdir", mkdir)
    else:
        project.chmod(0o555)
    argv = ([*PREDICT, "--source", str(_mixed_folder(tmp_path / "mixed"))] if command == "predict" else
            ["train", "--data", str(shapes["train_json"]), "--epochs", "1", "--imgsz", "128", "--workers", "0"])
    assert main([*argv, "--project", str(project)]) == 1
    err = capsys.readouterr().err
    assert re.search(rf"rtmkit {command}: error: {re.escape(str(project / 'exp'))}: cannot create the output "
                     r"folder \((Read-only file system|Permission denied)\); choose a writable place with --project",
                     err), err
    assert "Traceback" not in err
