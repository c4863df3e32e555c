"""The user-facing ``RTMDet`` class: build, load weights, predict."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .allocator import keep_freed_memory
from .checkpoint import (
    CheckpointError,
    checkpoint_class_names,
    checkpoint_config,
    extract_state_dict,
    load_checkpoint_file,
    load_weights,
    save_checkpoint,
)
from .config import PostprocessConfig, RTMDetConfig, get_config
from .data.classes import COCO_CLASSES
from .data.preprocess import letterbox_batch, preprocess
from .data.sources import Frame, iter_frames
from .export.backends import OnnxRuntimeBackend
from .models.detector import RTMDetNet
from .models.fuse import compile_for_inference, fuse_model
from .models.postprocess import Detections, postprocess, postprocess_flat
from .results import Result


def select_device(device: str | int | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: the first GPU if there is one, else the CPU; an int means that CUDA device."""
    if device is None or device == "auto" or device == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        device = f"cuda:{device}"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    return dev


def _default_image_dir(ann_file: Path) -> Path:
    """COCO layout: ``<root>/annotations/instances_val2017.json`` -> ``<root>/val2017``."""
    stem = ann_file.stem.split("_", 1)[-1]
    for candidate in (ann_file.parent.parent / stem, ann_file.parent / stem, ann_file.parent):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"cannot find the images of {ann_file}: pass images='path/to/folder'")


def _default_names(cfg: RTMDetConfig) -> tuple[str, ...]:
    if cfg.class_names is not None:
        return cfg.class_names
    if cfg.num_classes == len(COCO_CLASSES):
        return COCO_CLASSES
    return tuple(f"class{i}" for i in range(cfg.num_classes))


