"""CPU time of rtmkit's rotated IoU matrix and rotated NMS against MMCV's compiled CPU kernels.

Run: python benchmarks/bench_rotated_ops.py [--boxes 2000] [--runs 7] [--threads 2]
         [--reference-python .venv-reference/bin/python]

Boxes like RTMDet-R's candidates before NMS on a 1024 DOTA patch: 200 objects (10-120 px, any angle), 10 jittered
candidates each, float32, scores uniform. Rows: the pairwise IoU matrix ``N x N`` (rtmkit ``rotated_iou`` against
``mmcv.ops.box_iou_rotated``) and NMS at IoU 0.1 (``nms_rotated`` against ``mmcv.ops.nms_rotated``), medians of
--runs after one warm-up, rtmkit and the reference alternating (the reference in a subprocess with the Python of
the reference environment, its kernels compiled by shared/tools/reference's ``use_compiled_ops()``). The kept
indices and the IoUs are compared too. Targets of the issue: NMS <= 0.5, IoU matrix <= 1.0 of MMCV's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from reference_server import ReferenceServer

from rtmkit.assets import shared_dir
from rtmkit.ops.rotated import nms_rotated, rotated_iou


def candidates(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    objects = max(n // 10, 1)
    centre = torch.rand(objects, 2, generator=g) * 1024
    size = torch.rand(objects, 2, generator=g) * 110 + 10
    angle = (torch.rand(objects, 1, generator=g) - 0.5) * torch.pi
    base = torch.cat([centre, size, angle], 1).repeat_interleave(10, 0)[:n]
    jitter = torch.randn(n, 5, generator=g) * torch.tensor([4.0, 4.0, 6.0, 6.0, 0.1])
    boxes = base + jitter
    boxes[:, 2:4] = boxes[:, 2:4].clamp(min=2)
    return boxes.float(), torch.rand(n, generator=g)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--boxes", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reference-python",
                    default=os.environ.get("RTMKIT_REFERENCE_PYTHON", ".venv-reference/bin/python"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    boxes, scores = candidates(args.boxes)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "boxes.pt"
        torch.save({"boxes": boxes, "scores": scores}, data)
        ref = None
        if Path(args.reference_python).exists():
            try:
                ref = ReferenceServer(args.reference_python, "reference_rotated_ops.py",
                                      shared_dir() / "tools/reference", data, args.threads)
            except RuntimeError as e:
                print(f"reference: {e}")
        else:
            print(f"reference: not available ({args.reference_python})")
        times: dict[str, list[float]] = {}
        for i in range(args.runs + 1):
            t0 = time.perf_counter()
            iou = rotated_iou(boxes, boxes)
            t1 = time.perf_counter()
            keep = nms_rotated(boxes, scores, 0.1)
            t2 = time.perf_counter()
            row = {"iou": (t1 - t0) * 1e3, "nms": (t2 - t1) * 1e3}
            if ref is not None:
                reply = ref.request("run")
                row.update({"ref iou": reply["iou_ms"], "ref nms": reply["nms_ms"]})
            if i:
                for k, v in row.items():
                    times.setdefault(k, []).append(v)
        if ref is not None:
            ref_keep = torch.load(Path(tmp) / "keep.pt", weights_only=True)
            ref.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.boxes} rotated boxes (float32), {args.threads} threads, median of {args.runs}; "
          f"{int((iou > 0).sum())} overlapping pairs, {len(keep)} kept by NMS at 0.1")
    for what, label in (("iou", f"IoU matrix {args.boxes} x {args.boxes}"), ("nms", "rotated NMS (IoU 0.1)")):
        line = f"  {label:28s} rtmkit {med[what]:8.2f} ms"
        if f"ref {what}" in med:
            line += f"   mmcv {med['ref ' + what]:8.2f} ms   ratio {med[what] / med['ref ' + what]:.3f}"
        print(line)
    if ref is not None:
        same = keep.tolist() == ref_keep["keep"].tolist()
        print(f"  kept indices equal to mmcv's: {same} ({len(keep)} vs {len(ref_keep['keep'])}); "
              f"IoU matrix max |difference| {(iou - ref_keep['iou']).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
