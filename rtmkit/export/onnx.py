"""ONNX export: a raw graph (scores, boxes) or an end-to-end graph with NMS in ONNX ops (dets, labels).

Outputs, all in network-input pixels of the letterboxed image:
- raw: ``scores`` [B, N, C] (sigmoid) and ``boxes`` [B, N, 4] (xyxy, decoded from the prior points, not clamped).
  rtmkit's ONNX Runtime backend applies the reference post-processing to these, so results equal PyTorch's.
- end-to-end: ``dets`` [B, K, 5] (x1, y1, x2, y2, score) and ``labels`` [B, K] (int64): the contract of
  OpenMMLab's SDK exports. K = ``max_det``; rows past the detections have score 0 and label -1. Each image is
  handled independently (class-aware NMS keyed by image, top-K per image): no cross-talk across the batch.
- RTMDet-Ins adds, raw: ``kernels`` [B, N, 169] (each prior's dynamic-conv parameters) and ``mask_feat``
  [B, 8, H/8, W/8] (the prototypes), from which the host computes the kept detections' masks exactly as for
  PyTorch; end-to-end: ``masks`` [B, K, H, W] float, each kept detection's mask probabilities at network-input
  resolution (its x8 upsampled logits through a sigmoid), MMDeploy's RTMDet-Ins SDK contract: a consumer crops
  the letterboxed region, resizes it to the original image and thresholds at 0.5.
Optionally the graph takes uint8 BGR input and normalises itself (``normalize=True``).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import PostprocessConfig
from ..models.masks import MASK_STRIDE, mask_logits_batched
from ..ops.boxes import distance2bbox, grid_priors
from ..ops.levels import flatten_levels, level_sizes
from ..structures import SegOutputs

EXPORT_FORMAT_VERSION = "1"


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` for export; the eager forward only produces a correctly typed placeholder."""

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class, iou_thr, score_thr):  # noqa: ARG004
        batch, num_classes, num = scores.shape
        # Any valid [M, 3] (image, class, box) index list will do while tracing.
        idx = torch.arange(batch * num_classes, device=scores.device)
        return torch.stack([idx // num_classes, idx % num_classes, torch.zeros_like(idx)], dim=1)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou_thr, score_thr):
        return g.op("NonMaxSuppression", boxes, scores, max_per_class, iou_thr, score_thr, center_point_box_i=0)


class ExportModel(nn.Module):
    """The network plus decoding (and NMS) as one traceable module."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...], normalize: bool,
                 nms: bool, post: PostprocessConfig):
        super().__init__()
        self.net = net
        self.strides = tuple(net.bbox_head.strides)
        self.normalize = normalize
        self.nms = nms
        self.post = post
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = (images.float() - self.mean) / self.std if self.normalize else images
        outputs = self.net(x)
        # The sizes are traced from the feature maps, so dynamic input shapes work.
        priors = grid_priors(level_sizes(outputs.cls_scores), self.strides, device=x.device, with_stride=True)
        scores = flatten_levels(outputs.cls_scores).sigmoid()
        boxes = distance2bbox(priors[:, :2].unsqueeze(0), flatten_levels(outputs.bbox_preds))
        segment = isinstance(outputs, SegOutputs)
        if not self.nms:
            if segment:
                return scores, boxes, flatten_levels(outputs.kernel_preds), outputs.mask_feat
            return scores, boxes
        dets, labels, index = self._nms(scores, boxes)
        if not segment:
            return dets, labels
        # MMDeploy's RTMDet-Ins contract: each kept detection's mask at network-input resolution, as
        # probabilities (x8 upsampled logits through a sigmoid); the host resizes and thresholds them
        kernels = flatten_levels(outputs.kernel_preds)
        kept_kernels = kernels.gather(1, index.unsqueeze(-1).expand(-1, -1, kernels.shape[-1]))
        kept_priors = priors[:, :3][index]  # [B, K, 3]
        logits = mask_logits_batched(outputs.mask_feat, kept_kernels, kept_priors)
        masks = F.interpolate(logits, scale_factor=float(MASK_STRIDE), mode="bilinear", align_corners=False)
        return dets, labels, masks.sigmoid()

    def _nms(self, scores: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        post = self.post
        batch = scores.shape[0]
        if post.agnostic:  # one NMS over all classes with each prior's best class
            best, best_label = scores.max(dim=2, keepdim=True)
            nms_scores = best.transpose(1, 2)  # [B, 1, N]
        else:
            nms_scores = scores.transpose(1, 2)  # [B, C, N]
        k = post.max_per_img
        selected = _NonMaxSuppression.apply(
            boxes, nms_scores, torch.tensor([k], dtype=torch.int64), torch.tensor([post.iou_thr], dtype=torch.float32),
            torch.tensor([post.score_thr], dtype=torch.float32))
        groups, num = nms_scores.shape[1], nms_scores.shape[2]
        # Scatter the kept (image, class, box) scores into a dense zero tensor, then take the top K per image.
        # Flat linear indices keep every size dynamic in the graph (Gather / ScatterElements).
        linear = (selected[:, 0] * groups + selected[:, 1]) * num + selected[:, 2]
        all_scores = nms_scores.reshape(-1)
        dense = torch.zeros_like(all_scores).scatter(0, linear, all_scores.gather(0, linear))
        flat = dense.reshape(batch, -1)
        values, index = flat.topk(min(k, flat.shape[1]), dim=1)
        box_index = index % num
        labels = best_label.squeeze(2).gather(1, box_index) if post.agnostic else index // num
        det_boxes = boxes.gather(1, box_index.unsqueeze(-1).expand(-1, -1, 4))
        labels = torch.where(values > 0, labels, torch.full_like(labels, -1))
        return torch.cat([det_boxes, values.unsqueeze(-1)], dim=-1), labels, box_index


def _require_onnx():
    try:
        import onnx
    except ImportError as e:
        raise ImportError("ONNX export and .onnx models need the onnx package: pip install 'rtmkit[onnx]'") from e
    return onnx


def _set_metadata(path: Path, meta: dict[str, Any]) -> None:
    onnx = _require_onnx()

    model = onnx.load(str(path))
    meta = {**meta, "graph_sha256": graph_sha256(model)}
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.save(model, str(path))


def _load_model(path: str | os.PathLike):
    onnx = _require_onnx()
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends do not name the file
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise ValueError(f"{path}: not a readable ONNX file (truncated or corrupt?): {first}") from None


def graph_sha256(model) -> str:
    """SHA-256 of an ONNX graph (nodes, weights, constants; not the metadata, which records it)."""
    import hashlib

    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()


def read_metadata(path: str | os.PathLike, *, verify: bool = False) -> dict[str, Any]:
    """The rtmkit metadata of an exported model, JSON values decoded. ``verify``: also check that the graph still
    matches the SHA-256 recorded at export (a ValueError naming the file if it was modified)."""
    model = _load_model(path)
    out: dict[str, Any] = {}
    for entry in model.metadata_props:
        try:
            out[entry.key] = json.loads(entry.value)
        except json.JSONDecodeError:
            out[entry.key] = entry.value
    recorded = out.get("graph_sha256")
    if verify and recorded is not None and graph_sha256(model) != recorded:
        raise ValueError(f"{path}: the graph does not match the SHA-256 recorded at export: the file was modified "
                         "or corrupted (weights or nodes changed). Export it again.")
    return out


def _simplify(path: Path) -> bool:
    import onnx

    for name in ("onnxslim", "onnxsim"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        model = onnx.load(str(path))
        if name == "onnxslim":
            model = module.slim(model)
        else:
            model, ok = module.simplify(model)
            if not ok:
                return False
        onnx.save(model, str(path))
        return True
    warnings.warn("simplify requested but neither onnxslim nor onnxsim is installed (pip install onnxslim)",
                  stacklevel=3)
    return False


def export_onnx(net: nn.Module, cfg, file: str | os.PathLike, *, class_names: list[str], imgsz: int | None = None,
                batch: int = 1, dynamic: bool = False, nms: bool = True, post: PostprocessConfig | None = None,
                normalize: bool = False, half: bool = False, simplify: bool = False, opset: int = 17) -> Path:
    """Export ``net`` (an :class:`RTMDetNet`) to ONNX and return the path written.

    ``dynamic``: batch, height and width are dynamic axes (heights/widths must stay multiples of the largest
    stride). ``post``: NMS settings of the end-to-end graph (score threshold, IoU, ``max_per_img`` = K,
    class-agnostic). ``normalize``: the graph takes uint8 BGR NCHW input and normalises it itself.
    ``half``: fp16 weights and activations (for GPU runtimes such as TensorRT; CPU runtimes may lack kernels).
    """
    onnx = _require_onnx()

    size = imgsz or cfg.data.input_size
    step = max(net.bbox_head.strides)
    if size % step:
        raise ValueError(f"imgsz must be a multiple of {step}, got {size}")
    if opset < 11:
        raise ValueError("opset must be >= 11 (NonMaxSuppression, dynamic TopK)")
    post = post or cfg.deploy
    path = Path(file)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = next(net.parameters()).device
    model = ExportModel(net, cfg.data.mean, cfg.data.std, normalize, nms, post).eval()
    dtype = torch.uint8 if normalize else (torch.float16 if half else torch.float32)
    if half:
        if device.type == "cpu":
            warnings.warn("half=True on CPU: exporting fp16 through the CPU tracer; check the runtime supports it",
                          stacklevel=2)
        model = model.half()
        model.mean, model.std = model.mean.float(), model.std.float()
    dummy = (torch.full((batch, 3, size, size), 114, dtype=torch.uint8, device=device) if normalize
             else torch.zeros(batch, 3, size, size, dtype=dtype, device=device))
    outputs = ["dets", "labels"] if nms else ["scores", "boxes"]
    if cfg.task == "segment":
        outputs += ["masks"] if nms else ["kernels", "mask_feat"]
    axes = None
    if dynamic:
        axes = {"images": {0: "batch", 2: "height", 3: "width"}, **{name: {0: "batch"} for name in outputs}}
        if not nms:
            axes["scores"][1] = axes["boxes"][1] = "num_priors"
        if cfg.task == "segment" and nms:
            axes["masks"].update({2: "height", 3: "width"})
        elif cfg.task == "segment":
            axes["kernels"][1] = "num_priors"
            axes["mask_feat"].update({2: "mask_height", 3: "mask_width"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is chatty about deprecations
        with torch.no_grad():
            torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=opset,
                              input_names=["images"], output_names=outputs, dynamic_axes=axes,
                              do_constant_folding=True)
    simplified = _simplify(path) if simplify else False
    from .. import __version__

    _set_metadata(path, {
        "rtmkit_version": __version__, "format_version": EXPORT_FORMAT_VERSION, "task": cfg.task,
        "model": cfg.name, "config": cfg.to_dict(), "names": list(class_names), "imgsz": size,
        "strides": list(net.bbox_head.strides), "mean": list(cfg.data.mean), "std": list(cfg.data.std),
        "channel_order": "BGR", "input_dtype": "uint8" if normalize else ("float16" if half else "float32"),
        "normalized_in_graph": normalize, "graph": "end2end" if nms else "raw", "dynamic": dynamic, "batch": batch,
        "nms": {"score_thr": post.score_thr, "iou_thr": post.iou_thr, "max_det": post.max_per_img,
                "agnostic": post.agnostic} if nms else None,
        "padding": {"value": cfg.data.pad_value, "where": "bottom-right", "resize": "keep-ratio, OpenCV bilinear"},
        "simplified": simplified,
    })
    onnx.checker.check_model(str(path))
    return path
