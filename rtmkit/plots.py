"""Drawing detections on images and training charts (OpenCV + numpy only)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .runs import atomic_write_bytes

# A fixed, high-contrast palette (BGR), cycled by class index.
_PALETTE = [
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
    (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
    (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203),
    (200, 149, 255), (199, 55, 255),
]
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_INK = (30, 30, 30)  # text and axes on charts
_GREY = (110, 110, 110)  # tick labels, secondary text
_GRID = (232, 232, 232)
_LINE = (200, 80, 20)  # chart series (BGR blue)
_PR_TOP = 10  # classes named in the PR-curve legend


def save_image(path: str | Path, img: np.ndarray) -> None:
    """Encode ``img`` (HxWx3 BGR) in the format of ``path``'s extension and write it atomically; an ``OSError``
    names the file when the disk is full or the folder read-only (``cv2.imwrite`` would only return False)."""
    ok, encoded = cv2.imencode(Path(path).suffix or ".png", img)
    if not ok:
        raise OSError(f"{path}: could not encode the image")
    atomic_write_bytes(path, encoded.tobytes())


def class_color(label: int) -> tuple[int, int, int]:
    return _PALETTE[int(label) % len(_PALETTE)]


def _text_color(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light fills, white on dark ones (``fill`` is BGR)."""
    b, g, r = fill
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 160 else (255, 255, 255)


def label_positions(boxes: np.ndarray, sizes: Sequence[tuple[int, int]], shape: Sequence[int]) -> np.ndarray:
    """Caption rectangles [N, 4] int (x1, y1, x2, y2; x2/y2 exclusive) for captions of ``sizes`` (w, h) on
    ``boxes`` (xyxy) in an image of ``shape`` (h, w, ...). Every rectangle lies inside the image (a caption larger
    than the image is cut at its right/bottom edge). Greedy, in order: the first of above the box (inside its top
    when there is no room above), inside its top, below it (inside its bottom when no room), left- then
    right-aligned, that overlaps no earlier caption; else the one overlapping them least (ties: the first)."""
    ih, iw = int(shape[0]), int(shape[1])
    out = np.zeros((len(sizes), 4), np.int64)
    for i, (box, (w, h)) in enumerate(zip(np.asarray(boxes, np.float64).reshape(-1, 4), sizes)):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        w, h = max(min(int(w), iw), 1), max(min(int(h), ih), 1)
        above = y1 - h if y1 - h >= 0 else y1
        below = y2 if y2 + h <= ih else y2 - h
        cands = []
        for x in (x1, x2 - w):
            for y in (above, y1, below):
                c = (min(max(x, 0), iw - w), min(max(y, 0), ih - h))
                if c not in cands:
                    cands.append(c)
        c = np.array([(x, y, x + w, y + h) for x, y in cands], np.int64)
        if i:
            p = out[:i]
            ix = np.minimum(c[:, None, 2], p[None, :, 2]) - np.maximum(c[:, None, 0], p[None, :, 0])
            iy = np.minimum(c[:, None, 3], p[None, :, 3]) - np.maximum(c[:, None, 1], p[None, :, 1])
            area = (np.clip(ix, 0, None) * np.clip(iy, 0, None)).sum(1)
            out[i] = c[int(np.argmin(area))]  # argmin returns the first zero, if any
        else:
            out[i] = c[0]
    return out


def draw_detections(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                    names: dict[int, str], line_width: int | None = None, show_labels: bool = True,
                    show_conf: bool = True) -> np.ndarray:
    """Return a copy of ``image`` (BGR uint8) with boxes and ``name score`` captions (kept inside the image and,
    where possible, off each other: see :func:`label_positions`; earlier boxes get the better spots)."""
    return draw_instances(image, scores, labels, names, boxes=boxes, line_width=line_width, show_labels=show_labels,
                          show_conf=show_conf)


