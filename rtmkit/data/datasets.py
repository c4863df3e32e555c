"""Detection datasets: COCO json and Ultralytics YOLO txt, as plain sample dicts.

A sample (what ``dataset[i]`` returns) is a dict::

    image         HxWx3 BGR uint8 (OpenCV decode, as the reference)
    boxes         float32 [N, 4] xyxy pixels
    labels        int64 [N] contiguous class indices
    ignore_boxes  float32 [M, 4] (COCO crowd regions: never used as gt)
    masks         (only when the annotations have any) list of N instances, each a list of float32 [K, 2] polygons
                  (x, y) in pixels; an instance without a polygon has an empty list; a non-crowd RLE mask is
                  turned into polygons (outer contours) when loaded
    path          image file (str)
    image_id      COCO image id (YOLO: the sample's index in the split)
    orig_shape    (h, w) of the decoded image

COCO loading follows MMDetection's ``CocoDataset`` (fact sheet D.3): bbox [x, y, w, h] -> [x, y, x + w, y + h];
annotations whose box has no overlap with the image, ``area <= 0``, ``w < 1`` or ``h < 1`` are dropped; crowd
annotations become ``ignore_boxes``; labels are contiguous in category-id order; ``filter_empty_gt`` keeps only
images that have at least one annotation of the selected categories (crowd included, as in the reference) and
``min_size`` keeps images whose json width and height are both ``>= min_size``. Boxes partly outside the image are
clipped to it (every training transform clips as well, so this changes nothing downstream).

Bad samples, decided as follows (each problem is recorded in ``dataset.problems`` and warned about with a
:class:`DatasetWarning` naming the file, and the line or annotation id):

- missing image file: the sample is skipped (counted in ``dataset.num_skipped``);
- corrupt image: found when it is decoded: ``dataset[i]`` raises :class:`~rtmkit.data.images.ImageReadError`;
  :class:`rtmkit.data.loader.TrainDataset` warns once per file and resamples. :func:`rtmkit.data.check.check_dataset`
  decodes every image and lists them;
- malformed label line / annotation, unknown class id, non-finite or non-normalised values: the whole sample is
  skipped (training on an image with a dropped object would teach the model that the object is background);
- box partly outside the image: clipped (recorded as information, not warned);
- box of zero size after clipping (or narrower/lower than 1 px in COCO): that box is dropped;
- an unreadable annotation file, or nothing usable left: :class:`DatasetError`.
"""

from __future__ import annotations

import copy
import json
import math
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .images import IMAGE_EXTENSIONS, read_image

MAX_WARNINGS = 20  # individual warnings per dataset; the rest are summarised in one


