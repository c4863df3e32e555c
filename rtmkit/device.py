"""Device selection, shared by inference and training."""

from __future__ import annotations

import torch


def select_device(device: str | int | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: the first GPU if there is one, else the CPU; an int means that CUDA device."""
    if device is None or device == "auto" or device == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        device = f"cuda:{device}"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}: use cpu, cuda, cuda:N or a GPU index") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use the CPU (--device cpu)")
    return dev
