"""Where the shared test assets (golden files, real weights, small datasets) live.

One setting, the environment variable ``RTMKIT_SHARED``, defaulting to ``../shared`` next to the project
root. Tests and benchmarks read them in place; nothing from there is ever copied into the project.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """The shared assets folder (may not exist on a user's fresh clone)."""
    return Path(os.environ.get("RTMKIT_SHARED", PROJECT_ROOT.parent / "shared")).resolve()
