"""COCO evaluation with pycocotools (the reference's evaluator): boxes, and masks given as RLE.

Predictions are exported as the reference does (fact sheet F): [x1, y1, x2 - x1, y2 - y1], label -> category id.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def _require_pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:
        raise ImportError("COCO evaluation needs pycocotools: pip install pycocotools") from e
    return COCO, COCOeval


class ClassMappingError(ValueError):
    """The model's classes do not match the annotation categories by name."""


def label_to_category(class_names: Sequence[str], categories: Sequence[dict[str, Any]], *,
                      by_order: bool = False) -> dict[int, int]:
    """Map model class indices to the annotation file's category ids by name. When the names differ, a mapping by
    order (model class i -> the i-th category by id) is used only with ``by_order=True``, since it silently turns
    cat into dog when the lists are not in the same order."""
    by_name = {c["name"]: c["id"] for c in categories}
    if all(n in by_name for n in class_names):
        return {i: by_name[n] for i, n in enumerate(class_names)}
    missing = [n for n in class_names if n not in by_name]
    ordered = sorted(categories, key=lambda c: c["id"])
    if by_order:
        if len(ordered) != len(class_names):
            raise ClassMappingError(f"cannot map {len(class_names)} model classes by order onto {len(ordered)} "
                                    "annotation categories")
        return {i: c["id"] for i, c in enumerate(ordered)}
    shown = ", ".join(repr(n) for n in missing[:5]) + (" ..." if len(missing) > 5 else "")
    raise ClassMappingError(
        f"model classes {shown} are not among the annotation categories "
        f"({', '.join(repr(c['name']) for c in ordered[:8])}{' ...' if len(ordered) > 8 else ''}); to map class i "
        "to the i-th category by id anyway, pass map_classes_by_order=True (--map-classes-by-order)")


def describe_mapping(class_names: Sequence[str], categories: Sequence[dict[str, Any]],
                     label_map: dict[int, int], limit: int = 10) -> str:
    """``model class -> category`` lines, for saying which mapping an evaluation used."""
    names = {c["id"]: c["name"] for c in categories}
    pairs = [f"{class_names[i]} -> {names[c]} (id {c})" for i, c in sorted(label_map.items())]
    return ", ".join(pairs[:limit]) + (f", ... ({len(pairs)} in all)" if len(pairs) > limit else "")


def to_coco_detections(image_id: int, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                       label_map: dict[int, int]) -> list[dict[str, Any]]:
    out = []
    for b, s, lab in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
        if lab not in label_map:
            continue
        out.append({"image_id": int(image_id), "category_id": int(label_map[lab]),
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": float(s)})
    return out


def coco_evaluate(gt: str | Path | dict, detections: list[dict[str, Any]], image_ids: Iterable[int] | None = None,
                  category_ids: Iterable[int] | None = None, verbose: bool = False,
                  return_precision: bool = False, iou_type: str = "bbox") -> dict[str, Any]:
    """pycocotools COCOeval on the given detections; returns the 12 summary numbers and per-class AP (and, with
    ``return_precision``, COCOeval's precision array [T, R, K, A, M] for PR curves). ``iou_type``: ``"bbox"``, or
    ``"segm"`` for detections carrying a COCO RLE ``segmentation``."""
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    COCO, COCOeval = _require_pycocotools()
    data = json.loads(Path(gt).read_text()) if not isinstance(gt, dict) else copy.deepcopy(gt)
    data.setdefault("info", {})
    data.setdefault("licenses", [])
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        coco_gt = COCO()
        coco_gt.dataset = data
        coco_gt.createIndex()
        # loadRes adds fields to the dicts it is given (area, bbox, id): hand it copies, not the caller's list
        coco_dt = coco_gt.loadRes([dict(d) for d in detections]) if detections else COCO()
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        if image_ids is not None:
            ev.params.imgIds = sorted(set(image_ids))
        if category_ids is not None:
            ev.params.catIds = sorted(set(category_ids))
        if detections:
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
    if verbose:  # COCOeval's summary table, without pycocotools' progress chatter
        print("\n".join(line for line in sink.getvalue().splitlines() if line.lstrip().startswith("Average")))
    if not detections:
        cats = sorted(set(category_ids)) if category_ids is not None else [c["id"] for c in data["categories"]]
        return {name: 0.0 for name in STAT_NAMES} | {"per_class_AP": {int(c): 0.0 for c in cats}}
    stats = {name: float(v) for name, v in zip(STAT_NAMES, ev.stats)}
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    per_class = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[int(cat_id)] = float(p.mean()) if p.size else float("nan")
    stats["per_class_AP"] = per_class
    if return_precision:
        stats["precision"] = precision
    return stats
