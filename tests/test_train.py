"""Training: run directory, resume after SIGKILL, non-finite losses, fine-tuning, and DDP equivalence."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rtmkit import RTMDet
from rtmkit.checkpoint import load_checkpoint_file
from rtmkit.data.synthetic import make_shapes_dataset
from rtmkit.engine.trainer import TrainArgs, Trainer, TrainingError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=12, num_val=6, size=128, seed=0)


def _args(shapes, tmp_path, **kw) -> TrainArgs:
    base = dict(model="rtmdet-tiny", data=str(shapes["train_json"]), val=str(shapes["val_json"]), epochs=2,
                batch=4, imgsz=128, lr=0.002, warmup_iters=4, workers=0, project=str(tmp_path / "runs"),
                name="exp", deterministic=True)
    base.update(kw)
    return TrainArgs(**base)


def test_run_directory_and_checkpoints(shapes, tmp_path):
    result = Trainer(_args(shapes, tmp_path, epochs=3, stage2_epochs=1)).fit()
    run = Path(result["save_dir"])
    for name in ("args.yaml", "results.csv", "results.png", "per_class_ap.csv", "pr_curve.png",
                 "train_batch_epoch1.jpg", "weights/last.pt", "weights/best.pt"):
        assert (run / name).is_file(), name
    rows = (run / "results.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,lr,loss_cls,loss_bbox,AP") and len(rows) == 4
    ckpt = load_checkpoint_file(run / "weights" / "last.pt")
    state = ckpt["train_state"]
    assert state["epoch"] == 2 and state["iter"] == 9  # 3 epochs x 3 steps of 4 images
    # the checkpoint's state_dict is the EMA model (as MMDetection saves it), not the raw weights
    ema = state["ema"]["module"]
    assert all(torch.equal(ckpt["state_dict"][k], ema[k]) for k in ema)
    assert any(not torch.equal(state["model"][k], ema[k]) for k in ema if ema[k].is_floating_point())
    model = RTMDet(run / "weights" / "best.pt")  # loads as a detector with the dataset's class names
    assert list(model.names.values()) == ["rectangle", "ellipse", "triangle"]
    assert len(model.predict(str(shapes["val_images"] / "000000.png"), preset="eval")) > 0


def _train_cmd(shapes, project: Path, epochs: int, resume: bool = False, model: str = "rtmdet-tiny") -> list[str]:
    if resume:  # the README's command, nothing else: the run's own settings come from its args.yaml
        return [sys.executable, "-m", "rtmkit", "train", "--resume", str(project / "exp")]
    return [sys.executable, "-m", "rtmkit", "train", "--model", model, "--data", str(shapes["train_json"]),
            "--epochs", str(epochs),
            "--batch", "4", "--imgsz", "128", "--lr", "0.002", "--warmup-iters", "4", "--project", str(project),
            "--name", "exp", "--deterministic", "--stage2-epochs", "1"]  # default workers (2)


def _tagged_processes(tag: str) -> list[int]:
    """Live processes whose environment holds ``RTMKIT_TEST_TAG=tag`` (the run and its data workers)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if f"RTMKIT_TEST_TAG={tag}".encode() in environ.split(b"\0") and state != "Z":
            found.append(int(proc.name))
    return found


