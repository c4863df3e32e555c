"""pycocotools vs faster-coco-eval for COCO box evaluation: time, agreement and footprint.

Run: python benchmarks/bench_coco_eval.py [--images 500] [--dets 100] [--reps 3] [--score-decimals N]

Needs both ``pycocotools`` (rtmkit's core evaluator) and ``faster-coco-eval`` (``pip install faster-coco-eval``).

1. Builds a deterministic (numpy-seeded) COCO-like data set: N images of 480-640 px sides, the 80 COCO category ids
   (non-contiguous, skewed frequencies), a Poisson(7) number of boxes per image (a few images empty) with a COCO-like
   size mix (~41% small, ~34% medium, ~25% large), ~1% iscrowd, segmentation-like ``area`` below w*h; and ~``--dets``
   detections per image: 3 jittered copies of each box (jitter and score tied to quality, 10% with a wrong class)
   plus random false positives with random scores. ``--score-decimals`` rounds the scores to make ties.
2. Runs pycocotools ``COCOeval`` and faster-coco-eval ``COCOeval_faster`` (bbox) on the same data, interleaved
   (order alternating) for ``--reps`` repetitions, timing separately: building the GT index (COCO + createIndex),
   ``loadRes`` and ``evaluate + accumulate + summarize``. Inputs are deep-copied outside the timers (both
   ``loadRes`` write into the detection dicts).
3. Compares the 12 summary numbers, the per-class AP computed from the precision arrays as rtmkit does
   (precision[:, :, k, area=all, maxDets=100], entries > -1, mean) and the whole precision/recall arrays.
4. Prints versions, import time (median over fresh subprocesses), installed size and declared requirements.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.metadata as md
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

COCO_CAT_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31,
                32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57,
                58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87,
                88, 89, 90]
STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


# ----------------------------------------------------------------------------------------------------- data
def _sample_box(rng: np.random.Generator, w: int, h: int) -> list[float]:
    kind = rng.choice(3, p=[0.41, 0.34, 0.25])
    lo, hi = [(4.0, 32.0), (32.0, 96.0), (96.0, 0.9 * min(w, h))][kind]
    side = float(np.exp(rng.uniform(np.log(lo), np.log(max(hi, lo + 1)))))  # sqrt(area), log-uniform in its band
    ar = float(np.exp(rng.normal(0.0, 0.5)))  # w / h
    bw = min(side * np.sqrt(ar), w - 1.0)
    bh = min(side / np.sqrt(ar), h - 1.0)
    x = rng.uniform(0, w - bw)
    y = rng.uniform(0, h - bh)
    return [x, y, bw, bh]


def make_data(n_images: int, dets_per_image: int, seed: int = 0,
              score_decimals: int | None = None) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    cat_p = rng.dirichlet(np.full(len(COCO_CAT_IDS), 0.6))  # skewed class frequencies
    images, anns, dets = [], [], []
    ann_id = 1
    for img_id in range(1, n_images + 1):
        w, h = int(rng.integers(480, 641)), int(rng.integers(480, 641))
        images.append({"id": img_id, "width": w, "height": h, "file_name": f"{img_id:012d}.jpg"})
        n_gt = int(rng.poisson(7)) if rng.random() > 0.02 else 0
        img_dets = []
        for _ in range(n_gt):
            cat = int(rng.choice(COCO_CAT_IDS, p=cat_p))
            x, y, bw, bh = _sample_box(rng, w, h)
            crowd = int(rng.random() < 0.01)
            anns.append({"id": ann_id, "image_id": img_id, "category_id": cat, "bbox": [x, y, bw, bh],
                         "area": bw * bh * float(rng.uniform(0.5, 0.95)), "iscrowd": crowd, "segmentation": []})
            ann_id += 1
            for _ in range(3):  # jittered detections; score correlates with quality
                q = rng.random()
                s = 0.02 + 0.25 * (1 - q)
                jx, jy = rng.normal(0, s * bw), rng.normal(0, s * bh)
                jw, jh = bw * np.exp(rng.normal(0, s)), bh * np.exp(rng.normal(0, s))
                dcat = cat if rng.random() > 0.1 else int(rng.choice(COCO_CAT_IDS))
                score = float(np.clip(0.3 + 0.6 * q + rng.normal(0, 0.1), 0.001, 1.0))
                img_dets.append((dcat, [x + jx, y + jy, jw, jh], score))
        while len(img_dets) < dets_per_image:  # false positives
            cat = int(rng.choice(COCO_CAT_IDS, p=cat_p))
            img_dets.append((cat, _sample_box(rng, w, h), float(rng.beta(1.0, 6.0))))
        img_dets.sort(key=lambda d: -d[2])
        for cat, (x, y, bw, bh), score in img_dets[:dets_per_image]:
            x1, y1 = max(0.0, x), max(0.0, y)
            x2, y2 = min(float(w), x + bw), min(float(h), y + bh)
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue
            score = float(np.float32(score))
            if score_decimals is not None:
                score = round(score, score_decimals)
            dets.append({"image_id": img_id, "category_id": cat, "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "score": score})
    gt = {"info": {}, "licenses": [], "images": images, "annotations": anns,
          "categories": [{"id": c, "name": f"class_{c}", "supercategory": "none"} for c in COCO_CAT_IDS]}
    return gt, dets


# ------------------------------------------------------------------------------------------------ evaluators
def _timed(index_gt, evaluator, dets: list[dict]) -> dict:
    """Index the ground truth (``index_gt()``), load the detections, evaluate, accumulate and summarise,
    timing each part; ``evaluator``: the library's COCOeval class."""
    with contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        coco_gt = index_gt()
        t1 = time.perf_counter()
        coco_dt = coco_gt.loadRes(dets)
        t2 = time.perf_counter()
        ev = evaluator(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        t3 = time.perf_counter()
    return {"index": t1 - t0, "loadRes": t2 - t1, "eval": t3 - t2, "stats": np.asarray(ev.stats, float),
            "precision": np.asarray(ev.eval["precision"]), "recall": np.asarray(ev.eval["recall"]),
            "catIds": list(ev.params.catIds)}


def run_pycocotools(gt: dict, dets: list[dict]) -> dict:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def index_gt():
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        return coco_gt

    return _timed(index_gt, COCOeval, dets)


def run_faster(gt: dict, dets: list[dict]) -> dict:
    from faster_coco_eval import COCO, COCOeval_faster

    # use_deepcopy=False: indexes the dict as given, like the pycocotools path above
    return _timed(lambda: COCO(gt), COCOeval_faster, dets)


def per_class_ap(precision: np.ndarray) -> np.ndarray:
    out = np.full(precision.shape[2], np.nan)
    for k in range(precision.shape[2]):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        if p.size:
            out[k] = p.mean()
    return out


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    both_nan = np.isnan(a) & np.isnan(b)
    d = np.abs(np.where(both_nan, 0.0, a - b))
    return float(np.nanmax(np.where(np.isnan(d), np.inf, d))) if d.size else 0.0


# ------------------------------------------------------------------------------------------------- footprint
def import_time(stmt: str, runs: int = 3) -> float:
    code = f"import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
    ts = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        ts.append(float(out.stdout.strip()))
    return statistics.median(ts)


def footprint(dist_name: str, pkg: str) -> dict:
    dist = md.distribution(dist_name)
    files = dist.files or []
    record = 0
    outside = []
    for f in files:
        p = Path(dist.locate_file(f))
        if p.is_file():
            record += p.stat().st_size
            if str(f).startswith(".."):
                outside.append(str(Path(os.path.normpath(p))))
    mod = __import__(pkg)
    folder = Path(mod.__file__).parent
    folder_size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    reqs = [r for r in (dist.requires or []) if "extra ==" not in r]
    extras = dist.metadata.get_all("Provides-Extra") or []
    return {"version": dist.version, "record_bytes": record, "folder_bytes": folder_size, "requires": reqs,
            "extras": extras, "outside_site_packages": outside}


# ------------------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--dets", type=int, default=100, help="detections per image")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--score-decimals", type=int, default=None, help="round scores (creates ties)")
    ap.add_argument("--json", type=str, default=None, help="also write the results here")
    args = ap.parse_args()

    t = time.perf_counter()
    gt, dets = make_data(args.images, args.dets, args.seed, args.score_decimals)
    anns = gt["annotations"]
    areas = np.array([a["area"] for a in anns])
    print(f"data: {args.images} images, {len(anns)} GT boxes ({sum(a['iscrowd'] for a in anns)} crowd; "
          f"small/medium/large {np.mean(areas < 32**2):.2f}/{np.mean((areas >= 32**2) & (areas < 96**2)):.2f}/"
          f"{np.mean(areas >= 96**2):.2f}), {len(dets)} detections, built in {time.perf_counter() - t:.1f}s"
          + (f", scores rounded to {args.score_decimals} decimals" if args.score_decimals is not None else ""))

    runners = {"pycocotools": run_pycocotools, "faster-coco-eval": run_faster}
    names = list(runners)
    times: dict[str, dict[str, list[float]]] = {n: {"index": [], "loadRes": [], "eval": []} for n in names}
    last: dict[str, dict] = {}
    for rep in range(args.reps):
        order = names if rep % 2 == 0 else names[::-1]
        for n in order:
            g, d = copy.deepcopy(gt), copy.deepcopy(dets)
            r = runners[n](g, d)
            for k in times[n]:
                times[n][k].append(r[k])
            last[n] = r
            print(f"  rep {rep} {n:17s} index {r['index']:.3f}s  loadRes {r['loadRes']:.3f}s  "
                  f"eval+acc+summ {r['eval']:.3f}s", flush=True)

    med = {n: {k: statistics.median(v) for k, v in times[n].items()} for n in names}
    a, b = last["pycocotools"], last["faster-coco-eval"]
    print(f"\nmedian seconds over {args.reps} interleaved reps ({args.images} images):")
    print(f"{'step':28s} {'pycocotools':>12s} {'faster-coco-eval':>17s} {'ratio (pyc/fce)':>16s}")
    for k, label in (("index", "GT index (COCO+createIndex)"), ("loadRes", "loadRes"),
                     ("eval", "evaluate+accumulate+summ.")):
        print(f"{label:28s} {med[names[0]][k]:12.3f} {med[names[1]][k]:17.3f} "
              f"{med[names[0]][k] / max(med[names[1]][k], 1e-9):15.1f}x")
    tot = {n: sum(med[n].values()) for n in names}
    print(f"{'total':28s} {tot[names[0]]:12.3f} {tot[names[1]]:17.3f} {tot[names[0]] / tot[names[1]]:15.1f}x")

    same_cats = a["catIds"] == b["catIds"]
    ap_a, ap_b = per_class_ap(a["precision"]), per_class_ap(b["precision"])
    diffs = {"stats_max_abs": max_abs(a["stats"], b["stats"]),
             "per_class_AP_max_abs": max_abs(ap_a, ap_b),
             "precision_max_abs": max_abs(a["precision"], b["precision"]),
             "precision_entries_differing_>1e-9": int(np.sum(np.abs(a["precision"] - b["precision"]) > 1e-9)) if
             a["precision"].shape == b["precision"].shape else -1,
             "recall_max_abs": max_abs(a["recall"], b["recall"])}
    print(f"\nagreement (catIds identical: {same_cats}; precision shapes {a['precision'].shape} / "
          f"{b['precision'].shape}):")
    for k, v in diffs.items():
        print(f"  {k:34s} {v:.3g}" if isinstance(v, float) else f"  {k:34s} {v}")
    print("  " + "  ".join(f"{n}={a['stats'][i]:.4f}" for i, n in enumerate(STAT_NAMES[:3])) + "  (pycocotools)")

    print("\npackages:")
    fps = {"pycocotools": footprint("pycocotools", "pycocotools"),
           "faster-coco-eval": footprint("faster-coco-eval", "faster_coco_eval")}
    imp = {"pycocotools": import_time("import pycocotools.coco, pycocotools.cocoeval"),
           "faster-coco-eval": import_time("from faster_coco_eval import COCO, COCOeval_faster")}
    print(f"{'package':17s} {'version':>8s} {'import s':>9s} {'installed':>10s} {'pkg dir':>9s}  requires")
    for n, fp in fps.items():
        print(f"{n:17s} {fp['version']:>8s} {imp[n]:9.3f} {fp['record_bytes'] / 2**20:8.2f}MB "
              f"{fp['folder_bytes'] / 2**20:7.2f}MB  {', '.join(fp['requires']) or '-'}"
              f"  (extras: {', '.join(fp['extras']) or '-'})")
        if fp["outside_site_packages"]:
            print(f"{'':17s} also installs outside site-packages: {', '.join(fp['outside_site_packages'])}")

    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "median_s": med, "diffs": diffs,
                                               "import_s": imp, "footprint": fps}, indent=1))


if __name__ == "__main__":
    main()
