"""The annotations of one sample in one container, moved together by the geometric transforms.

``Instances`` holds ``labels`` (int64 ``[N]``) and any of the instance-aligned geometric fields ``boxes``
(:class:`AxisBoxes`), ``rboxes`` (:class:`RotatedBoxes`) and ``masks`` (:class:`PolygonMasks`), plus the sample's
``ignore_boxes`` (:class:`AxisBoxes`, ``[M, 4]`` crowd regions, not aligned with the instances). A geometric
operation (``scale``, ``translate``, ``flip``, ``clip``) applies to every geometric field, ignore boxes included;
``select`` keeps the same instances in every aligned field, labels included. So a transform writes
``inst = inst.scale(sx, sy)`` once, whatever the sample carries.

Sample dicts (``rtmkit.data``) hold the fields under the keys of :data:`SAMPLE_KEYS`: ``boxes`` float32 [N, 4],
``rboxes`` float32 [N, 5], ``masks`` (list per instance of float32 [K, 2] polygons), ``labels`` int64 [N] and
``ignore_boxes`` float32 [M, 4]; :meth:`Instances.from_sample` and :meth:`Instances.to_sample` convert.

Which instances lie inside an image (``is_inside``) and their sizes (``wh``) are read from the *primary* field:
the axis boxes when present, else the rotated boxes (centre inside the image, MMRotate's rule), else the masks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .boxes import AxisBoxes, RotatedBoxes, index_array
from .masks import PolygonMasks

# field -> sample key; the order is the order of to_sample's keys
SAMPLE_KEYS = {"boxes": "boxes", "rboxes": "rboxes", "masks": "masks", "labels": "labels",
               "ignore_boxes": "ignore_boxes"}
GEOMETRIC_FIELDS = ("boxes", "rboxes", "masks")

Geometry = AxisBoxes | RotatedBoxes | PolygonMasks


class Instances:
    """``labels`` int64 ``[N]``; optional ``boxes`` / ``rboxes`` / ``masks`` of length N; ``ignore_boxes`` (empty
    when not given). Immutable: the operations return new containers sharing untouched fields."""

    def __init__(self, labels: Any, boxes: AxisBoxes | None = None, rboxes: RotatedBoxes | None = None,
                 masks: PolygonMasks | None = None, ignore_boxes: AxisBoxes | None = None):
        labels = np.asarray(labels, np.int64)
        self.labels = labels if labels.ndim == 1 else labels.reshape(-1)
        self.boxes = boxes
        self.rboxes = rboxes
        self.masks = masks
        self.ignore_boxes = ignore_boxes if ignore_boxes is not None else AxisBoxes()
        for name in GEOMETRIC_FIELDS:
            field = getattr(self, name)
            if field is not None and len(field) != len(self.labels):
                raise ValueError(f"Instances: {len(field)} {name} for {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        fields = ", ".join(n for n in GEOMETRIC_FIELDS if getattr(self, n) is not None)
        return f"Instances({len(self)} instances [{fields}], {len(self.ignore_boxes)} ignore boxes)"

    @property
    def fields(self) -> dict[str, Geometry]:
        """The instance-aligned geometric fields present."""
        return {n: getattr(self, n) for n in GEOMETRIC_FIELDS if getattr(self, n) is not None}

    @property
    def num_gt(self) -> int:
        """Instances plus ignore boxes (what MMDetection counts as gt when it rejects an empty crop or mixup)."""
        return len(self) + len(self.ignore_boxes)

    def replace(self, **fields: Any) -> Instances:
        """A copy with some fields replaced (``None`` removes an optional field)."""
        kw = {"labels": self.labels, "ignore_boxes": self.ignore_boxes, **self.fields, **fields}
        return Instances(**kw)

    # -- geometry: every geometric field, ignore boxes included
    def _apply(self, op: str, *args: Any) -> Instances:
        kw: dict[str, Any] = {n: getattr(f, op)(*args) for n, f in self.fields.items()}
        return Instances(self.labels, ignore_boxes=getattr(self.ignore_boxes, op)(*args), **kw)

    def scale(self, sx: float, sy: float) -> Instances:
        return self._apply("scale", sx, sy)

    def translate(self, dx: float, dy: float) -> Instances:
        return self._apply("translate", dx, dy)

    def flip(self, size_hw: Sequence[float], direction: str = "horizontal") -> Instances:
        return self._apply("flip", size_hw, direction)

    def clip(self, size_hw: Sequence[float]) -> Instances:
        """Clip each field its own way: axis boxes clamped, polygons clipped, rotated boxes left as they are."""
        return self._apply("clip", size_hw)

    # -- selection
    def select(self, index: Any, ignore_index: Any = None) -> Instances:
        """Keep the instances at ``index`` (bool mask or indices) in every aligned field, labels included; and the
        ignore boxes at ``ignore_index`` when given (they are not aligned with the instances)."""
        idx = index_array(index, len(self))
        kw: dict[str, Any] = {n: f.select(idx) for n, f in self.fields.items()}
        ignore = self.ignore_boxes if ignore_index is None else self.ignore_boxes.select(ignore_index)
        return Instances(self.labels[idx], ignore_boxes=ignore, **kw)

    @property
    def primary(self) -> Geometry | None:
        """The field deciding inside-ness and sizes: boxes, else rboxes, else masks (None without any)."""
        for name in GEOMETRIC_FIELDS:
            if getattr(self, name) is not None:
                return getattr(self, name)
        return None

    def is_inside(self, size_hw: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """bool ``[N]`` (from the primary field) and bool ``[M]`` (ignore boxes): inside an image of ``size_hw``."""
        primary = self.primary
        keep = primary.is_inside(size_hw) if primary is not None else np.ones(len(self), bool)
        return keep, self.ignore_boxes.is_inside(size_hw)

    def filter_inside(self, size_hw: Sequence[float]) -> Instances:
        return self.select(*self.is_inside(size_hw))

    @property
    def wh(self) -> np.ndarray:
        """float32 ``[N, 2]`` sizes from the primary field (zeros without one)."""
        primary = self.primary
        return primary.wh if primary is not None else np.zeros((len(self), 2), np.float32)

    @classmethod
    def concat(cls, items: Sequence[Instances]) -> Instances:
        """Instances one after the other. A geometric field is kept only when every item has it (as the mosaic
        and mixup of MMDetection, which need all of their images to carry masks to keep masks)."""
        if not items:
            raise ValueError("Instances.concat of nothing")
        kw: dict[str, Any] = {}
        for name, kind in (("boxes", AxisBoxes), ("rboxes", RotatedBoxes), ("masks", PolygonMasks)):
            parts = [getattr(i, name) for i in items]
            if all(p is not None for p in parts):
                kw[name] = kind.concat(parts)
        labels = np.concatenate([i.labels for i in items]).astype(np.int64)
        return cls(labels, ignore_boxes=AxisBoxes.concat([i.ignore_boxes for i in items]), **kw)

    # -- sample dicts
    @classmethod
    def from_sample(cls, sample: Mapping[str, Any]) -> Instances:
        """Wrap a sample dict's annotations (no copy of float32 arrays; rotated boxes are regularised to le90)."""
        get = sample.get
        boxes, rboxes, masks, ignore = (get(SAMPLE_KEYS[n]) for n in ("boxes", "rboxes", "masks", "ignore_boxes"))
        return cls(sample[SAMPLE_KEYS["labels"]],
                   boxes=AxisBoxes(boxes) if boxes is not None else None,
                   rboxes=RotatedBoxes(rboxes) if rboxes is not None else None,
                   masks=PolygonMasks(masks) if masks is not None else None,
                   ignore_boxes=AxisBoxes(ignore) if ignore is not None else None)

    def to_sample(self, sample: Mapping[str, Any] | None = None, **updates: Any) -> dict[str, Any]:
        """A new dict: ``sample``'s other keys, these annotations (an absent optional field removes its key), then
        ``updates`` (e.g. ``image=...``). ``sample`` itself is not changed."""
        out = dict(sample) if sample is not None else {}
        out[SAMPLE_KEYS["labels"]] = self.labels
        for name, value in (("boxes", self.boxes), ("rboxes", self.rboxes)):
            if value is None:
                out.pop(SAMPLE_KEYS[name], None)
            else:
                out[SAMPLE_KEYS[name]] = value.data
        if self.masks is None:
            out.pop(SAMPLE_KEYS["masks"], None)
        else:
            out[SAMPLE_KEYS["masks"]] = self.masks.polygons
        out[SAMPLE_KEYS["ignore_boxes"]] = self.ignore_boxes.data
        out.update(updates)
        return out

