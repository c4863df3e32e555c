"""Peak memory and time of RTMDet-Ins's assignment + losses (Dice included) with many instances in one image,
rtmkit against the reference.

Run: python benchmarks/bench_ins_memory.py [--objects 300] [--imgsz 640] [--threads 2]
         [--reference-python .venv-reference/bin/python]

One ``--imgsz`` image with ``--objects`` instances (random boxes of 16-128 px, each mask an ellipse inscribed in
its box; 80 classes) and random head outputs of rtmdet-ins-tiny's shapes (ReLU distances in pixels). Each side
runs in a fresh process on the same saved inputs: the criterion's forward (assigner with the mass-centre prior,
QFL, GIoU, Dice) and its backward to the head outputs. Peak memory is the rise of the resident-set high-water mark
(VmHWM, reset through /proc/self/clear_refs) over the memory in use with the inputs loaded and a small warm-up
done. The reference is MMDetection 3.3's ``RTMDetInsSepBNHead.loss_by_feat`` (masks as ``BitmapMasks``, as its
pipeline hands them over), run with the reference environment's Python (shared/tools/reference/setup.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_assigner import proc_kib

STRIDES = (8, 16, 32)


def make_inputs(num_objects: int, size: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sizes = [(size // s, size // s) for s in STRIDES]
    cls = [torch.randn(1, 80, h, w, generator=g) * 2 - 4 for h, w in sizes]
    reg = [(torch.rand(1, 4, h, w, generator=g) * 4 + 0.2) * s for (h, w), s in zip(sizes, STRIDES)]
    kernels = [torch.randn(1, 169, h, w, generator=g) * 0.3 for h, w in sizes]
    mask_feat = torch.randn(1, 8, size // 8, size // 8, generator=g)
    xy = torch.rand(num_objects, 2, generator=g) * (size - 140)
    wh = torch.rand(num_objects, 2, generator=g) * 112 + 16
    boxes = torch.cat([xy, xy + wh], 1)
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    c, r = (boxes[:, :2] + boxes[:, 2:]) / 2, wh / 2
    masks = (((xx - c[:, 0, None, None]) / r[:, 0, None, None]) ** 2
             + ((yy - c[:, 1, None, None]) / r[:, 1, None, None]) ** 2) <= 1
    return {"cls": cls, "reg": reg, "kernels": kernels, "mask_feat": mask_feat, "boxes": boxes,
            "labels": torch.randint(0, 80, (num_objects,), generator=g), "masks": masks}


def _measure(run, warmup) -> dict:
    warmup()  # library code paged in, allocator warmed on a small problem
    base = proc_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    t0 = time.perf_counter()
    info = run()
    elapsed = time.perf_counter() - t0
    return {"peak_extra_mib": (proc_kib("VmHWM") - base) / 1024, "time_s": elapsed, "hwm_reset": reset, **info}


def child_rtmkit(path: str) -> dict:
    from rtmkit.engine.criterion_ins import RTMDetInsCriterion
    from rtmkit.structures import SegOutputs

    data = torch.load(path, weights_only=True)
    crit = RTMDetInsCriterion(80, STRIDES)

    def run(d=data):
        leaf = [[t.clone().requires_grad_() for t in d[k]] for k in ("cls", "reg", "kernels")]
        outs = SegOutputs(*leaf, d["mask_feat"].clone().requires_grad_())
        losses = crit(outs, [{"boxes": d["boxes"], "labels": d["labels"], "masks": d["masks"]}])
        sum(losses.values()).backward()
        return {k: float(v) for k, v in losses.items()}

    small = make_inputs(3, 64, seed=1)
    return _measure(run, lambda: run(small))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=300)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reference-python",
                    default=os.environ.get("RTMKIT_REFERENCE_PYTHON", ".venv-reference/bin/python"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child_rtmkit(args.child)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inputs.pt"
        torch.save(make_inputs(args.objects, args.imgsz), path)
        rows = {}
        out = subprocess.run([sys.executable, __file__, "--child", str(path), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True)
        rows["rtmkit"] = json.loads(out.stdout.strip().splitlines()[-1])
        ref_script = Path(__file__).with_name("reference_ins_loss.py")
        if Path(args.reference_python).exists():
            from rtmkit.assets import shared_dir

            out = subprocess.run([args.reference_python, str(ref_script), str(shared_dir() / "tools/reference"),
                                  str(path), str(args.threads)], capture_output=True, text=True)
            if out.returncode == 0:
                rows["reference"] = json.loads(out.stdout.strip().splitlines()[-1])
            else:
                print(f"reference failed: {out.stderr.strip().splitlines()[-1:]}")
        else:
            print(f"reference: not available ({args.reference_python})")
    print(f"one {args.imgsz}x{args.imgsz} image, {args.objects} instances, rtmdet-ins-tiny head shapes, "
          f"{args.threads} threads: assignment + losses + backward")
    print(f"  {'':10s} {'peak extra MiB':>14s} {'time s':>8s}  losses")
    for name, r in rows.items():
        losses = ", ".join(f"{k}={v:.5f}" for k, v in r.items() if k.startswith("loss_"))
        print(f"  {name:10s} {r['peak_extra_mib']:14.1f} {r['time_s']:8.2f}  {losses}")
    if "reference" in rows:
        ours, ref = rows["rtmkit"], rows["reference"]
        print(f"  rtmkit / reference: memory {ours['peak_extra_mib'] / ref['peak_extra_mib']:.3f}, "
              f"time {ours['time_s'] / ref['time_s']:.3f}")


if __name__ == "__main__":
    main()
