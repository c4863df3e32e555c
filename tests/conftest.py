"""Test fixtures. Shared assets come from ``RTMKIT_SHARED`` (default ``../shared``).

When they are absent (a user's fresh clone) the tests that need them are skipped; CI sets
``RTMKIT_REQUIRE_SHARED=1`` so that a missing asset is a failure, never a silent skip.
"""

from __future__ import annotations

import os

# The golden files were produced with oneDNN's AVX2 kernels. Capping the ISA (before torch loads oneDNN) makes
# our forward pass bit-identical to them; on AVX-512 kernels outputs differ by ~1e-6 relative rounding.
# test_golden.py also checks the native kernels, in a subprocess, with a relative tolerance.
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

import pytest  # noqa: E402
import torch  # noqa: E402

from rtmkit.assets import shared_dir

torch.set_num_threads(min(2, torch.get_num_threads()))


def _need(rel: str):
    path = shared_dir() / rel
    if not path.exists():
        if os.environ.get("RTMKIT_REQUIRE_SHARED") == "1":
            pytest.fail(f"required shared asset missing: {path}")
        pytest.skip(f"shared asset not available: {path}")
    return path


@pytest.fixture(scope="session")
def shared():
    """Return a function mapping a path relative to the shared folder to an existing Path (or skip)."""
    return _need


def read_video(path) -> list:
    """Every frame of a video file, decoded with OpenCV (BGR arrays)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


COCO_STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100", "AR_small",
                   "AR_medium", "AR_large")


def pycocotools_eval(ann_file, results_file, iou_type: str, image_ids=None):
    """pycocotools' own COCOeval on an annotation file and a results file, run independently of rtmkit: its 12
    summary numbers by name, and the evaluator (for per-class precision)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(str(ann_file))
    ev = COCOeval(gt, gt.loadRes(str(results_file)), iou_type)
    if image_ids is not None:
        ev.params.imgIds = list(image_ids)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return dict(zip(COCO_STAT_NAMES, (float(v) for v in ev.stats))), ev
