"""Typed configs of the RTMDet family.

A config is a plain dataclass: change what you need with ``get_config("rtmdet-s", num_classes=3)`` or
``dataclasses.replace``. Channel counts, block counts and strides are derived from the few numbers below
exactly as MMDetection derives them (fact sheet A.2-A.5).
"""

from __future__ import annotations

import dataclasses
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
    """

    score_thr: float = 0.001
    iou_thr: float = 0.65
    nms_pre: int = 30000
    max_per_img: int = 300
    min_bbox_size: float = 0.0
    agnostic: bool = False
    clip: str = "input"
    nms_space: str = "image"

    def __post_init__(self) -> None:
        if self.clip not in CLIP_MODES:
            raise ValueError(f"clip must be one of {CLIP_MODES}, got {self.clip!r}")
        if self.nms_space not in NMS_SPACES:
            raise ValueError(f"nms_space must be one of {NMS_SPACES}, got {self.nms_space!r}")
        if not 0.0 <= self.iou_thr <= 1.0:
            raise ValueError(f"iou_thr must be in [0, 1], got {self.iou_thr}")
        if self.nms_pre <= 0 or self.max_per_img <= 0:
            raise ValueError("nms_pre and max_per_img must be positive")


# What users expect from predict(): confident detections only. Evaluation uses the config's test_cfg.
DEPLOY_SCORE_THR = 0.3
DEPLOY_MAX_PER_IMG = 100


@dataclass
class RTMDetConfig:
    """One RTMDet detector. Defaults are MMDetection's ``rtmdet_l_8xb32-300e_coco``."""

    name: str = "rtmdet-l"
    task: str = "detect"
    size: str = "l"  # tiny / s / m / l / x / nano: chooses the recipe's per-size training pipeline
    deepen_factor: float = 1.0
    widen_factor: float = 1.0
    arch: str = "P5"
    neck_blocks: int = 3  # set per size in the reference configs, not derived from deepen_factor
    exp_on_reg: bool = True
    depthwise: bool = False
    share_conv: bool = True
    channel_attention: bool = True
    expand_ratio: float = 0.5
    stacked_convs: int = 2
    pred_kernel_size: int = 1
    num_classes: int = 80
    input_size: int = 640
    # BGR order, the network sees BGR (fact sheet B.4).
    mean: tuple[float, float, float] = (103.53, 116.28, 123.675)
    std: tuple[float, float, float] = (57.375, 57.12, 58.395)
    pad_value: int = 114
    eval: PostprocessConfig = field(default_factory=PostprocessConfig)
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {self.arch!r}")
        if self.num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {self.num_classes}")
        if self.class_names is not None:
            self.class_names = tuple(self.class_names)
            if len(self.class_names) != self.num_classes:
                raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        if isinstance(self.eval, dict):
            self.eval = PostprocessConfig(**self.eval)

    @property
    def strides(self) -> tuple[int, ...]:
        return (8, 16, 32) if self.arch == "P5" else (8, 16, 32, 64)

    @property
    def neck_in_channels(self) -> list[int]:
        return stage_channels(self.arch, self.widen_factor)[1:]

    @property
    def feat_channels(self) -> int:
        return int(256 * self.widen_factor)

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

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["class_names"] = list(self.class_names) if self.class_names is not None else None
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RTMDetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        d = dict(d)
        if "size" not in d and d.get("name") in CONFIGS:  # files written before the field existed
            d["size"] = CONFIGS[d["name"]].size
        for key in ("mean", "std"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


def _det(name: str, size: str, deepen: float, widen: float, neck_blocks: int, exp_on_reg: bool, **kw: Any
         ) -> RTMDetConfig:
    return RTMDetConfig(name=name, size=size, deepen_factor=deepen, widen_factor=widen, neck_blocks=neck_blocks,
                        exp_on_reg=exp_on_reg, **kw)


CONFIGS: dict[str, RTMDetConfig] = {
    "rtmdet-tiny": _det("rtmdet-tiny", "tiny", 0.167, 0.375, 1, False),
    "rtmdet-s": _det("rtmdet-s", "s", 0.33, 0.5, 1, False),
    "rtmdet-m": _det("rtmdet-m", "m", 0.67, 0.75, 2, True),
    "rtmdet-l": _det("rtmdet-l", "l", 1.0, 1.0, 3, True),
    "rtmdet-x": _det("rtmdet-x", "x", 1.33, 1.25, 4, True),
    "rtmdet-x-p6": _det("rtmdet-x-p6", "x", 1.33, 1.25, 4, True, arch="P6", input_size=1280),
    # The nano network (RTMPose's detectors) with COCO's 80 classes: no official COCO weights exist; for fast
    # training from scratch on small data (the built-in demo) and edge devices.
    "rtmdet-nano": _det("rtmdet-nano", "nano", 0.33, 0.25, 1, False, depthwise=True, share_conv=False, input_size=320),
    # RTMPose's person detector (shared/weights): depthwise convs everywhere, unshared head convs, 320 input.
    "rtmdet-nano-person": _det(
        "rtmdet-nano-person", "nano", 0.33, 0.25, 1, False, depthwise=True, share_conv=False, num_classes=1,
        input_size=320, class_names=("person",),
        eval=PostprocessConfig(score_thr=0.05, iou_thr=0.6, nms_pre=1000, max_per_img=100)),
    "rtmdet-nano-hand": _det(
        "rtmdet-nano-hand", "nano", 0.33, 0.25, 1, False, depthwise=True, share_conv=False, num_classes=1,
        input_size=320, class_names=("hand",),
        eval=PostprocessConfig(score_thr=0.05, iou_thr=0.6, nms_pre=1000, max_per_img=100)),
    # RTMPose's larger person detector: rtmdet-m with one class.
    "rtmdet-m-person": _det("rtmdet-m-person", "m", 0.67, 0.75, 2, True, num_classes=1, class_names=("person",)),
}


def list_configs() -> list[str]:
    return list(CONFIGS)


def get_config(name: str, **overrides: Any) -> RTMDetConfig:
    """A fresh copy of a named config with ``overrides`` applied (``num_classes=3``, ``input_size=416`` ...).

    Changing ``num_classes`` drops the default class names unless new ones are given."""
    if name not in CONFIGS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(CONFIGS)}")
    cfg = CONFIGS[name]
    if "num_classes" in overrides and "class_names" not in overrides and \
            overrides["num_classes"] != cfg.num_classes:
        overrides["class_names"] = None
    if isinstance(overrides.get("eval"), dict):
        overrides["eval"] = dataclasses.replace(cfg.eval, **overrides["eval"])
    return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval), **overrides)