class DatasetError(ValueError):
    """A dataset that cannot be used at all (unreadable annotation file, nothing valid left)."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()):
        super().__init__(message)
        self.problems = list(problems)


class DatasetWarning(UserWarning):
    """A bad sample or box that was skipped, dropped or clipped while loading a dataset."""


@dataclass
class Problem:
    """One problem found in a dataset. ``file`` is the image (or label) file concerned, ``where`` the exact place
    (``labels/a.txt:3``, ``instances.json annotation id 17``), ``action`` what was done about it."""

    file: str
    kind: str  # missing_image, corrupt_image, malformed, unknown_class, non_finite, out_of_image, zero_size, ...
    message: str
    action: str  # "skipped sample", "dropped box", "clipped box", "ignored", "error"
    where: str = ""
    line: int | None = None

    @property
    def is_warning(self) -> bool:
        return self.action != "clipped box"

    def __str__(self) -> str:
        place = self.where or self.file
        return f"{place}: {self.message} ({self.action})"


def _emit(problems: Sequence[Problem], owner: str, max_warnings: int = MAX_WARNINGS) -> None:
    shown = [p for p in problems if p.is_warning]
    for p in shown[:max_warnings]:
        warnings.warn(str(p), DatasetWarning, stacklevel=4)
    if len(shown) > max_warnings:
        warnings.warn(f"{owner}: {len(shown) - max_warnings} more problems not shown; "
                      "rtmkit.data.check_dataset(...) lists them all", DatasetWarning, stacklevel=4)


def _parse_file(path: Path, parse, parse_error: type[Exception], what: str, fmt: str) -> Any:
    """``parse(path's text)``, with a DatasetError naming the file when it is missing or unreadable."""
    try:
        return parse(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, parse_error) as e:
        raise DatasetError(f"{path}: not a readable {fmt} file ({e})") from None


class DetectionDataset:
    """Common part of the datasets: a list of records (annotations without pixels) and a loader.

    Subclasses fill ``records`` with dicts holding ``path``, ``image_id``, ``boxes``, ``labels``, ``ignore_boxes``
    and ``segs`` (per box None, a list of flat polygons or an RLE dict); ``normalised: True`` marks boxes and
    polygons in [0, 1] image units (YOLO), scaled to pixels when the image is loaded.
    """

    classes: tuple[str, ...]
    cat_ids: list[int]

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.problems: list[Problem] = []
        self.num_skipped = 0
        self.has_masks = False

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        image = read_image(rec["path"])
        h, w = image.shape[:2]
        boxes, ignore = rec["boxes"], rec["ignore_boxes"]
        if rec.get("normalised"):
            scale = np.array([w, h, w, h], np.float64)
            boxes = (boxes * scale).astype(np.float32)
            ignore = (ignore * scale).astype(np.float32)
        sample = {"image": image, "boxes": boxes.copy(), "labels": rec["labels"].copy(),
                  "ignore_boxes": ignore.copy(), "path": rec["path"], "image_id": rec["image_id"],
                  "orig_shape": (h, w)}
        if self.has_masks:
            sample["masks"] = [self._polygons(seg, h, w, rec.get("normalised", False)) for seg in rec["segs"]]
        return sample

    @property
    def source(self) -> str:
        """The file or folder the dataset was read from, for messages."""
        for name in ("ann_file", "data_yaml", "root"):
            if getattr(self, name, None) is not None:
                return str(getattr(self, name))
        return type(self).__name__

    def without_masks(self) -> DetectionDataset:
        """A shallow copy that does not load masks and holds no polygons (what a detection-only DataLoader should
        send to its workers: COCO's polygons are most of a COCO dataset's memory)."""
        if not self.has_masks:
            return self
        out = copy.copy(self)
        out.records = [{k: v for k, v in r.items() if k != "segs"} for r in self.records]
        out.has_masks = False
        return out

    def coco_ground_truth(self) -> dict[str, Any] | None:
        """The ground truth as a COCO dict when the dataset *is* a COCO file (evaluation then scores against the
        file itself, not against the filtered records); ``None`` for other formats."""
        return None

    def num_gt(self, index: int) -> int:
        """Number of gt boxes of a sample (without loading its image)."""
        return len(self.records[index]["boxes"])

    @staticmethod
    def _polygons(seg: Any, h: int, w: int, normalised: bool) -> list[np.ndarray]:
        if not seg:
            return []
        if isinstance(seg, dict):  # RLE (non-crowd): outer contours of the mask
            return mask_to_polygons(rle_decode(seg, h, w))
        polys = []
        for p in seg:
            a = np.asarray(p, np.float32).reshape(-1, 2)
            if normalised:
                a = a * np.array([w, h], np.float32)
            polys.append(a)
        return polys

    def _finish(self, owner: str, warn: bool) -> None:
        if warn:
            _emit(self.problems, owner)
        if not self.records:
            bad = [p for p in self.problems if p.is_warning]
            detail = "; ".join(str(p) for p in bad[:5])
            more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
            reason = f": {detail}{more}" if bad else ""
            raise DatasetError(f"{owner}: no usable samples{reason}", self.problems)


# ----------------------------------------------------------------------------------------------------------- COCO


def _refuse_duplicates(source: Path, what: str, values: Sequence[Any], why: str) -> None:
    """A DatasetError naming ``source`` and the repeated ``values`` (at most 10 shown), if any value repeats."""
    repeated = [v for v, n in Counter(values).items() if n > 1]
    if repeated:
        shown = ", ".join(repr(v) for v in repeated[:10]) + (f" and {len(repeated) - 10} more" if len(repeated) > 10
                                                              else "")
        raise DatasetError(f"{source}: duplicate {what} {shown}: {why}. Make each one unique.")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _guess_img_dir(ann_file: Path, images: list[dict]) -> Path:
    """Where the images of a COCO json are: ``<root>/annotations/instances_train2017.json`` -> ``<root>/train2017``,
    ``train.json`` -> ``train/`` beside it, else beside the json or in ``images/``."""
    stem = ann_file.stem
    parent = ann_file.parent
    candidates = [parent / stem, parent.parent / stem.split("_")[-1], parent.parent / stem, parent / "images" / stem,
                  parent.parent / "images" / stem.split("_")[-1], parent / "images", parent.parent / "images", parent]
    names = [im.get("file_name") for im in images[:20] if isinstance(im, dict) and isinstance(im.get("file_name"), str)]
    if not names:
        return parent
    for c in candidates:
        if c.is_dir() and any((c / n).is_file() for n in names):
            return c
    raise DatasetError(f"{ann_file}: cannot find its images (looked in {', '.join(str(c) for c in candidates[:4])}"
                       ", ...); pass img_dir=")


class CocoDataset(DetectionDataset):
    """A COCO-format json (``images``, ``annotations``, ``categories``) and its images.

    ``classes``: keep only these category names, label i = ``classes[i]`` (default: every category, labels in
    category-id order). ``cat_ids[label]`` is the category id, for exporting predictions back to the json.
    ``warn=False`` records the problems in ``self.problems`` without warning.
    """

    def __init__(self, ann_file: str | os.PathLike, img_dir: str | os.PathLike | None = None,
                 filter_empty_gt: bool = True, min_size: int = 32, classes: Sequence[str] | None = None,
                 warn: bool = True):
        super().__init__()
        self.ann_file = Path(ann_file)
        data = _parse_file(self.ann_file, json.loads, json.JSONDecodeError, "annotation file", "json")
        if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
                or not isinstance(data.get("categories"), list):
            raise DatasetError(f"{self.ann_file}: not a COCO annotation file (needs 'images' and 'categories' lists)")
        anns = data.get("annotations") or []
        cats = [c for c in data["categories"] if isinstance(c, dict) and "id" in c]
        cats = sorted(cats, key=lambda c: c["id"])
        _refuse_duplicates(self.ann_file, "category ids", [c["id"] for c in cats],
                           "every object of such an id would silently get one of the classes")
        _refuse_duplicates(self.ann_file, "category names", [c.get("name") for c in cats],
                           "classes could not be told apart by name")
        if classes is None:
            chosen = cats
        else:
            by_name = {c.get("name"): c for c in cats}
            missing = [n for n in classes if n not in by_name]
            if missing:
                raise DatasetError(f"{self.ann_file}: classes {missing} are not among its categories "
                                   f"{[c.get('name') for c in cats][:20]}")
            chosen = [by_name[n] for n in classes]
        self.cat_ids = [c["id"] for c in chosen]
        self.classes = tuple(str(c.get("name", c["id"])) for c in chosen)
        cat2label = {cid: i for i, cid in enumerate(self.cat_ids)}
        all_cat_ids = {c["id"] for c in cats}
        entries = [im for im in data["images"] if isinstance(im, dict)]
        _refuse_duplicates(self.ann_file, "image ids", [im.get("id") for im in entries if "id" in im],
                           "their annotations would be given to one another")
        _refuse_duplicates(self.ann_file, "image file names",
                           [im["file_name"] for im in entries if isinstance(im.get("file_name"), str)],
                           "one picture would be trained on with two sets of labels")
        self.img_dir = Path(img_dir) if img_dir is not None else _guess_img_dir(self.ann_file, data["images"])
        jname = self.ann_file.name

        images: dict[Any, dict] = {}
        for k, im in enumerate(data["images"]):
            if not (isinstance(im, dict) and "id" in im and isinstance(im.get("file_name"), str)
                    and _is_number(im.get("width")) and _is_number(im.get("height"))):
                self.problems.append(Problem(str(im.get("file_name", "?")) if isinstance(im, dict) else "?",
                                             "malformed", "image entry without id/file_name/width/height",
                                             "skipped sample", f"{jname} images[{k}]"))
                continue
            if not (im["width"] > 0 and im["height"] > 0 and math.isfinite(im["width"] + im["height"])):
                self.problems.append(Problem(str(im["file_name"]), "malformed",
                                             f"invalid image size {im['width']}x{im['height']}", "skipped sample",
                                             f"{jname} images[{k}] (id {im['id']})"))
                self.num_skipped += 1
                continue
            images[im["id"]] = im

        per_image: dict[Any, list[dict]] = {i: [] for i in images}
        with_cat: set = set()  # images with an annotation of a selected category (reference's filter_empty_gt)
        bad_images: set = set()
        for k, ann in enumerate(anns):
            img_id = ann.get("image_id") if isinstance(ann, dict) else None
            where = f"{jname} annotation id {ann.get('id', k) if isinstance(ann, dict) else k}"
            if img_id not in images:
                self.problems.append(Problem("?", "malformed", f"refers to unknown image id {img_id!r}",
                                             "ignored", where))
                continue
            im = images[img_id]
            file = str(self.img_dir / im["file_name"])
            cid = ann.get("category_id")
            if cid not in all_cat_ids:
                self.problems.append(Problem(file, "unknown_class", f"unknown category id {cid!r}",
                                             "skipped sample", where))
                bad_images.add(img_id)
                continue
            bbox = ann.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
                self.problems.append(Problem(file, "malformed", f"bbox {bbox!r} is not [x, y, w, h]",
                                             "skipped sample", where))
                bad_images.add(img_id)
                continue
            if not all(math.isfinite(v) for v in bbox):
                self.problems.append(Problem(file, "non_finite", f"non-finite bbox {bbox}", "skipped sample", where))
                bad_images.add(img_id)
                continue
            if bbox[2] < 0 or bbox[3] < 0:
                self.problems.append(Problem(file, "malformed", f"negative width/height in bbox {bbox}",
                                             "skipped sample", where))
                bad_images.add(img_id)
                continue
            if cid in cat2label:
                with_cat.add(img_id)
                per_image[img_id].append(ann | {"_where": where})

        for img_id, im in images.items():
            file = str(self.img_dir / im["file_name"])
            if img_id in bad_images:
                self.num_skipped += 1
                continue
            if filter_empty_gt and img_id not in with_cat:
                continue
            if min(im["width"], im["height"]) < min_size:
                continue
            if not os.path.isfile(file):
                self.problems.append(Problem(file, "missing_image", "image file not found", "skipped sample",
                                             f"{file} ({jname} image id {img_id})"))
                self.num_skipped += 1
                continue
            self.records.append(self._record(file, img_id, im, per_image[img_id], cat2label))
        self._finish(str(self.ann_file), warn)

    def coco_ground_truth(self) -> dict[str, Any]:
        """The annotation file as written (read again: training sets do not keep the parsed json in memory)."""
        if getattr(self, "_coco_gt", None) is None:
            self._coco_gt = _parse_file(self.ann_file, json.loads, json.JSONDecodeError, "annotation file", "json")
        return self._coco_gt

    def _record(self, file: str, img_id: Any, im: dict, anns: list[dict], cat2label: dict) -> dict[str, Any]:
        W, H = im["width"], im["height"]
        boxes, labels, ignore, segs = [], [], [], []
        for ann in anns:
            if ann.get("ignore", False):
                continue
            x, y, w, h = ann["bbox"]
            x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
            inter_w, inter_h = max(0, x2 - x1), max(0, y2 - y1)
            if inter_w * inter_h == 0:
                self.problems.append(Problem(file, "out_of_image", f"box {ann['bbox']} has no area inside the "
                                             f"{W}x{H} image", "dropped box", ann["_where"]))
                continue
            if ann.get("area", 1) <= 0 or w < 1 or h < 1:
                self.problems.append(Problem(file, "zero_size", f"degenerate box {ann['bbox']} (w or h < 1 px, or "
                                             "area <= 0)", "dropped box", ann["_where"]))
                continue
            if (x1, y1, x2, y2) != (x, y, x + w, y + h):
                self.problems.append(Problem(file, "clipped", f"box {ann['bbox']} extends outside the {W}x{H} image",
                                             "clipped box", ann["_where"]))
            if ann.get("iscrowd", 0):
                ignore.append((x1, y1, x2, y2))
                continue
            boxes.append((x1, y1, x2, y2))
            labels.append(cat2label[ann["category_id"]])
            seg = ann.get("segmentation")
            if isinstance(seg, list):
                seg = [p for p in seg if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
            segs.append(seg or None)
            if seg:
                self.has_masks = True
        return {"path": file, "image_id": img_id, "height": H, "width": W,
                "boxes": np.array(boxes, np.float32).reshape(-1, 4), "labels": np.array(labels, np.int64),
                "ignore_boxes": np.array(ignore, np.float32).reshape(-1, 4), "segs": segs}


# ----------------------------------------------------------------------------------------------------------- YOLO


def _label_path(img: Path) -> Path:
    """Ultralytics' rule: the last ``/images/`` component becomes ``/labels/``, the suffix ``.txt``."""
    parts = list(img.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return img.with_suffix(".txt")


def _list_images(entry: Path, root: Path) -> list[Path]:
    if entry.is_dir():
        return sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if entry.suffix == ".txt" and entry.is_file():
        out = []
        for line in entry.read_text().splitlines():
            line = line.strip()
            if line:
                p = Path(line)
                out.append(p if p.is_absolute() else (entry.parent / p if line.startswith(".") else root / p))
        return out
    if entry.suffix.lower() in IMAGE_EXTENSIONS:
        return [entry]
    return []


class YoloDataset(DetectionDataset):
    """An Ultralytics dataset: ``data.yaml`` (``path``, ``train``, ``val``, ``names`` as list or dict) and
    ``labels/*.txt`` with one ``class cx cy w h`` line per object (normalised to [0, 1]); a line with more values
    (``class x1 y1 x2 y2 x3 y3 ...``) is a polygon, its box the polygon's bounds. A missing or empty label file is
    an image without objects. A relative ``path`` is taken relative to the yaml file (then the working directory).
    Needs PyYAML.
    """

    def __init__(self, data_yaml: str | os.PathLike, split: str = "train", filter_empty_gt: bool = False,
                 warn: bool = True):
        super().__init__()
        try:
            import yaml
        except ImportError as e:  # pragma: no cover - PyYAML is usually present
            raise ImportError("YOLO datasets need PyYAML: pip install pyyaml") from e
        self.data_yaml = Path(data_yaml)
        cfg = _parse_file(self.data_yaml, yaml.safe_load, yaml.YAMLError, "file", "yaml")
        if not isinstance(cfg, dict) or "names" not in cfg:
            raise DatasetError(f"{self.data_yaml}: not an Ultralytics data.yaml (needs 'names')")
        names = cfg["names"]
        if isinstance(names, dict):
            try:
                keys = sorted(int(k) for k in names)
            except (TypeError, ValueError):
                raise DatasetError(f"{self.data_yaml}: 'names' keys must be class ids 0..n-1") from None
            if keys != list(range(len(keys))):
                raise DatasetError(f"{self.data_yaml}: 'names' keys must be 0..{len(keys) - 1}, got {keys}")
            names = [names[k] if k in names else names[str(k)] for k in keys]
        if not isinstance(names, list) or not names:
            raise DatasetError(f"{self.data_yaml}: 'names' must be a non-empty list or dict")
        if "nc" in cfg and cfg["nc"] != len(names):
            raise DatasetError(f"{self.data_yaml}: nc={cfg['nc']} but {len(names)} names")
        _refuse_duplicates(self.data_yaml, "class names", [str(n) for n in names],
                           "classes could not be told apart by name")
        self.classes = tuple(str(n) for n in names)
        self.cat_ids = list(range(len(names)))
        if not cfg.get(split):
            raise DatasetError(f"{self.data_yaml}: no '{split}' split")
        root = Path(cfg.get("path") or self.data_yaml.parent)
        if not root.is_absolute():
            root = self.data_yaml.parent / root if (self.data_yaml.parent / root).exists() else root.resolve()
        self.root = root
        entries = cfg[split] if isinstance(cfg[split], list) else [cfg[split]]
        files: list[Path] = []
        for e in entries:
            p = Path(e) if Path(e).is_absolute() else root / e
            found = _list_images(p, root)
            if not found:
                self.problems.append(Problem(str(p), "missing_image", f"'{split}' entry {e!r} holds no images",
                                             "ignored", f"{self.data_yaml}: {split}"))
            files.extend(found)
        for k, img in enumerate(files):
            if not img.is_file():
                self.problems.append(Problem(str(img), "missing_image", "image file not found", "skipped sample"))
                self.num_skipped += 1
                continue
            rec = self._parse_labels(img, len(self.classes))
            if rec is None:
                self.num_skipped += 1
                continue
            if filter_empty_gt and len(rec["boxes"]) == 0:
                continue
            rec["image_id"] = k
            self.records.append(rec)
        self._finish(f"{self.data_yaml} [{split}]", warn)

    def _parse_labels(self, img: Path, nc: int) -> dict[str, Any] | None:
        lab = _label_path(img)
        boxes, labels, segs = [], [], []
        text = ""
        if lab.is_file():
            try:
                text = lab.read_text()
            except (OSError, UnicodeDecodeError) as e:
                self.problems.append(Problem(str(img), "malformed", f"unreadable label file ({e})", "skipped sample",
                                             str(lab)))
                return None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{lab}:{n}"
            bad = self._check_line(line.split(), nc)
            if bad:
                kind, msg = bad
                self.problems.append(Problem(str(img), kind, f"{msg} in line {line.strip()!r}", "skipped sample",
                                             where, n))
                return None
            vals = [float(v) for v in line.split()]
            cls, coords = int(vals[0]), np.array(vals[1:], np.float64)
            poly = None
            if len(coords) == 4:
                cx, cy, w, h = coords
                box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
            else:
                poly = np.clip(coords.reshape(-1, 2), 0.0, 1.0)
                box = np.array([*coords.reshape(-1, 2).min(0), *coords.reshape(-1, 2).max(0)])
            clipped = np.clip(box, 0.0, 1.0)
            if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                self.problems.append(Problem(str(img), "zero_size", "box of zero size after clipping to the image",
                                             "dropped box", where, n))
                continue
            if not np.array_equal(clipped, box):
                self.problems.append(Problem(str(img), "clipped", "box extends outside the image", "clipped box",
                                             where, n))
            boxes.append(clipped)
            labels.append(cls)
            segs.append([poly.reshape(-1)] if poly is not None else None)
        if any(s is not None for s in segs):
            self.has_masks = True
        return {"path": str(img), "label_path": str(lab), "normalised": True,
                "boxes": np.array(boxes, np.float64).reshape(-1, 4), "labels": np.array(labels, np.int64),
                "ignore_boxes": np.zeros((0, 4), np.float64), "segs": segs}

    @staticmethod
    def _check_line(fields: list[str], nc: int) -> tuple[str, str] | None:
        n = len(fields)
        if n != 5 and (n < 7 or n % 2 == 0):
            return "malformed", f"{n} values (expected 'class cx cy w h' or 'class x1 y1 x2 y2 x3 y3 ...')"
        try:
            vals = [float(v) for v in fields]
        except ValueError:
            return "malformed", "a value is not a number"
        if not all(math.isfinite(v) for v in vals):
            return "non_finite", "non-finite value"
        if vals[0] != int(vals[0]) or not 0 <= vals[0] < nc:
            return "unknown_class", f"unknown class id {fields[0]} (the yaml names {nc} classes)"
        if any(v < 0.0 or v > 1.0 for v in vals[1:]):
            return "malformed", "coordinates not normalised to [0, 1]"
        return None


# ----------------------------------------------------------------------------------------------------------- misc


def load_dataset(path: str | os.PathLike, split: str = "train", **kwargs: Any) -> DetectionDataset:
    """A COCO json (``.json``) or an Ultralytics ``data.yaml`` (``.yaml``/``.yml``). For a json, ``split`` only
    chooses the reference's filtering: ``train`` uses ``filter_empty_gt=True, min_size=32``, other splits (test
    mode) keep every image. A folder is searched for ``data.yaml`` or ``annotations/{split}.json`` /
    ``annotations/instances_{split}*.json`` / ``{split}.json``."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / "data.yaml", path / "data.yml", path / "annotations" / f"{split}.json",
                      *sorted((path / "annotations").glob(f"instances_{split}*.json")), path / f"{split}.json"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise DatasetError(f"{path}: no data.yaml or {split} COCO json found")
        path = found
    suffix = path.suffix.lower()
    if suffix == ".json":
        train = split == "train"
        kwargs.setdefault("filter_empty_gt", train)
        kwargs.setdefault("min_size", 32 if train else 0)
        return CocoDataset(path, **kwargs)
    if suffix in (".yaml", ".yml"):
        return YoloDataset(path, split, **kwargs)
    raise DatasetError(f"{path}: unknown dataset format (expected a COCO .json or a YOLO data .yaml)")


def rle_decode(rle: dict, h: int | None = None, w: int | None = None) -> np.ndarray:
    """Decode a COCO RLE (compressed string or uncompressed counts) to an HxW uint8 0/1 mask (pycocotools)."""
    from pycocotools import mask as mask_utils

    size = rle.get("size") or [h, w]
    h, w = int(size[0]), int(size[1])
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed: pycocotools wants it compressed first
        if sum(counts) != h * w:
            raise ValueError(f"RLE counts cover {sum(counts)} pixels, size says {h}x{w}")
        encoded = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    else:
        encoded = {"size": [h, w], "counts": counts.encode() if isinstance(counts, str) else counts}
    return np.ascontiguousarray(mask_utils.decode(encoded))


def mask_to_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Outer contours of a binary mask as float32 [K, 2] polygons (those with at least 3 points)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2).astype(np.float32) for c in contours if len(c) >= 3]