def _final_weights(project: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint_file(project / "exp" / "weights" / "last.pt")["train_state"]["model"]


@pytest.mark.parametrize("model", ["rtmdet-tiny", "rtmdet-ins-tiny"])
def test_sigkill_and_resume_gives_the_same_weights(shapes, tmp_path, model):
    """kill -9 mid-epoch of a run with the default 2 data workers, then exactly `rtmkit train --resume <dir>`:
    the same final weights as an uninterrupted run, and no worker process outlives the killed run (detection,
    and RTMDet-Ins with its mask pipeline and Dice loss)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(shapes, straight, 3, model=model), env=env, check=True, capture_output=True,
                   timeout=600)

    killed = tmp_path / "killed"
    tag = f"{os.getpid()}-{time.time()}"
    proc = subprocess.Popen(_train_cmd(shapes, killed, 3, model=model), env=dict(env, RTMKIT_TEST_TAG=tag),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "exp" / "weights" / "last.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and load_checkpoint_file(last)["train_state"]["epoch"] >= 0:
            proc.send_signal(signal.SIGKILL)  # mid-epoch 2 (or later), no chance to clean up
            break
        time.sleep(0.2)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    deadline = time.time() + 20
    while _tagged_processes(tag) and time.time() < deadline:
        time.sleep(0.5)
    assert _tagged_processes(tag) == [], "data workers outlived the killed run"
    epoch_at_kill = load_checkpoint_file(last)["train_state"]["epoch"]
    assert epoch_at_kill < 2
    subprocess.run(_train_cmd(shapes, killed, 3, resume=True), env=env, check=True, capture_output=True,
                   timeout=600)
    a, b = _final_weights(straight), _final_weights(killed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)  # bit-identical in deterministic mode


def test_non_finite_loss_is_reported_and_stops(shapes, tmp_path, monkeypatch, capsys):
    from rtmkit.engine.criterion import RTMDetCriterion

    real = RTMDetCriterion.__call__

    def nan_loss(self, outputs, targets, **kw):
        out = real(self, outputs, targets, **kw)
        return {k: v * float("nan") for k, v in out.items()}

    monkeypatch.setattr(RTMDetCriterion, "__call__", nan_loss)
    with pytest.raises(TrainingError, match="non-finite losses in 3 steps of epoch 1") as err:
        Trainer(_args(shapes, tmp_path, epochs=1)).fit()
    # the NaNs come in the first epoch: no checkpoint exists, and the message must not pretend one does
    assert "no checkpoint was written yet (the first epoch did not finish)" in str(err.value)
    assert not list(tmp_path.rglob("*.pt"))
    out = capsys.readouterr().out
    assert out.count("non-finite loss at epoch 1, step 0") == 3  # reported with the step, never applied


def test_finetune_with_other_class_count_reinitialises_class_head(shared, shapes, tmp_path, capsys):
    nano = shared("weights/rtmdet_nano_person/rtmdet_nano_person.pth")
    trainer = Trainer(_args(shapes, tmp_path, model="rtmdet-nano-person", weights=str(nano), epochs=1))
    from rtmkit.data.datasets import load_dataset

    task = trainer._build_task(load_dataset(str(shapes["train_json"]), "train"))
    net, cfg = trainer._build_net(task), task.cfg
    assert cfg.num_classes == 3 and net.bbox_head.rtm_cls[0].weight.shape[0] == 3
    official = load_checkpoint_file(nano)["state_dict"]
    assert torch.equal(net.state_dict()["backbone.stem.0.conv.weight"], official["backbone.stem.0.conv.weight"])
    assert torch.equal(net.state_dict()["bbox_head.rtm_reg.0.weight"], official["bbox_head.rtm_reg.0.weight"])
    assert "re-initialised" in capsys.readouterr().out


def test_ddp_two_processes_equal_one_process_with_combined_batch(tmp_path):
    """torchrun, 2 CPU processes (gloo, SyncBN on CPU) with 4 images each vs 1 process with 8 images: same
    parameters and BN statistics after 2 steps (stage-2 pipeline: no per-worker Mosaic caches to differ).

    Two conditions make the comparison meaningful. SGD, whose update is linear in the gradient (AdamW's first
    steps are ~lr * sign(grad): float noise in near-zero gradients becomes lr-sized and would hide a
    synchronisation bug too). And a briefly pre-trained start: the reference normalises by
    max(mean over ranks of the positives' IoU sum, 1), which differs from max(sum, 1) of one process whenever
    a rank's share is below 1, as it is at random init."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    data = make_shapes_dataset(tmp_path / "shapes", num_train=17, num_val=4, size=128, seed=1)  # 16 usable: no padding
    base = ["--data", str(data["train_json"]), "--imgsz", "128", "--workers", "0", "--name", "exp"]
    subprocess.run([sys.executable, "-m", "rtmkit", "train", *base, "--epochs", "6", "--batch", "4", "--lr", "0.004",
                    "--warmup-iters", "4", "--stage2-epochs", "6", "--project", str(tmp_path / "pre")], env=env,
                   check=True, capture_output=True, timeout=600)
    start = tmp_path / "pre" / "exp" / "weights" / "last.pt"
    common = [*base, "--weights", str(start), "--epochs", "1", "--batch", "8", "--lr", "0.001", "--optimizer", "SGD",
              "--warmup-iters", "1", "--stage2-epochs", "1"]
    single, multi = tmp_path / "single", tmp_path / "multi"
    subprocess.run([sys.executable, "-m", "rtmkit", "train", *common, "--project", str(single)], env=env,
                   check=True, capture_output=True, timeout=600)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "rtmkit", "train", *common, "--project", str(multi)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = _final_weights(single), _final_weights(multi)
    init = load_checkpoint_file(start)["train_state"]["model"]
    assert a.keys() == b.keys()
    moved = max((a[k] - init[k]).abs().max().item() for k in a if a[k].is_floating_point())
    assert moved > 1e-3  # the two steps really changed the weights
    for k in a:
        if a[k].is_floating_point():
            # float32 reductions in another order (per-rank sums, all-reduce): a few ulps
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
        else:
            assert torch.equal(a[k], b[k]), k


def test_main_job_without_arguments_trains_on_built_in_shapes(tmp_path, capsys, monkeypatch):
    """`rtmkit train` with no --data (the README's main job), shortened to 2 epochs: draws the shapes dataset,
    trains rtmdet-nano, validates, saves checkpoints and prediction pictures."""
    import yaml

    from rtmkit.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--epochs", "2", "--project", str(tmp_path / "runs" / "train")]) == 0
    out = capsys.readouterr().out
    assert "built-in shapes dataset" in out and "final: AP" in out
    assert (tmp_path / "runs/data/shapes/annotations/train.json").exists()
    run = tmp_path / "runs/train/exp"
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["model"] == "rtmdet-nano" and args["epochs"] == 2 and args["stage2_epochs"] == 2
    assert (run / "weights/best.pt").exists() and (run / "weights/last.pt").exists()
    assert len(list((run / "predictions").glob("*.png"))) == 8
    assert len((run / "results.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs


def test_script_without_main_guard_gets_a_hint(shapes, tmp_path):
    """Data workers start from a fresh interpreter that imports the calling script; a script calling train() at
    top level makes each worker run it again and die. The error must say how to fix it, not only that they died."""
    script = tmp_path / "train_script.py"
    script.write_text(
        "from rtmkit.engine.trainer import Trainer, TrainArgs\n"
        f"Trainer(TrainArgs(model='rtmdet-nano', data={str(shapes['train_json'])!r}, epochs=1, batch=4, imgsz=128,"
        f" workers=2, project={str(tmp_path / 'runs')!r})).fit()\n")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode != 0
    assert 'put the call under `if __name__ == "__main__":`' in proc.stderr, proc.stderr[-2000:]
