"""CPU latency of RTMDet inference, split into preprocess / forward / postprocess.

Run: python benchmarks/bench_predict_cpu.py [--model rtmdet-tiny] [--imgsz 640] [--runs 20] [--threads 2]

Weights: the golden det_tiny state dict from shared/reference (scores spread like a trained model's, so that
post-processing at the eval preset does real work); without shared assets, fresh random weights (post-processing
then looks cheaper than it is). Variants are timed in the same process, interleaved round by round, and reported
as medians with ratios against the plain eager model.
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np
import torch

from rtmkit import RTMDet
from rtmkit.assets import shared_dir
from rtmkit.data.preprocess import preprocess
from rtmkit.models.fuse import fuse_model
from rtmkit.models.postprocess import postprocess


def load_model(name: str) -> RTMDet:
    model = RTMDet(name, device="cpu")
    golden = shared_dir() / "reference/det_tiny/state_dict.pt"
    if name == "rtmdet-tiny" and golden.exists():
        model.net.load_state_dict(torch.load(golden, weights_only=True))
        print(f"weights: {golden} (golden, trained-like score spread)")
    else:
        print("weights: random init (post-processing cost is under-estimated)")
    return model


def load_image(size: int) -> np.ndarray:
    path = shared_dir() / "data/coco_tiny/val2017/000000300039.jpg"
    if path.exists():
        return cv2.imread(str(path))
    return np.random.default_rng(0).integers(0, 255, (size * 3 // 4, size, 3), dtype=np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="rtmdet-tiny")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model(args.model)
    img = load_image(args.imgsz)
    cfg = model.cfg
    plain = model.net.eval()
    fused = fuse_model(plain)
    fused_cl = fuse_model(plain).to(memory_format=torch.channels_last)
    variants = {
        "eager (no_grad)": (plain, torch.no_grad, False),
        "inference_mode": (plain, torch.inference_mode, False),
        "BN folded": (fused, torch.inference_mode, False),
        "BN folded + channels_last": (fused_cl, torch.inference_mode, True),
    }
    times: dict[str, dict[str, list[float]]] = {k: {"pre": [], "fwd": [], "post": {}} for k in variants}
    for k in times:
        times[k]["post"] = {"eval": [], "deploy": []}
    for i in range(args.warmup + args.runs):
        for name, (net, ctx, cl) in variants.items():
            with ctx():
                t0 = time.perf_counter()
                batch, scales = preprocess([img], args.imgsz, cfg.mean, cfg.std, channels_last=cl)
                t1 = time.perf_counter()
                cls_scores, bbox_preds = net(batch)
                t2 = time.perf_counter()
                post = {}
                for preset in ("eval", "deploy"):
                    t3 = time.perf_counter()
                    dets = postprocess(cls_scores, bbox_preds, net.bbox_head.strides, cfg.preset(preset), scales)
                    post[preset] = (time.perf_counter() - t3, len(dets[0].scores))
            if i >= args.warmup:
                times[name]["pre"].append(t1 - t0)
                times[name]["fwd"].append(t2 - t1)
                for preset, (t, _) in post.items():
                    times[name]["post"][preset].append(t)
    med = statistics.median
    base_fwd = med(times["eager (no_grad)"]["fwd"])
    print(f"\n{args.model} @ {args.imgsz}, batch 1, {args.threads} threads, median of {args.runs} runs (ms)")
    print(f"{'variant':28s} {'pre':>7s} {'forward':>8s} {'post eval':>10s} {'post deploy':>12s} {'fwd ratio':>10s}")
    for name, t in times.items():
        fwd = med(t["fwd"])
        print(f"{name:28s} {med(t['pre']) * 1e3:7.2f} {fwd * 1e3:8.2f} {med(t['post']['eval']) * 1e3:10.2f} "
              f"{med(t['post']['deploy']) * 1e3:12.2f} {fwd / base_fwd:10.3f}")
    print(f"detections: eval {post['eval'][1]}, deploy {post['deploy'][1]}")


if __name__ == "__main__":
    main()
