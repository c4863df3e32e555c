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


class DetectionTask:
    """RTMDet detection: ``RTMDetNet``, QFL + GIoU after dynamic soft-label assignment, the per-size Mosaic/MixUp
    recipe, COCO box AP with the ``eval`` preset; fitness is AP@[.5:.95]."""

    name = "detect"
    fitness_key = "AP"
    metric_keys = ("AP", "AP50", "AP75", "AR100")

    def __init__(self, cfg: RTMDetConfig):
        if cfg.task != "detect":
            raise NotImplementedError(f"training {cfg.task} models ({cfg.name}) is not implemented yet")
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
                            normalize=False)

    def predictor(self, net: nn.Module) -> Predictor:
        """The pipeline ``rtmkit val`` runs (BN-folded, channels-last), so validation AP equals ``rtmkit val``'s."""
        names = dict(enumerate(self.cfg.class_names or (f"class{i}" for i in range(self.cfg.num_classes))))
        return Predictor(TorchBackend(net), names, mean=self.cfg.data.mean, std=self.cfg.data.std,
                         pad_value=self.cfg.data.pad_value, input_size=self.cfg.data.input_size,
                         max_stride=max(self.cfg.strides))

    def evaluate(self, predictor: Predictor, dataset: DetectionDataset, *, batch: int) -> dict[str, Any]:
        from ..eval.detection import evaluate

        return evaluate(predictor, dataset, post=self.cfg.preset("eval"), batch=batch)

    def fitness(self, metrics: dict[str, Any]) -> float:
        return float(metrics.get(self.fitness_key, -1.0))
