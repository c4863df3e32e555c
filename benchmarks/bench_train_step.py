"""CPU time of one RTMDet training step (rtmdet-tiny, batch 4 at 320 by default), rtmkit against the reference.
With ``--model rtmdet-ins-tiny`` the RTMDet-Ins step (masks of the real images, Dice loss) is timed.

    python benchmarks/bench_train_step.py [--model rtmdet-tiny] [--batch 4] [--imgsz 320] [--steps 20]
        [--threads 2] [--reference-python .venv-reference/bin/python]

A step is what both trainers do per iteration: normalise a uint8 batch, forward, assignment and losses,
backward, AdamW update with the recipe's parameter groups, zero_grad, EMA update. The batch is real: the first
``--batch`` images of coco_tiny's train2017 letterboxed to ``--imgsz`` with their boxes (shared data; random
boxes otherwise). Both sides start from the same random weights (the reference model's init, saved and loaded by
rtmkit with strict=True) and see the same batch every step; the loss values of the first step are printed
side by side as a check that the two steps do the same work. rtmkit's step is timed in this process, the
reference's in a subprocess with the same thread count (``$RTMKIT_REFERENCE_PYTHON`` or --reference-python,
built by shared/tools/reference/setup.sh), alternating step by step so that both see the same machine state.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from reference_server import ReferenceServer

from rtmkit.allocator import keep_freed_memory
from rtmkit.assets import shared_dir
from rtmkit.catalog import get_config
from rtmkit.data.loader import normalize_batch
from rtmkit.data.preprocess import letterbox_batch
from rtmkit.engine.ema import ExpMomentumEMA
from rtmkit.engine.optim import build_optimizer
from rtmkit.engine.task import task_for
from rtmkit.models.detector import RTMDetNet


def real_batch(n: int, size: int, masks: bool = False) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """uint8 [n, 3, size, size] letterboxed train images and their boxes in input pixels (and, with ``masks``,
    their polygons scaled and rasterised as bool [k, size, size])."""
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
            if masks:
                m = torch.zeros(5, size, size, dtype=torch.bool)
                for k, (x1, y1, x2, y2) in enumerate(targets[-1]["boxes"].round().long().tolist()):
                    m[k, y1:y2, x1:x2] = True
                targets[-1]["masks"] = m
        return images, targets
    from rtmkit.data.datasets import load_dataset

    ds = load_dataset(ann, "train")
    picked = [ds[i] for i in [i for i in range(len(ds)) if len(ds.records[i]["boxes"])][:n]]
    canvas, scales = letterbox_batch([s["image"] for s in picked], size, 114)
    targets = []
    for sample, s in zip(picked, scales):
        scale = torch.tensor([s[0], s[1], s[0], s[1]], dtype=torch.float64)
        boxes = (torch.as_tensor(sample["boxes"], dtype=torch.float64) * scale).float()
        targets.append({"boxes": boxes, "labels": torch.as_tensor(sample["labels"], dtype=torch.long)})
        if masks:
            from rtmkit.structures.masks import PolygonMasks

            polys = PolygonMasks(sample["masks"]).scale(float(s[0]), float(s[1]))
            targets[-1]["masks"] = torch.from_numpy(polys.to_bitmaps(size, size))
    return torch.from_numpy(np.ascontiguousarray(canvas.transpose(0, 3, 1, 2))), targets


class Stepper:
    """rtmkit's training step, one call at a time."""

    def __init__(self, net: RTMDetNet, images, targets):
        keep_freed_memory()  # as rtmkit's trainer does on a CPU
        self.net, self.images, self.targets = net.train(), images, targets
        self.opt = build_optimizer(net, lr=0.004 * images.shape[0] / 256)
        self.ema = ExpMomentumEMA(net)
        self.criterion = task_for(net.cfg).criterion()

    def __call__(self) -> dict:
        t0 = time.perf_counter()
        x = normalize_batch(self.images, self.net.cfg.data.mean, self.net.cfg.data.std)
        losses = self.criterion(self.net(x), self.targets)
        sum(losses.values()).backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema.update(self.net)
        out = {k: float(v.detach()) for k, v in losses.items()}
        out["step_ms"] = (time.perf_counter() - t0) * 1e3
        return out


def _summary(runs: list[dict], batch: int) -> str:
    t = np.array([r["step_ms"] for r in runs])
    q = np.percentile(t, [25, 75])
    med = statistics.median(t.tolist())
    return f"{med:8.1f} ms/step (iqr {q[1] - q[0]:.1f}), {batch / med * 1e3:6.1f} img/s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="rtmdet-tiny")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--steps", type=int, default=20, help="timed steps (at least 1)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reference-python",
                    default=os.environ.get("RTMKIT_REFERENCE_PYTHON", ".venv-reference/bin/python"))
    args = ap.parse_args()
    args.steps = max(args.steps, 1)
    torch.set_num_threads(args.threads)
    segment = get_config(args.model).task == "segment"
    images, targets = real_batch(args.batch, args.imgsz, masks=segment)
    args.batch = images.shape[0]
    n_obj = sum(len(t["boxes"]) for t in targets)
    print(f"{args.model}, batch {args.batch} at {args.imgsz}, {n_obj} objects, {args.threads} threads, "
          f"median of {args.steps} steps after {args.warmup} warm-up")
    with tempfile.TemporaryDirectory() as tmp:
        batch_file, weights = Path(tmp) / "batch.pt", Path(tmp) / "init.pt"
        torch.save({"images": images, "boxes": [t["boxes"] for t in targets],
                    "labels": [t["labels"] for t in targets],
                    **({"masks": [t["masks"] for t in targets]} if segment else {})}, batch_file)
        ref = None
        if Path(args.reference_python).exists() and (shared_dir() / "tools/reference").exists():
            try:
                ref = ReferenceServer(args.reference_python, "reference_train_step.py",
                                      shared_dir() / "tools/reference", args.model, batch_file, weights,
                                      args.threads)
            except RuntimeError as e:
                print(f"reference: {e}; timing rtmkit only")
        else:
            print(f"reference: not available ({args.reference_python}); timing rtmkit only")
        net = RTMDetNet(get_config(args.model))
        if ref is not None:  # the reference's initial weights, loaded strictly
            net.load_state_dict(torch.load(weights, weights_only=True), strict=True)
    ours = Stepper(net, images, targets)
    mine, theirs = [], []
    for i in range(args.warmup + args.steps):
        a = ours()
        b = None
        if ref is not None:
            time.sleep(0.2)  # let the other process's OpenMP threads stop spinning
            b = ref.request("step")
            time.sleep(0.2)
        if i == 0:
            first_ours, first_ref = a, b
        if i >= args.warmup:
            mine.append(a)
            if b is not None:
                theirs.append(b)
    def losses(r: dict) -> str:
        return ", ".join(f"{k}={v:.6f}" for k, v in r.items() if k.startswith("loss_"))

    print(f"rtmkit:    {_summary(mine, args.batch)}; first-step losses {losses(first_ours)}")
    if ref is not None:
        ref.close()
        print(f"reference: {_summary(theirs, args.batch)}; first-step losses {losses(first_ref)}")
        ratio = statistics.median([r["step_ms"] for r in mine]) / statistics.median([r["step_ms"] for r in theirs])
        print(f"rtmkit / reference (median step time): {ratio:.3f}")


if __name__ == "__main__":
    main()
