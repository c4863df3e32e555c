"""The inference pipeline shared by every caller: BGR uint8 images in, one ``Result`` per image out."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from ..config import PostprocessConfig
from ..data.preprocess import letterbox_batch, preprocess
from ..models.masks import crop_to_boxes, input_masks_to_image, instance_masks, seg_inputs
from ..models.postprocess import Candidates, Detections, postprocess
from ..models.postprocess_rot import decode_rotated, postprocess_rotated
from ..ops.boxes import grid_priors
from ..ops.levels import input_level_sizes
from ..results import Result
from ..structures import RotOutputs, SegOutputs
from .backend import Backend


class Predictor:
    """preprocess -> ``backend.forward`` -> ``backend.decode`` -> post-process -> :class:`~rtmkit.Result`.

    ``names``: {class index: name}. ``mean``/``std``/``pad_value``: the model's BGR normalisation and letterbox
    padding. ``max_stride``: input sizes must be multiples of it. Each result's ``speed`` holds milliseconds per
    image for ``preprocess``, ``forward`` (the backend's forward alone) and ``postprocess`` (decode and NMS).
    """

    def __init__(self, backend: Backend, names: dict[int, str], *, mean: Sequence[float], std: Sequence[float],
                 pad_value: int = 114, input_size: int = 640, max_stride: int = 32):
        self.backend = backend
        self.names = names
        self.mean, self.std, self.pad_value = tuple(mean), tuple(std), pad_value
        self.input_size, self.max_stride = input_size, max_stride
        self._warned: set[str] = set()

    def check_size(self, imgsz: int | None) -> int:
        size = self.input_size if imgsz is None else imgsz
        if isinstance(size, bool) or int(size) != size or size <= 0 or size % self.max_stride:
            raise ValueError(f"imgsz must be a positive multiple of {self.max_stride}, got {size}")
        return size

    def _batch(self, images: Sequence[np.ndarray], size: int) -> tuple[torch.Tensor, torch.Tensor]:
        backend = self.backend
        if backend.input_dtype == "uint8":  # the graph normalises: hand over letterboxed BGR pixels
            canvas, scales = letterbox_batch(images, size, self.pad_value)
            return torch.from_numpy(canvas).permute(0, 3, 1, 2).contiguous(), scales
        batch, scales = preprocess(images, size, self.mean, self.std, self.pad_value, backend.device,
                                   channels_last=getattr(backend, "channels_last", False))
        if backend.input_dtype == "float16":
            batch = batch.half()
        return batch, scales

    def _forward(self, batch: torch.Tensor):
        fixed = self.backend.fixed_batch
        if fixed is None or fixed == batch.shape[0]:
            return self.backend.forward(batch)
        parts = [self.backend.forward(batch[i:i + 1]) for i in range(batch.shape[0])]  # a static graph of batch 1
        return tuple(torch.cat([p[k] for p in parts]) for k in range(len(parts[0])))

    @torch.inference_mode()
    def __call__(self, images: Sequence[np.ndarray], post: PostprocessConfig, imgsz: int | None = None
                 ) -> list[Result]:
        """Predict one batch of ``HxWx3`` BGR uint8 arrays."""
        size = self.check_size(imgsz)
        cuda = self.backend.device.type == "cuda"
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        t0 = time.perf_counter()
        batch, scales = self._batch(images, size)
        sync()
        t1 = time.perf_counter()
        outputs = self._forward(batch)
        sync()
        t2 = time.perf_counter()
        orig = torch.tensor([img.shape[:2] for img in images])
        if self.backend.graph == "end2end":
            self._check_end2end(post)
            dets = _end2end_detections(outputs, post, scales, orig)
        elif isinstance(outputs, RotOutputs):  # RTMDet-R: rotated boxes, le90, in original pixels
            dets = postprocess_rotated(decode_rotated(outputs, self.backend.strides), post, scales)
        else:
            candidates: Candidates = self.backend.decode(outputs, (size, size))
            dets = postprocess(candidates, post, scales, orig)
        masks = [m.cpu().numpy() if m is not None else None for m in self._masks(outputs, dets, post, scales, orig)]
        rotated = isinstance(outputs, RotOutputs)
        results = [Result(None if rotated else d.boxes.float().cpu().numpy(), d.scores.float().cpu().numpy(),
                          d.labels.cpu().numpy(), self.names, tuple(img.shape[:2]), orig_img=img, masks=m,
                          rboxes=d.boxes.float().cpu().numpy() if rotated else None)
                   for img, d, m in zip(images, dets, masks)]
        t3 = time.perf_counter()
        n = len(images)
        speed = {"preprocess": (t1 - t0) * 1e3 / n, "forward": (t2 - t1) * 1e3 / n, "postprocess": (t3 - t2) * 1e3 / n}
        for r in results:
            r.speed = dict(speed)
        return results

    def _masks(self, outputs, dets: list[Detections], post: PostprocessConfig, scales: torch.Tensor,
               orig: torch.Tensor) -> list[torch.Tensor | None]:
        """Instance masks of the kept detections (``None`` per image for models without masks): from each kept
        prior's dynamic kernel (PyTorch, raw exported graphs), or the end-to-end graph's input-resolution masks."""
        if isinstance(outputs, SegOutputs):
            mask_feat, kernels, priors = seg_inputs(outputs, self.backend.strides)
        elif getattr(self.backend, "task", "detect") != "segment":
            return [None] * len(dets)
        elif self.backend.graph == "end2end":
            out = []
            for i, det in enumerate(dets):
                scale = (float(scales[i, 0]), float(scales[i, 1]))
                m = input_masks_to_image(outputs[2][i, det.prior_inds], scale, (int(orig[i, 0]), int(orig[i, 1])),
                                         post.mask_thr)
                out.append(crop_to_boxes(m, det.boxes) if post.crop_masks else m)
            return out
        else:  # raw exported graph: (scores, boxes, kernels [B, N, 169], mask_feat [B, P, h, w])
            mask_feat, kernels = outputs[3].float(), outputs[2].float()
            strides = self.backend.strides
            sizes = input_level_sizes(mask_feat.shape[-2] * strides[0], mask_feat.shape[-1] * strides[0], strides)
            priors = grid_priors(sizes, strides, with_stride=True)[:, :3]
        return instance_masks(mask_feat, kernels, priors, dets, scales, orig, post.mask_thr, post.crop_masks)

    def _check_end2end(self, post: PostprocessConfig) -> None:
        """An end-to-end graph did NMS with settings baked at export; say once which requested ones it cannot
        honour (instead of silently returning the baked result)."""
        for message in end2end_limits(getattr(self.backend, "meta", {}).get("nms") or {}, post):
            if message not in self._warned:
                self._warned.add(message)
                warnings.warn(f"{getattr(self.backend, 'path', 'end-to-end graph')}: {message}", stacklevel=4)


def end2end_limits(baked: dict, post: PostprocessConfig) -> list[str]:
    """The requested post-processing settings that an end-to-end graph with NMS settings ``baked`` (its export
    metadata: score_thr, iou_thr, max_det, agnostic) cannot honour, in words."""
    out = []
    if not baked:
        return out
    if abs(post.iou_thr - baked["iou_thr"]) > 1e-9:
        out.append(f"NMS IoU is baked into the graph at {baked['iou_thr']}; iou={post.iou_thr} cannot be applied "
                   "(export again with --iou, or export a raw graph with --no-nms)")
    if bool(post.agnostic) != bool(baked.get("agnostic", False)):
        out.append(f"the graph's NMS is {'class-agnostic' if baked.get('agnostic') else 'per class'} (baked); "
                   f"agnostic={post.agnostic} cannot be applied")
    if post.score_thr < baked["score_thr"]:
        out.append(f"the graph drops scores <= {baked['score_thr']} (baked); conf={post.score_thr} acts as "
                   f"conf={baked['score_thr']}")
    if post.max_per_img > baked["max_det"]:
        out.append(f"the graph keeps at most {baked['max_det']} detections per image (baked); "
                   f"max_det={post.max_per_img} acts as {baked['max_det']}")
    return out


def _end2end_detections(outputs, post: PostprocessConfig, scales: torch.Tensor, orig: torch.Tensor
                        ) -> list[Detections]:
    """An end-to-end graph did NMS with the settings baked at export: rescale its ``dets`` [B, K, 5] to the
    original images and filter by ``post.score_thr``/``max_per_img``."""
    dets_all, labels_all = outputs[0].float().cpu(), outputs[1].cpu()
    inv = (1.0 / scales).float()
    out = []
    for i in range(dets_all.shape[0]):
        d, lab = dets_all[i], labels_all[i].long()
        keep = (d[:, 4] > post.score_thr) & (lab >= 0)
        boxes = d[keep, :4] * inv[i].repeat(2)
        if post.clip == "image":
            boxes = torch.minimum(boxes.clamp(min=0), orig[i].flip(0).float().repeat(2))
        k = post.max_per_img
        rows = keep.nonzero()[:, 0][:k]  # which of the graph's K rows: selects their masks
        out.append(Detections(boxes[:k], d[keep, 4][:k], lab[keep][:k], rows))
    return out
