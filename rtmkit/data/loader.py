"""Training / validation datasets for PyTorch and their DataLoaders.

``TrainDataset`` wraps a detection dataset (anything with ``len`` and ``[i] -> sample dict``) and the RTMDet
training pipeline and returns ``(image, target)``: image a CHW float32 tensor normalised with the BGR mean/std,
target ``{"boxes": float32 [N, 4] xyxy input pixels, "labels": int64 [N]}`` (the loss's format; plus ``masks`` with
``with_masks`` and ``rboxes`` when the dataset's samples carry rotated boxes, which the transforms move with the rest).

- Caches: the mosaic/mixup caches live in the transform objects; each DataLoader worker has its own copy, emptied
  when the worker starts (the reference's per-worker caches, fact sheet G.16).
- Randomness: each sample draws from ``numpy.random.default_rng([seed, epoch, index, worker_id])``. With the same
  seed, epoch, sampler order and number of workers the samples are identical; the epoch lives in shared memory
  so persistent workers see ``set_epoch``.
- Rejections (RandomCrop without gt, unreadable image): another index is drawn from the same generator and the
  pipeline runs again (MMDetection refetches up to 1000 times); an unreadable image is warned about once.
- Stages: ``switch_epoch = max_epochs - stage2_epochs``; ``set_epoch(e)`` selects the stage from the epoch (so a
  resumed run gets the right one) and returns True when the stage changed: recreate the DataLoader then, so the
  workers pick up the new pipeline (``set_stage(2)`` does the switch by hand).
"""

from __future__ import annotations

import functools
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from ..structures.masks import PolygonMasks
from .datasets import DatasetError, DatasetWarning, DetectionDataset
from .images import ImageReadError
from .transforms import MEAN_BGR, STD_BGR, build_train_pipeline, build_val_pipeline


def to_tensor(image: np.ndarray, mean: Sequence[float] = MEAN_BGR, std: Sequence[float] = STD_BGR,
              normalize: bool = True) -> torch.Tensor:
    """HxWx3 BGR uint8 -> CHW tensor: float32 ``(x - mean) / std`` per BGR channel (uint8 if not normalize).

    Normalisation goes through a 256-entry float32 table per channel (OpenCV LUT), which gives exactly the
    float32 ``(x - mean) / std`` of the reference and is several times faster than arithmetic on the image."""
    if not normalize:
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()
    tables = _norm_tables(tuple(mean), tuple(std))
    h, w = image.shape[:2]
    out = np.empty((3, h, w), np.float32)
    for c, channel in enumerate(cv2.split(image)):
        cv2.LUT(channel, tables[c], dst=out[c])
    return torch.from_numpy(out)


def normalize_batch(images: torch.Tensor, mean: Sequence[float] = MEAN_BGR, std: Sequence[float] = STD_BGR,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """A uint8 [B, 3, H, W] batch (``TrainDataset(..., normalize=False)``) -> float32 ``(x - mean) / std`` on
    ``device``: the same numbers as ``normalize=True``, with 4x less data through the DataLoader workers (much
    faster where page faults are slow), normalised where the batch is used (e.g. on the GPU)."""
    x = images.to(device, non_blocking=True) if device is not None else images
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x.float() - m) / s


_TABLES: dict[tuple, list[np.ndarray]] = {}


def _norm_tables(mean: tuple, std: tuple) -> list[np.ndarray]:
    key = (mean, std)
    if key not in _TABLES:
        v = np.arange(256, dtype=np.float32)
        _TABLES[key] = [((v - np.float32(m)) / np.float32(s)).astype(np.float32) for m, s in zip(mean, std)]
    return _TABLES[key]


def _target(sample: dict[str, Any], with_masks: bool) -> dict[str, Any]:
    """The loss's target: ``boxes``, ``labels``, the masks as bool ``[N, H, W]`` bitmaps of the image when
    ``with_masks``, and ``rboxes`` (float32 [N, 5]
    cx, cy, w, h, angle le90) when the sample carries rotated boxes."""
    target = {"boxes": torch.from_numpy(np.asarray(sample["boxes"], np.float32).reshape(-1, 4).copy()),
              "labels": torch.from_numpy(np.asarray(sample["labels"], np.int64).copy())}
    if with_masks and "masks" in sample:  # bitmaps of the (padded) image, as the Ins loss compares them
        polygons = sample["masks"]
        polygons = polygons if isinstance(polygons, PolygonMasks) else PolygonMasks(polygons)
        h, w = sample["image"].shape[:2]
        target["masks"] = torch.from_numpy(polygons.to_bitmaps(h, w))
    if "rboxes" in sample:
        target["rboxes"] = torch.from_numpy(np.asarray(sample["rboxes"], np.float32).reshape(-1, 5).copy())
    return target


