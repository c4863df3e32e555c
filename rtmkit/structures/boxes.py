"""Axis-aligned and rotated boxes of a sample, NumPy-backed (the data pipeline runs in NumPy/OpenCV).

Coordinate frame: image pixels, x to the right, y down, origin at the top-left corner of the top-left pixel (a
box covering the whole ``H x W`` image is ``[0, 0, W, H]``). Sizes are ``size_hw = (height, width)``.

Both classes share the geometric interface of :class:`~rtmkit.structures.masks.PolygonMasks`: ``scale``,
``translate``, ``flip``, ``clip``, ``select``, ``concat``, ``areas``, ``bounding_xyxy``, ``is_inside``, ``wh``.
They are immutable: every operation returns a new object and never writes into the array it holds (samples
cached by the mosaic / mixup transforms share their arrays).

Rotated boxes are ``(cx, cy, w, h, angle)`` with the angle in radians, positive clockwise in image coordinates
(y down), as MMRotate: the corners are ``c +- (w/2)(cos a, sin a) +- (h/2)(-sin a, cos a)``. They are kept in the
``le90`` convention: ``w >= h`` and ``angle`` in ``[-pi/2, pi/2)``. Angles are float32 numbers, so that interval
is taken between the float32 values of ``-pi/2`` and ``pi/2``: ``float32(-pi/2)`` is a valid angle and
``float32(pi/2)`` becomes it (see :func:`regularize_le90`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import cv2
import numpy as np

# The le90 period and half period as float32 values (float32(pi) / 2 == float32(pi / 2) exactly): the interval
# is [-HALF_PI32, HALF_PI32) so that a float32 angle of -pi/2 is a fixed point of the regularisation.
_PI32 = float(np.float32(np.pi))
_HALF_PI32 = _PI32 / 2
FLIP_DIRECTIONS = ("horizontal", "vertical", "diagonal")


def _hw(size_hw: Sequence[float]) -> tuple[float, float]:
    """``(h, w)`` as Python floats: weak scalars keep NumPy arithmetic on float32 arrays in float32."""
    return float(size_hw[0]), float(size_hw[1])


def _check_direction(direction: str) -> None:
    if direction not in FLIP_DIRECTIONS:
        raise ValueError(f"flip direction must be one of {FLIP_DIRECTIONS}, got {direction!r}")


def _as_rows(data: Any, width: int) -> np.ndarray:
    """float32 ``[N, width]``; a float32 array of that shape is used as is (wrapped, not copied)."""
    a = np.asarray(data if data is not None else np.zeros((0, width)), np.float32)
    return a if a.ndim == 2 and a.shape[1] == width else a.reshape(-1, width)


def index_array(index: Any, n: int) -> np.ndarray:
    """A boolean mask ([n]) or integer indices -> int64 indices (the common form of ``select``)."""
    idx = np.asarray(index)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise IndexError(f"boolean mask of shape {idx.shape} for {n} instances")
        return np.flatnonzero(idx)
    return idx.astype(np.int64, copy=False).reshape(-1)


class AxisBoxes:
    """Axis-aligned boxes: ``data`` float32 ``[N, 4]`` (x1, y1, x2, y2) in pixels."""

    def __init__(self, data: Any = None):
        self.data = _as_rows(data, 4)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"AxisBoxes({self.data.tolist()})"

    @classmethod
    def concat(cls, items: Iterable[AxisBoxes]) -> AxisBoxes:
        return cls(np.concatenate([b.data for b in items]).astype(np.float32))

    # -- geometry
    def scale(self, sx: float, sy: float) -> AxisBoxes:
        """Multiply x by ``sx`` and y by ``sy`` (the factors are rounded to float32 first)."""
        return AxisBoxes(self.data * np.array([sx, sy, sx, sy], np.float32))

    def translate(self, dx: float, dy: float) -> AxisBoxes:
        return AxisBoxes(self.data + np.array([dx, dy, dx, dy], np.float32))

    def flip(self, size_hw: Sequence[float], direction: str = "horizontal") -> AxisBoxes:
        """Mirror in an image of ``size_hw``: horizontal ``x1' = W - x2, x2' = W - x1``; vertical the same in y;
        diagonal both (a 180 degree rotation)."""
        _check_direction(direction)
        h, w = _hw(size_hw)
        b = self.data
        x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
        if direction in ("horizontal", "diagonal"):
            x1, x2 = w - x2, w - x1
        if direction in ("vertical", "diagonal"):
            y1, y2 = h - y2, h - y1
        return AxisBoxes(np.stack([x1, y1, x2, y2], axis=1))

    def clip(self, size_hw: Sequence[float]) -> AxisBoxes:
        """Clip the coordinates to ``[0, W] x [0, H]`` (a box outside the image becomes degenerate)."""
        h, w = _hw(size_hw)
        return AxisBoxes(np.clip(self.data, 0, np.array([w, h, w, h], np.float32)))

    def select(self, index: Any) -> AxisBoxes:
        return AxisBoxes(self.data[index_array(index, len(self))])

    # -- measures
    @property
    def wh(self) -> np.ndarray:
        """float32 ``[N, 2]`` widths and heights."""
        return self.data[:, 2:4] - self.data[:, 0:2]

    @property
    def areas(self) -> np.ndarray:
        """float32 ``[N]``."""
        wh = self.wh
        return wh[:, 0] * wh[:, 1]

    def bounding_xyxy(self) -> np.ndarray:
        """float32 ``[N, 4]``: the boxes themselves."""
        return self.data

    def is_inside(self, size_hw: Sequence[float]) -> np.ndarray:
        """bool ``[N]``: the box overlaps the image (x1 < W, y1 < H, x2 > 0, y2 > 0), MMDetection's ``is_inside``."""
        h, w = _hw(size_hw)
        b = self.data
        return (b[:, 0] < w) & (b[:, 1] < h) & (b[:, 2] > 0) & (b[:, 3] > 0)


