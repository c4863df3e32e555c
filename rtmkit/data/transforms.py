"""The RTMDet training transforms (fact sheet D.3-D.4), NumPy/OpenCV, on plain sample dicts.

Every transform is a small class called as ``transform(sample, rng) -> sample | None`` with an explicit
``numpy.random.Generator``; ``None`` rejects the sample (RandomCrop with no gt left, FilterAnnotations), and the
dataset then resamples, as MMDetection does. The random draws follow the reference's order and distributions
(probability tests, ranges, integer bounds), and the geometry is MMDetection's (mosaic canvas and quadrant
placement, keep-ratio sizes, crop offsets, clipping and the "inside the image" filter).

Samples: ``image`` (HxWx3 BGR uint8), the annotations, other keys passed through. The transforms move the
annotations as one :class:`~rtmkit.structures.Instances` (``Instances.from_sample`` / ``to_sample``): ``labels``
(int64 [N]) with whichever of ``boxes`` (float32 [N, 4] xyxy), ``rboxes`` (float32 [N, 5] cx, cy, w, h, angle,
le90) and ``masks`` the sample has, and ``ignore_boxes`` (float32 [M, 4], crowd regions: transformed and filtered
like boxes, as MMDetection carries its ignored instances; RandomCrop and CachedMixUp count them as gt like the
reference does). A transform scales, shifts, flips, clips and selects the container once and every field follows;
which instances are inside the image is decided on the axis boxes (on the rotated boxes' centres for a sample with
rotated boxes only). Transforms never write into their input arrays (cached samples are shared, not copied).

Masks are kept as polygons (list per instance of float32 [K, 2] arrays): scaled, translated and flipped exactly
like the boxes, and clipped to the image wherever boxes are clipped, with a real polygon clip (Sutherland-Hodgman
against the rectangle, as MMDetection's PolygonMasks.crop intersects with shapely; its mosaic/mixup translate
only clamps coordinates). A polygon clipped away is dropped; an instance may end with no polygon. Rotated boxes are
never clipped (MMRotate's rule: they keep their shape across the border), and RandomCrop's ``recompute_bbox``
recomputes the axis boxes only. A mosaic or mixup of images of which one lacks masks (or rotated boxes) drops them.

Known difference: CachedMixUp with a jitter ratio other than 1 resizes the uint8 canvas where MMDetection resizes
a float64 one and truncates; the recipe uses ratio_range (1.0, 1.0), where both are identical.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from ..structures import AxisBoxes, Instances, PolygonMasks, clip_polygon

Sample = dict[str, Any]
__all__ = ["MEAN_BGR", "STD_BGR", "SIZE_SETTINGS", "CachedMixUp", "CachedMosaic", "Compose", "FilterAnnotations",
           "LetterBox", "Pad", "RandomCrop", "RandomFlip", "RandomResize", "YOLOXHSVRandomAug", "build_train_pipeline",
           "build_val_pipeline", "clip_polygon", "masks_to_boxes", "rescale_size", "size_key"]

MEAN_BGR = (103.53, 116.28, 123.675)
STD_BGR = (57.375, 57.12, 58.395)


def _wh(size: int | Sequence[int]) -> tuple[int, int]:
    """A size as (w, h): an int is square, a pair is MMDetection's (w, h)."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    return int(size[0]), int(size[1])


# ------------------------------------------------------------------------------------------------ annotations


def masks_to_boxes(masks: list[list[np.ndarray]]) -> np.ndarray:
    """Bounds of each instance's polygons (zeros for an instance without polygon, as MMDetection)."""
    return PolygonMasks(masks).bounding_xyxy()


def _num_gt(sample: Sample) -> int:
    return Instances.from_sample(sample).num_gt


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    if img.shape[1] == w and img.shape[0] == h:
        return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