class TrainDataset(Dataset):
    """A detection dataset through the RTMDet training pipeline of ``size_name`` (see the module docstring).

    ``pipelines``: optional ``{1: Compose, 2: Compose}`` replacing the recipe's. ``with_masks``: keep polygon
    masks (RTMDet-Ins pipeline and a ``"masks"`` entry in the target); otherwise they are dropped on loading.
    """

    def __init__(self, dataset: Any, size_name: str = "tiny", img_scale: int = 640, seed: int = 0,
                 max_epochs: int = 300, stage2_epochs: int = 20, epoch: int = 0, with_masks: bool = False,
                 pipelines: dict[int, Callable] | None = None, normalize: bool = True,
                 mean: Sequence[float] = MEAN_BGR, std: Sequence[float] = STD_BGR, max_refetch: int = 1000):
        if len(dataset) == 0:
            raise DatasetError("TrainDataset: the dataset is empty")
        if not with_masks and isinstance(dataset, DetectionDataset):
            dataset = dataset.without_masks()  # keeps the polygons out of the workers' copies
        self.dataset = dataset
        self.size_name = size_name
        self.img_scale = img_scale
        self.seed = int(seed)
        self.with_masks = with_masks
        self.normalize = normalize
        self.mean, self.std = tuple(mean), tuple(std)
        self.max_refetch = max_refetch
        self.switch_epoch = max_epochs - stage2_epochs if stage2_epochs > 0 else None
        self._custom = dict(pipelines) if pipelines else None
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.stage = 0
        self.pipeline: Callable = None  # type: ignore[assignment]
        self._bad_files: set[str] = set()
        self.num_refetch = 0
        self.num_bad_images = 0
        self.set_epoch(epoch)

    # -- stage / epoch
    def build_pipeline(self, stage: int) -> Callable:
        if self._custom is not None and stage in self._custom:
            return self._custom[stage]
        return build_train_pipeline(self.size_name, self.img_scale, stage, instance_masks=self.with_masks)

    def set_stage(self, stage: int) -> None:
        """Switch to the stage-1 or stage-2 pipeline (a fresh one: empty caches)."""
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        self.stage = stage
        self.pipeline = self.build_pipeline(stage)

    def stage_for_epoch(self, epoch: int) -> int:
        return 2 if self.switch_epoch is not None and epoch >= self.switch_epoch else 1

    def set_epoch(self, epoch: int) -> bool:
        """Set the epoch (0-based, seen by all workers); returns True when this changed the stage, i.e. the
        DataLoader must be recreated."""
        self._epoch.fill_(int(epoch))
        stage = self.stage_for_epoch(epoch)
        if stage != self.stage:
            changed = self.stage != 0
            self.set_stage(stage)
            return changed
        return False

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    # -- samples
    def __len__(self) -> int:
        return len(self.dataset)

    def rng_for(self, index: int, epoch: int | None = None, worker: int | None = None) -> np.random.Generator:
        if worker is None:
            info = get_worker_info()
            worker = info.id if info is not None else 0
        epoch = self.epoch if epoch is None else epoch
        return np.random.default_rng([self.seed, epoch, int(index), worker])

    def _load(self, index: int) -> dict[str, Any] | None:
        try:
            sample = self.dataset[index]
        except ImageReadError as e:
            if str(e) not in self._bad_files:  # the message names the file
                self._bad_files.add(str(e))
                warnings.warn(f"skipping unreadable image: {e}", DatasetWarning, stacklevel=3)
            self.num_bad_images += 1
            return None
        sample = dict(sample)  # the dataset's dict is not ours to change
        if not self.with_masks:
            sample.pop("masks", None)
        return sample

    def get_sample(self, index: int) -> dict[str, Any]:
        """The transformed sample dict (before tensor conversion)."""
        rng = self.rng_for(index)
        for _ in range(self.max_refetch + 1):
            sample = self._load(index)
            if sample is not None:
                sample = self.pipeline(sample, rng)
            if sample is not None:
                return sample
            self.num_refetch += 1
            index = int(rng.integers(0, len(self.dataset)))
        raise DatasetError(f"TrainDataset: no valid sample after {self.max_refetch} refetches (every crop empty or "
                           "every image unreadable?)")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        sample = self.get_sample(index)
        image = to_tensor(sample["image"], self.mean, self.std, self.normalize)
        return image, _target(sample, self.with_masks)


class ValDataset(Dataset):
    """Test-time preprocessing (keep-ratio resize + pad 114, as rtmkit.data.preprocess.letterbox).

    Returns ``(image, target)``; target has ``boxes`` scaled to the input, ``labels``, ``ignore_boxes`` (scaled),
    ``image_id``, ``scale_factor`` (w_scale, h_scale), ``orig_shape`` and ``path``.
    """

    def __init__(self, dataset: Any, img_scale: int = 640, normalize: bool = True,
                 mean: Sequence[float] = MEAN_BGR, std: Sequence[float] = STD_BGR):
        self.dataset = dataset.without_masks() if isinstance(dataset, DetectionDataset) else dataset
        self.pipeline = build_val_pipeline(img_scale)
        self.normalize = normalize
        self.mean, self.std = tuple(mean), tuple(std)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        sample = dict(self.dataset[index])
        sample.pop("masks", None)
        sample = self.pipeline(sample, None)
        target = _target(sample, False)
        target.update(ignore_boxes=torch.from_numpy(np.asarray(sample["ignore_boxes"], np.float32).copy()),
                      image_id=sample["image_id"], scale_factor=sample["scale_factor"],
                      orig_shape=sample["orig_shape"], path=sample["path"])
        return to_tensor(sample["image"], self.mean, self.std, self.normalize), target


