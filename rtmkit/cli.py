"""Command line: ``rtmkit predict ...`` (also ``python -m rtmkit``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from . import __version__
from .catalog import CONFIGS, MODELS
from .config import CLIP_MODES
from .engine.args import DEMO_TRAIN, TrainArgs, add_train_flags
from .runs import OutputError, atomic_write_text, increment_dir

_WITH_WEIGHTS = (".pth", ".pt", ".onnx", ".engine")  # files that carry their own weights


def _count_frames(items: list) -> int | None:
    import cv2

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
    import numpy as np
    from tqdm import tqdm

    from . import RTMDet
    from .data.sources import expand_source

    demo = args.source is None
    shipped_model = demo and args.model is None and args.weights is None
    if shipped_model:
        # The first command a new user types: a picture and a model that ship with rtmkit, so it shows detections
        # offline, without any file.
        from .assets import demo_weights

        args.model = str(demo_weights())
        print("no --source given: predicting rtmkit's demo picture (four shapes) with its demo model, rtmdet-nano "
              "trained on the built-in shapes dataset (`rtmkit train` with no arguments trains one like it)")
    model_name = args.model or "rtmdet-tiny"
    model = RTMDet(model_name, weights=args.weights, device=args.device, runtime=args.runtime)
    if args.weights is None and not model_name.endswith(_WITH_WEIGHTS):
        print(f"warning: no --weights given: {model_name} is freshly initialised and will detect nothing useful",
              file=sys.stderr)
    if demo:
        from .data.synthetic import draw_demo_picture

        items = [draw_demo_picture()[0]]
    else:
        items = expand_source(args.source)
    save_dir = increment_dir(Path(args.project), args.name)
    overrides = {"conf": args.conf, "iou": args.iou, "max_det": args.max_det, "agnostic": args.agnostic or None,
                 "clip": args.clip, "mask_thr": args.mask_thr, "crop_masks": args.crop_masks or None}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    records, writers, used_names = [], {}, set()

    def output_name(stem: str, suffix: str) -> str:
        """A file name in the run directory that no earlier output of this run took."""
        name, n = f"{stem}{suffix}", 2
        while name in used_names:
            name, n = f"{stem}_{n}{suffix}", n + 1
        used_names.add(name)
        return name

    failures: list = []
    stream = model.stream(items, preset=args.preset, batch=args.batch, imgsz=args.imgsz, on_error="skip",
                          failures=failures, **overrides)
    finished = False
    try:
        for i, r in enumerate(tqdm(stream, total=_count_frames(items), unit="img", desc="predict")):
            src = Path(r.path) if r.path else None
            if r.frame is not None:  # video: one annotated video per file
                if not args.no_save:
                    if r.path not in writers:
                        writers[r.path] = _VideoOutput(save_dir / output_name(src.stem, ".mp4"), r.path, r.orig_shape)
                    writers[r.path].write(r.plot())
            elif not args.no_save:  # keep the source's name and format (a.jpg and a.png must not collide)
                suffix = src.suffix.lower() if src is not None and src.suffix else ".jpg"
                stem = src.stem if src is not None else "demo" if demo else f"image{i}"
                r.save(save_dir / output_name(stem, suffix))
            records.append({"source": r.path or f"array{i}", "frame": r.frame, "orig_shape": list(r.orig_shape),
                            "speed_ms": r.speed, "detections": r.to_list()})
        finished = True
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
    finally:
        for w in writers.values():
            w.close(keep=finished)
        # What was predicted is never lost: written (atomically) even when the run stops early.
        try:
            _write_predictions(save_dir, records, failures)
        except OSError as e:
            if finished:
                raise
            print(f"rtmkit predict: could not save the predictions made so far: {e}", file=sys.stderr)
    n_det = sum(len(rec["detections"]) for rec in records)
    if records:
        mean = {k: float(np.mean([rec["speed_ms"][k] for rec in records])) for k in records[0]["speed_ms"]}
        speed = ", ".join(f"{k} {v:.1f} ms" for k, v in mean.items())
        print(f"{len(records)} images, {n_det} detections; per image: {speed}")
    if demo and records:
        found = ", ".join(f"{d['name']} {d['score']:.2f}" for d in records[0]["detections"]) or "nothing"
        print(f"found: {found}")
        if not args.no_save:
            hint = ": each shape should have a box with its class and score" if shipped_model else ""
            print(f"look at {save_dir / 'demo.jpg'}{hint}")
    print(f"results saved to {save_dir}")
    if not finished:
        return 130
    if failures:
        print(f"{len(failures)} input(s) could not be read and were skipped (listed in {save_dir / 'failures.json'}):",
              file=sys.stderr)
        for f in failures[:10]:
            print(f"  {f.error}", file=sys.stderr)
        if len(failures) > 10:
            print(f"  ... and {len(failures) - 10} more", file=sys.stderr)
        if not records:
            print("rtmkit predict: error: no input could be read", file=sys.stderr)
            return 1
        if args.strict:
            return 1
    return 0


def _write_predictions(save_dir: Path, records: list, failures: list) -> None:
    """``predictions.json`` (one record per image or video frame) and, when inputs were skipped,
    ``failures.json`` (``[{"source", "error"}]``); each written whole or not at all."""
    atomic_write_text(save_dir / "predictions.json", json.dumps(records, indent=1))
    if failures:
        atomic_write_text(save_dir / "failures.json",
                          json.dumps([dataclasses.asdict(f) for f in failures], indent=1))


class _VideoOutput:
    """An annotated copy of one input video, written to ``<name>.part.mp4`` and renamed to ``<name>.mp4`` only
    once the whole video went through: a stopped run leaves no truncated file that looks complete."""

    def __init__(self, path: Path, source: str, orig_shape: tuple[int, int]):
        import cv2

        cap = cv2.VideoCapture(source)
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        cap.release()
        self.path, self.part = path, path.with_name(path.stem + ".part" + path.suffix)
        h, w = orig_shape
        self.writer = cv2.VideoWriter(str(self.part), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not self.writer.isOpened():
            raise OutputError(f"{self.path}: could not open the video for writing (read-only or full folder?)")

    def write(self, frame) -> None:
        self.writer.write(frame)

    def close(self, keep: bool) -> None:
        import os

        self.writer.release()
        if keep and self.part.is_file() and self.part.stat().st_size > 0:
            os.replace(self.part, self.path)
        else:
            self.part.unlink(missing_ok=True)


def cmd_export(args: argparse.Namespace) -> int:
    from . import RTMDet

    model = RTMDet(args.model, weights=args.weights, device=args.device)
    if args.weights is None and not str(args.model).endswith(_WITH_WEIGHTS):
        print(f"warning: no --weights given: exporting a freshly initialised {args.model}", file=sys.stderr)
    path = model.export(args.format, args.file, imgsz=args.imgsz, batch=args.batch, dynamic=args.dynamic,
                        nms=args.nms, conf=args.conf, iou=args.iou, max_det=args.max_det, agnostic=args.agnostic,
                        normalize=args.normalize, half=args.half, simplify=args.simplify, opset=args.opset)
    print(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB, {'end-to-end' if args.nms else 'raw'} graph)")
    if model.task == "segment" and args.nms:
        print("outputs dets, labels and masks [B, K, H, W] (MMDeploy's RTMDet-Ins contract); for rtmkit's own "
              "runtimes the raw graph (--no-nms) is faster: masks are then made on the host per instance region")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .benchmark import print_table, run_benchmark, write_csv

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    batches = [int(b) for b in str(args.batch).split(",")]
    rows = run_benchmark(args.model, args.weights, formats, batches, args.imgsz, args.data, args.device,
                         runs=args.runs, warmup=args.warmup, preset=args.preset, verbose=False)
    print_table(rows)
    out = write_csv(rows, args.csv)
    print(f"results written to {out}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .data.check import check_dataset

    if args.images and not str(args.data).endswith(".json"):
        print(f"error: --images applies to a COCO json; {args.data} names its own image folders", file=sys.stderr)
        return 2
    kwargs = {"img_dir": args.images} if args.images else {}
    report = check_dataset(args.data, args.split, verify_images=not args.no_images, **kwargs)
    print(report.format(max_files=None if args.all else 50))
    return 1 if report.fatal else 0


def cmd_train(args: argparse.Namespace) -> int:
    from .engine.trainer import Trainer

    data, val, demo = args.data, args.val, False
    if data is None and not args.resume:  # the offline main job: a dataset rtmkit draws itself, a short CPU run
        from .data.synthetic import DEMO_DATA, make_shapes_dataset

        demo = True
        root = Path(args.project or TrainArgs.project).parent / "data" / "shapes"
        paths = make_shapes_dataset(root, seed=0, **DEMO_DATA)
        data, val = str(paths["train_json"]), str(paths["val_json"])
        masks = "-ins-" in (args.model or "")
        print(f"no --data given: training on the built-in shapes dataset ({root}): red rectangles, green ellipses "
              f"and blue triangles{' with their masks' if masks else ''}, {DEMO_DATA['num_train']} + "
              f"{DEMO_DATA['num_val']} images; about {5 if masks else 3} minutes on 2 CPU cores")
    fields = {f.name for f in dataclasses.fields(TrainArgs)}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    values.update(data=data, val=val)
    if demo:
        for key, default in DEMO_TRAIN.items():
            if getattr(args, key) is None:
                values[key] = default
        if args.epochs is not None and args.stage2_epochs is None:
            values["stage2_epochs"] = values["epochs"]
    result = Trainer(TrainArgs.from_kwargs(**values)).fit()
    save_dir = Path(result["save_dir"])
    if result.get("metrics"):
        m = result["metrics"]
        print(f"final: AP {m['AP']:.4f}  AP50 {m['AP50']:.4f}  AP75 {m['AP75']:.4f}"
              + (f"  mask AP {m['mask_AP']:.4f}  mask AP50 {m['mask_AP50']:.4f}" if "mask_AP" in m else ""))
    if val and (save_dir / "weights" / "best.pt").exists():
        from . import RTMDet
        from .data.datasets import load_dataset

        model = RTMDet(save_dir / "weights" / "best.pt", device=args.device)
        paths = [r["path"] for r in load_dataset(val, "val", filter_empty_gt=False, min_size=0).records[:8]]
        out = save_dir / "predictions"
        for r in model.predict(paths, conf=0.3):
            r.save(out / Path(r.path).name)
        print(f"predictions on {len(paths)} validation images saved to {out}")
    print(f"results saved to {save_dir}")
    if demo:
        best = save_dir / "weights" / "best.pt"
        segment = "mask_AP" in (result.get("metrics") or {})
        drawn = "masks and boxes" if segment else "boxes"
        zoo = values["model"] if values["model"] != DEMO_TRAIN["model"] else "rtmdet-tiny"
        print(f"what to look at:\n"
              f"  {save_dir / 'predictions'}/  {drawn} with class and score on validation images the model never "
              "trained on\n"
              f"  {save_dir / 'results.png'}  losses and AP per epoch (AP above 0.5 means most "
              f"{'masks fit' if segment else 'boxes are tight'})\n"
              f"  {save_dir / 'pr_curve.png'}  precision against recall per class\n"
              f"next: rtmkit predict --model {best} --source {Path(val).parent.parent / 'val'}\n"
              f"      rtmkit train --data your/data.yaml --model {zoo} --weights {zoo}  (fine-tune on your data)")
    return 0


def cmd_val(args: argparse.Namespace) -> int:
    from . import RTMDet

    model = RTMDet(args.model, weights=args.weights, device=args.device, runtime=args.runtime)
    baked = getattr(model.backend, "meta", {}).get("nms") if model.backend.graph == "end2end" else None
    if baked:
        from .inference.predictor import end2end_limits

        print(f"end-to-end graph: NMS baked at score > {baked['score_thr']}, IoU {baked['iou_thr']}, at most "
              f"{baked['max_det']} per image{', class-agnostic' if baked.get('agnostic') else ''}: these are the "
              "thresholds this evaluation uses")
        for message in end2end_limits(baked, model.postprocess_config("eval")):
            print(f"  note: {message}")
    stats = model.val(args.data, images=args.images, batch=args.batch, imgsz=args.imgsz, save_json=args.save_json,
                      verbose=True, map_classes_by_order=args.map_classes_by_order)
    print(f"classes: {stats['class_mapping']}")
    masks = stats.get("per_class_mask_AP")
    print("per-class AP:" + ("  (box, mask)" if masks else ""))
    for name, ap in stats["per_class_AP"].items():
        print(f"  {name:20s} {ap:.4f}" + (f"  {masks[name]:.4f}" if masks else ""))
    if masks:
        print(f"box AP {stats['AP']:.4f}, mask AP {stats['mask_AP']:.4f}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """One line per model name: task, size, input, classes and its official weights."""
    print(f"{'name':22s} {'task':8s} {'size':5s} {'input':>5s} {'classes':>7s}  weights")
    for name, entry in MODELS.items():
        cfg = entry.config
        if cfg is None and not args.all:
            continue
        weights = entry.weights.file_name if entry.weights is not None else "none (train your own)"
        if cfg is None:
            print(f"{name:22s} {entry.task:8s} {'':5s} {'':>5s} {'':>7s}  {weights} (not built yet)")
        else:
            print(f"{name:22s} {cfg.task:8s} {cfg.size:5s} {cfg.data.input_size:5d} {cfg.num_classes:7d}  {weights}")
    if not args.all:
        print("(--all also lists the reserved names of families rtmkit does not build yet, and backbone weights)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtmkit", description="RTMDet detectors in plain PyTorch")
    parser.add_argument("--version", action="version", version=f"rtmkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    m = sub.add_parser("models", help="list the model names with task, size, input size and weights")
    m.add_argument("--all", action="store_true", help="also list zoo weights that have no buildable config yet")
    m.set_defaults(func=cmd_models)

    p = sub.add_parser("predict", help="detect objects in images, folders, globs or videos")
    p.add_argument("--model", default=None,
                   help=f"config name ({', '.join(CONFIGS)}), an rtmkit checkpoint or an exported .onnx (default: "
                        "rtmdet-tiny; with neither --source nor --weights, the built-in demo model)")
    p.add_argument("--weights", default=None, help="checkpoint path, URL or model-zoo name")
    p.add_argument("--source", default=None,
                   help="image, folder, glob or video (default: the built-in demo picture, no file needed)")
    p.add_argument("--preset", default="deploy", choices=["deploy", "eval"],
                   help="deploy: score > 0.3, 100 boxes; eval: the config's test_cfg (COCO evaluation settings)")
    p.add_argument("--conf", type=float, default=None, help="score threshold (overrides the preset)")
    p.add_argument("--iou", type=float, default=None, help="NMS IoU threshold (overrides the preset)")
    p.add_argument("--max-det", type=int, default=None, help="boxes kept per image (overrides the preset)")
    p.add_argument("--agnostic", action="store_true", help="class-agnostic NMS")
    p.add_argument("--clip", default=None, choices=CLIP_MODES, help="box clamping (default: input, as the reference)")
    p.add_argument("--mask-thr", type=float, default=None,
                   help="instance masks: pixel probability threshold (default 0.5, the reference's)")
    p.add_argument("--crop-masks", action="store_true",
                   help="instance masks: clear each mask outside its box (the reference does not crop)")
    p.add_argument("--imgsz", type=int, default=None, help="network input size (default: the config's)")
    p.add_argument("--batch", type=int, default=1, help="images per forward pass")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 or a GPU index (default: GPU if available)")
    p.add_argument("--runtime", default=None, choices=["onnxruntime", "openvino"],
                   help="runtime of an exported .onnx model (default: onnxruntime)")
    p.add_argument("--project", default="runs/predict", help="parent folder of run directories")
    p.add_argument("--name", default="exp", help="run directory name (incremented if it exists)")
    p.add_argument("--save-dir", dest="project_dir", default=None,
                   help="write into exactly this folder (shorthand for --project/--name)")
    p.add_argument("--no-save", action="store_true", help="do not write annotated images/videos (JSON only)")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when any input could not be read (default: skip it with a warning; "
                        "the readable inputs are predicted and saved either way)")
    p.set_defaults(func=cmd_predict)

    e = sub.add_parser("export", help="export to ONNX (raw or end-to-end with NMS)")
    e.add_argument("--model", default="rtmdet-tiny", help="config name or rtmkit checkpoint")
    e.add_argument("--weights", default=None, help="checkpoint path, URL or model-zoo name")
    e.add_argument("--format", default="onnx", choices=["onnx"])
    e.add_argument("--file", default=None, help="output path (default: <model>.onnx)")
    e.add_argument("--nms", dest="nms", action="store_true", default=True,
                   help="end-to-end graph: dets [B,K,5] + labels [B,K] (default)")
    e.add_argument("--no-nms", dest="nms", action="store_false", help="raw graph: scores [B,N,C] + boxes [B,N,4]")
    e.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    e.add_argument("--batch", type=int, default=1, help="batch size of the (static) graph")
    e.add_argument("--imgsz", type=int, default=None)
    e.add_argument("--half", action="store_true", help="fp16 graph (for GPU runtimes)")
    e.add_argument("--normalize", action="store_true", help="take uint8 BGR input and normalise in the graph")
    e.add_argument("--simplify", action="store_true", help="simplify with onnxslim/onnxsim when installed")
    e.add_argument("--opset", type=int, default=17)
    e.add_argument("--conf", type=float, default=0.05, help="score threshold baked into the NMS")
    e.add_argument("--iou", type=float, default=None, help="NMS IoU baked into the graph (default: the config's)")
    e.add_argument("--max-det", type=int, default=100, help="K, detections per image")
    e.add_argument("--agnostic", action="store_true", help="class-agnostic NMS")
    e.add_argument("--device", default="cpu")
    e.set_defaults(func=cmd_export)

    b = sub.add_parser("benchmark", help="latency/throughput (pre/forward/post) per format, AP on --data")
    b.add_argument("--model", default="rtmdet-tiny", help="config name or rtmkit checkpoint")
    b.add_argument("--weights", default=None)
    b.add_argument("--formats", default="torch-eager,torch,onnx",
                   help="comma list of torch-eager (plain net), torch (the default predict path: BN folded, "
                        "channels-last), torch-compiled, onnx, openvino, engine")
    b.add_argument("--batch", default="1", help="comma list of batch sizes, e.g. 1,8,32")
    b.add_argument("--imgsz", type=int, default=None)
    b.add_argument("--data", default=None, help="COCO json (adds AP) or an image folder/glob (default: synthetic)")
    b.add_argument("--preset", default="eval", choices=["eval", "deploy"])
    b.add_argument("--runs", type=int, default=10)
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--device", default=None)
    b.add_argument("--csv", default="runs/benchmark/results.csv")
    b.set_defaults(func=cmd_benchmark)

    t = sub.add_parser("train", help="train (no --data: a short offline run on a built-in shapes dataset)")
    add_train_flags(t)
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("check", help="check a dataset: bad images, boxes, classes and files, reported by file")
    c.add_argument("--data", required=True, help="COCO json or YOLO data.yaml")
    c.add_argument("--split", default="train", help="split of a data.yaml (train/val/test)")
    c.add_argument("--images", default=None, help="image folder of a COCO json (default: next to it)")
    c.add_argument("--no-images", dest="no_images", action="store_true", help="skip decoding every image")
    c.add_argument("--all", action="store_true", help="list every file with problems (default: the first 50)")
    c.set_defaults(func=cmd_check)

    v = sub.add_parser("val", help="COCO box AP of a model on a COCO json, data.yaml or dataset folder (eval preset)")
    v.add_argument("--model", default="rtmdet-tiny", help="config name, rtmkit checkpoint or .onnx")
    v.add_argument("--weights", default=None)
    v.add_argument("--data", required=True, help="COCO json, YOLO data.yaml (its val split) or a folder holding one")
    v.add_argument("--images", default=None, help="image folder (default: next to the json, COCO layout)")
    v.add_argument("--batch", type=int, default=8)
    v.add_argument("--imgsz", type=int, default=None)
    v.add_argument("--device", default=None)
    v.add_argument("--save-json", dest="save_json", default=None, help="write the detections as COCO json")
    v.add_argument("--map-classes-by-order", dest="map_classes_by_order", action="store_true",
                   help="when the model's class names differ from the annotation categories, map class i to the i-th "
                        "category by id (default: refuse)")
    v.add_argument("--runtime", default=None, choices=["onnxruntime", "openvino"],
                   help="runtime of an exported .onnx model (default: onnxruntime)")
    v.set_defaults(func=cmd_val)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # The CLI's warnings are for its user: say what happened, not which library line noticed it.
    print(f"warning: {message}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    import warnings

    args = build_parser().parse_args(argv)
    shown_by, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        return _run(args)
    finally:
        warnings.showwarning = shown_by


def _run(args: argparse.Namespace) -> int:
    if getattr(args, "project_dir", None):
        target = Path(args.project_dir)
        args.project, args.name = str(target.parent), target.name
    try:
        return args.func(args)
    except BrokenPipeError:  # `rtmkit val ... | head`: the reader left; stop quietly, as other commands do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 141
    except (OSError, ValueError, RuntimeError, ImportError, KeyError, TypeError) as e:
        # KeyError's str() quotes its message; say it in plain words, in the CLI's terms.
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        if hasattr(e, "signum"):  # training stopped by SIGTERM/SIGINT: say where it stands, exit as signalled
            print(f"rtmkit {args.command}: {message}", file=sys.stderr)
            return 128 + e.signum
        print(f"rtmkit {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