# ---------------------------------------------------------------------------------------------------- rotated


def regularize_le90(rboxes: Any) -> np.ndarray:
    """``[N, 5]`` (cx, cy, w, h, angle) -> float32 ``[N, 5]`` in le90: ``w >= h``, angle in ``[-pi/2, pi/2)``.

    Where ``h > w`` the sides are swapped and the angle turned by ``pi/2``; the angle is then wrapped into the
    interval with period ``pi``. A square (``w == h``) keeps its angle (MMRotate 0.x's ``poly2obb_np_le90`` rule;
    1.x's ``regularize_boxes`` swaps on ties too, which is not idempotent). The arithmetic is float64 on the float32
    values, with the float32 bounds: ``float32(-pi/2)`` stays, ``float32(pi/2)`` (or ``pi/2``) becomes it.
    """
    b = np.asarray(rboxes, np.float32).reshape(-1, 5).astype(np.float64)
    cx, cy, w, h, t = b.T
    swap = h > w
    w, h = np.where(swap, h, w), np.where(swap, w, h)
    t = np.where(swap, t + _HALF_PI32, t)
    t = np.mod(t + _HALF_PI32, _PI32) - _HALF_PI32
    out = np.stack([cx, cy, w, h, t], axis=1).astype(np.float32)
    a = out[:, 4]
    # float64 -> float32 may round up to the excluded end (or np.mod may return the period itself)
    out[:, 4] = np.where(a >= np.float32(_HALF_PI32), a - np.float32(_PI32), a)
    return out


