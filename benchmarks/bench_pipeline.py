"""Throughput of the RTMDet stage-1 training pipeline (images/s) on coco_tiny's train2017 images.

    python benchmarks/bench_pipeline.py [--size tiny] [--num 200] [--workers 2] [--batch 8]
        [--reference-python .venv-reference/bin/python]

Measures: (1) one process, TrainDataset[i] (decode + pipeline + tensor), with the time per transform, as uint8
(what the trainer uses; like the reference's PackDetInputs) and as a normalised float32 tensor; with the reference
environment (shared/tools/reference/setup.sh; $RTMKIT_REFERENCE_PYTHON or --reference-python), the official
stage-1 pipeline on the same images in the same session (benchmarks/reference_pipeline.py);
(2) a DataLoader with ``--workers`` workers (batch ``--batch``), timed after the first batch so that worker
start-up is not counted, once with float32 normalised tensors from the workers (TrainDataset's default) and once
with uint8 tensors (``normalize=False``; a trainer then calls ``normalize_batch`` on its device), 4x less data
between processes.
Shared data: ``$RTMKIT_SHARED/data/coco_tiny``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch

from rtmkit.assets import shared_dir
from rtmkit.data.datasets import load_dataset
from rtmkit.data.loader import TrainDataset, build_train_loader


class Timed:
    """Wraps a transform and adds its time to a table."""

    def __init__(self, t, table):
        self.t, self.table = t, table

    def __call__(self, sample, rng):
        t0 = time.perf_counter()
        out = self.t(sample, rng)
        self.table[type(self.t).__name__] += time.perf_counter() - t0
        return out


def single_process(ds, size: str, num: int, seed: int, normalize: bool = True) -> tuple[float, dict[str, float]]:
    train = TrainDataset(ds, size, seed=seed, normalize=normalize)
    table: dict[str, float] = defaultdict(float)
    train.pipeline.transforms = [Timed(t, table) for t in train.pipeline.transforms]
    order = np.random.default_rng(seed).integers(0, len(ds), num + 10)
    for i in order[:10]:  # fill the caches a little (mosaic starts at the 5th sample)
        train[int(i)]
    table.clear()
    t0 = time.perf_counter()
    for i in order[10:]:
        train[int(i)]
    elapsed = time.perf_counter() - t0
    return num / elapsed, {k: v / num * 1000 for k, v in table.items()}


def with_workers(ds, size: str, num: int, workers: int, batch: int, seed: int, normalize: bool = True) -> float:
    loader = build_train_loader(ds, batch_size=batch, num_workers=workers, size_name=size, seed=seed,
                                persistent_workers=True, normalize=normalize)
    seen, t0, epoch = 0, None, 0
    while seen < num:
        loader.dataset.set_epoch(epoch)
        for images, _ in loader:
            if t0 is None:  # first batch: workers started, now time
                t0 = time.perf_counter()
                continue
            seen += images.shape[0]
            if seen >= num:
                break
        epoch += 1
    return seen / (time.perf_counter() - t0)


def reference(python: str, root: Path, size: str, num: int, seed: int) -> dict | None:
    tools = shared_dir() / "tools/reference"
    if not Path(python).exists():
        print(f"reference: not available ({python})")
        return None
    out = subprocess.run([python, str(Path(__file__).with_name("reference_pipeline.py")), str(tools), str(root),
                          f"rtmdet-{size}", str(num), str(seed)], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        print(f"reference: failed: {out.stderr.strip()[-1500:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--num", type=int, default=200, help="images to time")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference-python",
                    default=os.environ.get("RTMKIT_REFERENCE_PYTHON", ".venv-reference/bin/python"))
    args = ap.parse_args()
    root = shared_dir() / "data/coco_tiny"
    ann = root / "annotations/instances_train2017.json"
    if not ann.exists():
        raise SystemExit(f"shared data not found: {ann}")
    ds = load_dataset(ann, "train")
    torch.set_num_threads(1)
    cv2.setNumThreads(1)  # single-process figures use one core, as the reference's do
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{len(ds)} images, RTMDet-{args.size} stage-1 pipeline, 640x640 output")
    results = {}
    for normalize in (False, True):
        ips, per = single_process(ds, args.size, args.num, args.seed, normalize)
        kind = "float32 normalised" if normalize else "uint8"
        results[kind] = ips
        print(f"single process, {kind}: {ips:.1f} images/s ({1000 / ips:.1f} ms/image incl. decode)")
        for name, ms in per.items():
            print(f"    {name:18s} {ms:6.2f} ms")
    ref = reference(args.reference_python, root, args.size, args.num, args.seed)
    if ref is not None:
        print(f"reference (MMDetection 3.3), single process, uint8 (PackDetInputs): {ref['images_per_s']:.1f} images/s"
              f" ({ref['num_images']} images after its filter)")
        for name, ms in ref["per_transform_ms"].items():
            print(f"    {name:18s} {ms:6.2f} ms")
        print(f"rtmkit / reference throughput (uint8, single process): {results['uint8'] / ref['images_per_s']:.2f}x")
    ips = with_workers(ds, args.size, args.num, args.workers, args.batch, args.seed)
    print(f"DataLoader, {args.workers} workers, batch {args.batch}, float32 normalised in the workers: "
          f"{ips:.1f} images/s")
    ips = with_workers(ds, args.size, args.num, args.workers, args.batch, args.seed, normalize=False)
    print(f"DataLoader, {args.workers} workers, batch {args.batch}, uint8 (normalize_batch later, on the device): "
          f"{ips:.1f} images/s")


if __name__ == "__main__":
    main()
