"""Reading images the way the reference does (OpenCV, BGR uint8), with clear errors for bad files."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pbm", ".pgm", ".ppm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")


class ImageReadError(ValueError):
    """An image file or array that cannot be used, with the file and the reason in the message."""


class CorruptImageWarning(UserWarning):
    """A file that decodes, but with errors (libjpeg's "Corrupt JPEG data ..."): parts of it may be grey."""


# libjpeg prints its warnings to the process's stderr (file descriptor 2), where Python cannot catch them; we
# capture that descriptor around JPEG decodes. One decode at a time, so that threads do not see each other's.
_STDERR_LOCK = threading.Lock()
_LIBJPEG_PREFIXES = ("Corrupt JPEG data", "Premature end of JPEG file", "Invalid JPEG", "Warning: ")


def _decode_jpeg_reporting(data: bytes) -> tuple[np.ndarray | None, str | None]:
    """``cv2.imdecode`` of JPEG bytes, and libjpeg's warnings about them (None when it had none). Other text that
    reached stderr meanwhile (another thread's output) is passed on."""
    with _STDERR_LOCK, tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        lines = captured.read().decode(errors="replace").splitlines()
    ours = [line for line in lines if line.startswith(_LIBJPEG_PREFIXES)]
    others = [line for line in lines if not line.startswith(_LIBJPEG_PREFIXES)]
    if others:
        sys.stderr.write("\n".join(others) + "\n")
    return img, ("; ".join(dict.fromkeys(ours)) or None)


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def is_video_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(VIDEO_EXTENSIONS)


def _jpeg_truncated(data: bytes) -> bool:
    """A complete JPEG has an end-of-image marker after its first scan. Inside scan data every 0xFF byte is
    followed by 0x00 (or a restart marker), so the first FF D9 after the start-of-scan is the real end, and
    trailing data after it (thumbnails come before the scan; motion photos append video) does not matter."""
    if data[:2] != b"\xff\xd8":
        return False
    sos = data.find(b"\xff\xda")
    return sos < 0 or data.find(b"\xff\xd9", sos) < 0


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode a file to an ``HxWx3`` BGR uint8 array, as MMDetection's ``LoadImageFromFile`` does.

    Grayscale is expanded to 3 channels, alpha is dropped and 16-bit images are reduced to 8 bits (OpenCV's
    ``IMREAD_COLOR``). Missing, empty, undecodable and truncated files raise :class:`ImageReadError`; a JPEG that
    decodes with errors gives a :class:`CorruptImageWarning` naming the file.
    """
    img, problem = read_image_reporting(path)
    if problem is not None:
        warnings.warn(problem, CorruptImageWarning, stacklevel=2)
    return img


def read_image_reporting(path: str | os.PathLike) -> tuple[np.ndarray, str | None]:
    """:func:`read_image`, returning the decode problem (a corrupt-but-decodable JPEG) instead of warning, for
    callers that collect problems from several threads (``warnings`` is not thread-safe)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read file ({e.strerror or e})") from None
    if not data:
        raise ImageReadError(f"{path}: file is empty")
    if _jpeg_truncated(data):
        raise ImageReadError(f"{path}: truncated JPEG (no end-of-image marker); the file is incomplete")
    problem = None
    if data[:2] == b"\xff\xd8":
        img, jpeg_problem = _decode_jpeg_reporting(data)
        if img is not None and jpeg_problem:
            problem = (f"{path}: corrupt JPEG, decoded with errors ({jpeg_problem}): parts of the picture may be "
                       "grey or shifted")
    else:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ImageReadError(f"{path}: not a readable image (corrupt, truncated or unsupported format)")
    return img, problem


def as_bgr_uint8(img: np.ndarray, name: str = "<array>") -> np.ndarray:
    """Normalise a user array to ``HxWx3`` BGR uint8: gray (HxW or HxWx1) -> 3 channels, BGRA -> BGR,
    uint16 -> uint8 (top 8 bits, like OpenCV), bool -> 0/255. Other dtypes are refused with a clear message."""
    if not isinstance(img, np.ndarray):
        raise ImageReadError(f"{name}: expected a numpy array, got {type(img).__name__}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise ImageReadError(f"{name}: expected an HxW, HxWx1, HxWx3 (BGR) or HxWx4 (BGRA) image, got shape "
                             f"{img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageReadError(f"{name}: empty image of shape {img.shape}")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype == bool:
        img = img.astype(np.uint8) * 255
    elif img.dtype != np.uint8:
        raise ImageReadError(f"{name}: unsupported dtype {img.dtype}; pass uint8 (or uint16) BGR pixels, e.g. "
                             "(img * 255).clip(0, 255).astype(np.uint8) for floats in [0, 1]")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = np.ascontiguousarray(img[:, :, :3])
    return np.ascontiguousarray(img)