def rbox_to_polygon(rboxes: Any) -> np.ndarray:
    """``[N, 5]`` rotated boxes -> float32 ``[N, 4, 2]`` corners in MMRotate's ``rbox2corner`` order:
    ``c + u + v``, ``c + u - v``, ``c - u - v``, ``c - u + v`` with ``u = (w/2)(cos a, sin a)``,
    ``v = (h/2)(-sin a, cos a)``."""
    b = np.asarray(rboxes, np.float32).reshape(-1, 5).astype(np.float64)
    c, w, h, t = b[:, None, 0:2], b[:, 2, None], b[:, 3, None], b[:, 4, None]
    cos, sin = np.cos(t), np.sin(t)
    u = np.concatenate([w / 2 * cos, w / 2 * sin], axis=1)[:, None]
    v = np.concatenate([-h / 2 * sin, h / 2 * cos], axis=1)[:, None]
    return np.concatenate([c + u + v, c + u - v, c - u - v, c - u + v], axis=1).astype(np.float32)


def polygon_to_rbox(polygons: Iterable[Any]) -> np.ndarray:
    """Minimum-area rectangle of each point set (``cv2.minAreaRect``) -> float32 ``[N, 5]`` le90 rotated boxes.

    ``polygons``: an ``[N, K, 2]`` array, or a sequence of point sets (``[K, 2]`` or flat ``[x0, y0, x1, ...]``).
    A point set without points gives a zero box. OpenCV's ``(w, h, angle in degrees)`` uses the same clockwise
    frame as the rotated boxes here, so only the le90 regularisation is added.
    """
    rows = []
    for poly in polygons:  # one OpenCV call per point set
        pts = np.asarray(poly, np.float32).reshape(-1, 2)
        if len(pts) == 0:
            rows.append((0.0, 0.0, 0.0, 0.0, 0.0))
            continue
        (cx, cy), (w, h), angle = cv2.minAreaRect(pts)
        rows.append((cx, cy, w, h, np.deg2rad(angle)))
    return regularize_le90(np.array(rows, np.float64).reshape(-1, 5))


