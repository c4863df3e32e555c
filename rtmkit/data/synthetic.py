"""A small dataset drawn by rtmkit itself: coloured shapes with boxes, polygon masks and rotated boxes.

``make_shapes_dataset(root)`` writes::

    root/train/000000.png ...            images (PNG, lossless)
    root/val/000000.png ...
    root/annotations/train.json, val.json COCO format

Three classes (category ids 1-3): rectangle, ellipse, triangle, with random sizes, aspect ratios, rotations and
colours on a shaded, slightly noisy background. Objects may overlap (later ones on top), but each keeps at least
60 % of its area visible. Every tenth image (index 9, 19, ...) has no object. For each annotation:

- ``segmentation``: polygons of the *visible* part (OpenCV outer contours of the instance's pixels);
- ``bbox`` [x, y, w, h] and ``area``: of the visible pixels inside those polygons (as COCO);
- ``rbox`` [cx, cy, w, h, angle]: the oriented box of the whole shape, angle in radians in [-pi/2, pi/2) (mmrotate's
  ``le90``); corners ``c + (w/2)(cos a, sin a) +- (h/2)(-sin a, cos a)``, as mmrotate's ``rbox2qbox``. Rectangles
  fill their rbox, ellipses are inscribed in it, triangles have their base on one long side and apex on the other.

Everything derives from ``numpy.random.default_rng([seed, split, index])``: the same seed gives the same images and
json, and image ``i`` does not depend on how many images are made.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import cv2
import numpy as np

SHAPE_CLASSES = ("rectangle", "ellipse", "triangle")

# The dataset of `rtmkit train`'s offline demo: few large objects whose colour follows their class, so rtmdet-nano
# learns it from scratch in about three minutes on two CPU cores (box AP about 0.66). The images are drawn at twice
# the training input size so the prediction pictures stay readable.
DEMO_DATA = {"num_train": 300, "num_val": 30, "size": 192, "max_objects": 2, "scale": (0.35, 0.7),
             "class_colours": True}
_SPLIT_IDS = {"train": 0, "val": 1}


def shape_polygon(kind: str, cx: float, cy: float, w: float, h: float, angle: float) -> np.ndarray:
    """The outline of a shape as float64 [K, 2] (x, y) points, in the rotated frame of its rbox."""
    if kind == "rectangle":
        local = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    elif kind == "ellipse":
        t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        local = np.stack([w / 2 * np.cos(t), h / 2 * np.sin(t)], axis=1)
    elif kind == "triangle":
        local = np.array([[-w / 2, h / 2], [w / 2, h / 2], [0.0, -h / 2]])
    else:
        raise ValueError(f"unknown shape {kind!r}")
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, s], [-s, c]])  # row vectors: (u, v) -> (u c - v s, u s + v c)
    return local @ rot + np.array([cx, cy])


def rbox_corners(rbox: np.ndarray | list[float]) -> np.ndarray:
    """The 4 corners of an (cx, cy, w, h, angle) rotated box (mmrotate's rbox2qbox order)."""
    cx, cy, w, h, a = rbox
    return shape_polygon("rectangle", cx, cy, w, h, a)[[2, 1, 0, 3]]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.integers(40, 216, 3).astype(np.float32)
    gx, gy = rng.uniform(-40, 40, 2)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    img = base[None, None, :] + (gx * ramp[None, :, None] + gy * ramp[:, None, None])
    img += rng.normal(0, 4, (size, size, 3)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _colour(rng: np.random.Generator, avoid: np.ndarray) -> tuple[int, int, int]:
    for _ in range(50):
        col = rng.integers(0, 256, 3)
        if np.abs(col - avoid.astype(int)).sum() > 150:
            break
    return int(col[0]), int(col[1]), int(col[2])


# Hue (OpenCV's 0-180 scale) of each class when colours follow the class: red rectangles, green ellipses, blue
# triangles, each shade jittered. An easier task than shape alone, for a demo that must learn in minutes.
_CLASS_HUES = (0, 60, 120)


def _class_colour(rng: np.random.Generator, label: int, avoid: np.ndarray) -> tuple[int, int, int]:
    for _ in range(50):
        hsv = np.array([[[(_CLASS_HUES[label] + rng.integers(-8, 9)) % 180, rng.integers(170, 256),
                          rng.integers(150, 256)]]], np.uint8)
        col = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
        if np.abs(col.astype(int) - avoid.astype(int)).sum() > 150:
            break
    return int(col[0]), int(col[1]), int(col[2])


def _fill(canvas: np.ndarray, poly: np.ndarray, value) -> None:
    pts = np.round(poly * 16).astype(np.int32)[None]  # 4 bits of sub-pixel precision
    cv2.fillPoly(canvas, pts, value, lineType=cv2.LINE_8, shift=4)


def draw_shapes_image(rng: np.random.Generator, size: int = 320, max_objects: int = 6, empty: bool = False,
                      scale: tuple[float, float] = (0.12, 0.45), class_colours: bool = False
                      ) -> tuple[np.ndarray, list[dict]]:
    """One image and its objects: dicts with ``label`` (0-2), ``rbox``, ``mask`` (HxW bool of the visible part).
    ``scale``: the range of an object's long side as a fraction of ``size``. ``class_colours``: each class has its
    own hue (red rectangles, green ellipses, blue triangles) instead of a random colour."""
    img = _background(rng, size)
    ids = np.zeros((size, size), np.int32)  # 0 = background, k = object k-1
    objects: list[dict] = []
    n = 0 if empty else int(rng.integers(1, max_objects + 1))
    for _ in range(n):
        for _attempt in range(20):
            label = int(rng.integers(0, len(SHAPE_CLASSES)))
            w = rng.uniform(*scale) * size
            h = w * rng.uniform(0.4, 1.0)
            angle = rng.uniform(-math.pi / 2, math.pi / 2)
            r = math.hypot(w, h) / 2
            cx, cy = rng.uniform(r + 1, size - r - 1, 2) if r + 1 < size - r - 1 else (size / 2, size / 2)
            poly = shape_polygon(SHAPE_CLASSES[label], cx, cy, w, h, angle)
            cand = np.zeros((size, size), np.uint8)
            _fill(cand, poly, 1)
            covered = np.bincount(ids[cand > 0], minlength=len(objects) + 1)[1:]
            if all(o["visible"] - c >= 0.6 * o["full"] for o, c in zip(objects, covered)):
                break
        else:
            continue
        k = len(objects)
        for o, c in zip(objects, covered):
            o["visible"] -= int(c)
        ids[cand > 0] = k + 1
        full = int(cand.sum())
        objects.append({"label": label, "rbox": [cx, cy, w, h, angle], "full": full, "visible": full})
        background = img[int(cy), int(cx)]
        _fill(img, poly, _class_colour(rng, label, background) if class_colours else _colour(rng, background))
    for k, o in enumerate(objects):
        o["mask"] = ids == k + 1
    return img, [o for o in objects if o["mask"].any()]


def _annotation(obj: dict, ann_id: int, image_id: int) -> dict | None:
    mask = obj["mask"].astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contours = [c for c in contours if len(c) >= 3]  # slivers of 1-2 px left by an occluder are not annotated
    if not contours:
        return None
    kept = np.zeros_like(mask)
    cv2.drawContours(kept, contours, -1, 1, thickness=-1)
    kept &= mask
    pts = np.concatenate(contours).reshape(-1, 2)
    x0, y0 = (int(v) for v in pts.min(0))
    x1, y1 = (int(v) + 1 for v in pts.max(0))
    return {"id": ann_id, "image_id": image_id, "category_id": obj["label"] + 1, "iscrowd": 0,
            "bbox": [x0, y0, x1 - x0, y1 - y0], "area": int(kept.sum()),
            "segmentation": [c.reshape(-1).astype(float).tolist() for c in contours],
            "rbox": [round(float(v), 4) for v in obj["rbox"]]}


def make_shapes_dataset(root: str | os.PathLike, num_train: int = 80, num_val: int = 20, size: int = 320,
                        seed: int = 0, max_objects: int = 6, scale: tuple[float, float] = (0.12, 0.45),
                        class_colours: bool = False) -> dict[str, Path]:
    """Write the shapes dataset under ``root`` (see the module docstring); returns the paths ``root``,
    ``train_json``, ``train_images``, ``val_json``, ``val_images``."""
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {"root": root}
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPE_CLASSES)]
    for split, count in (("train", num_train), ("val", num_val)):
        img_dir = root / split
        img_dir.mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for i in range(count):
            rng = np.random.default_rng([seed, _SPLIT_IDS[split], i])
            img, objects = draw_shapes_image(rng, size, max_objects, empty=(i % 10 == 9), scale=scale,
                                             class_colours=class_colours)
            name = f"{i:06d}.png"
            cv2.imwrite(str(img_dir / name), img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
            images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
            for obj in objects:
                ann = _annotation(obj, len(anns) + 1, i + 1)
                if ann is not None:
                    anns.append(ann)
        data = {"info": {"description": "rtmkit synthetic shapes", "seed": seed,
                         "rbox": "cx, cy, w, h, angle (radians, le90: [-pi/2, pi/2))"},
                "licenses": [], "images": images, "annotations": anns, "categories": categories}
        path = root / "annotations" / f"{split}.json"
        path.write_text(json.dumps(data))
        out[f"{split}_json"] = path
        out[f"{split}_images"] = img_dir
    return out


def draw_demo_picture(size: int = 192, seed: int = 0, scale: tuple[float, float] = (0.3, 0.42),
                      class_colours: bool = True) -> tuple[np.ndarray, list[dict]]:
    """The picture ``rtmkit predict`` shows without arguments: four shapes drawn as in the dataset (background,
    colours, rotations), one of each class plus one more, each alone in a quadrant of the image (no occlusion).
    Returns the BGR image and its objects: dicts with ``label``, ``rbox``, ``mask`` and ``bbox`` [x1, y1, x2, y2]."""
    rng = np.random.default_rng([seed, 2])  # split id 2: neither train (0) nor val (1)
    img = _background(rng, size)
    if class_colours:  # a grey background: none of the class hues blends into it
        img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    labels = [0, 1, 2, int(rng.integers(0, len(SHAPE_CLASSES)))]
    objects: list[dict] = []
    half = size / 2
    for label, cell in zip(labels, rng.permutation(4)):
        w = rng.uniform(*scale) * size
        h = w * rng.uniform(0.55, 1.0)
        angle = rng.uniform(-math.pi / 2, math.pi / 2)
        r = math.hypot(w, h) / 2
        lo, hi = r + 2, half - r - 2
        cx, cy = ((cell % 2, cell // 2) * np.array(half)
                  + (rng.uniform(lo, hi, 2) if lo < hi else np.array([half / 2, half / 2])))
        poly = shape_polygon(SHAPE_CLASSES[label], cx, cy, w, h, angle)
        mask = np.zeros((size, size), np.uint8)
        _fill(mask, poly, 1)
        ys, xs = np.nonzero(mask)
        background = img[int(cy), int(cx)]
        _fill(img, poly, _class_colour(rng, label, background) if class_colours else _colour(rng, background))
        objects.append({"label": label, "rbox": [float(cx), float(cy), w, h, angle], "mask": mask > 0,
                        "bbox": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]})
    return img, objects
