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
