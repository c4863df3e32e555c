"""``check_dataset``: every problem of a dataset, by file, before training on it.

>>> report = check_dataset("data/coco/annotations/instances_train2017.json")
>>> print(report)          # summary, then each problem grouped by file
>>> report.ok              # no problem that skips a sample or drops a box

It loads the annotations the way training does (same rules, see :mod:`rtmkit.data.datasets`) without warning,
and (``verify_images=True``) decodes every image, which finds corrupt or truncated files and, for COCO, images
whose size differs from the json's ``width``/``height``. COCO files are checked without the training filters
(``filter_empty_gt``, ``min_size``) so that every image is looked at.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .datasets import DatasetError, DetectionDataset, Problem, load_dataset
from .images import ImageReadError, read_image_reporting


@dataclass
class DatasetReport:
    """What :func:`check_dataset` found. ``problems`` lists every problem (``Problem.file``, ``.where``,
    ``.kind``, ``.message``, ``.action``); ``fatal`` is set when the dataset cannot be used at all."""

    source: str
    num_images: int = 0
    num_usable: int = 0
    num_boxes: int = 0
    num_ignore: int = 0
    num_empty: int = 0
    classes: tuple[str, ...] = ()
    problems: list[Problem] = field(default_factory=list)
    fatal: str | None = None

    @property
    def ok(self) -> bool:
        return self.fatal is None and not any(p.is_warning for p in self.problems)

    def by_kind(self) -> dict[str, int]:
        return dict(Counter(p.kind for p in self.problems))

    def by_file(self) -> dict[str, list[Problem]]:
        out: dict[str, list[Problem]] = {}
        for p in self.problems:
            out.setdefault(p.file, []).append(p)
        return out

    def format(self, max_files: int | None = 50) -> str:
        lines = [f"dataset check: {self.source}"]
        if self.fatal:
            lines.append(f"  ERROR: {self.fatal}")
        lines.append(f"  {self.num_usable} usable images of {self.num_images}, {self.num_boxes} boxes, "
                     f"{self.num_ignore} ignored (crowd) regions, {self.num_empty} images without objects; "
                     f"{len(self.classes)} classes")
        if not self.problems:
            lines.append("  no problems found")
            return "\n".join(lines)
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(self.by_kind().items()))
        lines.append(f"  {len(self.problems)} problems ({kinds})")
        files = self.by_file()
        for i, (file, probs) in enumerate(files.items()):
            if max_files is not None and i >= max_files:
                lines.append(f"  ... {len(files) - max_files} more files (report.format(max_files=None) shows all)")
                break
            lines.append(f"  {file}")
            for p in probs:
                where = f"{p.where}: " if p.where and p.where != p.file else ""
                lines.append(f"    - {where}{p.message} -> {p.action}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _verify(rec: dict[str, Any]) -> Problem | None:
    try:
        img, problem = read_image_reporting(rec["path"])
    except ImageReadError as e:
        return Problem(rec["path"], "corrupt_image", str(e).removeprefix(f"{rec['path']}: "), "skipped sample")
    if problem is not None:
        return Problem(rec["path"], "corrupt_jpeg", problem.removeprefix(f"{rec['path']}: "),
                       "kept (decoded with errors)")
    h, w = img.shape[:2]
    if "height" in rec and (rec["height"], rec["width"]) != (h, w):
        return Problem(rec["path"], "size_mismatch", f"image is {w}x{h} but the annotations say "
                       f"{rec['width']}x{rec['height']}: the boxes may not match it", "kept")
    return None


def check_dataset(source: str | os.PathLike | DetectionDataset, split: str = "train", verify_images: bool = True,
                  num_threads: int | None = None, **kwargs: Any) -> DatasetReport:
    """Check a COCO json, a YOLO data.yaml (``split``), a folder (as :func:`load_dataset`) or a loaded dataset.
    Extra keyword arguments go to the dataset (e.g. ``img_dir=``, ``classes=``)."""
    if isinstance(source, DetectionDataset):
        ds: DetectionDataset | None = source
        name = str(getattr(source, "ann_file", None) or getattr(source, "data_yaml", "<dataset>"))
        report = DatasetReport(name)
    else:
        report = DatasetReport(str(source))
        path = Path(source)
        if path.suffix.lower() == ".json" or (path.is_dir() and not (path / "data.yaml").exists()):
            kwargs.setdefault("filter_empty_gt", False)
            kwargs.setdefault("min_size", 0)
        try:
            ds = load_dataset(path, split, warn=False, **kwargs)
        except DatasetError as e:
            report.fatal = str(e)
            report.problems = list(e.problems)
            return report
    report.classes = tuple(ds.classes)
    report.problems = list(ds.problems)
    report.num_images = len(ds) + ds.num_skipped
    records = ds.records
    bad: set[str] = set()
    if verify_images:
        with ThreadPoolExecutor(num_threads or min(8, os.cpu_count() or 1)) as pool:
            for prob in pool.map(_verify, records):
                if prob is not None:
                    report.problems.append(prob)
                    if prob.action == "skipped sample":
                        bad.add(prob.file)
    usable = [r for r in records if r["path"] not in bad]
    report.num_usable = len(usable)
    report.num_boxes = sum(len(r["boxes"]) for r in usable)
    report.num_ignore = sum(len(r["ignore_boxes"]) for r in usable)
    report.num_empty = sum(1 for r in usable if len(r["boxes"]) == 0)
    if not usable and report.fatal is None:
        report.fatal = f"{report.source}: no usable samples"
    return report
