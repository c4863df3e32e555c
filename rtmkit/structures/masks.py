"""Instance masks as polygons, NumPy-backed, with the geometric interface of the boxes (see ``boxes``).

A mask is a list of polygons per instance, each a float32 ``[K, 2]`` array of (x, y) points in image pixels (the
frame of :mod:`rtmkit.structures.boxes`); the polygons of an instance are its parts (COCO ``segmentation``). This
is the representation the datasets load (``rtmkit.data.datasets``) and the training target carries; a flat COCO
polygon ``[x0, y0, x1, y1, ...]`` is accepted by the constructor and reshaped to ``[K, 2]``.

Points of all polygons are transformed at once (one concatenated array); clipping runs per polygon.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from .boxes import _check_direction, _hw, index_array, polygon_to_rbox

Polygons = list[list[np.ndarray]]


def clip_polygon(poly: np.ndarray, x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    """Sutherland-Hodgman clip of a polygon (float32 ``[K, 2]``) to the rectangle ``[x1, x2] x [y1, y2]``; returns
    float32 ``[K', 2]`` (``K'`` may be 0). A polygon already inside is returned as is. As MMDetection's
    ``PolygonMasks.crop`` (a shapely intersection) for the convex clip region."""
    pts = np.asarray(poly, np.float32)
    if len(pts) and pts[:, 0].min() >= x1 and pts[:, 0].max() <= x2 and pts[:, 1].min() >= y1 \
            and pts[:, 1].max() <= y2:
        return pts
    for axis, bound, keep_greater in ((0, x1, True), (0, x2, False), (1, y1, True), (1, y2, False)):
        if len(pts) == 0:
            break
        nxt = np.roll(pts, -1, axis=0)
        c = pts[:, axis] >= bound if keep_greater else pts[:, axis] <= bound
        n = nxt[:, axis] >= bound if keep_greater else nxt[:, axis] <= bound
        d = nxt[:, axis] - pts[:, axis]
        t = np.divide(bound - pts[:, axis], d, out=np.zeros_like(d), where=d != 0)
        inter = pts + t[:, None] * (nxt - pts)
        inter[:, axis] = bound
        cand = np.stack([inter, nxt], axis=1)  # per edge: crossing point, then the edge's end point
        valid = np.stack([c != n, n], axis=1)
        pts = cand[valid]
    return pts.astype(np.float32)


def encode_rle(masks: np.ndarray) -> list[dict[str, Any]]:
    """bool ``[N, H, W]`` -> COCO RLEs ``{"size": [H, W], "counts": str}`` (pycocotools' compressed counts, the
    form of COCO results files)."""
    if len(masks) == 0:
        return []
    from pycocotools import mask as mask_utils

    rles = mask_utils.encode(np.asfortranarray(np.moveaxis(np.asarray(masks), 0, -1).astype(np.uint8)))
    return [{"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]


class PolygonMasks:
    """``polygons``: per instance a list of float32 ``[K, 2]`` polygons (an instance may have none)."""

    def __init__(self, polygons: Iterable[Iterable[Any]] = ()):
        self.polygons: Polygons = [[np.asarray(p, np.float32).reshape(-1, 2) for p in inst] for inst in polygons]

    @classmethod
    def _wrap(cls, polygons: Polygons) -> PolygonMasks:
        """Without the per-polygon conversion: for lists this module built (already float32 [K, 2])."""
        out = cls.__new__(cls)
        out.polygons = polygons
        return out

    def __len__(self) -> int:
        return len(self.polygons)

    def __repr__(self) -> str:
        return f"PolygonMasks({len(self)} instances, {sum(len(i) for i in self.polygons)} polygons)"

    @classmethod
    def concat(cls, items: Iterable[PolygonMasks]) -> PolygonMasks:
        return cls._wrap([inst for m in items for inst in m.polygons])

    def _points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All points float32 ``[P, 2]``, points per polygon ``[Q]``, polygons per instance ``[N]``."""
        polys = [p for inst in self.polygons for p in inst]
        lengths = np.array([len(p) for p in polys], np.int64)
        counts = np.array([len(inst) for inst in self.polygons], np.int64)
        pts = np.concatenate(polys).astype(np.float32) if polys else np.zeros((0, 2), np.float32)
        return pts, lengths, counts

    def _map(self, fn: Callable[[np.ndarray], np.ndarray]) -> PolygonMasks:
        """Apply a point map (``[P, 2] -> [P, 2]``) to every polygon at once."""
        pts, lengths, counts = self._points()
        if len(lengths) == 0:
            return PolygonMasks._wrap([list(inst) for inst in self.polygons])
        parts = np.split(fn(pts), np.cumsum(lengths)[:-1])
        out, k = [], 0
        for c in counts.tolist():
            out.append(parts[k:k + c])
            k += c
        return PolygonMasks._wrap(out)

    # -- geometry
    def scale(self, sx: float, sy: float) -> PolygonMasks:
        f = np.array([sx, sy], np.float32)
        return self._map(lambda p: p * f)

    def translate(self, dx: float, dy: float) -> PolygonMasks:
        d = np.array([dx, dy], np.float32)
        return self._map(lambda p: p + d)

    def flip(self, size_hw: Sequence[float], direction: str = "horizontal") -> PolygonMasks:
        """Mirror the points: ``x' = W - x`` (horizontal), ``y' = H - y`` (vertical), both (diagonal)."""
        _check_direction(direction)
        h, w = _hw(size_hw)

        def fn(p: np.ndarray) -> np.ndarray:
            x = w - p[:, 0] if direction in ("horizontal", "diagonal") else p[:, 0]
            y = h - p[:, 1] if direction in ("vertical", "diagonal") else p[:, 1]
            return np.stack([x, y], axis=1)

        return self._map(fn)

    def clip(self, size_hw: Sequence[float]) -> PolygonMasks:
        """Clip every polygon to ``[0, W] x [0, H]`` (:func:`clip_polygon`); a polygon left with fewer than 3
        points is dropped, so an instance may end with none."""
        h, w = _hw(size_hw)
        out = []
        for inst in self.polygons:
            clipped = [clip_polygon(p, 0, 0, w, h) for p in inst]
            out.append([p for p in clipped if len(p) >= 3])
        return PolygonMasks._wrap(out)

    def select(self, index: Any) -> PolygonMasks:
        return PolygonMasks._wrap([self.polygons[i] for i in index_array(index, len(self)).tolist()])

    # -- measures
    @property
    def areas(self) -> np.ndarray:
        """float32 ``[N]``: sum of the polygons' shoelace areas per instance (MMDetection's ``PolygonMasks.areas``;
        overlapping parts count twice)."""
        pts, lengths, counts = self._points()
        if len(lengths) == 0:
            return np.zeros(len(self), np.float32)
        p = pts.astype(np.float64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        nxt = np.arange(1, len(p) + 1)
        nz = lengths > 0
        nxt[(np.cumsum(lengths) - 1)[nz]] = starts[nz]  # the last point of each polygon closes it
        cross = p[:, 0] * p[nxt, 1] - p[nxt, 0] * p[:, 1]
        poly_area = np.abs(np.bincount(np.repeat(np.arange(len(lengths)), lengths), cross, len(lengths))) / 2
        inst_of_poly = np.repeat(np.arange(len(self)), counts)
        return np.bincount(inst_of_poly, poly_area, len(self)).astype(np.float32)

    @property
    def wh(self) -> np.ndarray:
        b = self.bounding_xyxy()
        return b[:, 2:4] - b[:, 0:2]

    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``[N, 4]`` bounds (zeros for an instance without points) and bool ``[N]``: has points."""
        out = np.zeros((len(self), 4), np.float32)
        pts, lengths, counts = self._points()
        if len(pts) == 0:
            return out, np.zeros(len(self), bool)
        n_pts = np.bincount(np.repeat(np.arange(len(self)), counts), lengths, len(self)).astype(np.int64)
        has = n_pts > 0
        starts = (np.cumsum(n_pts) - n_pts)[has]  # instances' points are contiguous, in order
        out[has, 0:2] = np.minimum.reduceat(pts, starts, axis=0)
        out[has, 2:4] = np.maximum.reduceat(pts, starts, axis=0)
        return out, has

    def bounding_xyxy(self) -> np.ndarray:
        """float32 ``[N, 4]``: bounds of each instance's points; zeros for an instance without polygon (as
        MMDetection's ``PolygonMasks.get_bboxes``)."""
        return self._bounds()[0]

    def is_inside(self, size_hw: Sequence[float]) -> np.ndarray:
        """bool ``[N]``: the bounding box overlaps the image (an instance without polygon is outside)."""
        h, w = _hw(size_hw)
        b, has = self._bounds()
        return has & (b[:, 0] < w) & (b[:, 1] < h) & (b[:, 2] > 0) & (b[:, 3] > 0)

    def to_bitmaps(self, height: int, width: int) -> np.ndarray:
        """bool ``[N, height, width]``: each instance's polygons rasterised together (union), by pycocotools' RLE
        rasteriser, as MMDetection's ``PolygonMasks.to_ndarray`` does for the Ins loss's targets. Polygons with
        fewer than 3 points are ignored; an instance without any gives an empty mask."""
        from pycocotools import mask as mask_utils

        out = np.zeros((len(self), height, width), bool)
        for i, inst in enumerate(self.polygons):
            flat = [p.astype(np.float64).reshape(-1).tolist() for p in inst if len(p) >= 3]
            if flat:
                rle = mask_utils.merge(mask_utils.frPyObjects(flat, height, width))
                out[i] = mask_utils.decode(rle).astype(bool)
        return out

    def min_area_rboxes(self) -> np.ndarray:
        """float32 ``[N, 5]`` le90: the minimum-area rectangle around each instance's points (zeros without)."""
        return polygon_to_rbox([np.concatenate(inst) if inst else np.zeros((0, 2), np.float32)
                                for inst in self.polygons])