def collate(batch: Sequence[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Stack the images into [B, 3, H, W]; targets stay a list of dicts. In a DataLoader worker the batch is
    stacked straight into shared memory (as torch's default_collate does), saving a copy on the way out."""
    images, targets = zip(*batch)
    out = None
    if get_worker_info() is not None:
        first = images[0]
        storage = first.untyped_storage()._new_shared(len(images) * first.numel() * first.element_size())
        out = first.new(storage).view(-1).resize_(len(images), *first.shape)
    return torch.stack(images, out=out), list(targets)


class EpochSampler(Sampler[int]):
    """Shuffled order from (seed, epoch), so a resumed run sees the same order; reads the epoch from the
    TrainDataset (or from ``set_epoch``)."""

    def __init__(self, dataset: Any, shuffle: bool = True, seed: int = 0):
        self.dataset = dataset
        self.shuffle = shuffle
        self.seed = seed
        self._epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[int]:
        epoch = getattr(self.dataset, "epoch", self._epoch)
        n = len(self.dataset)
        if not self.shuffle:
            return iter(range(n))
        return iter(np.random.default_rng([self.seed, epoch, 7]).permutation(n).tolist())


def worker_context(num_workers: int) -> str | None:
    """Start DataLoader workers from a clean server process: a plain fork of a process whose OpenCV / OpenMP
    thread pools are running (after any cv2.resize or torch op) can deadlock in the child."""
    if num_workers == 0:
        return None
    import multiprocessing

    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _worker_init(worker_id: int, parent_pid: int | None = None) -> None:
    # one thread per worker for OpenCV and torch (the workers are the parallelism), fresh caches per worker
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    info = get_worker_info()
    pipeline = getattr(info.dataset, "pipeline", None) if info is not None else None
    if hasattr(pipeline, "reset"):
        pipeline.reset()
    if parent_pid is not None:
        _exit_with(parent_pid)


def worker_init(num_workers: int) -> Callable[[int], None] | None:
    """The DataLoader ``worker_init_fn``: thread settings, fresh caches, and workers that end with this process."""
    return functools.partial(_worker_init, parent_pid=os.getpid()) if num_workers > 0 else None


def _exit_with(pid: int, interval: float = 0.5) -> None:
    """End this worker soon after process ``pid`` is gone, whatever killed it (SIGKILL included). Workers are
    children of the forkserver, not of the training process, and torch's own watchdog watches that parent, so
    without this they outlive a killed run (holding its memory) indefinitely."""
    def watch() -> None:
        while True:
            time.sleep(interval)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # exists, owned by someone else: the pid was reused after our parent died
                os._exit(1)

    threading.Thread(target=watch, name="rtmkit-exit-with-parent", daemon=True).start()


def build_train_loader(dataset: Any, batch_size: int = 8, num_workers: int | None = None, size_name: str = "tiny",
                       img_scale: int = 640, seed: int = 0, max_epochs: int = 300, stage2_epochs: int = 20,
                       epoch: int = 0, shuffle: bool = True, persistent_workers: bool = True,
                       pin_memory: bool = False, drop_last: bool = False, **train_kwargs: Any) -> DataLoader:
    """A DataLoader over ``TrainDataset(dataset, ...)`` (or over ``dataset`` itself if it already is one: then its
    own seed is used and ``size_name``, ``img_scale``, ``seed``... are ignored) with the epoch-seeded sampler and
    :func:`collate`. Call ``loader.dataset.set_epoch(e)`` before each epoch; when it
    returns True (the stage switch), build a new loader."""
    if isinstance(dataset, TrainDataset):
        train = dataset
        if epoch:
            train.set_epoch(epoch)
    else:
        train = TrainDataset(dataset, size_name, img_scale, seed, max_epochs, stage2_epochs, epoch, **train_kwargs)
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1)
    return DataLoader(train, batch_size=batch_size, sampler=EpochSampler(train, shuffle, train.seed),
                      num_workers=num_workers, collate_fn=collate, pin_memory=pin_memory, drop_last=drop_last,
                      persistent_workers=persistent_workers and num_workers > 0,
                      worker_init_fn=worker_init(num_workers),
                      multiprocessing_context=worker_context(num_workers))


def build_val_loader(dataset: Any, batch_size: int = 8, num_workers: int = 0, img_scale: int = 640,
                     pin_memory: bool = False) -> DataLoader:
    """A DataLoader over ``ValDataset(dataset, img_scale)`` in dataset order."""
    val = dataset if isinstance(dataset, ValDataset) else ValDataset(dataset, img_scale)
    return DataLoader(val, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate,
                      pin_memory=pin_memory, worker_init_fn=worker_init(num_workers),
                      multiprocessing_context=worker_context(num_workers))
