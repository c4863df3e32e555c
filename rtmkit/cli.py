"""Command line: ``rtmkit predict ...`` (also ``python -m rtmkit``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .config import CLIP_MODES, CONFIGS


def increment_dir(base: Path, name: str) -> Path:
    """``base/name``, or ``base/name2``, ``base/name3`` ... if it exists (a fresh folder per run)."""
    path = base / name
    n = 2
    while path.exists():
        path = base / f"{name}{n}"
        n += 1
    path.mkdir(parents=True)
    return path


def demo_image(size: int = 640) -> np.ndarray:
    """A procedurally drawn BGR scene, so ``rtmkit predict`` runs without any file or network."""
    rng = np.random.default_rng(0)
    img = np.full((size, size, 3), 200, np.uint8)
    for _ in range(8):
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        x, y = (int(v) for v in rng.integers(0, size - 120, 2))
        w, h = (int(v) for v in rng.integers(40, 120, 2))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + w, y + h), color, -1)
        else:
            cv2.ellipse(img, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, color, -1)
    return img


def _count_frames(items: list) -> int | None:
    from .data.images import is_video_file

    total = 0
    for item in items:
        if isinstance(item, str) and is_video_file(item):
            cap = cv2.VideoCapture(item)
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            cap.release()
            if n <= 0:
                return None
            total += n
        else:
            total += 1
    return total


def cmd_predict(args: argparse.Namespace) -> int:
    from . import RTMDet
    from .data.sources import expand_source

    model = RTMDet(args.model, weights=args.weights, device=args.device)
    if args.weights is None and not str(args.model).endswith((".pth", ".pt")):
        print(f"warning: no --weights given: {args.model} is freshly initialised and will detect nothing useful",
              file=sys.stderr)
    source = args.source if args.source is not None else [demo_image()]
    items = expand_source(source)
    save_dir = increment_dir(Path(args.project), args.name)
    overrides = {"conf": args.conf, "iou": args.iou, "max_det": args.max_det, "agnostic": args.agnostic or None,
                 "clip": args.clip}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    records, writers, used_names = [], {}, set()

    def output_name(stem: str, suffix: str) -> str:
        """A file name in the run directory that no earlier output of this run took."""
        name, n = f"{stem}{suffix}", 2
        while name in used_names:
            name, n = f"{stem}_{n}{suffix}", n + 1
        used_names.add(name)
        return name

    stream = model.stream(items, preset=args.preset, batch=args.batch, imgsz=args.imgsz, **overrides)
    try:
        for i, r in enumerate(tqdm(stream, total=_count_frames(items), unit="img", desc="predict")):
            src = Path(r.path) if r.path else None
            if r.frame is not None:  # video: one annotated video per file
                if not args.no_save:
                    if r.path not in writers:
                        cap = cv2.VideoCapture(r.path)
                        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
                        cap.release()
                        h, w = r.orig_shape
                        out_path = save_dir / output_name(src.stem, ".mp4")
                        writers[r.path] = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                    writers[r.path].write(r.plot())
            elif not args.no_save:  # keep the source's name and format (a.jpg and a.png must not collide)
                suffix = src.suffix.lower() if src is not None and src.suffix else ".jpg"
                r.save(save_dir / output_name(src.stem if src is not None else f"image{i}", suffix))
            records.append({"source": r.path or f"array{i}", "frame": r.frame, "orig_shape": list(r.orig_shape),
                            "speed_ms": r.speed, "detections": r.to_list()})
    finally:
        for w in writers.values():
            w.release()
    (save_dir / "predictions.json").write_text(json.dumps(records, indent=1))
    n_det = sum(len(rec["detections"]) for rec in records)
    if records:
        mean = {k: float(np.mean([rec["speed_ms"][k] for rec in records])) for k in records[0]["speed_ms"]}
        speed = ", ".join(f"{k} {v:.1f} ms" for k, v in mean.items())
        print(f"{len(records)} images, {n_det} detections; per image: {speed}")
    print(f"results saved to {save_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtmkit", description="RTMDet detectors in plain PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="detect objects in images, folders, globs or videos")
    p.add_argument("--model", default="rtmdet-tiny",
                   help=f"config name ({', '.join(CONFIGS)}) or an rtmkit checkpoint")
    p.add_argument("--weights", default=None, help="checkpoint path, URL or model-zoo name")
    p.add_argument("--source", default=None,
                   help="image, folder, glob or video (default: a built-in demo image, no file needed)")
    p.add_argument("--preset", default="deploy", choices=["deploy", "eval"],
                   help="deploy: score > 0.3, 100 boxes; eval: the config's test_cfg (COCO evaluation settings)")
    p.add_argument("--conf", type=float, default=None, help="score threshold (overrides the preset)")
    p.add_argument("--iou", type=float, default=None, help="NMS IoU threshold (overrides the preset)")
    p.add_argument("--max-det", type=int, default=None, help="boxes kept per image (overrides the preset)")
    p.add_argument("--agnostic", action="store_true", help="class-agnostic NMS")
    p.add_argument("--clip", default=None, choices=CLIP_MODES, help="box clamping (default: input, as the reference)")
    p.add_argument("--imgsz", type=int, default=None, help="network input size (default: the config's)")
    p.add_argument("--batch", type=int, default=1, help="images per forward pass")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 or a GPU index (default: GPU if available)")
    p.add_argument("--project", default="runs/predict", help="parent folder of run directories")
    p.add_argument("--name", default="exp", help="run directory name (incremented if it exists)")
    p.add_argument("--save-dir", dest="project_dir", default=None,
                   help="write into exactly this folder (shorthand for --project/--name)")
    p.add_argument("--no-save", action="store_true", help="do not write annotated images/videos (JSON only)")
    p.set_defaults(func=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "project_dir", None):
        target = Path(args.project_dir)
        args.project, args.name = str(target.parent), target.name
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, RuntimeError, ImportError, KeyError) as e:
        print(f"rtmkit {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
