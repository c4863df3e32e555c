"""Run directories shared by the commands (predict, train ...)."""

from __future__ import annotations

from pathlib import Path


def increment_dir(base: str | Path, name: str, mkdir: bool = True) -> Path:
    """``base/name``, or ``base/name2``, ``base/name3`` ... if it exists (a fresh folder per run)."""
    base = Path(base)
    path, n = base / name, 2
    while path.exists():
        path, n = base / f"{name}{n}", n + 1
    if mkdir:
        path.mkdir(parents=True)
    return path
