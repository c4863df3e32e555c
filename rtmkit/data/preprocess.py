"""Test-time preprocessing: keep-ratio resize, bottom/right pad with 114, BGR mean/std (fact sheet B)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch


def resize_scale(h: int, w: int, size: int) -> tuple[int, int]:
    """New (h, w) of MMCV's ``imrescale`` to fit ``size x size``: factor min(size/long, size/short),
    sizes rounded with int(x * f + 0.5) (at least one pixel, for extreme aspect ratios)."""
    f = min(size / max(h, w), size / min(h, w))
    return max(int(h * f + 0.5), 1), max(int(w * f + 0.5), 1)


def letterbox(img: np.ndarray, size: int, pad_value: int = 114, out: np.ndarray | None = None
              ) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize ``img`` (HxWx3 uint8) into a ``size x size`` canvas at its top-left, pad the rest.

    Returns the canvas and the scale factors (w_scale, h_scale) = (new_w / w, new_h / h).
    """
    h, w = img.shape[:2]
    nh, nw = resize_scale(h, w, size)
    resized = img if (nh, nw) == (h, w) else cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    if out is None:
        out = np.empty((size, size, 3), np.uint8)
    out[:nh, :nw] = resized
    out[nh:, :] = pad_value
    out[:nh, nw:] = pad_value
    return out, (nw / w, nh / h)


def letterbox_batch(images: Sequence[np.ndarray], size: int, pad_value: int = 114
                    ) -> tuple[np.ndarray, torch.Tensor]:
    """Letterbox BGR uint8 images into one ``[B, size, size, 3]`` uint8 canvas; also the ``[B, 2]`` float64
    scale factors (w_scale, h_scale)."""
    canvas = np.empty((len(images), size, size, 3), np.uint8)
    scales = [letterbox(img, size, pad_value, out=canvas[i])[1] for i, img in enumerate(images)]
    return canvas, torch.tensor(scales, dtype=torch.float64)


def preprocess(images: Sequence[np.ndarray], size: int, mean: Sequence[float], std: Sequence[float],
               pad_value: int = 114, device: torch.device | str = "cpu",
               channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Letterbox a list of BGR uint8 images into one normalised ``[B, 3, size, size]`` float32 batch.

    Returns the batch and the ``[B, 2]`` float64 scale factors. Normalisation is ``(x - mean) / std`` in float32
    on the BGR channels, exactly what MMDetection's data preprocessor computes.
    """
    canvas, scales = letterbox_batch(images, size, pad_value)
    batch = torch.from_numpy(canvas).to(device)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device)
    std_t = torch.tensor(std, dtype=torch.float32, device=device)
    batch = (batch.float() - mean_t) / std_t  # NHWC, broadcast over the channel axis
    batch = batch.permute(0, 3, 1, 2)
    batch = batch.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return batch, scales
