"""Drawing detections on images (OpenCV only)."""

from __future__ import annotations

import cv2
import numpy as np

# A fixed, high-contrast palette (BGR), cycled by class index.
_PALETTE = [
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
    (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
    (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203),
    (200, 149, 255), (199, 55, 255),
]


def class_color(label: int) -> tuple[int, int, int]:
    return _PALETTE[int(label) % len(_PALETTE)]


def draw_detections(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                    names: dict[int, str], line_width: int | None = None, show_labels: bool = True,
                    show_conf: bool = True) -> np.ndarray:
    """Return a copy of ``image`` (BGR uint8) with boxes and ``name score`` captions."""
    out = image.copy()
    h, w = out.shape[:2]
    lw = line_width or max(round((h + w) / 2 * 0.003), 1)
    font_scale = lw / 3
    thickness = max(lw - 1, 1)
    for box, score, label in zip(boxes, scores, labels):
        color = class_color(label)
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, lw, cv2.LINE_AA)
        if not (show_labels or show_conf):
            continue
        parts = []
        if show_labels:
            parts.append(names.get(int(label), str(int(label))))
        if show_conf:
            parts.append(f"{float(score):.2f}")
        text = " ".join(parts)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        top = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else y1  # inside the box near the top edge
        cv2.rectangle(out, (x1, top), (x1 + tw + 2, top + th + base + 2), color, -1, cv2.LINE_AA)
        cv2.putText(out, text, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)
    return out
