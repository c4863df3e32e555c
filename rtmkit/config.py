"""Typed configs of the RTMDet family, split as timm splits them: the network shape (:class:`NetConfig`), what
it expects of its input (:class:`DataConfig`), post-processing presets (:class:`PostprocessConfig`) and the model
that holds them (:class:`RTMDetConfig`, with its task and size). The named configs and their pretrained weights
are in one table, :mod:`rtmkit.catalog` (``get_config("rtmdet-s", num_classes=3)``). Standard library only.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

# Per stage, before widening: (in_channels, out_channels, num_blocks, add_identity, use_spp).
ARCHS: dict[str, list[tuple[int, int, int, bool, bool]]] = {
    "P5": [(64, 128, 3, True, False), (128, 256, 6, True, False), (256, 512, 6, True, False),
           (512, 1024, 3, False, True)],
    "P6": [(64, 128, 3, True, False), (128, 256, 6, True, False), (256, 512, 6, True, False),
           (512, 768, 3, True, False), (768, 1024, 3, False, True)],
}


def stage_channels(arch: str, widen_factor: float) -> list[int]:
    """Output channels of every stage after widening."""
    return [int(out * widen_factor) for _, out, *_ in ARCHS[arch]]


CLIP_MODES = ("input", "image", "none")
NMS_SPACES = ("image", "input")


@dataclass
class PostprocessConfig:
    """Post-processing knobs (MMDetection's ``test_cfg``).

    ``clip``: ``"input"`` clamps decoded boxes to the padded network input, as the reference does (boxes can then
    extend past the original image by up to the padding); ``"image"`` additionally clips them to the original
    image; ``"none"`` does not clamp at all (what exported graphs usually do).
    ``nms_space``: ``"image"`` runs NMS on boxes already rescaled to the original image (the reference);
    ``"input"`` runs it in network-input pixels, as exported end-to-end graphs do. The two differ only for pairs
    whose IoU is within rounding of the threshold. ``min_bbox_size < 0`` disables the box-size filter.
    ``mask_thr``: instance masks (segment task) keep pixels whose probability is above it (``mask_thr_binary``).
    ``crop_masks``: also clear each mask outside its box (what deployments usually want; the reference does not).
    """

    score_thr: float = 0.001
    iou_thr: float = 0.65
    nms_pre: int = 30000
    max_per_img: int = 300
    min_bbox_size: float = 0.0
    agnostic: bool = False
    clip: str = "input"
    nms_space: str = "image"
    mask_thr: float = 0.5
    crop_masks: bool = False

    def __post_init__(self) -> None:
        if self.clip not in CLIP_MODES:
            raise ValueError(f"clip must be one of {CLIP_MODES}, got {self.clip!r}")
        if self.nms_space not in NMS_SPACES:
            raise ValueError(f"nms_space must be one of {NMS_SPACES}, got {self.nms_space!r}")
        # `not (0 <= x <= 1)` is also true for NaN
        if not 0.0 <= self.iou_thr <= 1.0:
            raise ValueError(f"iou (NMS IoU threshold) must be in [0, 1], got {self.iou_thr}")
        if not 0.0 <= self.score_thr <= 1.0:
            raise ValueError(f"conf (score threshold) must be in [0, 1], got {self.score_thr}")
        if not 0.0 <= self.mask_thr <= 1.0:
            raise ValueError(f"mask_thr (mask probability threshold) must be in [0, 1], got {self.mask_thr}")
        for name, value in (("nms_pre", self.nms_pre), ("max_det", self.max_per_img)):
            if isinstance(value, bool) or int(value) != value or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if not math.isfinite(self.min_bbox_size):
            raise ValueError(f"min_size must be a finite number, got {self.min_bbox_size}")


# What users expect from predict(): confident detections only. Evaluation uses the config's test_cfg.
DEPLOY_SCORE_THR = 0.3
DEPLOY_MAX_PER_IMG = 100
TASKS = ("detect", "segment", "rotated", "classify")


@dataclass
class NetConfig:
    """The network's shape (MMDetection's ``model.backbone`` / ``neck`` / ``bbox_head`` settings). Channel counts,
    block counts and strides are derived from these numbers exactly as MMDetection derives them (fact sheet
    A.2-A.5). Defaults are ``rtmdet_l``'s."""

    arch: str = "P5"  # P5: strides 8-32; P6: strides 8-64
    deepen_factor: float = 1.0
    widen_factor: float = 1.0
    neck_blocks: int = 3  # set per size in the reference configs, not derived from deepen_factor
    exp_on_reg: bool = True
    depthwise: bool = False
    share_conv: bool = True
    channel_attention: bool = True
    expand_ratio: float = 0.5
    stacked_convs: int = 2
    pred_kernel_size: int = 1

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {self.arch!r}")

    @property
    def strides(self) -> tuple[int, ...]:
        return (8, 16, 32) if self.arch == "P5" else (8, 16, 32, 64)

    @property
    def neck_in_channels(self) -> list[int]:
        return stage_channels(self.arch, self.widen_factor)[1:]

    @property
    def feat_channels(self) -> int:
        return int(256 * self.widen_factor)


