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


DEMO_WEIGHTS = Path(__file__).resolve().parent / "demo" / "rtmdet_nano_shapes.pt"


def demo_weights() -> Path:
    """The checkpoint ``rtmkit predict`` uses without arguments: rtmdet-nano trained on the built-in shapes dataset
    by ``tools/make_demo_weights.py`` (the recipe of ``rtmkit train``'s demo, run longer). Shipped in the package."""
    if not DEMO_WEIGHTS.is_file():
        raise FileNotFoundError(f"{DEMO_WEIGHTS}: the demo weights are missing from this installation; "
                                "reinstall rtmkit, or pass --model/--weights")
    return DEMO_WEIGHTS