def draw_instances(image: np.ndarray, scores: np.ndarray, labels: np.ndarray, names: dict[int, str], *,
                   boxes: np.ndarray | None = None, masks: np.ndarray | None = None,
                   polygons: np.ndarray | None = None, line_width: int | None = None, show_labels: bool = True,
                   show_conf: bool = True, mask_alpha: float = 0.4) -> np.ndarray:
    """A copy of ``image`` (BGR uint8, H x W) with any of: ``masks`` [N, H, W] bool as translucent fills with
    contours, ``polygons`` [N, K, 2] (rotated boxes' corners, pixels) as closed outlines, ``boxes`` [N, 4] xyxy as
    rectangles; then one ``name score`` caption per instance above its box (the polygon's or mask's bounds when
    there is no box), kept inside the image."""
    out = image.copy()
    h, w = out.shape[:2]
    lw = line_width or max(round((h + w) / 2 * 0.003), 1)
    font_scale = lw / 3
    thickness = max(lw - 1, 1)
    colors = [class_color(label) for label in labels]
    anchors = None
    if masks is not None and len(masks):
        masks = np.asarray(masks, bool)
        fill = np.zeros_like(out)
        covered = np.zeros((h, w), bool)
        for m, color in zip(masks, colors):  # one pass per instance: later (lower-score) masks under earlier ones
            m = m & ~covered
            fill[m] = color
            covered |= m
        out[covered] = (out[covered] * (1 - mask_alpha) + fill[covered] * mask_alpha).astype(np.uint8)
        for m, color in zip(masks, colors):
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, color, max(lw - 1, 1), cv2.LINE_AA)
        ys, xs = np.arange(h), np.arange(w)
        rows, cols = masks.any(2), masks.any(1)
        anchors = np.stack([np.where(cols.any(1), np.where(cols, xs, w).min(1), 0),
                            np.where(rows.any(1), np.where(rows, ys, h).min(1), 0),
                            np.where(cols, xs, -1).max(1) + 1, np.where(rows, ys, -1).max(1) + 1], 1)
    if polygons is not None and len(polygons):
        polygons = np.asarray(polygons, np.float64)
        for poly, color in zip(polygons, colors):
            cv2.polylines(out, [np.round(poly).astype(np.int32)], True, color, lw, cv2.LINE_AA)
        anchors = np.concatenate([polygons.min(1), polygons.max(1)], 1)
    if boxes is not None:
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        for box, color in zip(boxes, colors):
            x1, y1, x2, y2 = (int(round(float(v))) for v in box)
            cv2.rectangle(out, (x1, y1), (x2, y2), color, lw, cv2.LINE_AA)
        anchors = boxes
    if not (show_labels or show_conf) or anchors is None or not len(anchors):
        return out
    texts, sizes, heights = [], [], []
    for score, label in zip(scores, labels):
        parts = []
        if show_labels:
            parts.append(names.get(int(label), str(int(label))))
        if show_conf:
            parts.append(f"{float(score):.2f}")
        text = " ".join(parts)
        (tw, th), base = cv2.getTextSize(text, _FONT, font_scale, thickness)
        texts.append(text)
        heights.append(th)
        sizes.append((tw + 4, th + base + 4))
    # Captions go on top of all outlines, so that a later box does not cross an earlier caption.
    for (x1, y1, x2, y2), text, th, color in zip(label_positions(np.asarray(anchors, np.float64), sizes, out.shape),
                                                 texts, heights, colors):
        cv2.rectangle(out, (int(x1), int(y1)), (int(x2) - 1, int(y2) - 1), color, -1)
        cv2.putText(out, text, (int(x1) + 2, int(y1) + th + 2), _FONT, font_scale, _text_color(color), thickness,
                    cv2.LINE_AA)
    return out