def rescale_size(h: int, w: int, scale: tuple[int, int]) -> tuple[int, int]:
    """MMCV ``rescale_size`` for a (w, h) target: factor min(long/max(h, w), short/min(h, w)), new size
    int(x * f + 0.5). Returns the new (h, w)."""
    f = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(h * f + 0.5), int(w * f + 0.5)


# ------------------------------------------------------------------------------------------------- transforms


class Compose:
    """Run transforms in order; ``None`` from any of them rejects the sample."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample | None:
        for t in self.transforms:
            sample = t(sample, rng)
            if sample is None:
                return None
        return sample

    def reset(self) -> None:
        """Empty the caches of the cached transforms."""
        for t in self.transforms:
            if hasattr(t, "cache"):
                t.cache.clear()

    def __repr__(self) -> str:
        return "Compose(\n" + "".join(f"    {t!r},\n" for t in self.transforms) + ")"


class _Cached:
    """The cache of CachedMosaic / CachedMixUp: append, then pop one (random or oldest) when over capacity."""

    def __init__(self, max_cached_images: int, random_pop: bool):
        self.max_cached_images = max_cached_images
        self.random_pop = random_pop
        self.cache: list[Sample] = []

    def _push(self, sample: Sample, rng: np.random.Generator) -> None:
        self.cache.append(sample)
        if len(self.cache) > self.max_cached_images:
            index = int(rng.integers(0, len(self.cache))) if self.random_pop else 0
            self.cache.pop(index)

    def __getstate__(self) -> dict:  # DataLoader workers start with empty caches, as in the reference
        state = self.__dict__.copy()
        state["cache"] = []
        return state


class CachedMosaic(_Cached):
    """MMDetection's CachedMosaic: the sample and 3 cached ones in the quadrants of a 2x canvas around a random
    centre. Caches the sample first; passes it through unchanged while the cache holds <= 4 samples."""

    def __init__(self, img_scale: int | Sequence[int] = 640, center_ratio_range: tuple[float, float] = (0.5, 1.5),
                 pad_val: float = 114, prob: float = 1.0, max_cached_images: int = 40, random_pop: bool = True,
                 bbox_clip_border: bool = True):
        if max_cached_images < 4:
            raise ValueError(f"max_cached_images must be >= 4, got {max_cached_images}")
        super().__init__(max_cached_images, random_pop)
        self.img_scale = _wh(img_scale)
        self.center_ratio_range = center_ratio_range
        self.pad_val = pad_val
        self.prob = prob
        self.bbox_clip_border = bbox_clip_border

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        self._push(sample, rng)
        if len(self.cache) <= 4:
            return sample
        if rng.random() > self.prob:
            return sample
        picks = [self.cache[int(rng.integers(0, len(self.cache)))] for _ in range(3)]
        W, H = self.img_scale
        cx = int(rng.uniform(*self.center_ratio_range) * W)
        cy = int(rng.uniform(*self.center_ratio_range) * H)
        return self.combine(sample, picks, (cx, cy))

    def combine(self, sample: Sample, others: Sequence[Sample], center: tuple[int, int]) -> Sample:
        """The deterministic part: ``sample`` top-left, ``others`` top-right, bottom-left, bottom-right."""
        W, H = self.img_scale
        cx, cy = center
        canvas = np.full((2 * H, 2 * W, 3), self.pad_val, np.uint8)
        parts: list[Instances] = []
        for k, s in enumerate([sample, *others]):
            h, w = s["image"].shape[:2]
            r = min(H / h, W / w)
            nw, nh = int(w * r), int(h * r)
            img = _resize(s["image"], nw, nh)
            x0 = cx - nw if k in (0, 2) else cx  # left quadrants end at the centre, right ones start there
            y0 = cy - nh if k in (0, 1) else cy
            px1, py1, px2, py2 = max(x0, 0), max(y0, 0), min(x0 + nw, 2 * W), min(y0 + nh, 2 * H)
            canvas[py1:py2, px1:px2] = img[py1 - y0:py2 - y0, px1 - x0:px2 - x0]
            parts.append(Instances.from_sample(s).scale(r, r).translate(x0, y0))
        inst = Instances.concat(parts)  # a field missing from one image (masks, rboxes) is dropped
        if self.bbox_clip_border:
            inst = inst.clip((2 * H, 2 * W))
        return inst.filter_inside((2 * H, 2 * W)).to_sample(sample, image=canvas)

    def __repr__(self) -> str:
        return (f"CachedMosaic(img_scale={self.img_scale}, center_ratio_range={self.center_ratio_range}, "
                f"pad_val={self.pad_val}, prob={self.prob}, max_cached_images={self.max_cached_images}, "
                f"random_pop={self.random_pop})")


class RandomResize:
    """MMCV RandomResize with ratio_range: r ~ U(ratio_range), target (int(w r), int(h r)); keep-ratio resize
    (MMCV rescale rule, OpenCV bilinear), boxes scaled by (new_w / w, new_h / h) and clipped to the image."""

    def __init__(self, scale: int | Sequence[int] = 1280, ratio_range: tuple[float, float] = (0.1, 2.0),
                 keep_ratio: bool = True, clip_object_border: bool = True):
        self.scale = _wh(scale)
        self.ratio_range = ratio_range
        self.keep_ratio = keep_ratio
        self.clip_object_border = clip_object_border

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        lo, hi = self.ratio_range
        ratio = rng.random() * (hi - lo) + lo
        target = (int(self.scale[0] * ratio), int(self.scale[1] * ratio))
        return self.resize(sample, target)

    def resize(self, sample: Sample, target: tuple[int, int]) -> Sample:
        """Resize to the (w, h) ``target`` (keep-ratio: fit inside it)."""
        h, w = sample["image"].shape[:2]
        nh, nw = rescale_size(h, w, target) if self.keep_ratio else (target[1], target[0])
        inst = Instances.from_sample(sample).scale(nw / w, nh / h)
        if self.clip_object_border:
            inst = inst.clip((nh, nw))
        return inst.to_sample(sample, image=_resize(sample["image"], nw, nh))

    def __repr__(self) -> str:
        return f"RandomResize(scale={self.scale}, ratio_range={self.ratio_range}, keep_ratio={self.keep_ratio})"


class RandomCrop:
    """MMDetection RandomCrop, ``crop_type='absolute'``: crop (min(ch, h), min(cw, w)) at offsets
    U{0..h - ch} (drawn first) and U{0..w - cw}; boxes shifted, clipped, kept if still inside. A crop without
    any box left (ignore boxes count, as in the reference) is rejected (``None``) unless
    ``allow_negative_crop``. ``recompute_bbox``: boxes become the bounds of the cropped polygons."""

    def __init__(self, crop_size: int | Sequence[int] = 640, allow_negative_crop: bool = False,
                 recompute_bbox: bool = False, bbox_clip_border: bool = True):
        self.crop_size = _wh(crop_size)
        self.allow_negative_crop = allow_negative_crop
        self.recompute_bbox = recompute_bbox
        self.bbox_clip_border = bbox_clip_border

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample | None:
        h, w = sample["image"].shape[:2]
        ch, cw = min(self.crop_size[1], h), min(self.crop_size[0], w)
        oy = int(rng.integers(0, max(h - ch, 0) + 1))
        ox = int(rng.integers(0, max(w - cw, 0) + 1))
        return self.crop(sample, ox, oy)

    def crop(self, sample: Sample, ox: int, oy: int) -> Sample | None:
        """Crop at offset (ox, oy)."""
        h, w = sample["image"].shape[:2]
        ch, cw = min(self.crop_size[1], h), min(self.crop_size[0], w)
        inst = Instances.from_sample(sample).translate(-ox, -oy)
        if self.bbox_clip_border:
            inst = inst.clip((ch, cw))
        elif inst.masks is not None:
            inst = inst.replace(masks=inst.masks.clip((ch, cw)))  # masks are always cropped
        keep, keep_ign = inst.is_inside((ch, cw))
        if not keep.any() and not keep_ign.any() and not self.allow_negative_crop:
            return None
        inst = inst.select(keep, keep_ign)
        if self.recompute_bbox and inst.masks is not None:
            # axis boxes only: a rotated box describes the whole object, not its visible part
            inst = inst.replace(boxes=AxisBoxes(inst.masks.bounding_xyxy()))
        return inst.to_sample(sample, image=sample["image"][oy:oy + ch, ox:ox + cw])

    def __repr__(self) -> str:
        return (f"RandomCrop(crop_size={self.crop_size}, allow_negative_crop={self.allow_negative_crop}, "
                f"recompute_bbox={self.recompute_bbox})")


class YOLOXHSVRandomAug:
    """Gains U(-1, 1) * (5, 30, 30) for (H, S, V), each zeroed with probability 0.5, cast to int16; OpenCV HSV,
    H + gain mod 180, S and V + gain clipped to [0, 255], back to BGR (always, even with zero gains)."""

    def __init__(self, hue_delta: int = 5, saturation_delta: int = 30, value_delta: int = 30):
        self.hue_delta = hue_delta
        self.saturation_delta = saturation_delta
        self.value_delta = value_delta

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        gains = rng.uniform(-1, 1, 3) * [self.hue_delta, self.saturation_delta, self.value_delta]
        gains *= rng.integers(0, 2, 3)
        return self.apply(sample, gains.astype(np.int16))

    @staticmethod
    def apply(sample: Sample, gains: Sequence[int]) -> Sample:
        """Apply integer (H, S, V) gains (lookup tables give exactly the reference's int16 arithmetic)."""
        x = np.arange(256, dtype=np.int16)
        lut = np.stack([(x + gains[0]) % 180, np.clip(x + gains[1], 0, 255), np.clip(x + gains[2], 0, 255)],
                       axis=-1).astype(np.uint8).reshape(1, 256, 3)
        hsv = cv2.cvtColor(sample["image"], cv2.COLOR_BGR2HSV)
        out = dict(sample)
        out["image"] = cv2.cvtColor(cv2.LUT(hsv, lut), cv2.COLOR_HSV2BGR)
        return out

    def __repr__(self) -> str:
        return f"YOLOXHSVRandomAug(hue_delta={self.hue_delta}, saturation_delta={self.saturation_delta}, " \
               f"value_delta={self.value_delta})"


_CV2_FLIP_CODES = {"horizontal": 1, "vertical": 0, "diagonal": -1}


class RandomFlip:
    """MMDetection RandomFlip, one uniform draw ``u``. One direction (the recipe: horizontal): flip when
    ``u < prob``. Several (RTMDet-R: ``["horizontal", "vertical", "diagonal"]``), with ``prob`` a list or a total
    split evenly: the first direction whose cumulative probability exceeds ``u``, none when ``u`` is beyond them
    all. Horizontal: x1' = W - x2, x2' = W - x1; vertical the same in y; diagonal both."""

    def __init__(self, prob: float | Sequence[float] = 0.5, direction: str | Sequence[str] = "horizontal"):
        self.prob = prob
        self.direction = direction
        directions = [direction] if isinstance(direction, str) else list(direction)
        if np.ndim(prob) == 0:
            probs = [float(prob) / len(directions)] * len(directions)
        else:
            probs = [float(p) for p in prob]
        if len(probs) != len(directions) or any(d not in _CV2_FLIP_CODES for d in directions) or sum(probs) > 1:
            raise ValueError(f"RandomFlip: bad prob {prob!r} / direction {direction!r}")
        self._choices = list(zip(np.cumsum(probs).tolist(), directions))

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        u = rng.random()
        for bound, direction in self._choices:
            if u < bound:
                return self.flip(sample, direction)
        return sample

    @staticmethod
    def flip(sample: Sample, direction: str = "horizontal") -> Sample:
        img = sample["image"]
        inst = Instances.from_sample(sample).flip(img.shape[:2], direction)
        return inst.to_sample(sample, image=cv2.flip(img, _CV2_FLIP_CODES[direction]))

    def __repr__(self) -> str:
        return f"RandomFlip(prob={self.prob}, direction={self.direction!r})"


class Pad:
    """Pad bottom and right to ``size`` with ``pad_val`` (boxes unchanged)."""

    def __init__(self, size: int | Sequence[int] = 640, pad_val: int = 114):
        self.size = _wh(size)
        self.pad_val = pad_val

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        img = sample["image"]
        h, w = img.shape[:2]
        W, H = self.size
        if h > H or w > W:
            raise ValueError(f"Pad: image {w}x{h} is larger than the pad size {W}x{H}")
        if (h, w) == (H, W):
            return sample
        out = dict(sample)
        out["image"] = cv2.copyMakeBorder(img, 0, H - h, 0, W - w, cv2.BORDER_CONSTANT, value=(self.pad_val,) * 3)
        return out

    def __repr__(self) -> str:
        return f"Pad(size={self.size}, pad_val={self.pad_val})"


class CachedMixUp(_Cached):
    """MMDetection's CachedMixUp: caches the sample; with > 1 cached, picks one with gt (up to ``max_iters``
    tries), fits it into an ``img_scale`` canvas of ``pad_val`` (ratio min(H/h, W/w), int sizes), jitters the
    canvas by U(ratio_range), flips it when U(0, 1) > flip_ratio, pads it to cover the current image, crops it at
    a random offset (y drawn first) to the current image's size, and blends 0.5/0.5 (float, truncated to uint8).
    Its boxes are scaled, clipped, flipped, shifted, clipped again and appended; all boxes are then filtered to
    those inside the image."""

    def __init__(self, img_scale: int | Sequence[int] = 640, ratio_range: tuple[float, float] = (0.5, 1.5),
                 flip_ratio: float = 0.5, pad_val: int = 114, max_iters: int = 15, bbox_clip_border: bool = True,
                 max_cached_images: int = 20, random_pop: bool = True, prob: float = 1.0):
        if max_cached_images < 2:
            raise ValueError(f"max_cached_images must be >= 2, got {max_cached_images}")
        super().__init__(max_cached_images, random_pop)
        self.img_scale = _wh(img_scale)
        self.ratio_range = ratio_range
        self.flip_ratio = flip_ratio
        self.pad_val = pad_val
        self.max_iters = max_iters
        self.bbox_clip_border = bbox_clip_border
        self.prob = prob

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        self._push(sample, rng)
        if len(self.cache) <= 1:
            return sample
        if rng.random() > self.prob:
            return sample
        for _ in range(self.max_iters):
            other = self.cache[int(rng.integers(0, len(self.cache)))]
            if _num_gt(other):
                break
        if not _num_gt(other):
            return sample
        jit = rng.uniform(*self.ratio_range)
        is_flip = rng.random() > self.flip_ratio
        th, tw = sample["image"].shape[:2]
        W, H = self.img_scale
        h, w = other["image"].shape[:2]
        r = min(H / h, W / w)
        canvas = np.full((H, W, 3), self.pad_val, np.uint8)
        canvas[:int(h * r), :int(w * r)] = _resize(other["image"], int(w * r), int(h * r))
        canvas = _resize(canvas, int(W * jit), int(H * jit))
        oh, ow = canvas.shape[:2]
        ph, pw = max(oh, th), max(ow, tw)
        y_off = int(rng.integers(0, ph - th + 1)) if ph > th else 0
        x_off = int(rng.integers(0, pw - tw + 1)) if pw > tw else 0
        return self.mix(sample, other, r * jit, is_flip, (x_off, y_off), canvas)

    def mix(self, sample: Sample, other: Sample, scale: float, is_flip: bool, offset: tuple[int, int],
            canvas: np.ndarray | None = None) -> Sample:
        """The deterministic part. ``canvas``: the other image already fitted and jittered (computed when not
        given, for jitter 1)."""
        if canvas is None:
            W, H = self.img_scale
            h, w = other["image"].shape[:2]
            canvas = np.full((H, W, 3), self.pad_val, np.uint8)
            canvas[:int(h * scale), :int(w * scale)] = _resize(other["image"], int(w * scale), int(h * scale))
        oh, ow = canvas.shape[:2]
        th, tw = sample["image"].shape[:2]
        x_off, y_off = offset
        if is_flip:
            canvas = cv2.flip(canvas, 1)
        padded = np.full((max(oh, th), max(ow, tw), 3), self.pad_val, np.uint8)
        padded[:oh, :ow] = canvas
        crop = padded[y_off:y_off + th, x_off:x_off + tw]
        blended = ((sample["image"].astype(np.uint16) + crop) >> 1).astype(np.uint8)  # == (0.5a + 0.5b) truncated

        o = Instances.from_sample(other).scale(scale, scale)
        if self.bbox_clip_border:
            o = o.clip((oh, ow))
        if is_flip:
            o = o.flip((oh, ow), "horizontal")
        o = o.translate(-x_off, -y_off)
        if self.bbox_clip_border:
            o = o.clip((th, tw))
        inst = Instances.concat([Instances.from_sample(sample), o])  # a field one of them lacks is dropped
        return inst.filter_inside((th, tw)).to_sample(sample, image=blended)

    def __repr__(self) -> str:
        return (f"CachedMixUp(img_scale={self.img_scale}, ratio_range={self.ratio_range}, "
                f"flip_ratio={self.flip_ratio}, pad_val={self.pad_val}, max_iters={self.max_iters}, "
                f"max_cached_images={self.max_cached_images}, random_pop={self.random_pop}, prob={self.prob})")


class FilterAnnotations:
    """MMDetection FilterAnnotations (RTMDet-Ins): keep boxes with w > min_w and h > min_h; when a sample had
    boxes and none survives, reject it (``keep_empty=True``, the reference's default)."""

    def __init__(self, min_gt_bbox_wh: tuple[float, float] = (1, 1), keep_empty: bool = True):
        self.min_gt_bbox_wh = min_gt_bbox_wh
        self.keep_empty = keep_empty

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample | None:
        inst = Instances.from_sample(sample)
        if inst.num_gt == 0:
            return sample

        def ok(wh: np.ndarray) -> np.ndarray:
            return (wh[:, 0] > self.min_gt_bbox_wh[0]) & (wh[:, 1] > self.min_gt_bbox_wh[1])

        keep, keep_ign = ok(inst.wh), ok(inst.ignore_boxes.wh)  # sizes of the boxes (else rboxes, else masks)
        if not keep.any() and not keep_ign.any() and self.keep_empty:
            return None
        return inst.select(keep, keep_ign).to_sample(sample)

    def __repr__(self) -> str:
        return f"FilterAnnotations(min_gt_bbox_wh={self.min_gt_bbox_wh}, keep_empty={self.keep_empty})"


class LetterBox:
    """Validation/test preprocessing: keep-ratio resize to fit ``size`` (int(x * f + 0.5) sizes, bilinear), pad
    bottom/right with 114 (rtmkit.data.preprocess.letterbox); boxes scaled by (w_scale, h_scale). Adds
    ``scale_factor``."""

    def __init__(self, size: int = 640, pad_val: int = 114):
        self.size = size
        self.pad_val = pad_val

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        from .preprocess import letterbox

        img, (ws, hs) = letterbox(sample["image"], self.size, self.pad_val)
        return Instances.from_sample(sample).scale(ws, hs).to_sample(sample, image=img, scale_factor=(ws, hs))

    def __repr__(self) -> str:
        return f"LetterBox(size={self.size}, pad_val={self.pad_val})"


# ------------------------------------------------------------------------------------------------- the recipe

SIZE_SETTINGS: dict[str, dict[str, Any]] = {
    # ratio range of RandomResize; CachedMosaic (cache, random_pop); CachedMixUp (cache, random_pop, prob)
    "tiny": {"ratio_range": (0.5, 2.0), "mosaic": (20, False), "mixup": (10, False, 0.5)},
    "s": {"ratio_range": (0.5, 2.0), "mosaic": (40, True), "mixup": (20, True, 1.0)},
    "m": {"ratio_range": (0.1, 2.0), "mosaic": (40, True), "mixup": (20, True, 1.0)},
    "l": {"ratio_range": (0.1, 2.0), "mosaic": (40, True), "mixup": (20, True, 1.0)},
    "x": {"ratio_range": (0.1, 2.0), "mosaic": (40, True), "mixup": (20, True, 1.0)},
}
SIZE_SETTINGS["nano"] = SIZE_SETTINGS["tiny"]  # no official nano detection recipe: the lightest one


def size_key(size_name: str) -> str:
    """``"tiny"``, ``"rtmdet-s"``, ``"rtmdet-ins-m"``, ``"x-p6"`` -> the recipe's size key."""
    name = size_name.lower().replace("_", "-")
    for prefix in ("rtmdet-", "ins-", "r-"):
        name = name.removeprefix(prefix)
    name = name.removesuffix("-p6")
    if name not in SIZE_SETTINGS:
        raise ValueError(f"unknown RTMDet size {size_name!r}; expected one of {', '.join(SIZE_SETTINGS)}")
    return name


def build_train_pipeline(size_name: str = "tiny", img_scale: int = 640, stage: int = 1,
                         instance_masks: bool = False) -> Compose:
    """The RTMDet training pipeline of a size (fact sheet D.3-D.4).

    Stage 1: CachedMosaic(img_scale) -> RandomResize(2 * img_scale, ratio) -> RandomCrop(img_scale) -> HSV ->
    RandomFlip(0.5) -> Pad(img_scale, 114) -> CachedMixUp(img_scale, ratio (1, 1)). Stage 2 (last epochs):
    RandomResize(img_scale, ratio) -> RandomCrop -> HSV -> RandomFlip -> Pad. ``img_scale=1280`` gives the P6
    recipe (everything x2). ``instance_masks``: the RTMDet-Ins variant (RandomCrop with recompute_bbox and
    allow_negative_crop, FilterAnnotations(min_gt_bbox_wh=(1, 1)) after MixUp / after RandomCrop in stage 2).
    """
    cfg = SIZE_SETTINGS[size_key(size_name)]
    ratio = cfg["ratio_range"]
    crop = RandomCrop(img_scale, allow_negative_crop=instance_masks, recompute_bbox=instance_masks)
    if stage == 2:
        ts: list[Callable] = [RandomResize(img_scale, ratio), crop]
        if instance_masks:
            ts.append(FilterAnnotations((1, 1)))
        ts += [YOLOXHSVRandomAug(), RandomFlip(0.5), Pad(img_scale, 114)]
        return Compose(ts)
    if stage != 1:
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    mosaic_cache, mosaic_pop = cfg["mosaic"]
    mix_cache, mix_pop, mix_prob = cfg["mixup"]
    ts = [CachedMosaic(img_scale, pad_val=114, max_cached_images=mosaic_cache, random_pop=mosaic_pop),
          RandomResize(2 * img_scale, ratio), crop, YOLOXHSVRandomAug(), RandomFlip(0.5), Pad(img_scale, 114),
          CachedMixUp(img_scale, ratio_range=(1.0, 1.0), max_cached_images=mix_cache, random_pop=mix_pop,
                      prob=mix_prob, pad_val=114)]
    if instance_masks:
        ts.append(FilterAnnotations((1, 1)))
    return Compose(ts)


def build_val_pipeline(img_scale: int = 640) -> Compose:
    """Test-time preprocessing: keep-ratio resize + pad 114 (no randomness)."""
    return Compose([LetterBox(img_scale, 114)])
