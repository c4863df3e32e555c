"""Memory and time of RTMDet's target assignment and loss (rtmkit.engine) on CPU.

Run: python benchmarks/bench_assigner.py [--objects 500] [--imgsz 640] [--dense-objects 50] [--threads 2]

1. One image with many objects (default 500 at 640: 8400 priors, 80 classes): peak memory of the assigner, measured
   in a fresh subprocess as the rise of the resident-set high-water mark (VmHWM, reset through
   /proc/self/clear_refs) over the memory already in use with the inputs built, and its time. For comparison the
   same is measured for a literal per-image implementation of the reference's algorithm, which builds
   (candidates x gts x classes) tensors for the class cost, at a smaller object count (``--dense-objects``);
   its tensors grow linearly with the objects, so the script also prints their size at the full count.
2. rtmdet-tiny, batch 4 at 320 with 10 objects per image: time of the assigner alone, of the criterion (targets +
   losses) and of criterion + backward to the head outputs, medians over runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from rtmkit import get_config
from rtmkit.engine.assigner import DynamicSoftLabelAssigner, box_overlaps
from rtmkit.engine.criterion import RTMDetCriterion, collate_targets
from rtmkit.models.detector import RTMDetNet
from rtmkit.ops.boxes import grid_priors

STRIDES = (8, 16, 32)


def proc_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def random_inputs(num_objects: int, size: int, num_classes: int = 80, batch: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sizes = [(size // s, size // s) for s in STRIDES]
    priors = grid_priors(sizes, STRIDES, with_stride=True)
    n = priors.shape[0]
    logits = torch.randn(batch, n, num_classes, generator=g) * 2 - 4
    dist = (torch.rand(batch, n, 4, generator=g) * 4 + 0.2) * priors[:, 2:3]
    boxes = priors[:, :2].repeat(1, 2) + dist * torch.tensor([-1.0, -1.0, 1.0, 1.0])
    targets = []
    for _ in range(batch):
        xy = torch.rand(num_objects, 2, generator=g) * size * 0.9
        wh = torch.rand(num_objects, 2, generator=g) * size * 0.3 + 4
        targets.append({"boxes": torch.cat([xy, (xy + wh).clamp(max=size)], 1),
                        "labels": torch.randint(0, num_classes, (num_objects,), generator=g)})
    return priors, logits, boxes, targets


def dense_assign(priors, logits, boxes, gt_boxes, gt_labels, topk=13):
    """The reference's algorithm for one image, literally: one-hot soft labels over all classes per (prior, gt)."""
    p = priors[:, None, :2]
    inside = (torch.cat([p - gt_boxes[None, :, :2], gt_boxes[None, :, 2:] - p], -1).min(-1).values > 0).any(1)
    vp, vb, vl = priors[inside], boxes[inside], logits[inside]
    centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2.0
    dist = (vp[:, None, :2] - centers[None]).pow(2).sum(-1).sqrt() / vp[:, 2, None]
    ious = box_overlaps(vb[:, None], gt_boxes[None])
    onehot = F.one_hot(gt_labels, logits.shape[-1]).float().unsqueeze(0).repeat(len(vp), 1, 1)
    scores = vl.unsqueeze(1).repeat(1, len(gt_boxes), 1)
    soft = onehot * ious[..., None]
    cls_cost = (F.binary_cross_entropy_with_logits(scores, soft, reduction="none")
                * (soft - scores.sigmoid()).abs().pow(2.0)).sum(-1)
    cost = cls_cost - torch.log(ious + 1e-7) * 3.0 + torch.pow(10, dist - 3.0)
    ks = ious.topk(min(topk, len(vp)), dim=0).values.sum(0).int().clamp(min=1)
    match = torch.zeros_like(cost, dtype=torch.uint8)
    for j in range(len(gt_boxes)):  # per gt, as the reference
        match[cost[:, j].topk(int(ks[j]), largest=False).indices, j] = 1
    return match


def child_memory(method: str, num_objects: int, size: int, repeats: int) -> dict:
    """Runs in a fresh process: peak extra memory and time of one assignment."""
    priors, logits, boxes, targets = random_inputs(num_objects, size)
    gt_boxes, gt_labels, gt_valid = collate_targets(targets, 1, "cpu", 80)
    assigner = DynamicSoftLabelAssigner(topk=13)

    def run():
        with torch.no_grad():
            if method == "rtmkit":
                return int(assigner.assign(priors, logits, boxes, gt_boxes, gt_labels, gt_valid).pos_mask.sum())
            return int((dense_assign(priors, logits[0], boxes[0], targets[0]["boxes"], targets[0]["labels"])
                        .sum(1) > 0).sum())

    # Warm up on a small problem first: the first call of each kernel pages in library code, which is not ours.
    small = random_inputs(3, 64)
    if method == "rtmkit":
        assigner.assign(small[0], small[1], small[2], *collate_targets(small[3], 1, "cpu", 80))
    else:
        dense_assign(small[0], small[1][0], small[2][0], small[3][0]["boxes"], small[3][0]["labels"])
    base = proc_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS
            f.write("5")
        reset = True
    except OSError:
        reset = False
    t0 = time.perf_counter()
    positives = run()
    first = time.perf_counter() - t0
    peak = proc_kib("VmHWM")
    times = [first]
    for _ in range(repeats - 1):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return {"method": method, "objects": num_objects, "priors": int(priors.shape[0]), "positives": positives,
            "peak_extra_mib": (peak - base) / 1024, "hwm_reset": reset, "time_s": statistics.median(times)}