def draw_probs(image: np.ndarray, probs: np.ndarray, names: dict[int, str], top: int = 5) -> np.ndarray:
    """A copy of ``image`` with the ``top`` classes of ``probs`` [C] and their probabilities written top-left."""
    out = image.copy()
    h, w = out.shape[:2]
    scale = max(min(h, w) / 640, 0.4)
    thickness = max(int(round(scale * 1.5)), 1)
    y = 0
    for i in np.argsort(-np.asarray(probs))[:top]:
        text = f"{names.get(int(i), str(int(i)))} {float(probs[i]):.2f}"
        (tw, th), base = cv2.getTextSize(text, _FONT, scale, thickness)
        cv2.rectangle(out, (0, y), (tw + 8, y + th + base + 8), (40, 40, 40), -1)
        cv2.putText(out, text, (4, y + th + 4), _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
        y += th + base + 8
    return out


# ------------------------------------------------------------------------------------------------------ charts


def nice_ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> np.ndarray:
    """About ``n`` round tick values (step 1, 2, 2.5 or 5 x 10^k; whole numbers >= 1 with ``integer``) spanning
    [lo, hi] (first tick <= lo, last >= hi). A constant or non-finite range is widened first."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    lo, hi = min(lo, hi), max(lo, hi)
    if hi - lo <= 1e-9 * max(abs(lo), abs(hi)) or hi == lo:
        pad = 1.0 if integer or lo == 0 else abs(lo) * 0.1
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in ((1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)) if m * mag >= raw * (1 - 1e-9))
    if integer:
        step = max(round(step), 1)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    ticks = np.arange(first, last + 1) * step
    ticks[np.abs(ticks) < step * 1e-6] = 0.0  # no "-0"
    return ticks


def format_ticks(ticks: Sequence[float]) -> tuple[list[str], str]:
    """Tick labels with just enough decimals to tell neighbours apart, and a common multiplier ("" or like
    "x1e-4", to be shown once by the axis) for very small or large values."""
    t = np.asarray(ticks, np.float64)
    step = float(np.min(np.diff(t))) if len(t) > 1 else abs(float(t[0])) if len(t) else 1.0
    step = step or 1.0
    big = float(np.abs(t).max()) if len(t) else 0.0
    mult = ""
    if big >= 1e5 or (0 < big and step < 1e-3):
        exp = math.floor(math.log10(big))
        t, step, mult = t / 10.0**exp, step / 10.0**exp, f"x1e{exp}"
    d = next((d for d in range(12) if abs(round(step, d) - step) <= step * 1e-6), 12)
    return [f"{v:.{d}f}" for v in t], mult


def _put(img: np.ndarray, text: str, org: tuple[float, float], scale: float = 0.4, color=_INK, anchor: str = "l"):
    """Text with its baseline at ``org``; ``anchor`` l/c/r: ``org`` is the left end, centre or right end."""
    (tw, _), _ = cv2.getTextSize(text, _FONT, scale, 1)
    x = org[0] - {"l": 0, "c": tw / 2, "r": tw}[anchor]
    cv2.putText(img, text, (int(round(x)), int(round(org[1]))), _FONT, scale, color, 1, cv2.LINE_AA)


def _put_vertical(img: np.ndarray, text: str, centre: tuple[int, int], scale: float = 0.45) -> None:
    """Text rotated 90 degrees counter-clockwise (a y-axis label), centred on ``centre``; drawn darkest-wins."""
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
    tile = np.full((th + base + 2, tw + 2, 3), 255, np.uint8)
    cv2.putText(tile, text, (1, th + 1), _FONT, scale, _INK, 1, cv2.LINE_AA)
    tile = np.ascontiguousarray(np.rot90(tile))
    th_, tw_ = tile.shape[:2]
    y0, x0 = max(centre[1] - th_ // 2, 0), max(centre[0] - tw_ // 2, 0)
    region = img[y0:y0 + th_, x0:x0 + tw_]
    np.minimum(region, tile[:region.shape[0], :region.shape[1]], out=region)


class _Axes:
    """A plot area ``(left, top, right, bottom)`` in pixels of ``img`` with data limits; draws grid, axes, ticks."""

    def __init__(self, img: np.ndarray, area: tuple[int, int, int, int], xlim: tuple[float, float],
                 ylim: tuple[float, float], pad: int = 0):
        self.img, self.area, self.xlim, self.ylim, self.pad = img, area, xlim, ylim, pad

    def px(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Data coordinates to int pixel points [N, 2]."""
        l, t, r, b = self.area
        (x0, x1), (y0, y1), p = self.xlim, self.ylim, self.pad
        u = l + p + (np.asarray(x, np.float64) - x0) / (x1 - x0) * (r - l - 2 * p)
        v = b - p - (np.asarray(y, np.float64) - y0) / (y1 - y0) * (b - t - 2 * p)
        return np.round(np.stack([u, v], 1)).astype(np.int32)

    def draw(self, xticks: Sequence[float], yticks: Sequence[float], scale: float = 0.36) -> None:
        """Grid lines, the x (bottom) and y (left) axis lines, tick marks and tick labels."""
        img, (l, t, r, b) = self.img, self.area
        xs = self.px(np.asarray(xticks, np.float64), np.full(len(xticks), self.ylim[0]))[:, 0]
        ys = self.px(np.full(len(yticks), self.xlim[0]), np.asarray(yticks, np.float64))[:, 1]
        for x in xs:
            cv2.line(img, (int(x), t), (int(x), b), _GRID, 1)
        for y in ys:
            cv2.line(img, (l, int(y)), (r, int(y)), _GRID, 1)
        cv2.line(img, (l, b), (r, b), _INK, 1)
        cv2.line(img, (l, t), (l, b), _INK, 1)
        (_, th), _ = cv2.getTextSize("0", _FONT, scale, 1)
        for x, s in zip(xs, format_ticks(xticks)[0]):
            cv2.line(img, (int(x), b), (int(x), b + 4), _INK, 1)
            _put(img, s, (x, b + 8 + th), scale, _GREY, "c")
        labels, mult = format_ticks(yticks)
        for y, s in zip(ys, labels):
            cv2.line(img, (l - 4, int(y)), (l, int(y)), _INK, 1)
            _put(img, s, (l - 7, y + th / 2), scale, _GREY, "r")
        if mult:
            _put(img, mult, (l - 4, t - 5), scale, _GREY, "r")


def _finite(v) -> float:
    """``float(v)``, or NaN for None, text and infinities."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) else math.nan


def _chart(x: Sequence[float], values: Sequence[float], title: str, w: int = 360, h: int = 240) -> np.ndarray:
    """One line chart (white background, titled, x = epoch and y axes with round ticks) as a BGR image. NaN
    values are left out (the line joins the points around them); a constant series gets a widened y range."""
    img = np.full((h, w, 3), 255, np.uint8)
    x, y = np.asarray(x, np.float64), np.asarray(values, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    yticks = nice_ticks(float(y[ok].min()), float(y[ok].max())) if ok.any() else nice_ticks(0.0, 1.0)
    xv = x[np.isfinite(x)]
    xlo, xhi = (float(xv.min()), float(xv.max())) if len(xv) else (0.0, 1.0)
    if xhi - xlo < 1:
        xlo, xhi = xlo - 1, xhi + 1
    xticks = nice_ticks(xlo, xhi, 6, integer=True)
    xticks = xticks[(xticks >= xlo - 1e-9) & (xticks <= xhi + 1e-9)]
    scale = 0.36
    labels, mult = format_ticks(yticks)
    left = max(cv2.getTextSize(s, _FONT, scale, 1)[0][0] for s in [*labels, mult]) + 12
    area = (left, 34, w - 14, h - 38)
    ax = _Axes(img, area, (xlo, xhi), (float(yticks[0]), float(yticks[-1])), pad=6)
    ax.draw(xticks, yticks, scale)
    _put(img, title, (8, 19), 0.5, _INK)
    _put(img, "epoch", ((area[0] + area[2]) / 2, h - 6), 0.38, _GREY, "c")
    if not ok.any():
        _put(img, "no data", ((area[0] + area[2]) / 2, (area[1] + area[3]) / 2), 0.45, _GREY, "c")
        return img
    _put(img, f"last {y[ok][-1]:.4g}", (w - 14, 19), 0.38, _GREY, "r")
    pts = ax.px(x[ok], y[ok])
    if len(pts) > 1:
        cv2.polylines(img, [pts], False, _LINE, 2, cv2.LINE_AA)
    if len(pts) <= 60:
        for px, py in pts:
            cv2.circle(img, (int(px), int(py)), 3, _LINE, -1, cv2.LINE_AA)
    return img


def plot_results(history: list[dict], path) -> None:
    """results.png: one chart per logged quantity (losses, learning rate, AP ...) over the epochs."""
    keys = [k for k in history[0] if k != "epoch"] if history else []
    for row in history:
        keys += [k for k in row if k != "epoch" and k not in keys]
    epochs = [_finite(r.get("epoch", i + 1)) for i, r in enumerate(history)]
    epochs = [i + 1 if math.isnan(e) else e for i, e in enumerate(epochs)]
    charts = [_chart(epochs, [_finite(r.get(k)) for r in history], k) for k in keys]
    if not charts:
        return
    cols = min(4, len(charts))
    blank = np.full_like(charts[0], 255)
    charts += [blank] * (-len(charts) % cols)
    grid = np.vstack([np.hstack(charts[i:i + cols]) for i in range(0, len(charts), cols)])
    save_image(path, grid)


def pr_legend(precision: np.ndarray, names: Sequence[str], top: int = _PR_TOP) -> list[tuple[int, str, float]]:
    """Legend of the PR plot as (class index, or -1 for the mean over classes; name; AP50) from COCOeval's precision
    array [T, R, K, A, M]: the mean first ("all classes"), then the ``top`` classes by AP50 (ties: lower index
    first). Classes without ground truth (precision -1) are left out, also from the mean."""
    pr = np.asarray(precision)[0, :, :, 0, -1]  # [R, K]
    valid = [k for k in range(pr.shape[1]) if not (pr[:, k] < 0).all()]
    if not valid:
        return []
    ap = {k: float(np.clip(pr[:, k], 0, 1).mean()) for k in valid}
    best = sorted(valid, key=lambda k: (-ap[k], k))[:top]
    mean = float(np.mean([ap[k] for k in valid]))
    return [(-1, "all classes", mean)] + [(k, str(names[k]) if k < len(names) else str(k), ap[k]) for k in best]


def plot_pr_curve(precision: np.ndarray, names: list[str], path, w: int = 640, h: int = 480) -> None:
    """Precision-recall curves at IoU 0.5 from COCOeval's precision array [T, R, K, A, M] (area all, 100 dets):
    the classes with the highest AP50 in colour and named in the legend with their AP50 (see :func:`pr_legend`),
    the others in light grey, the mean over classes in bold black. Classes without ground truth are left out."""
    img = np.full((h, w, 3), 255, np.uint8)
    legend_w = min(200, w // 3)
    area = (56, 34, w - legend_w - 16, h - 46)
    ax = _Axes(img, area, (0.0, 1.0), (0.0, 1.0))
    ticks = np.linspace(0, 1, 6)
    ax.draw(ticks, ticks, 0.38)
    _put(img, "precision-recall @ IoU 0.5", (area[0], 22), 0.55)
    _put(img, "recall", ((area[0] + area[2]) / 2, h - 10), 0.45, _INK, "c")
    _put_vertical(img, "precision", (12, (area[1] + area[3]) // 2))
    raw = np.asarray(precision)[0, :, :, 0, -1]  # [R, K]
    pr, valid = np.clip(raw, 0, 1), [k for k in range(raw.shape[1]) if not (raw[:, k] < 0).all()]
    recall = np.linspace(0, 1, pr.shape[0])
    legend = pr_legend(precision, names)
    if not legend:
        _put(img, "no ground truth", ((area[0] + area[2]) / 2, (area[1] + area[3]) / 2), 0.5, _GREY, "c")
        save_image(path, img)
        return
    named = [k for k, _, _ in legend[1:]]
    for k in valid:
        if k not in named:
            cv2.polylines(img, [ax.px(recall, pr[:, k])], False, (210, 210, 210), 1, cv2.LINE_AA)
    for k in reversed(named):  # the best class ends up on top
        cv2.polylines(img, [ax.px(recall, pr[:, k])], False, class_color(k), 2, cv2.LINE_AA)
    cv2.polylines(img, [ax.px(recall, pr[:, valid].mean(1))], False, (0, 0, 0), 3, cv2.LINE_AA)
    lx, ly = w - legend_w - 4, area[1]
    _put(img, "AP50", (lx, ly + 10), 0.42, _INK)
    for i, (k, name, ap) in enumerate(legend):
        y = ly + 30 + 19 * i
        color, thick = ((0, 0, 0), 3) if k < 0 else (class_color(k), 2)
        cv2.line(img, (lx, y - 4), (lx + 22, y - 4), color, thick, cv2.LINE_AA)
        _put(img, f"{name if len(name) <= 14 else name[:13] + '.'} {ap:.3f}", (lx + 28, y), 0.4, _INK)
    if len(valid) > len(named):
        _put(img, f"+{len(valid) - len(named)} more (grey)", (lx + 28, ly + 30 + 19 * len(legend)), 0.38, _GREY)
    save_image(path, img)


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
    save_image(path, grid)
