"""Test fixtures. Shared assets come from ``RTMKIT_SHARED`` (default ``../shared``).

When they are absent (a user's fresh clone) the tests that need them are skipped; CI sets
``RTMKIT_REQUIRE_SHARED=1`` so that a missing asset is a failure, never a silent skip.
"""

from __future__ import annotations

import os

import pytest
import torch

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
