"""Per-image prediction results, for every task.

A :class:`Result` has the fields its task fills, the others are ``None`` (the shape Ultralytics users know):

=============  ==================  =========================================================================
task           fields              JSON per detection (``to_json``)
=============  ==================  =========================================================================
detect         boxes               ``{name, class, score, box: {x1, y1, x2, y2}}``
segment        boxes, masks        as detect, plus ``mask``: COCO RLE ``{size: [h, w], counts}`` (or
                                   ``polygons``: lists of x, y pixel pairs, with ``to_json(masks="polygons")``)
rotated        rboxes              ``{name, class, score, rbox: {cx, cy, w, h, angle}, polygon: [[x, y] x 4]}``
classify       probs               ``{"top5": [{name, class, score}, ...]}`` (an object, not a list)
=============  ==================  =========================================================================

All coordinates are original-image pixels; angles are radians (le90, clockwise in image coordinates).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .plots import draw_instances, draw_probs, save_image
from .runs import OutputError
from .structures.masks import encode_rle


def rbox_corners(rboxes: np.ndarray) -> np.ndarray:
    """``[N, 5]`` (cx, cy, w, h, angle) -> ``[N, 4, 2]`` corners, clockwise from (-w/2, -h/2) rotated by angle."""
    rboxes = np.asarray(rboxes, np.float64).reshape(-1, 5)
    cx, cy, w, h, a = rboxes.T
    cos, sin = np.cos(a), np.sin(a)
    local = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])  # unit square, clockwise on screen
    dx = local[None, :, 0] * w[:, None]
    dy = local[None, :, 1] * h[:, None]
    return np.stack([cx[:, None] + dx * cos[:, None] - dy * sin[:, None],
                     cy[:, None] + dx * sin[:, None] + dy * cos[:, None]], -1).astype(np.float32)


@dataclass
class Result:
    """Predictions for one image, sorted by descending score.

    ``boxes`` [N, 4] xyxy float32; ``scores`` [N] float32; ``labels`` [N] int64; ``masks`` [N, H, W] bool (segment);
    ``rboxes`` [N, 5] (cx, cy, w, h, angle) float32 (rotated); ``probs`` [C] float32 class probabilities
    (classify). ``names`` {class index: name}, ``orig_shape`` (h, w), ``speed`` milliseconds per image for
    ``preprocess``/``forward``/``postprocess``.
    """

    boxes: np.ndarray | None
    scores: np.ndarray
    labels: np.ndarray
    names: dict[int, str]
    orig_shape: tuple[int, int]
    path: str | None = None
    frame: int | None = None
    speed: dict[str, float] = field(default_factory=dict)
    orig_img: np.ndarray | None = field(default=None, repr=False)
    masks: np.ndarray | None = field(default=None, repr=False)
    rboxes: np.ndarray | None = None
    probs: np.ndarray | None = None

    def __len__(self) -> int:
        return int(len(self.scores)) if self.probs is None else 0

    @property
    def task(self) -> str:
        if self.probs is not None:
            return "classify"
        if self.rboxes is not None:
            return "rotated"
        return "segment" if self.masks is not None else "detect"

    @property
    def class_names(self) -> list[str]:
        return [self.names.get(int(i), str(int(i))) for i in self.labels]

    @property
    def polygons(self) -> np.ndarray | None:
        """Corners of the rotated boxes, ``[N, 4, 2]`` pixels (``None`` for other tasks)."""
        return rbox_corners(self.rboxes) if self.rboxes is not None else None

    @property
    def top5(self) -> list[int]:
        """Class indices of the five most probable classes (classify)."""
        return [] if self.probs is None else [int(i) for i in np.argsort(-self.probs)[:5]]

    def filter(self, conf: float) -> Result:
        """A copy keeping only the instances with score >= ``conf``."""
        keep = self.scores >= conf

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return a[keep] if a is not None else None

        return Result(pick(self.boxes), self.scores[keep], self.labels[keep], self.names, self.orig_shape, self.path,
                      self.frame, dict(self.speed), self.orig_img, pick(self.masks), pick(self.rboxes), self.probs)

    def plot(self, image: np.ndarray | None = None, line_width: int | None = None, labels: bool = True,
             conf: bool = True) -> np.ndarray:
        """The image (BGR) with the predictions drawn on it: boxes, translucent masks with contours, rotated
        boxes, or the top-5 classes."""
        img = image if image is not None else self.orig_img
        if img is None:
            raise ValueError("no image to draw on: pass image= (the result was created without keeping it)")
        if self.probs is not None:
            return draw_probs(img, self.probs, self.names)
        return draw_instances(img, self.scores, self.labels, self.names, boxes=self.boxes if self.rboxes is None
                              else None, masks=self.masks, polygons=self.polygons, line_width=line_width,
                              show_labels=labels, show_conf=conf)

    def save(self, path: str | Path, **plot_kwargs: Any) -> Path:
        """Write the annotated image to ``path`` (format from the extension), atomically: a full disk or a
        read-only folder raises an ``OSError`` naming the file and leaves no partial image behind."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{path.parent}: cannot create the folder ({e.strerror or e})", e.errno) from None
        try:
            save_image(path, self.plot(**plot_kwargs))
        except cv2.error as e:  # OpenCV raises for extensions it has no encoder for
            raise OSError(f"{path}: could not write image (unsupported extension?): {e}") from None
        return path

    def to_polygons(self) -> list[list[np.ndarray]]:
        """Outer contours of every mask: per instance a list of ``[K, 2]`` float32 pixel polygons."""
        if self.masks is None:
            raise ValueError("this result has no masks")
        out = []
        for m in self.masks:
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            out.append([c.reshape(-1, 2).astype(np.float32) for c in contours if len(c) >= 3])
        return out

    def to_list(self, masks: str = "rle") -> list[dict[str, Any]] | dict[str, Any]:
        """The JSON-ready content of :meth:`to_json` (see the module docstring)."""
        if self.probs is not None:
            return {"top5": [{"name": self.names.get(i, str(i)), "class": i, "score": float(self.probs[i])}
                             for i in self.top5]}
        out = [{"name": self.names.get(int(lab), str(int(lab))), "class": int(lab), "score": float(s)}
               for s, lab in zip(self.scores, self.labels)]
        if self.boxes is not None and self.rboxes is None:
            for d, b in zip(out, self.boxes.tolist()):
                d["box"] = {"x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3]}
        if self.rboxes is not None:
            for d, r, poly in zip(out, self.rboxes.tolist(), self.polygons.tolist()):
                d["rbox"] = dict(zip(("cx", "cy", "w", "h", "angle"), r))
                d["polygon"] = poly
        if self.masks is not None:
            if masks == "rle":
                for d, rle in zip(out, encode_rle(self.masks)):
                    d["mask"] = rle
            elif masks == "polygons":
                for d, polys in zip(out, self.to_polygons()):
                    d["polygons"] = [p.tolist() for p in polys]
            else:
                raise ValueError(f"masks must be 'rle' or 'polygons', got {masks!r}")
        return out

    def to_json(self, indent: int | None = None, masks: str = "rle") -> str:
        """The predictions as JSON (format per task in the module docstring)."""
        return json.dumps(self.to_list(masks), indent=indent)

    def to_supervision(self):
        """A ``supervision.Detections`` (or ``supervision.Classifications`` for probs; needs
        ``pip install supervision``), carrying masks and oriented boxes when present."""
        try:
            import supervision as sv
        except ImportError as e:
            raise ImportError("to_supervision() needs the supervision package: pip install supervision") from e
        if self.probs is not None:
            return sv.Classifications(class_id=np.arange(len(self.probs)), confidence=self.probs.astype(np.float32))
        data: dict[str, Any] = {"class_name": np.array(self.class_names, dtype=object)}
        boxes = self.boxes
        if self.rboxes is not None:
            corners = self.polygons
            data[sv.config.ORIENTED_BOX_COORDINATES] = corners
            boxes = np.concatenate([corners.min(1), corners.max(1)], 1)
        return sv.Detections(xyxy=np.asarray(boxes, np.float32).reshape(-1, 4),
                             confidence=self.scores.astype(np.float32), class_id=self.labels.astype(int),
                             mask=self.masks, data=data)

    def __repr__(self) -> str:
        src = f" {self.path}" if self.path else ""
        what = f"top5={self.top5}" if self.probs is not None else f"{len(self)} detections"
        return f"Result({what}{src}, orig_shape={self.orig_shape})"