class RTMDet:
    """An RTMDet detector ready for inference.

    >>> model = RTMDet("rtmdet-s", weights="rtmdet_s.pth")     # official MMDetection checkpoint
    >>> results = model.predict("images/", conf=0.4)

    ``model`` is a config name (see ``rtmkit.config.CONFIGS``) or an rtmkit checkpoint (which stores its config).
    ``weights`` is a checkpoint path, URL or model-zoo name; ``True`` means the zoo weights of ``model``; without
    weights the network is freshly initialised. ``num_classes`` is taken from the checkpoint when not given.
    Other keyword arguments override config fields (``input_size=416`` ...).
    Exported models: ``RTMDet("x.onnx")`` runs ONNX Runtime (``runtime="openvino"``: OpenVINO on the CPU, same
    file), ``RTMDet("x.engine")`` TensorRT.
    """

    def __init__(self, model: str | os.PathLike = "rtmdet-s", weights: str | os.PathLike | bool | None = None,
                 device: str | int | torch.device | None = None, *, num_classes: int | None = None,
                 class_names: list[str] | tuple[str, ...] | None = None, strict: bool = True,
                 runtime: str | None = None, **overrides: Any):
        ckpt: dict | None = None
        source = str(weights) if weights not in (None, True, False) else None
        model_str = str(model)
        self._backend: Any = None
        if model_str.endswith((".onnx", ".engine")):
            if weights not in (None, False):
                raise ValueError("an exported model carries its weights: do not pass `weights=`")
            if runtime == "ort":
                runtime = "onnxruntime"
            if model_str.endswith(".engine") and runtime not in (None, "tensorrt"):
                raise ValueError(f"{model_str} is a TensorRT engine: runtime={runtime!r} cannot run it")
            # OpenVINO runs on the CPU here: default to it even where a GPU exists
            dev = torch.device("cpu") if runtime == "openvino" and device is None else select_device(device)
            if model_str.endswith(".engine"):
                from .export.tensorrt import TensorRTBackend

                self._backend = TensorRTBackend(model_str, dev)
            elif runtime in (None, "onnxruntime"):
                self._backend = OnnxRuntimeBackend(model_str, dev)
            elif runtime == "openvino":
                from .export.backends import OpenVINOBackend

                self._backend = OpenVINOBackend(model_str, dev)
            else:
                raise ValueError(f"unknown runtime {runtime!r} for {model_str}: use 'onnxruntime' or 'openvino'")
            cfg = RTMDetConfig.from_dict(self._backend.meta["config"])
            if overrides:
                cfg = dataclasses.replace(cfg, **overrides)
            self.cfg, self.device, self.net, self.weights = cfg, dev, None, model_str
            self.runtime = runtime or ("tensorrt" if model_str.endswith(".engine") else "onnxruntime")
            self._infer_net, self._channels_last = None, False
            return
        if runtime not in (None, "torch"):
            raise ValueError(f"runtime={runtime!r} applies to exported .onnx models, not to {model_str}")
        self.runtime = "torch"
        if model_str.endswith((".pth", ".pt")) and Path(model_str).is_file():
            if weights not in (None, False):
                raise ValueError("pass either a checkpoint as `model` or `weights=`, not both")
            source = model_str
            ckpt = load_checkpoint_file(model_str)
            stored = checkpoint_config(ckpt)
            if stored is None:
                raise CheckpointError(
                    f"{model_str}: this checkpoint does not say which architecture it is (an official MMDetection "
                    f"file?): use RTMDet('<config name>', weights='{model_str}'), e.g. RTMDet('rtmdet-s', ...)")
            cfg = RTMDetConfig.from_dict(stored)
        else:
            cfg = get_config(model_str)
            if weights is True:
                source = model_str
            if source is not None:
                from .zoo import resolve_weights

                ckpt = load_checkpoint_file(resolve_weights(source))
        state_dict = extract_state_dict(ckpt, source or "<checkpoint>") if ckpt is not None else None

        if state_dict is not None and num_classes is None and "bbox_head.rtm_cls.0.weight" in state_dict:
            num_classes = int(state_dict["bbox_head.rtm_cls.0.weight"].shape[0])
        if class_names is None and ckpt is not None:
            stored_names = checkpoint_class_names(ckpt)
            if stored_names is not None and len(stored_names) == (num_classes or cfg.num_classes):
                class_names = tuple(stored_names)
        if num_classes is not None and num_classes != cfg.num_classes:
            overrides.setdefault("num_classes", num_classes)
            overrides.setdefault("class_names", None)
        if class_names is not None:
            overrides["class_names"] = tuple(class_names)
        if overrides:
            if isinstance(overrides.get("eval"), dict):
                overrides["eval"] = dataclasses.replace(cfg.eval, **overrides["eval"])
            cfg = dataclasses.replace(cfg, **overrides)

        self.cfg = cfg
        self.device = select_device(device)
        self.net = RTMDetNet(cfg)
        if state_dict is not None:
            load_weights(self.net, state_dict, strict=strict, source=source or "<checkpoint>")
        self.net.to(self.device).eval()
        self.weights = source
        self._infer_net: torch.nn.Module = self.net  # what predict runs: the net itself, or a fused copy
        self._channels_last = False

    def export(self, format: str = "onnx", file: str | os.PathLike | None = None, *, imgsz: int | None = None,
               batch: int = 1, dynamic: bool = False, nms: bool = True, conf: float = 0.05, iou: float | None = None,
               max_det: int | None = None, agnostic: bool = False, normalize: bool = False, half: bool = False,
               simplify: bool = False, opset: int = 17) -> Path:
        """Export to ONNX and return the path written (default ``<model name>.onnx``).

        ``nms=True``: end-to-end graph, outputs ``dets`` [B, K, 5] and ``labels`` [B, K] with NMS inside (score >
        ``conf``, IoU ``iou`` (default: the config's), K = ``max_det`` (default 100), optionally class-agnostic);
        ``nms=False``: raw graph, ``scores`` [B, N, C] and ``boxes`` [B, N, 4]. ``normalize``: the graph takes
        uint8 BGR input. ``dynamic``: dynamic batch/height/width. Metadata (names, input size, strides, mean/std,
        channel order, task, version) is stored in the file."""
        if format != "onnx":
            raise ValueError(f"unsupported export format {format!r}: use 'onnx' (TensorRT engines are built from it)")
        if self.net is None:
            raise ValueError("this model is already an exported graph")
        from .export.onnx import export_onnx

        post = dataclasses.replace(self.cfg.deploy, score_thr=conf, iou_thr=iou if iou is not None else
                                   self.cfg.eval.iou_thr, max_per_img=max_det or 100, agnostic=agnostic)
        target = Path(file) if file is not None else Path(f"{self.cfg.name}.onnx")
        return export_onnx(self.net.eval(), self.cfg, target, class_names=list(self.names.values()), imgsz=imgsz,
                           batch=batch, dynamic=dynamic, nms=nms, post=post, normalize=normalize, half=half,
                           simplify=simplify, opset=opset)

    def fuse(self, channels_last: bool = True, compile: bool = False) -> RTMDet:
        """Speed up inference: predict() then runs a copy of the net with BatchNorm folded into the convs
        (and channels-last memory layout). Outputs change by float rounding only (~1e-6 relative). On a CPU it
        also keeps freed memory in the process heap (:func:`rtmkit.allocator.keep_freed_memory`: large activations
        then reuse pages instead of page-faulting; ``RTMKIT_NO_MALLOPT=1`` disables it).

        ``compile=True`` also runs the copy through ``torch.compile`` with weight freezing (weights folded in as
        constants; the SiLUs, concatenations and attention products around the convs fused into generated
        kernels). It compiles once per input shape, which takes 10-20 s
        on a CPU, so it pays for streams and evaluation, not for one image; it is compiled here for a batch of
        one at the model's input size, and falls back to the eager copy with a warning where the compiler is
        unavailable (no C++ compiler, unsupported platform).
        ``model.net`` keeps MMDetection's layout for saving and training; re-call after changing its weights."""
        if self.net is None:
            return self  # exported graphs are already optimised by their runtime
        if self.device.type == "cpu":
            keep_freed_memory()
        fused = fuse_model(self.net)
        if channels_last:
            fused = fused.to(memory_format=torch.channels_last)
        self._infer_net, self._channels_last = fused, channels_last
        if compile:
            self._infer_net = compile_for_inference(fused, self.cfg.input_size, self.device, channels_last)
        return self

    # ------------------------------------------------------------------ properties
    @property
    def names(self) -> dict[int, str]:
        return dict(enumerate(_default_names(self.cfg)))

    @property
    def input_size(self) -> int:
        return self.cfg.input_size

    def __repr__(self) -> str:
        kind = type(self._backend).__name__ if self._backend is not None else \
            f"params={sum(p.numel() for p in self.net.parameters()) / 1e6:.2f}M"
        return (f"RTMDet({self.cfg.name!r}, classes={self.cfg.num_classes}, input={self.cfg.input_size}, {kind}, "
                f"device={self.device}, weights={self.weights!r})")

    # ------------------------------------------------------------------ inference
    def postprocess_config(self, preset: str = "deploy", *, conf: float | None = None, iou: float | None = None,
                           max_det: int | None = None, nms_pre: int | None = None, agnostic: bool | None = None,
                           clip: str | None = None, min_size: float | None = None,
                           nms_space: str | None = None) -> PostprocessConfig:
        """The preset's post-processing settings with any given overrides applied."""
        changes = {"score_thr": conf, "iou_thr": iou, "max_per_img": max_det, "nms_pre": nms_pre,
                   "agnostic": agnostic, "clip": clip, "min_bbox_size": min_size, "nms_space": nms_space}
        return dataclasses.replace(self.cfg.preset(preset), **{k: v for k, v in changes.items() if v is not None})

    def _check_imgsz(self, imgsz: int | None) -> int:
        size = imgsz or self.cfg.input_size
        step = max(self.cfg.strides)
        if size % step:
            raise ValueError(f"imgsz must be a multiple of {step} for {self.cfg.name}, got {size}")
        return size

    @torch.inference_mode()
    def predict_arrays(self, images: list[np.ndarray], post: PostprocessConfig, imgsz: int | None = None
                       ) -> list[Result]:
        """Run on a list of ``HxWx3`` BGR uint8 arrays (one batch)."""
        size = self._check_imgsz(imgsz)
        if self._backend is not None:
            return self._predict_backend(images, post, size)
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        t0 = time.perf_counter()
        batch, scales = preprocess(images, size, self.cfg.mean, self.cfg.std, self.cfg.pad_value, self.device,
                                   channels_last=self._channels_last)
        sync()
        t1 = time.perf_counter()
        cls_scores, bbox_preds = self._infer_net(batch)
        sync()
        t2 = time.perf_counter()
        orig = torch.tensor([img.shape[:2] for img in images])
        dets = postprocess(cls_scores, bbox_preds, self.net.strides, post, scales, orig)
        out = []
        for img, det in zip(images, dets):
            out.append(Result(det.boxes.float().cpu().numpy(), det.scores.float().cpu().numpy(),
                              det.labels.cpu().numpy(), self.names, tuple(img.shape[:2]), orig_img=img))
        return self._timed(out, len(images), t0, t1, t2, time.perf_counter())

    @staticmethod
    def _timed(results: list[Result], n: int, t0: float, t1: float, t2: float, t3: float) -> list[Result]:
        speed = {"preprocess": (t1 - t0) * 1e3 / n, "forward": (t2 - t1) * 1e3 / n,
                 "postprocess": (t3 - t2) * 1e3 / n}
        for r in results:
            r.speed = dict(speed)
        return results

    def _predict_backend(self, images: list[np.ndarray], post: PostprocessConfig, size: int) -> list[Result]:
        """Predict through an exported graph. Raw graphs get the reference post-processing (identical to PyTorch's
        up to the runtime's float rounding); end-to-end graphs did NMS inside, with the settings baked at export:
        here their boxes are only rescaled and filtered by ``conf``/``max_det``."""
        backend = self._backend
        meta = backend.meta
        if meta.get("dynamic") is False and size != meta.get("imgsz"):
            raise ValueError(f"{backend.path} was exported for imgsz={meta.get('imgsz')} (not dynamic)")
        t0 = time.perf_counter()
        if meta.get("normalized_in_graph"):
            canvas, scales = letterbox_batch(images, size, self.cfg.pad_value)
            batch = np.ascontiguousarray(canvas.transpose(0, 3, 1, 2))
        else:
            batch_t, scales = preprocess(images, size, self.cfg.mean, self.cfg.std, self.cfg.pad_value)
            batch = batch_t.numpy()
        fixed = meta.get("dynamic") is False and meta.get("batch", 1) != len(images)
        t1 = time.perf_counter()
        if fixed:  # a static-batch graph: run image by image
            parts = [backend(batch[i:i + 1]) for i in range(len(images))]
            first, second = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        else:
            first, second = backend(batch)
        t2 = time.perf_counter()
        orig = torch.tensor([img.shape[:2] for img in images])
        if backend.end2end:
            dets = []
            inv = (1.0 / scales).float()
            for i in range(len(images)):
                d, lab = first[i], second[i].long()
                keep = (d[:, 4] > post.score_thr) & (lab >= 0)
                boxes = d[keep, :4] * inv[i].repeat(2)
                if post.clip == "image":
                    boxes = torch.minimum(boxes.clamp(min=0), orig[i].flip(0).float().repeat(2))
                dets.append(Detections(boxes[:post.max_per_img], d[keep, 4][:post.max_per_img],
                                       lab[keep][:post.max_per_img]))
        else:
            strides = tuple(meta["strides"])
            level_ids = torch.cat([torch.full(((size // s) ** 2,), i) for i, s in enumerate(strides)])
            dets = postprocess_flat(first, second, level_ids, (size, size), post, scales, orig)
        out = [Result(d.boxes.float().numpy(), d.scores.float().numpy(), d.labels.numpy(), self.names,
                      tuple(img.shape[:2]), orig_img=img) for img, d in zip(images, dets)]
        return self._timed(out, len(images), t0, t1, t2, time.perf_counter())

    def stream(self, source: Any, *, preset: str = "deploy", batch: int = 1, imgsz: int | None = None,
               keep_images: bool = True, **overrides: Any) -> Iterator[Result]:
        """Like :meth:`predict`, but yields results one by one while decoding the source lazily."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        post = self.postprocess_config(preset, **overrides)
        pending: list[Frame] = []

        def flush() -> Iterator[Result]:
            results = self.predict_arrays([f.image for f in pending], post, imgsz)
            for f, r in zip(pending, results):
                r.path, r.frame = f.path, f.frame
                if not keep_images:
                    r.orig_img = None
                yield r
            pending.clear()

        for frame in iter_frames(source):
            pending.append(frame)
            if len(pending) == batch:
                yield from flush()
        if pending:
            yield from flush()

    def predict(self, source: Any, *, preset: str = "deploy", batch: int = 1, imgsz: int | None = None,
                keep_images: bool = True, **overrides: Any) -> list[Result]:
        """Detect objects in ``source`` (path, folder, glob, list, BGR array(s), video): one Result per image.

        ``preset``: ``"deploy"`` (default: score > 0.3, 100 boxes per image) or ``"eval"`` (the config's test_cfg,
        e.g. score > 0.001, IoU 0.65, 300 boxes: what COCO evaluation uses). Overrides: ``conf``, ``iou``,
        ``max_det``, ``nms_pre``, ``agnostic``, ``clip`` ("input" | "image" | "none"), ``min_size``,
        ``nms_space`` ("image" | "input"); see :class:`rtmkit.PostprocessConfig`.
        """
        return list(self.stream(source, preset=preset, batch=batch, imgsz=imgsz, keep_images=keep_images,
                                **overrides))

    __call__ = predict

    # ------------------------------------------------------------------ evaluation
    def val(self, data: str | os.PathLike, images: str | os.PathLike | None = None, *, batch: int = 8,
            imgsz: int | None = None, image_ids: list[int] | None = None, save_json: str | os.PathLike | None = None,
            verbose: bool = False) -> dict[str, Any]:
        """COCO box metrics on a COCO-format annotation file, always with the ``eval`` preset (the config's
        test_cfg). ``images`` defaults to the folder named after the file (``annotations/instances_val2017.json``
        -> ``val2017/``) or the file's own folder. Returns AP, AP50, ... and ``per_class_AP`` by class name."""
        from .eval.coco import coco_evaluate, label_to_category, to_coco_detections

        ann_path = Path(data)
        gt = json.loads(ann_path.read_text())
        root = Path(images) if images is not None else _default_image_dir(ann_path)
        wanted = set(image_ids) if image_ids is not None else None
        entries = [im for im in gt["images"] if wanted is None or im["id"] in wanted]
        label_map = label_to_category(list(self.names.values()), gt["categories"])
        detections: list[dict[str, Any]] = []
        paths = [str(root / im["file_name"]) for im in entries]
        for im, r in zip(entries, self.stream(paths, preset="eval", batch=batch, imgsz=imgsz, keep_images=False)):
            detections += to_coco_detections(im["id"], r.boxes, r.scores, r.labels, label_map)
        if save_json is not None:
            Path(save_json).write_text(json.dumps(detections))
        stats = coco_evaluate(gt, detections, image_ids=[im["id"] for im in entries],
                              category_ids=sorted(label_map.values()), verbose=verbose)
        by_cat = {v: k for k, v in label_map.items()}
        stats["per_class_AP"] = {self.names[by_cat[c]]: ap for c, ap in stats["per_class_AP"].items()}
        return stats

    # ------------------------------------------------------------------ saving
    def save(self, path: str | os.PathLike) -> Path:
        """Write an rtmkit checkpoint (MMDetection-compatible layout plus the rtmkit config)."""
        return save_checkpoint(path, self.net.state_dict(), class_names=list(_default_names(self.cfg)),
                               config=self.cfg.to_dict())
