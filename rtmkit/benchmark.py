"""``rtmkit benchmark``: latency and throughput of a model in several formats, split into pre/forward/post."""

from __future__ import annotations

import csv
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# torch: what predict() runs by default (BN folded, channels-last); torch-eager: the plain net (fuse=False).
FORMATS = ("torch-eager", "torch", "torch-fused", "torch-compiled", "onnx", "openvino", "engine")


@dataclass
class BenchRow:
    format: str
    batch: int
    imgsz: int
    pre_ms: float = float("nan")  # per image, medians over runs
    forward_ms: float = float("nan")
    post_ms: float = float("nan")
    total_ms: float = float("nan")
    total_iqr_ms: float = float("nan")  # spread of the per-image total
    throughput: float = float("nan")  # images per second
    ap: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _synthetic_images(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (size * 3 // 4, size, 3), dtype=np.uint8) for _ in range(n)]


def _load_images(data: str | None, n: int, size: int) -> list[np.ndarray]:
    if data is None:
        return _synthetic_images(n, size)
    from .data.sources import expand_source, iter_frames

    src = Path(data)
    if src.suffix in (".json", ".yaml", ".yml"):
        from .data.datasets import load_dataset

        items = [r["path"] for r in load_dataset(src, "val").records]
    else:
        items = expand_source(data)
    images = [f.image for _, f in zip(range(n), iter_frames(items))]
    while len(images) < n:  # repeat to fill large batches
        images += images[: n - len(images)]
    return images


def _time(model, images: list[np.ndarray], batch: int, runs: int, warmup: int, preset: str,
          fuse: bool = True) -> BenchRow:
    post = model.postprocess_config(preset)
    predictor = model.predictor(fuse)
    chunks = [images[i:i + batch] for i in range(0, len(images) - batch + 1, batch)] or [images[:batch]]
    pre, fwd, pst, tot = [], [], [], []
    for i in range(warmup + runs):
        chunk = chunks[i % len(chunks)]
        t0 = time.perf_counter()
        results = predictor(chunk, post)
        wall = (time.perf_counter() - t0) * 1e3 / len(chunk)
        if i >= warmup:
            s = results[0].speed
            pre.append(s["preprocess"])
            fwd.append(s["forward"])
            pst.append(s["postprocess"])
            tot.append(wall)
    q = np.percentile(tot, [25, 75])
    med = statistics.median
    return BenchRow("", batch, 0, med(pre), med(fwd), med(pst), med(tot), float(q[1] - q[0]), 1e3 / med(tot))


def _coco_ap(model, data: str, batch: int, fuse: bool) -> float:
    return float(model.val(data, batch=batch, fuse=fuse)["AP"])


def run_benchmark(model_name: str, weights: str | None = None, formats: list[str] | tuple[str, ...] = ("torch",),
                  batches: list[int] | tuple[int, ...] = (1,), imgsz: int | None = None, data: str | None = None,
                  device: str | None = None, runs: int = 10, warmup: int = 2, preset: str = "eval",
                  workdir: str | Path | None = None, verbose: bool = True) -> list[BenchRow]:
    """Time ``model_name`` in each format and batch size; AP on ``data`` (COCO json) when given."""
    from .api import RTMDet

    base = RTMDet(model_name, weights=weights, device=device)
    size = imgsz or base.cfg.data.input_size
    images = _load_images(data, max(batches) * 2, size)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="rtmkit-bench-"))
    rows: list[BenchRow] = []
    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
        try:
            if fmt in ("torch", "torch-eager", "torch-fused"):  # torch-fused: the old name of the default
                model = base
            elif fmt == "torch-compiled":
                model = RTMDet(model_name, weights=weights, device=device).fuse(compile=True)
            elif fmt in ("onnx", "openvino"):
                path = base.export("onnx", workdir / f"{base.cfg.name}_raw.onnx", imgsz=size, nms=False, dynamic=True)
                model = RTMDet(path, device=device, runtime="openvino" if fmt == "openvino" else None)
            else:
                from .export.tensorrt import build_engine_model

                model = RTMDet(build_engine_model(base, workdir, imgsz=size, batches=batches), device=device)
        except (ImportError, RuntimeError, ValueError) as e:
            rows.append(BenchRow(fmt, 0, size, note=f"unavailable: {e}"))
            if verbose:
                print(f"{fmt}: unavailable ({e})")
            continue
        fuse = fmt != "torch-eager"
        ap = _coco_ap(model, data, max(batches), fuse) if data and str(data).endswith(".json") else None
        for b in batches:
            row = _time(model, images, b, runs, warmup, preset, fuse=fuse)
            row.format, row.imgsz, row.ap = fmt, size, ap
            rows.append(row)
            if verbose:
                print(format_row(row))
    return rows


HEADER = f"{'format':12s} {'batch':>5s} {'imgsz':>5s} {'pre':>7s} {'forward':>8s} {'post':>7s} {'total':>8s} " \
         f"{'iqr':>6s} {'img/s':>7s} {'AP':>6s}"


def format_row(r: BenchRow) -> str:
    if r.note:
        return f"{r.format:12s} {r.note}"
    ap = f"{r.ap:.4f}" if r.ap is not None else "-"
    return (f"{r.format:12s} {r.batch:5d} {r.imgsz:5d} {r.pre_ms:7.2f} {r.forward_ms:8.2f} {r.post_ms:7.2f} "
            f"{r.total_ms:8.2f} {r.total_iqr_ms:6.2f} {r.throughput:7.1f} {ap:>6s}")


def write_csv(rows: list[BenchRow], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["format", "batch", "imgsz", "pre_ms", "forward_ms", "post_ms", "total_ms", "total_iqr_ms",
              "throughput", "ap", "note"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: getattr(r, k) for k in fields})
    return path


def print_table(rows: list[BenchRow]) -> None:
    print("per image, milliseconds (median over runs); iqr = interquartile range of the total")
    print(HEADER)
    for r in rows:
        print(format_row(r))