class RotatedBoxes:
    """Rotated boxes: ``data`` float32 ``[N, 5]`` (cx, cy, w, h, angle), angle in radians, clockwise-positive in
    image coordinates, le90 (see the module docstring). The constructor regularises unless ``regularize=False``
    (for data known to be le90 already: the operations here keep it so)."""

    def __init__(self, data: Any = None, regularize: bool = True):
        self.data = regularize_le90(_as_rows(data, 5)) if regularize else _as_rows(data, 5)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"RotatedBoxes({self.data.tolist()})"

    @classmethod
    def concat(cls, items: Iterable[RotatedBoxes]) -> RotatedBoxes:
        return cls(np.concatenate([b.data for b in items]).astype(np.float32), regularize=False)

    # -- geometry
    def scale(self, sx: float, sy: float) -> RotatedBoxes:
        """Scale by ``(sx, sy)`` (positive). The centres scale like points (float32 factors, as AxisBoxes).

        A uniform scale (``sx == sy``) is exact: ``w`` and ``h`` scale, the angle stays. A non-uniform scale turns
        a rectangle into a parallelogram; the result is the minimum-area rectangle around its 4 corners (what
        MMRotate's ``project_`` gets from ``cv2.minAreaRect``), computed in closed form: the rectangle with a side
        on the parallelogram's longer edge, of length ``|e1| + |e1 . e2| / |e1|`` by ``|e1 x e2| / |e1|``.
        (MMRotate's ``rescale_`` uses Detectron2's approximation instead, which does not contain the corners.)
        """
        f = np.array([sx, sy], np.float32)
        centres = self.data[:, 0:2] * f
        if sx == sy:
            wh = self.data[:, 2:4] * f[0]
            return RotatedBoxes(np.concatenate([centres, wh, self.data[:, 4:5]], axis=1), regularize=False)
        fx, fy = float(f[0]), float(f[1])
        b = self.data.astype(np.float64)
        w, h, t = b[:, 2], b[:, 3], b[:, 4]
        cos, sin = np.cos(t), np.sin(t)
        e1 = np.stack([w * cos * fx, w * sin * fy], axis=1)  # the scaled w side
        e2 = np.stack([-h * sin * fx, h * cos * fy], axis=1)  # the scaled h side
        l1, l2 = np.linalg.norm(e1, axis=1), np.linalg.norm(e2, axis=1)
        dot = np.abs((e1 * e2).sum(1))
        cross = np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
        # the rectangle on the longer edge has the smaller area; on a (near) tie keep the w side's direction
        first = l1 >= l2 * (1 - 1e-6)
        edge = np.where(first[:, None], e1, e2)
        length = np.where(first, l1, l2)
        safe = np.where(length > 0, length, 1.0)
        new_w = np.where(length > 0, length + dot / safe, 0.0)
        new_h = np.where(length > 0, cross / safe, 0.0)
        angle = np.arctan2(edge[:, 1], edge[:, 0])
        out = np.concatenate([centres.astype(np.float64), np.stack([new_w, new_h, angle], axis=1)], axis=1)
        return RotatedBoxes(out)

    def translate(self, dx: float, dy: float) -> RotatedBoxes:
        """Shift the centres (exact)."""
        d = np.array([dx, dy, 0, 0, 0], np.float32)
        return RotatedBoxes(self.data + d, regularize=False)

    def flip(self, size_hw: Sequence[float], direction: str = "horizontal") -> RotatedBoxes:
        """Mirror the centres in an image of ``size_hw``; a horizontal or vertical mirror negates the angle (then
        re-regularised: ``-(-pi/2)`` is ``-pi/2`` again), a diagonal one (180 degree rotation) keeps it."""
        _check_direction(direction)
        h, w = _hw(size_hw)
        b = self.data
        cx, cy, t = b[:, 0], b[:, 1], b[:, 4]
        if direction in ("horizontal", "diagonal"):
            cx = w - cx
        if direction in ("vertical", "diagonal"):
            cy = h - cy
        if direction != "diagonal":
            t = -t
        return RotatedBoxes(np.stack([cx, cy, b[:, 2], b[:, 3], t], axis=1))

    def clip(self, size_hw: Sequence[float]) -> RotatedBoxes:
        """Unchanged, as MMRotate's ``RotatedBoxes.clip_`` ("very tricky to handle rotated boxes crossing the
        image"): a rotated box keeps its shape across the border, and :meth:`is_inside` (centre in the image)
        decides whether it stays. Clipping the centres instead would move and distort boxes."""
        return self

    def select(self, index: Any) -> RotatedBoxes:
        return RotatedBoxes(self.data[index_array(index, len(self))], regularize=False)

    # -- measures
    @property
    def wh(self) -> np.ndarray:
        """float32 ``[N, 2]``: the sides ``w, h`` (not the axis extents)."""
        return self.data[:, 2:4]

    @property
    def areas(self) -> np.ndarray:
        return self.data[:, 2] * self.data[:, 3]

    def corners(self) -> np.ndarray:
        """float32 ``[N, 4, 2]`` (see :func:`rbox_to_polygon`)."""
        return rbox_to_polygon(self.data)

    def bounding_xyxy(self) -> np.ndarray:
        """float32 ``[N, 4]``: the axis box around the 4 corners (half extents ``|w/2 cos| + |h/2 sin|`` in x,
        ``|w/2 sin| + |h/2 cos|`` in y)."""
        b = self.data.astype(np.float64)
        cos, sin = np.abs(np.cos(b[:, 4])), np.abs(np.sin(b[:, 4]))
        ex = b[:, 2] / 2 * cos + b[:, 3] / 2 * sin
        ey = b[:, 2] / 2 * sin + b[:, 3] / 2 * cos
        return np.stack([b[:, 0] - ex, b[:, 1] - ey, b[:, 0] + ex, b[:, 1] + ey], axis=1).astype(np.float32)

    def is_inside(self, size_hw: Sequence[float]) -> np.ndarray:
        """bool ``[N]``: the centre lies in ``[0, W] x [0, H]`` (MMRotate's ``RotatedBoxes.is_inside``)."""
        h, w = _hw(size_hw)
        c = self.data
        return (c[:, 0] >= 0) & (c[:, 0] <= w) & (c[:, 1] >= 0) & (c[:, 1] <= h)
