"""CPU latency of RTMDet-R inference (tiny at 1024, batch 1) against the official implementation.

Run: python benchmarks/bench_rot_predict.py [--runs 10] [--threads 2] [--reference-python ...]

Model: rtmdet-r-tiny with the golden rot_tiny weights of shared/reference (the official architecture, perturbed
weights); image: P1888 of shared/data/dota_example (712 x 557, letterboxed to 1024 as the reference's test
pipeline does), the eval preset (DOTA test_cfg: score 0.05, nms_pre 2000, rotated NMS 0.1, 2000 per image).
rtmkit's ``model.predict`` path with its defaults and the plain net, interleaved round by round with the reference
(benchmarks/reference_rot_predict.py in the reference environment, mmcv's compiled ``nms_rotated``). Milliseconds
per image, medians; the issue's target: end-to-end <= 0.5 of the reference's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import cv2
import torch
from reference_server import ReferenceServer

from rtmkit import RTMDet
from rtmkit.assets import shared_dir

IMAGE = "data/dota_example/images/P1888.png"
WEIGHTS = "reference/rot_tiny/state_dict.pt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reference-python",
                    default=os.environ.get("RTMKIT_REFERENCE_PYTHON", ".venv-reference/bin/python"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    weights, image_path = shared_dir() / WEIGHTS, shared_dir() / IMAGE
    if not weights.exists():
        raise SystemExit(f"needs the shared assets ({weights})")
    ckpt = Path(tempfile.mkdtemp()) / "rot_tiny.pth"
    torch.save({"state_dict": torch.load(weights, weights_only=True)}, ckpt)
    model = RTMDet("rtmdet-r-tiny", weights=ckpt, device="cpu")
    img = cv2.imread(str(image_path))
    post = model.postprocess_config("eval")
    variants = {"predict() defaults": model.predictor(), "plain net (fuse=False)": model.predictor(fuse=False)}
    ref = None
    if Path(args.reference_python).exists():
        try:
            ref = ReferenceServer(args.reference_python, "reference_rot_predict.py", shared_dir() / "tools/reference",
                                  weights, image_path, args.threads)
        except RuntimeError as e:
            print(f"reference: {e}; skipping the comparison")
    else:
        print(f"reference: not available ({args.reference_python}); skipping the comparison")
    samples: dict[str, list[float]] = {}
    counts = {}
    for round_ in range(args.warmup + args.runs):
        rows = {}
        for label, pred in variants.items():
            r = pred([img], post)[0]
            counts[label] = len(r)
            for part in ("preprocess", "forward", "postprocess"):
                rows[f"{label}: {part}"] = r.speed[part]
            rows[f"{label}: end-to-end"] = sum(r.speed.values())
        if ref is not None:
            reply = ref.request("run")
            rows.update({"reference: preprocess": reply["pre"], "reference: forward": reply["fwd"],
                         "reference: postprocess": reply["post"],
                         "reference: end-to-end": reply["pre"] + reply["fwd"] + reply["post"]})
            counts["reference"] = reply["dets"]
        if round_ >= args.warmup:
            for k, v in rows.items():
                samples.setdefault(k, []).append(v)
    if ref is not None:
        ref.close()
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(f"rtmdet-r-tiny at 1024, {IMAGE} {img.shape[1]}x{img.shape[0]}, eval preset, {args.threads} threads, "
          f"median of {args.runs}; detections: {counts}")
    print(f"{'what':46s} {'ms':>8s} {'/ reference':>12s}")
    for k, v in med.items():
        ref_key = "reference: " + k.split(": ")[1]
        ratio = f"{v / med[ref_key]:12.3f}" if ref_key in med and not k.startswith("reference") else f"{'':>12s}"
        print(f"{k:46s} {v:8.1f} {ratio}")


if __name__ == "__main__":
    main()