@dataclass
class DataConfig:
    """What the network expects of its input: square input size, BGR mean/std (the network sees BGR, fact sheet
    B.4) and the letterbox padding value."""

    input_size: int = 640
    mean: tuple[float, float, float] = (103.53, 116.28, 123.675)
    std: tuple[float, float, float] = (57.375, 57.12, 58.395)
    pad_value: int = 114

    def __post_init__(self) -> None:
        self.mean, self.std = tuple(self.mean), tuple(self.std)
        if self.input_size <= 0:
            raise ValueError(f"input_size must be positive, got {self.input_size}")


_NET_FIELDS = {f.name for f in dataclasses.fields(NetConfig)}
_DATA_FIELDS = {f.name for f in dataclasses.fields(DataConfig)}


@dataclass
class RTMDetConfig:
    """One model: its name, task and size (the recipe's per-size training pipeline: tiny / s / m / l / x / nano),
    the network shape (``net``), the input (``data``), the classes and the ``eval`` post-processing preset
    (MMDetection's ``test_cfg``; ``deploy`` derives from it)."""

    name: str = "rtmdet-l"
    task: str = "detect"
    size: str = "l"
    net: NetConfig = field(default_factory=NetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    num_classes: int = 80
    class_names: tuple[str, ...] | None = None
    eval: PostprocessConfig = field(default_factory=PostprocessConfig)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {self.num_classes}")
        if self.class_names is not None:
            self.class_names = tuple(self.class_names)
            if len(self.class_names) != self.num_classes:
                raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        for name, kind in (("net", NetConfig), ("data", DataConfig), ("eval", PostprocessConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, kind(**getattr(self, name)))

    @property
    def strides(self) -> tuple[int, ...]:
        return self.net.strides

    @property
    def deploy(self) -> PostprocessConfig:
        """The ``deploy`` preset: the eval settings with a 0.3 score threshold and 100 boxes per image."""
        return dataclasses.replace(self.eval, score_thr=DEPLOY_SCORE_THR, max_per_img=DEPLOY_MAX_PER_IMG)

    def preset(self, name: str) -> PostprocessConfig:
        if name == "eval":
            return dataclasses.replace(self.eval)
        if name == "deploy":
            return self.deploy
        raise ValueError(f"unknown preset {name!r}: use 'eval' or 'deploy'")

    def replace(self, **changes: Any) -> RTMDetConfig:
        """A copy with ``changes`` applied; network and input fields may be given flat (``input_size=416``,
        ``widen_factor=0.5``), ``eval`` as a dict of changes. Changing ``num_classes`` drops the class names unless
        new ones are given. Unknown keys are an error."""
        top = {f.name for f in dataclasses.fields(self)}
        net = {k: changes.pop(k) for k in list(changes) if k in _NET_FIELDS}
        data = {k: changes.pop(k) for k in list(changes) if k in _DATA_FIELDS}
        unknown = set(changes) - top
        if unknown:
            known = sorted(top | _NET_FIELDS | _DATA_FIELDS)
            raise TypeError(f"unknown config field(s) {sorted(unknown)}; known: {known}")
        if "num_classes" in changes and "class_names" not in changes and changes["num_classes"] != self.num_classes:
            changes["class_names"] = None
        if isinstance(changes.get("eval"), dict):
            changes["eval"] = dataclasses.replace(self.eval, **changes["eval"])
        return dataclasses.replace(self, net=dataclasses.replace(self.net, **net),
                                   data=dataclasses.replace(self.data, **data),
                                   eval=changes.pop("eval", dataclasses.replace(self.eval)), **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["class_names"] = list(self.class_names) if self.class_names is not None else None
        d["data"]["mean"], d["data"]["std"] = list(self.data.mean), list(self.data.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RTMDetConfig:
        """The inverse of :meth:`to_dict`; also reads the flat layout of files written by rtmkit 0.1 (network and
        input fields at the top level)."""
        d = dict(d)
        flat = {k: d.pop(k) for k in list(d) if k in _NET_FIELDS | _DATA_FIELDS}
        if flat:
            d["net"] = {**d.get("net", {}), **{k: v for k, v in flat.items() if k in _NET_FIELDS}}
            d["data"] = {**d.get("data", {}), **{k: v for k, v in flat.items() if k in _DATA_FIELDS}}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        return cls(**d)
