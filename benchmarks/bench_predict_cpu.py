"""CPU latency of RTMDet inference, split into preprocess / forward / postprocess.

Run: python benchmarks/bench_predict_cpu.py [--model rtmdet-tiny] [--imgsz 640] [--runs 20] [--threads 2]
         [--reference-python .venv-reference/bin/python] [--reference-stand-in-nms]

Weights: the golden det_tiny state dict from shared/reference (scores spread like a trained model's, so that
post-processing at the eval preset does real work); without shared assets, fresh random weights (post-processing
then looks cheaper than it is).

Every variant is timed through the same pipeline object ``model.predict`` uses (``rtmkit.inference.Predictor``,
whose results carry the preprocess / forward / postprocess split), each with its backend:

  predict() defaults   ``model.predictor()``: what ``model.predict(img)`` runs with default arguments (the
                       BN-folded, channels-last copy of the net, ``TorchBackend(net)``)
  eager (fuse=False)   ``model.predictor(fuse=False)``: the plain net (bit-identical to the reference)
  BN folded, NCHW      ``TorchBackend(net, channels_last=False)`` (``model.fuse(channels_last=False)``)
  torch.compile        ``TorchBackend(net, compile=True)`` (``model.fuse(compile=True)``), --no-compile skips it
  ONNX Runtime/OpenVINO  the raw exported graph (``OnnxRuntimeBackend``/``OpenVINOBackend``), --no-onnx skips them

Each round runs every variant twice, once per post-processing preset ("eval": the config's test_cfg, what COCO
evaluation uses; "deploy": predict()'s default), so pre and forward are medians of 2 x --runs samples. Post
includes decoding, NMS and building the Result. The variants are interleaved round by round. The process keeps
freed memory in its heap (rtmkit.allocator, as predict()'s fused backend does on a CPU) unless
--default-allocator is given (it sets RTMKIT_NO_MALLOPT=1, which also turns it off inside predict()).

With the reference environment (built by shared/tools/reference/setup.sh; found through --reference-python or
$RTMKIT_REFERENCE_PYTHON), the official implementation (MMDetection 3.3) runs in a subprocess on the same image
and weights, one run per round between rtmkit's (so that both sides see the same machine state), and ratios
against its medians are printed. Its NMS is mmcv's own compiled C++ CPU kernel (shared/tools/reference's
``use_compiled_ops()``, what an MMDetection user runs; the first use builds it, about a minute);
--reference-stand-in-nms keeps the environment's slow pure-torch stand-in that earlier versions of this benchmark
timed (its post-processing ratios then flatter rtmkit). The issue's target: predict() defaults forward <= 0.6 of
the reference's forward.
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
from rtmkit.inference import Predictor, TorchBackend

IMAGE = "data/coco_tiny/val2017/000000300039.jpg"
FWD_TARGET = 0.6  # predict() defaults forward / reference forward
PRESETS = ("eval", "deploy")


def load_model(name: str) -> RTMDet:
    model = RTMDet(name, device="cpu")
    golden = shared_dir() / "reference/det_tiny/state_dict.pt"
    if name == "rtmdet-tiny" and golden.exists():
        model.net.load_state_dict(torch.load(golden, weights_only=True))
        print(f"weights: {golden} (golden, trained-like score spread)")
    else:
        print("weights: random init (post-processing cost is under-estimated)")
    return model


def start_reference(python: str, threads: int, stand_in_nms: bool) -> ReferenceServer | None:
    """The official implementation serving timed runs ("fwd", or "post" to include the eval post-processing),
    or None when it is not available."""
    weights = shared_dir() / "reference/det_tiny/state_dict.pt"
    if not (Path(python).exists() and weights.exists()):
        print(f"reference: not available ({python}); skipping the comparison")
        return None
    try:
        return ReferenceServer(python, "reference_predict.py", shared_dir() / "tools/reference", weights,
                               shared_dir() / IMAGE, threads, "stand-in" if stand_in_nms else "compiled")
    except RuntimeError as e:
        print(f"reference: {e}; skipping the comparison")
        return None


def load_image(size: int) -> np.ndarray:
    path = shared_dir() / IMAGE
    if path.exists():
        return cv2.imread(str(path))
    return np.random.default_rng(0).integers(0, 255, (size * 3 // 4, size, 3), dtype=np.uint8)


def pipeline(model: RTMDet, backend) -> Predictor:
    """The Predictor ``model.predict`` would build around ``backend`` (same names, normalisation, sizes)."""
    return model._make_predictor(backend)


def build_variants(model: RTMDet, args, workdir: Path) -> dict[str, Predictor]:
    variants = {
        "predict() defaults": model.predictor(),
        "eager (fuse=False)": model.predictor(fuse=False),
        "BN folded, NCHW": pipeline(model, TorchBackend(model.net, channels_last=False)),
    }
    if args.only_defaults:  # the headline ratio alone: no other nets in the caches, no other thread pools
        return {k: v for k, v in variants.items() if k in ("predict() defaults", "eager (fuse=False)")}
    if not args.no_compile:
        backend = TorchBackend(model.net, compile=True, compile_size=args.imgsz)
        t = time.perf_counter()
        module = backend.module()  # builds (compiles) the fused copy now, not in the first timed round
        if hasattr(module, "_orig_mod"):
            print(f"torch.compile (freezing): built in {time.perf_counter() - t:.1f} s")
            variants["torch.compile"] = pipeline(model, backend)
        else:
            print("torch.compile variant skipped: compilation failed (see the warning above)")
    if not args.no_onnx:
        from rtmkit.export.backends import OnnxRuntimeBackend, OpenVINOBackend

        path = workdir / "bench_raw.onnx"
        for runtime, label in ((OnnxRuntimeBackend, "ONNX Runtime"), (OpenVINOBackend, "OpenVINO")):
            try:
                if not path.exists():
                    model.export("onnx", path, imgsz=args.imgsz, nms=False, dynamic=True)
                variants[label] = pipeline(model, runtime(path, threads=args.threads))
            except ImportError as e:
                print(f"{label} skipped: {e}")
    return variants


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="rtmdet-tiny")
    ap.add_argument("--imgsz", type=int, default=None, help="input size (default: the model's, 640 for rtmdet-tiny)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant (10-20 s to build)")
    ap.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime and OpenVINO variants")
    ap.add_argument("--only-defaults", action="store_true",
                    help="time only predict()'s defaults and the eager net against the reference (the other "
                         "variants' weights and thread pools, interleaved in one process, slow each other down)")
    ap.add_argument("--default-allocator", action="store_true",
                    help="leave glibc's allocator as it is (sets RTMKIT_NO_MALLOPT=1; default: "
                         "rtmkit.allocator.keep_freed_memory(), as predict()'s fused backend does on CPUs)")
    ap.add_argument("--reference-post-runs", type=int, default=None,
                    help="timed runs that include the reference's eval post-processing (default: all of them; "
                         "5 with --reference-stand-in-nms, whose pure-torch NMS takes seconds a run)")
    ap.add_argument("--reference-stand-in-nms", action="store_true",
                    help="run the reference with the environment's pure-torch stand-in NMS (the old, unfair "
                         "setting) instead of mmcv's compiled CPU kernel")
    ap.add_argument("--reference-python",
                    default=os.environ.get("RTMKIT_REFERENCE_PYTHON", ".venv-reference/bin/python"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.default_allocator:
        os.environ["RTMKIT_NO_MALLOPT"] = "1"
        print("allocator: glibc defaults (RTMKIT_NO_MALLOPT=1)")
    else:
        print(f"allocator: freed memory kept in the heap (rtmkit.allocator): {keep_freed_memory()}")
    post_runs = args.reference_post_runs
    if post_runs is None:
        post_runs = 5 if args.reference_stand_in_nms else args.runs

    model = load_model(args.model)
    args.imgsz = args.imgsz or model.cfg.data.input_size
    img = load_image(args.imgsz)
    posts = {preset: model.postprocess_config(preset) for preset in PRESETS}
    tmp = tempfile.TemporaryDirectory()
    ref = None
    try:
        variants = build_variants(model, args, Path(tmp.name))
        times = {k: {"pre": [], "fwd": [], "eval": [], "deploy": []} for k in variants}
        counts: dict[str, dict[str, int]] = {k: {} for k in variants}
        if args.model == "rtmdet-tiny" and args.imgsz == 640:  # the reference runs its config's 640 test pipeline
            ref = start_reference(args.reference_python, args.threads, args.reference_stand_in_nms)
        ref_runs: list[dict] = []
        for i in range(args.warmup + args.runs):
            timed = i >= args.warmup
            if ref is not None:  # one reference run per round, between rtmkit's
                # post-processing in the warm-up rounds too, except with the stand-in (seconds a run)
                post = i < args.warmup + post_runs and (timed or not args.reference_stand_in_nms)
                time.sleep(0.2)  # let the other process's OpenMP threads stop spinning
                r = ref.request("post" if post else "fwd")
                time.sleep(0.2)
                if timed:
                    ref_runs.append(r)
            for name, predictor in variants.items():
                for preset in PRESETS:
                    result = predictor([img], posts[preset], args.imgsz)[0]
                    counts[name][preset] = len(result)
                    if timed:
                        times[name]["pre"].append(result.speed["preprocess"])
                        times[name]["fwd"].append(result.speed["forward"])
                        times[name][preset].append(result.speed["postprocess"])
        nms = ref.info.get("nms") if ref is not None else None
    finally:
        tmp.cleanup()
        if ref is not None:
            ref.close()
    report(args, times, counts, ref_runs if ref is not None else [], nms)


def report(args, times: dict, counts: dict, ref_runs: list[dict], nms: str | None) -> None:
    med = statistics.median
    m = {name: {k: med(v) for k, v in t.items()} for name, t in times.items()}
    with_post = [r for r in ref_runs if "post_eval" in r]
    ref = None
    if with_post:
        ref = {"pre": med([r["pre"] for r in ref_runs]), "fwd": med([r["fwd"] for r in ref_runs]),
               "eval": med([r["post_eval"] for r in with_post]), "dets": with_post[0]["dets"]}
    base_fwd = m["eager (fuse=False)"]["fwd"]
    print(f"\n{args.model} @ {args.imgsz}, batch 1, {args.threads} threads, medians of {args.runs} rounds (ms per "
          f"image; pre and forward from both presets' runs)")
    if ref is None:
        print("reference: not run")
    elif nms == "compiled":
        print(f"reference: MMDetection 3.3, NMS = mmcv's compiled C++ CPU kernel (use_compiled_ops()), "
              f"interleaved with the runs below; {len(ref_runs)} runs, {len(with_post)} with post-processing")
    else:
        print(f"reference: MMDetection 3.3, NMS = pure-torch STAND-IN (--reference-stand-in-nms: post ratios "
              f"flatter rtmkit), interleaved with the runs below; {len(ref_runs)} runs, {len(with_post)} with "
              f"post-processing")
    names = list(m) + (["reference (MMDetection)"] if ref else [])
    w = max(len(k) for k in names) + 1
    head = (f"{'variant':{w}s} {'pre':>7s} {'forward':>8s} {'post eval':>10s} {'post deploy':>12s} "
            f"{'dets eval/deploy':>17s} {'fwd/eager':>10s}")
    if ref:
        head += f" {'fwd/ref':>8s} {'post eval/ref':>14s} {'end-to-end/ref':>15s}"
    print(head)
    for name, t in m.items():
        line = (f"{name:{w}s} {t['pre']:7.2f} {t['fwd']:8.2f} {t['eval']:10.2f} {t['deploy']:12.2f} "
                f"{counts[name]['eval']:>8d}/{counts[name]['deploy']:<8d} {t['fwd'] / base_fwd:10.3f}")
        if ref:
            total, ref_total = t["pre"] + t["fwd"] + t["eval"], ref["pre"] + ref["fwd"] + ref["eval"]
            line += f" {t['fwd'] / ref['fwd']:8.3f} {t['eval'] / ref['eval']:14.3f} {total / ref_total:15.3f}"
        print(line)
    if ref:
        print(f"{names[-1]:{w}s} {ref['pre']:7.2f} {ref['fwd']:8.2f} {ref['eval']:10.2f} {'-':>12s} "
              f"{ref['dets']:>8d}/{'-':<8s} {ref['fwd'] / base_fwd:10.3f}")
        ratio = m["predict() defaults"]["fwd"] / ref["fwd"]
        verdict = "met" if ratio <= FWD_TARGET else "NOT met"
        print(f"\ntarget: predict() defaults forward / reference forward = {ratio:.3f} (<= {FWD_TARGET}: {verdict})")
        print("end-to-end = pre + forward + post (eval preset) on both sides")


if __name__ == "__main__":
    main()
