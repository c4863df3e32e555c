"""rtmkit: the RTMDet family of real-time detectors in plain PyTorch.

The public names are imported on first use, so ``import rtmkit`` and ``rtmkit --help`` do not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "RTMDet": "rtmkit.api",
    "Result": "rtmkit.results",
    "RTMDetConfig": "rtmkit.config",
    "NetConfig": "rtmkit.config",
    "DataConfig": "rtmkit.config",
    "PostprocessConfig": "rtmkit.config",
    "CONFIGS": "rtmkit.catalog",
    "MODELS": "rtmkit.catalog",
    "get_config": "rtmkit.catalog",
    "list_configs": "rtmkit.catalog",
    "list_models": "rtmkit.catalog",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rtmkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
