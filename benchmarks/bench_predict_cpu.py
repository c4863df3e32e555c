"""CPU latency of RTMDet inference, split into preprocess / forward / postprocess.

Run: python benchmarks/bench_predict_cpu.py [--model rtmdet-tiny] [--imgsz 640] [--runs 20] [--threads 2]
         [--reference-python .venv-reference/bin/python]

Weights: the golden det_tiny state dict from shared/reference (scores spread like a trained model's, so that
post-processing at the eval preset does real work); without shared assets, fresh random weights (post-processing
then looks cheaper than it is). Variants (eager, BN folding, channels-last, torch.compile, ONNX Runtime, OpenVINO)
are timed in the same process, interleaved round by round, and reported as medians with ratios against the plain
eager model. The process keeps freed memory in its heap (rtmkit.allocator, as model.fuse() does on a CPU) unless
--default-allocator is given: run both to see that setting's effect. With the reference environment (built by
shared/tools/reference/setup.sh; found through --reference-python or $RTMKIT_REFERENCE_PYTHON), the official
implementation runs in a subprocess on the same image and weights, one run per round between rtmkit's (so that
both sides see the same machine state), and ratios against its medians are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from reference_server import ReferenceServer

from rtmkit import RTMDet
from rtmkit.allocator import keep_freed_memory
from rtmkit.assets import shared_dir
from rtmkit.data.preprocess import preprocess
from rtmkit.models.fuse import compile_for_inference, fuse_model
from rtmkit.models.postprocess import postprocess, postprocess_flat


def load_model(name: str) -> RTMDet:
    model = RTMDet(name, device="cpu")
    golden = shared_dir() / "reference/det_tiny/state_dict.pt"
    if name == "rtmdet-tiny" and golden.exists():
        model.net.load_state_dict(torch.load(golden, weights_only=True))
        print(f"weights: {golden} (golden, trained-like score spread)")
    else:
        print("weights: random init (post-processing cost is under-estimated)")
    return model


IMAGE = "data/coco_tiny/val2017/000000300039.jpg"


def start_reference(python: str, threads: int) -> ReferenceServer | None:
    """The official implementation serving timed runs ("fwd", or "post" to include the eval post-processing),
    or None when it is not available."""
    weights = shared_dir() / "reference/det_tiny/state_dict.pt"
    if not (Path(python).exists() and weights.exists()):
        print(f"reference: not available ({python}); skipping the comparison")
        return None
    try:
        return ReferenceServer(python, "reference_predict.py", shared_dir() / "tools/reference", weights,
                               shared_dir() / IMAGE, threads)
    except RuntimeError as e:
        print(f"reference: {e}; skipping the comparison")
        return None


def load_image(size: int) -> np.ndarray:
    path = shared_dir() / IMAGE
    if path.exists():
        return cv2.imread(str(path))
    return np.random.default_rng(0).integers(0, 255, (size * 3 // 4, size, 3), dtype=np.uint8)


class ExportedRunner:
    """The raw exported graph in ONNX Runtime or OpenVINO, called like a net: NCHW float tensor in, per-level-flat
    (scores, boxes) out, post-processed by rtmkit's ``postprocess_flat`` (what ``RTMDet("x.onnx")`` does)."""

    def __init__(self, model: RTMDet, size: int, threads: int, workdir: Path, runtime: str = "onnxruntime"):
        from rtmkit.export.backends import OnnxRuntimeBackend, OpenVINOBackend

        path = workdir / "bench_raw.onnx"
        if not path.exists():
            model.export("onnx", path, imgsz=size, nms=False, dynamic=True)
        backend = OpenVINOBackend if runtime == "openvino" else OnnxRuntimeBackend
        self.backend = backend(path, threads=threads)
        self.size = size
        self.level_ids = torch.cat([torch.full(((size // s) ** 2,), i) for i, s in enumerate(model.cfg.strides)])

    def __call__(self, batch: torch.Tensor):
        return self.backend(batch.numpy())

    def post(self, outs, cfg, scales):
        return postprocess_flat(outs[0], outs[1], self.level_ids, (self.size, self.size), cfg, scales)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="rtmdet-tiny")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant (10-20 s to build)")
    ap.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime and OpenVINO variants")
    ap.add_argument("--default-allocator", action="store_true",
                    help="leave glibc's allocator as it is (default: rtmkit.allocator.keep_freed_memory(), as "
                         "model.fuse() and the trainer do on CPUs)")
    ap.add_argument("--reference-post-runs", type=int, default=5,
                    help="runs of the reference's eval post-processing (seconds each with its pure-torch NMS)")
    ap.add_argument("--reference-python",
                    default=os.environ.get("RTMKIT_REFERENCE_PYTHON", ".venv-reference/bin/python"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not args.default_allocator:
        print(f"allocator: freed memory kept in the heap (rtmkit.allocator): {keep_freed_memory()}")

    model = load_model(args.model)
    img = load_image(args.imgsz)
    cfg = model.cfg
    plain = model.net.eval()
    fused = fuse_model(plain)
    fused_cl = fuse_model(plain).to(memory_format=torch.channels_last)
    strides = plain.bbox_head.strides

    def torch_post(outs, post_cfg, scales):
        return postprocess(outs[0], outs[1], strides, post_cfg, scales)

    # name -> (net, grad context, channels_last input, post-processing)
    variants = {
        "eager (no_grad)": (plain, torch.no_grad, False, torch_post),
        "inference_mode": (plain, torch.inference_mode, False, torch_post),
        "BN folded": (fused, torch.inference_mode, False, torch_post),
        "BN folded + channels_last (model.fuse())": (fused_cl, torch.inference_mode, True, torch_post),
    }
    tmp = tempfile.TemporaryDirectory()
    if not args.no_onnx:
        for runtime, label in (("onnxruntime", "ONNX Runtime (raw graph)"), ("openvino", "OpenVINO (raw graph)")):
            try:
                runner = ExportedRunner(model, args.imgsz, args.threads, Path(tmp.name), runtime)
                variants[label] = (runner, torch.inference_mode, False, runner.post)
            except ImportError as e:
                print(f"{label} skipped: {e}")
    if not args.no_compile:
        t = time.perf_counter()
        compiled = compile_for_inference(fused_cl, args.imgsz, "cpu", channels_last=True)
        if compiled is not fused_cl:
            print(f"torch.compile (freezing): built in {time.perf_counter() - t:.1f} s")
            variants["+ torch.compile (model.fuse(compile=True))"] = (compiled, torch.inference_mode, True,
                                                                       torch_post)
    times: dict[str, dict] = {k: {"pre": [], "fwd": [], "post": {"eval": [], "deploy": []}} for k in variants}
    counts = {}
    ref = None
    if args.model == "rtmdet-tiny" and args.imgsz == 640:  # the reference runs its config's 640 test pipeline
        ref = start_reference(args.reference_python, args.threads)
    ref_runs: list[dict] = []
    try:
        for i in range(args.warmup + args.runs):
            if ref is not None:  # one reference run per round, between rtmkit's
                time.sleep(0.2)  # let the other process's OpenMP threads stop spinning
                r = ref.request("post" if args.warmup <= i < args.warmup + args.reference_post_runs else "fwd")
                time.sleep(0.2)
                if i >= args.warmup:
                    ref_runs.append(r)
            for name, (net, ctx, cl, post_fn) in variants.items():
                with ctx():
                    t0 = time.perf_counter()
                    batch, scales = preprocess([img], args.imgsz, cfg.mean, cfg.std, channels_last=cl)
                    t1 = time.perf_counter()
                    outs = net(batch)
                    t2 = time.perf_counter()
                    post = {}
                    for preset in ("eval", "deploy"):
                        t3 = time.perf_counter()
                        dets = post_fn(outs, cfg.preset(preset), scales)
                        post[preset] = (time.perf_counter() - t3, len(dets[0].scores))
                counts[name] = {k: v[1] for k, v in post.items()}
                if i >= args.warmup:
                    times[name]["pre"].append(t1 - t0)
                    times[name]["fwd"].append(t2 - t1)
                    for preset, (t, _) in post.items():
                        times[name]["post"][preset].append(t)
    finally:
        tmp.cleanup()
        if ref is not None:
            ref.close()
    med = statistics.median
    base_fwd = med(times["eager (no_grad)"]["fwd"])
    w = max(len(k) for k in variants) + 1
    print(f"\n{args.model} @ {args.imgsz}, batch 1, {args.threads} threads, median of {args.runs} runs (ms)")
    print(f"{'variant':{w}s} {'pre':>7s} {'forward':>8s} {'post eval':>10s} {'post deploy':>12s} {'fwd ratio':>10s}"
          f" {'dets eval/deploy':>17s}")
    for name, t in times.items():
        fwd = med(t["fwd"])
        print(f"{name:{w}s} {med(t['pre']) * 1e3:7.2f} {fwd * 1e3:8.2f} {med(t['post']['eval']) * 1e3:10.2f} "
              f"{med(t['post']['deploy']) * 1e3:12.2f} {fwd / base_fwd:10.3f} "
              f"{counts[name]['eval']:>8d}/{counts[name]['deploy']:<8d}")
    with_post = [r for r in ref_runs if "post_eval" in r]
    if not with_post:
        return
    ref = {"pre": med([r["pre"] for r in ref_runs]), "fwd": med([r["fwd"] for r in ref_runs]),
           "post_eval": med([r["post_eval"] for r in with_post]), "dets": with_post[0]["dets"]}
    print(f"\nreference (MMDetection 3.3, interleaved with the runs above): pre {ref['pre']:.2f}, forward "
          f"{ref['fwd']:.2f}, post eval {ref['post_eval']:.2f} ms ({ref['dets']} detections; medians of "
          f"{len(ref_runs)} runs, {min(args.reference_post_runs, len(ref_runs))} with post-processing)")
    print(f"{'variant':{w}s} {'forward / ref':>14s} {'post eval / ref':>16s} {'pre+fwd+post(eval) / ref':>25s}")
    ref_total = ref["pre"] + ref["fwd"] + ref["post_eval"]
    for name, t in times.items():
        total = med(t["pre"]) + med(t["fwd"]) + med(t["post"]["eval"])
        fwd_ratio = med(t["fwd"]) * 1e3 / ref["fwd"]
        post_ratio = med(t["post"]["eval"]) * 1e3 / ref["post_eval"]
        print(f"{name:{w}s} {fwd_ratio:14.3f} {post_ratio:16.3f} {total * 1e3 / ref_total:25.3f}")


if __name__ == "__main__":
    main()
