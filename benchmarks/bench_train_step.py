"""CPU time of one RTMDet training step (rtmdet-tiny, batch 4 at 320 by default), rtmkit against the reference.

    python benchmarks/bench_train_step.py [--model rtmdet-tiny] [--batch 4] [--imgsz 320] [--steps 20]
        [--threads 2] [--reference-python .venv-reference/bin/python]

A step is what both trainers do per iteration: normalise a uint8 batch, forward, assignment and losses,
backward, AdamW update with the recipe's parameter groups, zero_grad, EMA update. The batch is real: the first
``--batch`` images of coco_tiny's train2017 letterboxed to ``--imgsz`` with their boxes (shared data; random
boxes otherwise). Both sides start from the same random weights (the reference model's init, saved and loaded by
rtmkit with strict=True) and see the same batch every step; the loss values of the first step are printed
side by side as a check that the two steps do the same work. rtmkit's step is timed in this process, the
reference's in a subprocess of the same session with the same thread count (``$RTMKIT_REFERENCE_PYTHON`` or
--reference-python, built by shared/tools/reference/setup.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rtmkit.assets import shared_dir
from rtmkit.config import get_config
from rtmkit.data.loader import normalize_batch
from rtmkit.data.preprocess import letterbox_batch
from rtmkit.engine.ema import ExpMomentumEMA
from rtmkit.engine.optim import build_optimizer
from rtmkit.models.detector import RTMDetNet


def real_batch(n: int, size: int) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """uint8 [n, 3, size, size] letterboxed train images and their boxes in input pixels."""
    ann = shared_dir() / "data/coco_tiny/annotations/instances_train2017.json"
    if not ann.exists():
        rng = np.random.default_rng(0)
        images = torch.from_numpy(rng.integers(0, 255, (n, 3, size, size), dtype=np.uint8))
        targets = []
        for _ in range(n):
            xy = rng.uniform(0, size * 0.7, (5, 2))
            wh = rng.uniform(8, size * 0.3, (5, 2))
            targets.append({"boxes": torch.tensor(np.hstack([xy, xy + wh]), dtype=torch.float32),
                            "labels": torch.tensor(rng.integers(0, 80, 5))})
        return images, targets
    from rtmkit.data.datasets import load_dataset

    ds = load_dataset(ann, "train")
    picked = [ds[i] for i in range(len(ds)) if len(ds.records[i]["boxes"])][:n]
    canvas, scales = letterbox_batch([s["image"] for s in picked], size, 114)
    targets = []
    for sample, s in zip(picked, scales):
        scale = torch.tensor([s[0], s[1], s[0], s[1]], dtype=torch.float64)
        boxes = (torch.as_tensor(sample["boxes"], dtype=torch.float64) * scale).float()
        targets.append({"boxes": boxes, "labels": torch.as_tensor(sample["labels"], dtype=torch.long)})
    return torch.from_numpy(np.ascontiguousarray(canvas.transpose(0, 3, 1, 2))), targets


def time_rtmkit(net: RTMDetNet, images, targets, steps: int, warmup: int) -> tuple[list[float], dict]:
    opt = build_optimizer(net, lr=0.004 * images.shape[0] / 256)
    ema = ExpMomentumEMA(net)
    net.train()
    times, first = [], {}
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        x = normalize_batch(images, net.cfg.mean, net.cfg.std)
        losses = net.loss(x, targets)
        sum(losses.values()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(net)
        times.append(time.perf_counter() - t0)
        if i == 0:
            first = {k: float(v.detach()) for k, v in losses.items()}
    return times[warmup:], first


def time_reference(python: str, model: str, batch_file: Path, weights_out: Path, steps: int, warmup: int,
                   threads: int) -> dict | None:
    tools = shared_dir() / "tools/reference"
    if not Path(python).exists() or not tools.exists():
        print(f"reference: not available ({python}); timing rtmkit only")
        return None
    script = Path(__file__).with_name("reference_train_step.py")
    out = subprocess.run([python, str(script), str(tools), model, str(batch_file), str(weights_out), str(steps),
                          str(warmup), str(threads)], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        print(f"reference: failed: {out.stderr.strip()[-2000:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="rtmdet-tiny")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reference-python",
                    default=os.environ.get("RTMKIT_REFERENCE_PYTHON", ".venv-reference/bin/python"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images, targets = real_batch(args.batch, args.imgsz)
    n_obj = sum(len(t["boxes"]) for t in targets)
    print(f"{args.model}, batch {args.batch} at {args.imgsz}, {n_obj} objects, {args.threads} threads, "
          f"median of {args.steps} steps after {args.warmup} warm-up")
    with tempfile.TemporaryDirectory() as tmp:
        batch_file, weights = Path(tmp) / "batch.pt", Path(tmp) / "init.pt"
        torch.save({"images": images, "boxes": [t["boxes"] for t in targets],
                    "labels": [t["labels"] for t in targets]}, batch_file)
        ref = time_reference(args.reference_python, args.model, batch_file, weights, args.steps, args.warmup,
                             args.threads)
        net = RTMDetNet(get_config(args.model))
        if ref is not None:
            net.load_state_dict(torch.load(weights, weights_only=True), strict=True)
    times, first = time_rtmkit(net, images, targets, args.steps, args.warmup)
    med = statistics.median(times) * 1e3
    q = np.percentile(np.array(times) * 1e3, [25, 75])
    print(f"rtmkit:    {med:8.1f} ms/step (iqr {q[1] - q[0]:.1f}), {args.batch / med * 1e3:6.1f} img/s; "
          f"first-step losses {', '.join(f'{k}={v:.6f}' for k, v in first.items())}")
    if ref is not None:
        print(f"reference: {ref['step_ms']:8.1f} ms/step (iqr {ref['iqr_ms']:.1f}), "
              f"{args.batch / ref['step_ms'] * 1e3:6.1f} img/s; first-step losses "
              f"loss_cls={ref['loss_cls']:.6f}, loss_bbox={ref['loss_bbox']:.6f}")
        print(f"rtmkit / reference: {med / ref['step_ms']:.3f}")


if __name__ == "__main__":
    main()
