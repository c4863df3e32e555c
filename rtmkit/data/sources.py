"""What ``predict`` accepts: a path, folder, glob, list of paths, BGR arrays, or a video."""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .images import ImageReadError, as_bgr_uint8, is_image_file, is_video_file, read_image


@dataclass
class Frame:
    """One image to run on: the BGR pixels and where they came from."""

    image: np.ndarray
    path: str | None = None  # file path, or None for arrays
    frame: int | None = None  # frame index inside a video
    video: str | None = None  # the video file, for frames


def expand_source(source: Any) -> list[Any]:
    """Flatten a source into a list of image paths, video paths and arrays (no decoding yet)."""
    if isinstance(source, np.ndarray):
        if source.ndim == 4:  # a stack of images
            return list(source)
        return [source]
    if isinstance(source, (str, os.PathLike)):
        text = str(source)
        path = Path(text)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if is_image_file(p) or is_video_file(p))
            if not files:
                raise FileNotFoundError(f"{path}: folder has no images or videos")
            return [str(p) for p in files]
        if path.is_file():  # before glob handling: names like "img[1].jpg" are files, not patterns
            return [text]
        if any(ch in text for ch in "*?["):
            files = sorted(f for f in glob.glob(text, recursive=True) if is_image_file(f) or is_video_file(f))
            if not files:
                raise FileNotFoundError(f"{text}: glob matches no images or videos")
            return files
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        return [text]
    if isinstance(source, (list, tuple)):
        out: list[Any] = []
        for item in source:
            out.extend(expand_source(item))
        return out
    raise TypeError(f"unsupported source of type {type(source).__name__}: pass a path, folder, glob, list of "
                    "paths, or BGR numpy arrays")


class VideoWarning(UserWarning):
    """A video ended before the number of frames its header announced."""


def iter_video(path: str) -> Iterator[Frame]:
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise ImageReadError(f"{path}: cannot open video")
    try:
        announced = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        index = 0
        while True:
            ok, img = cap.read()
            if not ok:
                break
            yield Frame(img, path=path, frame=index, video=path)
            index += 1
        if index == 0:
            raise ImageReadError(f"{path}: video has no readable frames")
        if announced > 0 and index < announced:
            warnings.warn(f"{path}: read {index} of the {announced} frames its header announces (truncated or "
                          "damaged video?)", VideoWarning, stacklevel=2)
    finally:
        cap.release()


@dataclass
class Failure:
    """An input that could not be read: where and why."""

    source: str
    error: str


def iter_frames(source: Any, on_error: str = "raise", failures: list[Failure] | None = None) -> Iterator[Frame]:
    """Decode the source lazily, one image or video frame at a time.

    ``on_error="skip"``: an unreadable file (missing, empty, corrupt, truncated, not an image) is skipped with a
    warning naming it and appended to ``failures``; the others are still decoded. ``"raise"``: the first one
    raises :class:`~rtmkit.data.images.ImageReadError`."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    for i, item in enumerate(expand_source(source)):
        try:
            if isinstance(item, np.ndarray):
                yield Frame(as_bgr_uint8(item, name=f"array {i}"))
            elif is_video_file(item):
                yield from iter_video(item)
            else:
                yield Frame(read_image(item), path=item)
        except ImageReadError as e:
            if on_error == "raise":
                raise
            warnings.warn(f"skipped: {e}", stacklevel=2)
            if failures is not None:
                failures.append(Failure(str(item) if not isinstance(item, np.ndarray) else f"array {i}", str(e)))
