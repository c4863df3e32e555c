"""The user-facing ``RTMDet`` class: build, load weights, predict."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .catalog import config_from_dict, get_config
from .checkpoint import (
    CheckpointError,
    checkpoint_class_names,
    checkpoint_config,
    extract_state_dict,
    load_checkpoint_file,
    load_weights,
    save_checkpoint,
)
from .config import PostprocessConfig, RTMDetConfig
from .data.classes import COCO_CLASSES
from .data.sources import Failure, Frame, iter_frames
from .device import select_device
from .inference import Backend, Predictor, TorchBackend
from .models.detector import RTMDetNet
from .results import Result


class Predictions(list):
    """The results of :meth:`RTMDet.predict` (a list of :class:`Result`), and the inputs that could not be read
    (``failures``: source and reason each) when it ran with ``on_error="skip"``."""

    def __init__(self, results: Any = (), failures: list[Failure] | None = None):
        super().__init__(results)
        self.failures: list[Failure] = list(failures or [])


def _default_names(cfg: RTMDetConfig) -> tuple[str, ...]:
    if cfg.class_names is not None:
        return cfg.class_names
    if cfg.num_classes == len(COCO_CLASSES):
        return COCO_CLASSES
    return tuple(f"class{i}" for i in range(cfg.num_classes))


class RTMDet:
    """An RTMDet model: build, load weights, predict, evaluate, train, export.

    >>> model = RTMDet("rtmdet-s", weights="rtmdet_s.pth")     # official MMDetection checkpoint
    >>> results = model.predict("images/", conf=0.4)

    ``model`` is a model name (``rtmkit models``; :mod:`rtmkit.catalog`) or an rtmkit checkpoint (which stores its
    config). ``weights`` is a checkpoint path, URL or model name; ``True`` means the official weights of ``model``;
    without weights the network is freshly initialised. ``num_classes`` is taken from the checkpoint when not given.
    Other keyword arguments override config fields (``input_size=416`` ...).
    Exported models: ``RTMDet("x.onnx")`` runs ONNX Runtime (``runtime="openvino"``: OpenVINO on the CPU, same
    file), ``RTMDet("x.engine")`` TensorRT.

    ``model.net`` is the plain network (MMDetection's layout, for training, saving and parity); ``predict`` and
    ``val`` run it through :class:`~rtmkit.inference.TorchBackend`, by default BN-folded and channels-last
    (``fuse=False`` runs the plain net itself).
    """

    def __init__(self, model: str | os.PathLike = "rtmdet-s", weights: str | os.PathLike | bool | None = None,
                 device: str | int | torch.device | None = None, *, num_classes: int | None = None,
                 class_names: list[str] | tuple[str, ...] | None = None, strict: bool = True,
                 runtime: str | None = None, **overrides: Any):
        model_str = str(model)
        self.net: RTMDetNet | None = None
        if model_str.endswith((".onnx", ".engine")):
            if weights not in (None, False):
                raise ValueError("an exported model carries its weights: do not pass `weights=`")
            self.backend: Backend = _exported_backend(model_str, device, runtime)
            cfg = config_from_dict(self.backend.meta["config"])
            self.cfg = cfg.replace(**overrides) if overrides else cfg
            self.device, self.weights = self.backend.device, model_str
            self.runtime = runtime or ("tensorrt" if model_str.endswith(".engine") else "onnxruntime")
            if self.runtime == "ort":
                self.runtime = "onnxruntime"
        else:
            if runtime not in (None, "torch"):
                raise ValueError(f"runtime={runtime!r} applies to exported .onnx models, not to {model_str}")
            self.runtime = "torch"
            self.cfg, state_dict, self.weights = _torch_model(model_str, weights, num_classes, class_names, overrides)
            self.device = select_device(device)
            self.net = RTMDetNet(self.cfg)
            if state_dict is not None:
                load_weights(self.net, state_dict, strict=strict, source=self.weights or "<checkpoint>")
            self.net.to(self.device).eval()
            self.backend = TorchBackend(self.net)
        self._eager: Predictor | None = None

    # ------------------------------------------------------------------ properties
    @property
    def names(self) -> dict[int, str]:
        return dict(enumerate(_default_names(self.cfg)))

    @property
    def input_size(self) -> int:
        return self.cfg.data.input_size

    @property
    def task(self) -> str:
        return self.cfg.task

    def _refuse_rotated(self, action: str) -> None:
        if self.cfg.task == "rotated":
            raise NotImplementedError(f"{action} is not implemented yet for rotated models ({self.cfg.name}); "
                                      "predict works")

    def __repr__(self) -> str:
        kind = type(self.backend).__name__ if self.net is None else \
            f"params={sum(p.numel() for p in self.net.parameters()) / 1e6:.2f}M"
        return (f"RTMDet({self.cfg.name!r}, classes={self.cfg.num_classes}, input={self.cfg.data.input_size}, {kind}, "
                f"device={self.device}, weights={self.weights!r})")

    # ------------------------------------------------------------------ inference
    def fuse(self, channels_last: bool = True, compile: bool = False) -> RTMDet:
        """Choose how ``predict``/``val`` run the PyTorch net. The default (also without calling this) is a copy
        with BatchNorm folded into the convs, in channels-last layout: outputs change by float rounding only
        (~1e-6 relative), and on a CPU freed memory is kept in the process heap
        (:func:`rtmkit.allocator.keep_freed_memory`; ``RTMKIT_NO_MALLOPT=1`` disables it). The copy follows
        changes of ``model.net``'s weights.

        ``compile=True`` also runs the copy through ``torch.compile`` with weight freezing (weights folded in as
        constants; the SiLUs, concatenations and attention products around the convs fused into generated
        kernels). It compiles once per input shape, 10-20 s on a CPU, so it pays for streams and evaluation, not
        for one image; it falls back to the eager copy with a warning where the compiler is unavailable."""
        if self.net is not None:  # exported graphs are already optimised by their runtime
            self.backend = TorchBackend(self.net, channels_last=channels_last, compile=compile)
        return self

    def postprocess_config(self, preset: str = "deploy", *, conf: float | None = None, iou: float | None = None,
                           max_det: int | None = None, nms_pre: int | None = None, agnostic: bool | None = None,
                           clip: str | None = None, min_size: float | None = None,
                           nms_space: str | None = None, mask_thr: float | None = None,
                           crop_masks: bool | None = None) -> PostprocessConfig:
        """The preset's post-processing settings with any given overrides applied."""
        changes = {"score_thr": conf, "iou_thr": iou, "max_per_img": max_det, "nms_pre": nms_pre,
                   "agnostic": agnostic, "clip": clip, "min_bbox_size": min_size, "nms_space": nms_space,
                   "mask_thr": mask_thr, "crop_masks": crop_masks}
        return dataclasses.replace(self.cfg.preset(preset), **{k: v for k, v in changes.items() if v is not None})

    def predictor(self, fuse: bool = True) -> Predictor:
        """The inference pipeline of this model (``fuse=False``: the plain net, bit-identical to the reference)."""
        backend = self.backend
        if not fuse and self.net is not None:
            if self._eager is None:
                self._eager = self._make_predictor(TorchBackend(self.net, fuse=False))
            return self._eager
        return self._make_predictor(backend)

    def _make_predictor(self, backend: Backend) -> Predictor:
        data = self.cfg.data
        return Predictor(backend, self.names, mean=data.mean, std=data.std, pad_value=data.pad_value,
                         input_size=data.input_size, max_stride=max(self.cfg.strides))

    def predict_arrays(self, images: list[np.ndarray], post: PostprocessConfig, imgsz: int | None = None, *,
                       fuse: bool = True) -> list[Result]:
        """Run on a list of ``HxWx3`` BGR uint8 arrays (one batch)."""
        return self.predictor(fuse)(images, post, imgsz)

    def stream(self, source: Any, *, preset: str = "deploy", batch: int = 1, imgsz: int | None = None,
               keep_images: bool = True, fuse: bool = True, on_error: str = "raise",
               failures: list[Failure] | None = None, **overrides: Any) -> Iterator[Result]:
        """Like :meth:`predict`, but yields results one by one while decoding the source lazily (unreadable files
        skipped into ``failures`` with ``on_error="skip"``)."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        post = self.postprocess_config(preset, **overrides)
        predictor = self.predictor(fuse)
        predictor.check_size(imgsz)
        pending: list[Frame] = []

        def flush() -> Iterator[Result]:
            results = predictor([f.image for f in pending], post, imgsz)
            for f, r in zip(pending, results):
                r.path, r.frame = f.path, f.frame
                if not keep_images:
                    r.orig_img = None
                yield r
            pending.clear()

        for frame in iter_frames(source, on_error=on_error, failures=failures):
            pending.append(frame)
            if len(pending) == batch:
                yield from flush()
        if pending:
            yield from flush()

    def predict(self, source: Any, *, preset: str = "deploy", batch: int = 1, imgsz: int | None = None,
                keep_images: bool = True, fuse: bool = True, on_error: str = "raise",
                **overrides: Any) -> Predictions:
        """Detect objects in ``source`` (path, folder, glob, list, BGR array(s), video): one Result per image.

        ``preset``: ``"deploy"`` (default: score > 0.3, 100 boxes per image) or ``"eval"`` (the config's test_cfg,
        e.g. score > 0.001, IoU 0.65, 300 boxes: what COCO evaluation uses). Overrides: ``conf``, ``iou``,
        ``max_det``, ``nms_pre``, ``agnostic``, ``clip`` ("input" | "image" | "none"), ``min_size``,
        ``nms_space`` ("image" | "input"); see :class:`rtmkit.PostprocessConfig`. ``fuse=False`` runs the plain
        net (bit-identical to the reference) instead of the BN-folded channels-last copy.
        ``on_error="skip"``: unreadable files are skipped with a warning naming each, the rest are predicted, and
        the returned list's ``failures`` says which files failed and why (default ``"raise"``: the first one
        raises).
        """
        failures: list[Failure] = []
        results = self.stream(source, preset=preset, batch=batch, imgsz=imgsz, keep_images=keep_images, fuse=fuse,
                              on_error=on_error, failures=failures, **overrides)
        return Predictions(results, failures)

    __call__ = predict

    # ------------------------------------------------------------------ evaluation
    def val(self, data: str | os.PathLike, images: str | os.PathLike | None = None, *, batch: int = 8,
            imgsz: int | None = None, image_ids: list[int] | None = None, save_json: str | os.PathLike | None = None,
            verbose: bool = False, fuse: bool = True, map_classes_by_order: bool = False) -> dict[str, Any]:
        """COCO box metrics (and mask metrics ``mask_AP``, ... ``per_class_mask_AP`` for RTMDet-Ins), always with
        the ``eval`` preset (the config's test_cfg), by the same evaluator the
        trainer uses. ``data``: a COCO json (scored against the file itself), a YOLO data.yaml (its ``val`` split)
        or a folder holding either. ``images``: the image folder of a json (default: found next to it, COCO
        layout). Model classes map to the categories by name; when the names differ, ``map_classes_by_order=True``
        maps class i to the i-th category by id (otherwise that is an error). Returns AP, AP50, ...,
        ``per_class_AP`` by class name and ``class_mapping`` (the mapping used, in words)."""
        from .data.datasets import load_dataset
        from .eval.detection import evaluate

        self._refuse_rotated("evaluation (DOTA mAP)")
        kwargs = {"img_dir": images} if images is not None else {}
        dataset = load_dataset(data, "val", **kwargs)
        if image_ids is not None:
            wanted = set(image_ids)
            dataset.records = [r for r in dataset.records if r["image_id"] in wanted]
        stats = evaluate(self.predictor(fuse), dataset, post=self.postprocess_config("eval"), batch=batch,
                         imgsz=imgsz, save_json=save_json, verbose=verbose, map_classes_by_order=map_classes_by_order,
                         masks=self.task == "segment")
        stats.pop("precision", None)
        return stats

    # ------------------------------------------------------------------ training
    def loss(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]], *,
             return_details: bool = False) -> dict[str, torch.Tensor]:
        """Training losses ``{"loss_cls", "loss_bbox"}`` (RTMDet-Ins: also ``"loss_mask"``), each summed over
        levels, of a normalised NCHW batch.

        ``targets``: one ``{"boxes": [n, 4] xyxy in input pixels, "labels": [n]}`` per image (n may be 0), with
        ``"masks": [n, H, W]`` bool in input pixels for RTMDet-Ins. Runs ``model.net`` as it is (call
        ``model.net.train()`` first for batch-statistics BN, as in training) and the task's criterion.
        ``return_details`` also returns a ``LossDetails`` (per-level losses, assignment, targets).
        """
        if self.net is None:
            raise ValueError("an exported graph has no training loss: use the PyTorch model")
        criterion = self.__dict__.get("_criterion")
        if criterion is None:
            from .engine.task import task_for

            criterion = self._criterion = task_for(self.cfg).criterion()
        return criterion(self.net(images), targets, return_details=return_details)

    def train(self, **kwargs: Any) -> dict[str, Any]:
        """Train this architecture (``rtmkit train`` from Python): ``model.train(data="data.yaml", epochs=10)``.
        Starts from this model's weights when it has some. Returns the run's result (``save_dir``, ``metrics``)."""
        from .engine.trainer import train

        if self.net is None:
            raise ValueError("an exported graph cannot be trained: use the PyTorch model")
        kwargs.setdefault("model", self.cfg.name)
        if self.weights is not None and "weights" not in kwargs:
            kwargs["weights"] = self.weights
        return train(**kwargs)

    # ------------------------------------------------------------------ saving and export
    def save(self, path: str | os.PathLike) -> Path:
        """Write an rtmkit checkpoint (MMDetection-compatible layout plus the rtmkit config)."""
        if self.net is None:
            raise ValueError("an exported graph is saved by exporting; there is no PyTorch state to write")
        return save_checkpoint(path, self.net.state_dict(), class_names=list(_default_names(self.cfg)),
                               config=self.cfg.to_dict())

    def export(self, format: str = "onnx", file: str | os.PathLike | None = None, *, imgsz: int | None = None,
               batch: int = 1, dynamic: bool = False, nms: bool = True, conf: float = 0.05, iou: float | None = None,
               max_det: int | None = None, agnostic: bool = False, normalize: bool = False, half: bool = False,
               simplify: bool = False, opset: int = 17) -> Path:
        """Export to ONNX and return the path written (default ``<model name>.onnx``).

        ``nms=True``: end-to-end graph, outputs ``dets`` [B, K, 5] and ``labels`` [B, K] with NMS inside (score >
        ``conf``, IoU ``iou`` (default: the config's), K = ``max_det`` (default 100), optionally class-agnostic);
        ``nms=False``: raw graph, ``scores`` [B, N, C] and ``boxes`` [B, N, 4]. RTMDet-Ins graphs add ``masks``
        [B, K, H, W] (end-to-end, probabilities at input resolution) or ``kernels`` and ``mask_feat`` (raw); see
        :mod:`rtmkit.export.onnx`. ``normalize``: the graph takes
        uint8 BGR input. ``dynamic``: dynamic batch/height/width. Metadata (names, input size, strides, mean/std,
        channel order, task, version) is stored in the file."""
        if format != "onnx":
            raise ValueError(f"unsupported export format {format!r}: use 'onnx' (TensorRT engines are built from it)")
        if self.net is None:
            raise ValueError("this model is already an exported graph")
        self._refuse_rotated("export")
        from .export.onnx import export_onnx

        post = dataclasses.replace(self.cfg.deploy, score_thr=conf, iou_thr=iou if iou is not None else
                                   self.cfg.eval.iou_thr, max_per_img=max_det or 100, agnostic=agnostic)
        target = Path(file) if file is not None else Path(f"{self.cfg.name}.onnx")
        return export_onnx(self.net.eval(), self.cfg, target, class_names=list(self.names.values()), imgsz=imgsz,
                           batch=batch, dynamic=dynamic, nms=nms, post=post, normalize=normalize, half=half,
                           simplify=simplify, opset=opset)


def _exported_backend(path: str, device: str | int | torch.device | None, runtime: str | None) -> Backend:
    """The runtime that runs an exported file: ONNX Runtime (default), OpenVINO (CPU) or TensorRT (``.engine``)."""
    if runtime == "ort":
        runtime = "onnxruntime"
    if path.endswith(".engine"):
        if runtime not in (None, "tensorrt"):
            raise ValueError(f"{path} is a TensorRT engine: runtime={runtime!r} cannot run it")
        from .export.tensorrt import TensorRTBackend

        return TensorRTBackend(path, select_device(device))
    if runtime in (None, "onnxruntime"):
        from .export.backends import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, select_device(device))
    if runtime == "openvino":
        from .export.backends import OpenVINOBackend

        # OpenVINO runs on the CPU here: default to it even where a GPU exists
        return OpenVINOBackend(path, torch.device("cpu") if device is None else select_device(device))
    raise ValueError(f"unknown runtime {runtime!r} for {path}: use 'onnxruntime' or 'openvino'")


def _torch_model(model: str, weights: str | os.PathLike | bool | None, num_classes: int | None,
                 class_names: list[str] | tuple[str, ...] | None, overrides: dict[str, Any]
                 ) -> tuple[RTMDetConfig, dict | None, str | None]:
    """Config, state dict (or None) and weights source of a config name or rtmkit checkpoint plus ``weights``."""
    ckpt: dict | None = None
    source = str(weights) if weights not in (None, True, False) else None
    if model.endswith((".pth", ".pt")) and Path(model).is_file():
        if weights not in (None, False):
            raise ValueError("pass either a checkpoint as `model` or `weights=`, not both")
        source = model
        ckpt = load_checkpoint_file(model)
        stored = checkpoint_config(ckpt)
        if stored is None:
            raise CheckpointError(
                f"{model}: this checkpoint does not say which architecture it is (an official MMDetection "
                f"file?): use RTMDet('<config name>', weights='{model}'), e.g. RTMDet('rtmdet-s', ...)")
        cfg = config_from_dict(stored)
    else:
        cfg = get_config(model)
        if weights is True:
            source = model
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
    overrides = dict(overrides)
    if num_classes is not None and num_classes != cfg.num_classes:
        overrides.setdefault("num_classes", num_classes)
        overrides.setdefault("class_names", None)
    if class_names is not None:
        overrides["class_names"] = tuple(class_names)
    if overrides:
        cfg = cfg.replace(**overrides)
    return cfg, state_dict, source
