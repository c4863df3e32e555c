"""Per-image prediction results."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .plots import draw_detections


@dataclass
class Result:
    """Detections of one image, in original-image pixels, sorted by descending score.

    ``boxes`` [N, 4] xyxy float32, ``scores`` [N] float32, ``labels`` [N] int64, ``names`` {class index: name},
    ``orig_shape`` (h, w), ``speed`` milliseconds per image for ``preprocess``/``forward``/``postprocess``.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    names: dict[int, str]
    orig_shape: tuple[int, int]
    path: str | None = None
    frame: int | None = None
    speed: dict[str, float] = field(default_factory=dict)
    orig_img: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def class_names(self) -> list[str]:
        return [self.names.get(int(i), str(int(i))) for i in self.labels]

    def filter(self, conf: float) -> Result:
        """A copy keeping only detections with score >= ``conf``."""
        keep = self.scores >= conf
        return Result(self.boxes[keep], self.scores[keep], self.labels[keep], self.names, self.orig_shape,
                      self.path, self.frame, dict(self.speed), self.orig_img)

    def plot(self, image: np.ndarray | None = None, line_width: int | None = None, labels: bool = True,
             conf: bool = True) -> np.ndarray:
        """The image (BGR) with the detections drawn on it."""
        img = image if image is not None else self.orig_img
        if img is None:
            raise ValueError("no image to draw on: pass image= (the result was created without keeping it)")
        return draw_detections(img, self.boxes, self.scores, self.labels, self.names, line_width, labels, conf)

    def save(self, path: str | Path, **plot_kwargs: Any) -> Path:
        """Write the annotated image to ``path`` (format from the extension)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            ok = cv2.imwrite(str(path), self.plot(**plot_kwargs))
        except cv2.error as e:  # OpenCV raises for extensions it has no encoder for
            raise OSError(f"{path}: could not write image (unsupported extension?): {e}") from None
        if not ok:
            raise OSError(f"{path}: could not write image (unsupported extension?)")
        return path

    def to_list(self) -> list[dict[str, Any]]:
        return [{"name": self.names.get(int(lab), str(int(lab))), "class": int(lab), "score": float(s),
                 "box": {"x1": float(b[0]), "y1": float(b[1]), "x2": float(b[2]), "y2": float(b[3])}}
                for b, s, lab in zip(self.boxes, self.scores, self.labels)]

    def to_json(self, indent: int | None = None) -> str:
        """Detections as JSON: a list of {name, class, score, box {x1, y1, x2, y2}}."""
        return json.dumps(self.to_list(), indent=indent)

    def to_supervision(self):
        """A ``supervision.Detections`` (needs ``pip install supervision``)."""
        try:
            import supervision as sv
        except ImportError as e:
            raise ImportError("to_supervision() needs the supervision package: pip install supervision") from e
        return sv.Detections(xyxy=self.boxes.astype(np.float32), confidence=self.scores.astype(np.float32),
                             class_id=self.labels.astype(int),
                             data={"class_name": np.array(self.class_names, dtype=object)})

    def __repr__(self) -> str:
        src = f" {self.path}" if self.path else ""
        return f"Result({len(self)} detections{src}, orig_shape={self.orig_shape})"
