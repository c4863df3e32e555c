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


def _chart(values: list[float], title: str, w: int = 320, h: int = 220) -> np.ndarray:
    """One small line chart (white background, axes, min/max labels) as a BGR image."""
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 48, 10, 26, 24
    cv2.putText(img, title, (left, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (w - right, h - bottom), (180, 180, 180), 1)
    finite = [v for v in values if v == v]
    if not finite:
        return img
    lo, hi = min(finite), max(finite)
    span = hi - lo or 1.0
    n = len(values)
    pts = []
    for i, v in enumerate(values):
        if v != v:
            continue
        x = left + (w - left - right) * (i / max(n - 1, 1))
        y = (h - bottom) - (h - top - bottom) * ((v - lo) / span)
        pts.append((int(round(x)), int(round(y))))
    if len(pts) > 1:
        cv2.polylines(img, [np.array(pts, np.int32)], False, (200, 80, 20), 2, cv2.LINE_AA)
    for x, y in pts:
        cv2.circle(img, (x, y), 2, (200, 80, 20), -1, cv2.LINE_AA)
    for v, y in ((hi, top + 8), (lo, h - bottom)):
        cv2.putText(img, f"{v:.3g}", (2, y), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.putText(img, f"epoch 1..{n}", (left, h - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (60, 60, 60), 1, cv2.LINE_AA)
    return img


def plot_results(history: list[dict], path) -> None:
    """results.png: one chart per logged quantity (losses, learning rate, AP ...) over the epochs."""
    keys = [k for k in history[0] if k != "epoch"] if history else []
    for row in history:
        keys += [k for k in row if k != "epoch" and k not in keys]
    charts = [_chart([float(r.get(k, float("nan"))) for r in history], k) for k in keys]
    if not charts:
        return
    cols = min(4, len(charts))
    blank = np.full_like(charts[0], 255)
    charts += [blank] * (-len(charts) % cols)
    grid = np.vstack([np.hstack(charts[i:i + cols]) for i in range(0, len(charts), cols)])
    cv2.imwrite(str(path), grid)


def plot_pr_curve(precision: np.ndarray, names: list[str], path, w: int = 640, h: int = 480) -> None:
    """Precision-recall curves at IoU 0.5 from COCOeval's precision array [T, R, K, A, M] (area all, 100 dets):
    one thin line per class and the class mean in bold."""
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 50, 20, 30, 40
    cv2.rectangle(img, (left, top), (w - right, h - bottom), (150, 150, 150), 1)
    cv2.putText(img, "precision-recall @ IoU 0.5", (left, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                cv2.LINE_AA)
    cv2.putText(img, "recall", (w // 2 - 20, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    pr = precision[0, :, :, 0, -1]  # [R, K]
    recall = np.linspace(0, 1, pr.shape[0])

    def to_px(r: np.ndarray, p: np.ndarray) -> np.ndarray:
        return np.stack([left + r * (w - left - right), (h - bottom) - p * (h - top - bottom)], 1).astype(np.int32)

    valid = []
    for k in range(pr.shape[1]):
        p = pr[:, k]
        if (p < 0).all():
            continue
        p = np.clip(p, 0, 1)
        valid.append(p)
        cv2.polylines(img, [to_px(recall, p)], False, class_color(k), 1, cv2.LINE_AA)
    if valid:
        mean = np.mean(valid, axis=0)
        cv2.polylines(img, [to_px(recall, mean)], False, (0, 0, 0), 3, cv2.LINE_AA)
        ap50 = float(mean.mean())
        cv2.putText(img, f"all classes: AP50 {ap50:.3f} ({len(valid)} of {len(names)} classes)", (left + 10, top + 20),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img)


def plot_train_batch(images, targets, mean, std, names: dict[int, str], path, max_images: int = 16) -> None:
    """A mosaic of (up to 16) training inputs (uint8, or normalised and then de-normalised here), with their
    target boxes."""
    import torch

    x = images[:max_images].detach().cpu()
    if x.dtype != torch.uint8:
        x = x.float() * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    tiles = []
    for img, t in zip(x.clamp(0, 255).byte().permute(0, 2, 3, 1).numpy(), targets):
        boxes, labels = t["boxes"].cpu().numpy(), t["labels"].cpu().numpy()
        tiles.append(draw_detections(np.ascontiguousarray(img), boxes, np.ones(len(boxes)), labels, names,
                                     show_conf=False))
    cols = int(np.ceil(np.sqrt(len(tiles))))
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % cols)
    grid = np.vstack([np.hstack(tiles[i:i + cols]) for i in range(0, len(tiles), cols)])
    scale = min(1.0, 1920 / grid.shape[1])
    if scale < 1:
        grid = cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), grid)
