"""Validation during and after training: COCO box metrics of a network on a detection dataset."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import RTMDetConfig
from ..data.preprocess import preprocess
from ..eval.coco import coco_evaluate
from ..models.postprocess import postprocess


def _gt_entries(index: int, sample: dict[str, Any], first_id: int) -> tuple[dict, list[dict]]:
    """COCO image and annotation entries of one sample (labels become category ids 1..C; ignored/crowd boxes
    become ``iscrowd`` annotations, so they are neither matched nor counted as misses)."""
    h, w = sample["orig_shape"]
    image = {"id": index, "file_name": str(sample.get("path", index)), "height": int(h), "width": int(w)}
    anns = []
    ignore = np.asarray(sample.get("ignore_boxes", np.zeros((0, 4))), np.float64).reshape(-1, 4)
    for crowd, boxes, labels in ((0, np.asarray(sample["boxes"], np.float64).reshape(-1, 4), sample["labels"]),
                                 (1, ignore, sample.get("ignore_labels", np.full(len(ignore), -1)))):
        for box, label in zip(boxes, labels):
            bw, bh = box[2] - box[0], box[3] - box[1]
            anns.append({"id": first_id + len(anns), "image_id": index, "category_id": int(label) + 1,
                         "bbox": [float(box[0]), float(box[1]), float(bw), float(bh)], "area": float(bw * bh),
                         "iscrowd": crowd})
    return image, anns


@torch.no_grad()
def evaluate(net: nn.Module, dataset, cfg: RTMDetConfig, *, batch: int = 8, device: torch.device | str = "cpu",
             progress: bool = False) -> dict[str, Any]:
    """COCO metrics (AP, AP50, ... and ``per_class_AP`` by class name) of ``net`` on ``dataset`` with the config's
    ``eval`` post-processing; ``precision`` holds COCOeval's precision array for PR curves."""
    was_training = net.training
    net.eval()
    names = list(dataset.classes)
    gt: dict[str, Any] = {"images": [], "annotations": [],
                          "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    detections: list[dict[str, Any]] = []
    indices = list(range(len(dataset)))
    chunks = [indices[i:i + batch] for i in range(0, len(indices), batch)]
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc="val", unit="batch", leave=False)
    for chunk in chunks:
        samples = [dataset[i] for i in chunk]
        for index, sample in zip(chunk, samples):
            image, anns = _gt_entries(index, sample, len(gt["annotations"]) + 1)
            gt["images"].append(image)
            gt["annotations"] += anns
        images = [s["image"] for s in samples]
        x, scales = preprocess(images, cfg.input_size, cfg.mean, cfg.std, cfg.pad_value, device)
        cls_scores, bbox_preds = net(x)
        for index, det in zip(chunk, postprocess(cls_scores, bbox_preds, cfg.strides, cfg.eval, scales)):
            boxes = det.boxes.cpu().numpy().astype(np.float64)
            for box, score, label in zip(boxes, det.scores.cpu().tolist(), det.labels.cpu().tolist()):
                detections.append({"image_id": index, "category_id": label + 1, "score": score,
                                   "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    stats = coco_evaluate(gt, detections, category_ids=range(1, len(names) + 1), return_precision=True)
    stats["per_class_AP"] = {names[c - 1]: ap for c, ap in stats["per_class_AP"].items()}
    net.train(was_training)
    return stats
