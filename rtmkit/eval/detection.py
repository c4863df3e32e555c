"""The one COCO evaluation loop, used by ``RTMDet.val``, ``rtmkit val`` and the trainer's validation.

Images come from a dataset (COCO json, YOLO data.yaml, or a folder holding one), predictions from the one
inference pipeline (:class:`rtmkit.inference.Predictor`) with the ``eval`` preset, and the ground truth is the
annotation file itself for COCO datasets (so the AP printed while training equals ``rtmkit val`` and pycocotools
run directly on that file), or the dataset's labels converted to COCO for other formats.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..config import PostprocessConfig
from ..data.datasets import DetectionDataset
from ..inference import Predictor
from ..structures.masks import encode_rle
from .coco import STAT_NAMES, coco_evaluate, describe_mapping, label_to_category, to_coco_detections


def _coco_entries(image_id: int, sample: dict[str, Any], first_ann_id: int) -> tuple[dict, list[dict]]:
    """COCO image and annotation entries of a non-COCO sample (labels become category ids 1..C; ignore boxes
    become ``iscrowd`` annotations, neither matched nor counted as misses). With ``masks`` in the sample, each
    annotation gets its polygons as ``segmentation`` (an ignore region: its box as a polygon)."""
    h, w = sample["orig_shape"]
    image = {"id": image_id, "file_name": str(sample.get("path", image_id)), "height": int(h), "width": int(w)}
    anns = []
    ignore = np.asarray(sample.get("ignore_boxes", np.zeros((0, 4))), np.float64).reshape(-1, 4)
    masks = sample.get("masks")
    for crowd, boxes, labels in ((0, np.asarray(sample["boxes"], np.float64).reshape(-1, 4), sample["labels"]),
                                 (1, ignore, np.full(len(ignore), 0))):
        for k, (box, label) in enumerate(zip(boxes, labels)):
            bw, bh = box[2] - box[0], box[3] - box[1]
            ann = {"id": first_ann_id + len(anns), "image_id": image_id, "category_id": int(label) + 1,
                   "bbox": [float(box[0]), float(box[1]), float(bw), float(bh)], "area": float(bw * bh),
                   "iscrowd": crowd}
            if masks is not None:
                x1, y1, x2, y2 = (float(v) for v in box)
                polys = [np.asarray(p, np.float64).reshape(-1).tolist() for p in masks[k] if len(p) >= 3] \
                    if not crowd else []
                ann["segmentation"] = polys or [[x1, y1, x2, y1, x2, y2, x1, y2]]
            anns.append(ann)
    return image, anns


def evaluate(predictor: Predictor, dataset: DetectionDataset, *, post: PostprocessConfig, batch: int = 8,
             imgsz: int | None = None, save_json: str | Path | None = None, progress: bool = False,
             verbose: bool = False, map_classes_by_order: bool = False, masks: bool = False) -> dict[str, Any]:
    """COCO box metrics of ``predictor`` on every image of ``dataset`` (and mask metrics with ``masks``).

    Returns AP, AP50, ... (pycocotools' 12 numbers), ``per_class_AP`` by model class name, ``precision`` (COCOeval's
    [T, R, K, A, M] array for PR curves), ``num_images`` and ``class_mapping`` (the model class -> category
    mapping used, in words). Model classes map to the annotation categories by name; by order only with
    ``map_classes_by_order`` (see :func:`rtmkit.eval.coco.label_to_category`).

    ``masks`` (instance segmentation): every prediction also carries its mask as a COCO RLE ``segmentation``
    and COCOeval runs a second time with ``iouType="segm"`` against the annotations' polygons or RLEs; its 12
    numbers come as ``mask_AP``, ``mask_AP50``, ... with ``per_class_mask_AP`` (the box ones are unchanged).
    """
    names = [predictor.names[i] for i in sorted(predictor.names)]
    gt = dataset.coco_ground_truth()
    from_file = gt is not None
    if not from_file:
        gt = {"images": [], "annotations": [],
              "categories": [{"id": i + 1, "name": n} for i, n in enumerate(dataset.classes)]}
    label_map = label_to_category(names, gt["categories"], by_order=map_classes_by_order)
    source = dataset if masks else dataset.without_masks()
    if masks and not from_file and not getattr(dataset, "has_masks", False):
        raise ValueError(f"{getattr(dataset, 'source', 'the dataset')}: mask AP needs instance masks (polygons) in "
                         "the labels, and these have boxes only")
    indices = list(range(len(source)))
    chunks = [indices[i:i + batch] for i in range(0, len(indices), batch)]
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc="val", unit="batch", leave=False)
    detections: list[dict[str, Any]] = []
    image_ids = []
    for chunk in chunks:
        samples = [source[i] for i in chunk]
        for index, sample in zip(chunk, samples):
            image_id = sample["image_id"] if from_file else index
            image_ids.append(image_id)
            if not from_file:
                image, anns = _coco_entries(index, sample, len(gt["annotations"]) + 1)
                gt["images"].append(image)
                gt["annotations"] += anns
        results = predictor([s["image"] for s in samples], post, imgsz)
        for image_id, r in zip(image_ids[-len(chunk):], results):
            dets = to_coco_detections(image_id, r.boxes, r.scores, r.labels, label_map)
            if masks:
                if r.masks is None:
                    raise ValueError("mask AP needs a model that predicts masks (an rtmdet-ins-* model)")
                for d, rle in zip(dets, encode_rle(r.masks[np.isin(r.labels, list(label_map))])):
                    d["segmentation"] = rle
            detections += dets
    if save_json is not None:
        Path(save_json).write_text(json.dumps(detections))
    if verbose and masks:
        print("bbox:")
    stats = coco_evaluate(gt, [{k: v for k, v in d.items() if k != "segmentation"} for d in detections] if masks
                          else detections, image_ids=image_ids, category_ids=sorted(label_map.values()),
                          verbose=verbose, return_precision=True)
    by_category = {v: k for k, v in label_map.items()}
    stats["per_class_AP"] = {names[by_category[c]]: ap for c, ap in stats["per_class_AP"].items()}
    if masks:
        if verbose:
            print("segm:")
        segm = coco_evaluate(gt, detections, image_ids=image_ids, category_ids=sorted(label_map.values()),
                             verbose=verbose, iou_type="segm")
        stats.update({f"mask_{k}": v for k, v in segm.items() if k in STAT_NAMES})
        stats["per_class_mask_AP"] = {names[by_category[c]]: ap for c, ap in segm["per_class_AP"].items()}
    stats["num_images"] = len(image_ids)
    stats["class_mapping"] = describe_mapping(names, gt["categories"], label_map)
    return stats