def measure(method: str, num_objects: int, size: int, threads: int, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--objects", str(num_objects), "--imgsz", str(size),
           "--threads", str(threads), "--repeats", str(repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_tiny_batch(threads: int, runs: int) -> None:
    torch.manual_seed(0)
    net = RTMDetNet(get_config("rtmdet-tiny"))
    try:
        from rtmkit.assets import shared_dir

        golden = shared_dir() / "reference/det_tiny/state_dict.pt"
        if golden.exists():
            net.load_state_dict(torch.load(golden, weights_only=True))
    except Exception:  # fresh weights are fine for timing
        pass
    net.train()
    x = torch.randn(4, 3, 320, 320, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    targets = []
    for _ in range(4):
        xy = torch.rand(10, 2, generator=g) * 250
        wh = torch.rand(10, 2, generator=g) * 120 + 8
        targets.append({"boxes": torch.cat([xy, (xy + wh).clamp(max=320)], 1),
                        "labels": torch.randint(0, 80, (10,), generator=g)})
    with torch.no_grad():
        cls, reg = net(x)
    crit = RTMDetCriterion(80, STRIDES)
    sizes = [tuple(c.shape[-2:]) for c in cls]
    priors = crit.priors(sizes, "cpu")
    logits = torch.cat([c.permute(0, 2, 3, 1).reshape(4, -1, 80) for c in cls], 1)
    dist = torch.cat([r.permute(0, 2, 3, 1).reshape(4, -1, 4) for r in reg], 1)
    boxes = priors[:, :2].repeat(1, 2) + dist * torch.tensor([-1.0, -1.0, 1.0, 1.0])
    gts = collate_targets(targets, 4, "cpu", 80)

    def timed(fn):
        fn()
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts) * 1e3

    def loss_backward():
        c = [t.detach().requires_grad_() for t in cls]
        r = [t.detach().requires_grad_() for t in reg]
        losses = crit(c, r, targets)
        (losses["loss_cls"] + losses["loss_bbox"]).backward()

    t_assign = timed(lambda: crit.assigner.assign(priors, logits, boxes, *gts))
    with torch.no_grad():
        t_loss = timed(lambda: crit(cls, reg, targets))
    t_both = timed(loss_backward)
    print(f"\nrtmdet-tiny head outputs, batch 4 at 320 ({priors.shape[0]} priors/image, 10 objects/image), "
          f"{threads} threads, median of {runs}:")
    print(f"  assigner                      {t_assign:7.2f} ms")
    print(f"  criterion (targets + losses)  {t_loss:7.2f} ms")
    print(f"  criterion + backward to head  {t_both:7.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=500)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--dense-objects", type=int, default=50, help="object count for the dense reference (0: skip)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--child", choices=["rtmkit", "dense"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child_memory(args.child, args.objects, args.imgsz, args.repeats)))
        return

    print(f"torch {torch.__version__}, {args.threads} threads")
    rows = [measure("rtmkit", args.objects, args.imgsz, args.threads, args.repeats)]
    if args.dense_objects:
        rows.append(measure("rtmkit", args.dense_objects, args.imgsz, args.threads, args.repeats))
        rows.append(measure("dense", args.dense_objects, args.imgsz, args.threads, args.repeats))
    print(f"\none {args.imgsz}x{args.imgsz} image, 80 classes, random head outputs:")
    print(f"  {'implementation':34s} {'objects':>7s} {'positives':>9s} {'peak extra MiB':>14s} {'time s':>8s}")
    for r in rows:
        name = "rtmkit (batched, chunked)" if r["method"] == "rtmkit" else "dense (reference algorithm)"
        print(f"  {name:34s} {r['objects']:7d} {r['positives']:9d} {r['peak_extra_mib']:14.1f} {r['time_s']:8.3f}")
    if not rows[0]["hwm_reset"]:
        print("  (VmHWM could not be reset: peaks include the setup)")
    if args.dense_objects:
        gib = rows[0]["priors"] * args.objects * 80 * 4 / 2**30
        print(f"  the dense reference's class-cost tensors at {args.objects} objects: up to {gib:.2f} GiB each "
              f"(candidates x objects x 80 floats), several alive at once")
    bench_tiny_batch(args.threads, args.runs)


if __name__ == "__main__":
    main()
