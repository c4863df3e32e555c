"""What a task gives the trainer: network, criterion, training data pipeline, validation and fitness.

A task is a plain object built from a config (YOLOX's ``Exp``, without a registry): the trainer asks it for each
part and never names a model class, loss or metric itself. Detection is the first task; instance segmentation,
rotated boxes and classification add their own.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..config import RTMDetConfig
from ..data.datasets import DetectionDataset
from ..data.loader import TrainDataset
from ..inference import Predictor, TorchBackend
from ..models.detector import RTMDetNet
from .criterion import RTMDetCriterion
from .criterion_ins import RTMDetInsCriterion


class DetectionTask:
    """RTMDet detection: ``RTMDetNet``, QFL + GIoU after dynamic soft-label assignment, the per-size Mosaic/MixUp
    recipe, COCO box AP with the ``eval`` preset; fitness is AP@[.5:.95]."""

    name = "detect"
    fitness_key = "AP"
    metric_keys = ("AP", "AP50", "AP75", "AR100")

    with_masks = False

    def __init__(self, cfg: RTMDetConfig):
        if cfg.task != self.name:
            raise ValueError(f"{type(self).__name__} is for {self.name} models, {cfg.name} is a {cfg.task} model "
                             "(use task_for(cfg))")
        self.cfg = cfg

    def network(self) -> RTMDetNet:
        return RTMDetNet(self.cfg)

    def criterion(self) -> RTMDetCriterion:
        return RTMDetCriterion(self.cfg.num_classes, self.cfg.strides)

    def train_dataset(self, dataset: DetectionDataset, *, seed: int, epochs: int, stage2_epochs: int,
                      epoch: int) -> TrainDataset:
        """The recipe's pipeline for this size; uint8 images (4x less data from the workers, normalised on the
        training device)."""
        return TrainDataset(dataset, self.cfg.size, self.cfg.data.input_size, seed, max_epochs=epochs,
                            stage2_epochs=stage2_epochs, epoch=epoch, mean=self.cfg.data.mean, std=self.cfg.data.std,
                            normalize=False, with_masks=self.with_masks)

    def check_dataset(self, dataset: DetectionDataset) -> None:
        """Raise when the training data cannot train this task (nothing to check for boxes)."""

    def predictor(self, net: nn.Module) -> Predictor:
        """The pipeline ``rtmkit val`` runs (BN-folded, channels-last), so validation AP equals ``rtmkit val``'s."""
        names = dict(enumerate(self.cfg.class_names or (f"class{i}" for i in range(self.cfg.num_classes))))
        return Predictor(TorchBackend(net), names, mean=self.cfg.data.mean, std=self.cfg.data.std,
                         pad_value=self.cfg.data.pad_value, input_size=self.cfg.data.input_size,
                         max_stride=max(self.cfg.strides))

    def evaluate(self, predictor: Predictor, dataset: DetectionDataset, *, batch: int) -> dict[str, Any]:
        from ..eval.detection import evaluate

        return evaluate(predictor, dataset, post=self.cfg.preset("eval"), batch=batch, masks=self.with_masks)

    def fitness(self, metrics: dict[str, Any]) -> float:
        return float(metrics.get(self.fitness_key, -1.0))


class SegmentTask(DetectionTask):
    """RTMDet-Ins: the detection task with masks. The Ins head, the Ins criterion (soft centre prior at the
    masks' centres of mass, Dice on the positives' masks), the recipe's Ins pipeline (polygons through every
    transform, boxes recomputed from the cropped masks, bitmaps as targets), box and mask AP; fitness is mask
    AP@[.5:.95]."""

    name = "segment"
    fitness_key = "mask_AP"
    metric_keys = ("AP", "AP50", "AP75", "AR100", "mask_AP", "mask_AP50", "mask_AP75")
    with_masks = True

    def criterion(self) -> RTMDetInsCriterion:
        return RTMDetInsCriterion(self.cfg.num_classes, self.cfg.strides)

    def check_dataset(self, dataset: DetectionDataset) -> None:
        if not getattr(dataset, "has_masks", False):
            raise ValueError(f"{getattr(dataset, 'source', 'the training data')}: {self.cfg.name} learns instance "
                             "masks, and these labels have boxes only (COCO segmentation polygons/RLE or YOLO-seg "
                             "labels are needed)")


TASKS = {task.name: task for task in (DetectionTask, SegmentTask)}


def task_for(cfg: RTMDetConfig) -> DetectionTask:
    """The task object of a config (``cfg.task``)."""
    if cfg.task not in TASKS:
        raise NotImplementedError(f"training {cfg.task} models ({cfg.name}) is not implemented yet")
    return TASKS[cfg.task](cfg)
