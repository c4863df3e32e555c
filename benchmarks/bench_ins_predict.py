"""CPU latency of RTMDet-Ins inference and of its mask post-processing, against the official implementation.

Run: python benchmarks/bench_ins_predict.py [--runs 15] [--threads 2] [--no-onnx]
         [--reference-python .venv-reference/bin/python]

Model: rtmdet-ins-tiny at 640 with the golden ins_tiny weights of shared/reference (the official weights,
perturbed: on the COCO image below the eval preset keeps 100 instances, the issue's case). Image: a 640x427 COCO
image of shared/data/coco_tiny.

Rows (milliseconds per image, medians; rtmkit's and the reference's runs interleaved round by round):

  mask post         kept detections -> bool masks in the original image: the dynamic convs, the resize and the
                    threshold. rtmkit: ``rtmkit.models.masks.instance_masks`` (per-instance regions, logit-space
                    threshold); reference: from its ``_mask_predict_by_feat_single`` call to the end of
                    ``predict_by_feat`` (x8 upsampling, resize to the full image in float, sigmoid, threshold).
  post              decoding, NMS and masks (rtmkit: the Predictor's postprocess; reference: ``predict_by_feat``).
  end-to-end        preprocess + forward + post, batch 1: ``model.predict(img, preset="eval")``'s path with its
                    defaults, the raw exported graph (kernels and prototypes out, masks on the host) under ONNX
                    Runtime and OpenVINO, and the end-to-end graph (NMS and input-resolution masks inside, the
                    MMDeploy contract) under ONNX Runtime (--no-onnx skips the exported ones).

The reference (MMDetection 3.3, mmcv's compiled CPU NMS through ``use_compiled_ops()``) runs in a subprocess
(benchmarks/reference_ins_predict.py) with the Python of --reference-python or $RTMKIT_REFERENCE_PYTHON.
Targets of the issue: mask post <= 0.2 of the reference's, end-to-end (fastest path) <= 0.4.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import torch
from reference_server import ReferenceServer

from rtmkit import RTMDet
from rtmkit.assets import shared_dir
from rtmkit.models.masks import instance_masks, seg_inputs
from rtmkit.models.postprocess import postprocess

IMAGE = "data/coco_tiny/val2017/000000300039.jpg"
WEIGHTS = "reference/ins_tiny/state_dict.pt"
TARGETS = {"mask post": 0.2, "end-to-end": 0.4}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant (about 20 s to build)")
    ap.add_argument("--reference-python",
                    default=os.environ.get("RTMKIT_REFERENCE_PYTHON", ".venv-reference/bin/python"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    weights, image_path = shared_dir() / WEIGHTS, shared_dir() / IMAGE
    if not weights.exists():
        raise SystemExit(f"needs the shared assets ({weights})")
    tmp = Path(tempfile.mkdtemp())
    ckpt = tmp / "ins_tiny.pth"
    torch.save({"state_dict": torch.load(weights, weights_only=True)}, ckpt)
    model = RTMDet("rtmdet-ins-tiny", weights=ckpt, device="cpu")
    img = cv2.imread(str(image_path))
    post = model.postprocess_config("eval")
    predictor = model.predictor()
    variants = {"predict() defaults": predictor}
    if not args.no_compile:
        from rtmkit.inference import TorchBackend

        backend = TorchBackend(model.net, compile=True, compile_size=predictor.input_size)
        t = time.perf_counter()
        if hasattr(backend.module(), "_orig_mod"):  # compiled now, not in the first timed round
            print(f"torch.compile (freezing): built in {time.perf_counter() - t:.1f} s")
            variants["torch.compile"] = model._make_predictor(backend)
    if not args.no_onnx:
        try:
            raw = model.export(file=tmp / "ins_raw.onnx", nms=False)
            variants["ONNX Runtime raw"] = RTMDet(str(raw)).predictor()
            try:
                variants["OpenVINO raw"] = RTMDet(str(raw), runtime="openvino").predictor()
            except ImportError:
                print("OpenVINO variant skipped: openvino is not installed")
            e2e = model.export(file=tmp / "ins_e2e.onnx", nms=True, conf=post.score_thr, iou=post.iou_thr,
                               max_det=post.max_per_img)
            variants["ONNX Runtime end-to-end"] = RTMDet(str(e2e)).predictor()
        except Exception as e:  # noqa: BLE001 - report and go on with the PyTorch rows
            print(f"ONNX variants skipped: {type(e).__name__}: {e}")

    # the mask part alone, on fixed head outputs (what the reference's "mask" time covers)
    backend = predictor.backend
    batch, scales = predictor._batch([img], predictor.input_size)
    with torch.inference_mode():
        outputs = backend.forward(batch)
        orig = torch.tensor([img.shape[:2]])
        dets = postprocess(backend.decode(outputs, tuple(batch.shape[-2:])), post, scales, orig)
    print(f"image {IMAGE} {img.shape[1]}x{img.shape[0]}, {len(dets[0].scores)} instances kept (eval preset)")

    def time_masks() -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            m = instance_masks(*seg_inputs(outputs, backend.strides), dets, scales, orig, post.mask_thr)
        out = (time.perf_counter() - t) * 1e3
        time_masks.area = int(m[0].sum())
        return out

    ref = None
    if Path(args.reference_python).exists():
        try:
            ref = ReferenceServer(args.reference_python, "reference_ins_predict.py", shared_dir() / "tools/reference",
                                  weights, image_path, args.threads)
        except RuntimeError as e:
            print(f"reference: {e}; skipping the comparison")
    else:
        print(f"reference: not available ({args.reference_python}); skipping the comparison")

    samples: dict[str, list[float]] = {}
    for round_ in range(args.warmup + args.runs):
        rows = {"mask post": time_masks()}
        for label, pred in variants.items():
            r = pred([img], post)[0]
            rows[f"post: {label}"] = r.speed["postprocess"]
            rows[f"end-to-end: {label}"] = sum(r.speed.values())
        if ref is not None:
            reply = ref.request("run")
            rows.update({"ref mask post": reply["mask"], "ref post": reply["post"],
                         "ref end-to-end": reply["pre"] + reply["fwd"] + reply["post"]})
            ref_dets, ref_area = reply["dets"], reply["mask_area"]
        if round_ >= args.warmup:
            for k, v in rows.items():
                samples.setdefault(k, []).append(v)
    if ref is not None:
        ref.close()
        print(f"reference: {ref_dets} instances, mask area {ref_area} px; rtmkit mask area {time_masks.area} px")
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(f"\n{'what':42s} {'ms':>8s} {'/ reference':>12s}")
    for k, v in med.items():
        if k.startswith("ref "):
            continue
        ref_key = "ref " + ("mask post" if k == "mask post" else k.split(":")[0])
        ratio = f"{v / med[ref_key]:12.3f}" if ref_key in med else f"{'-':>12s}"
        print(f"{k:42s} {v:8.1f} {ratio}")
    for k in ("ref mask post", "ref post", "ref end-to-end"):
        if k in med:
            print(f"{k:42s} {med[k]:8.1f}")
    print("targets: " + ", ".join(f"{k} <= {v}" for k, v in TARGETS.items()))


if __name__ == "__main__":
    main()
