"""The one name table: every model name rtmkit knows, with its config (when rtmkit builds it) and its official
weights (URL, SHA-256 prefix, published metrics).

Names: ``rtmdet-s`` (architecture and default weights), ``rtmdet-r-l.coco-ms`` (the same architecture as
``rtmdet-r-l`` with other weights: ``<arch>.<tag>``). ``get_config(name)`` gives a config, ``rtmkit.zoo`` fetches
the weights. OpenMMLab's publish scripts name files ``<stem>-<first 8 hex of sha256>.pth`` (the torch.hub
convention); those prefixes are the hashes checked on download. Standard library only: the CLI lists models
without loading torch.

Sources (see each entry's comment):
  mmdet   open-mmlab/mmdetection configs/rtmdet/metafile.yml and README.md (3.x)
  mmrot   open-mmlab/mmrotate configs/rotated_rtmdet/README.md (1.x); its metafile says ``Weights: todo``
  mmpose  open-mmlab/mmpose projects/rtmpose/README.md
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import TASKS, DataConfig, NetConfig, PostprocessConfig, RTMDetConfig


@dataclass(frozen=True)
class Pretrained:
    """Published weights: where, their SHA-256 prefix (from the file name; None when it carries none) and the
    upstream metrics."""

    url: str
    sha256_prefix: str | None
    metrics: dict[str, float]

    @property
    def file_name(self) -> str:
        """The file name the checkpoint has upstream (and in the cache)."""
        return self.url.rsplit("/", 1)[-1].split("?", 1)[0]


@dataclass(frozen=True)
class ModelEntry:
    """One name: its task, the architecture it builds (``arch``; ``config`` is None while rtmkit cannot build
    that family: a reserved name), and its official weights (``weights``; None when there are none).
    ``supported``: rtmkit can use the weights (build the model, or initialise a backbone from them)."""

    name: str
    task: str
    arch: str
    config: RTMDetConfig | None
    weights: Pretrained | None
    supported: bool = True
    notes: str = ""


class UnsupportedModelError(NotImplementedError):
    """The name is reserved for a model family rtmkit cannot build yet."""


# ----------------------------------------------------------------------------------------------------
# Architectures
# ----------------------------------------------------------------------------------------------------

def _det(name: str, size: str, deepen: float, widen: float, neck_blocks: int, *, exp_on_reg: bool,
         num_classes: int = 80, class_names: tuple[str, ...] | None = None, input_size: int = 640,
         eval: PostprocessConfig | None = None, **net: Any) -> RTMDetConfig:
    return RTMDetConfig(name=name, task="detect", size=size, num_classes=num_classes, class_names=class_names,
                        net=NetConfig(deepen_factor=deepen, widen_factor=widen, neck_blocks=neck_blocks,
                                      exp_on_reg=exp_on_reg, **net),
                        data=DataConfig(input_size=input_size), eval=eval or PostprocessConfig())


def _ins(name: str, size: str, deepen: float, widen: float, neck_blocks: int) -> RTMDetConfig:
    """RTMDet-Ins: the detector's backbone and neck of that size with the Ins head, and its test_cfg."""
    return RTMDetConfig(name=name, task="segment", size=size,
                        net=NetConfig(deepen_factor=deepen, widen_factor=widen, neck_blocks=neck_blocks,
                                      exp_on_reg=False),
                        eval=PostprocessConfig(score_thr=0.05, iou_thr=0.6, nms_pre=1000, max_per_img=100,
                                               mask_thr=0.5))


DOTA_CLASSES = ("plane", "baseball-diamond", "bridge", "ground-track-field", "small-vehicle", "large-vehicle", "ship",
                "tennis-court", "basketball-court", "storage-tank", "soccer-ball-field", "roundabout", "harbor",
                "swimming-pool", "helicopter")  # DOTA-v1.0, MMRotate's order


def _rot(name: str, size: str, deepen: float, widen: float, neck_blocks: int, *, exp_on_reg: bool) -> RTMDetConfig:
    """RTMDet-R: the detector's backbone, neck and towers of that size with the angle branch, 15 DOTA classes,
    1024 input and its DOTA test_cfg (fact sheet A.7)."""
    return RTMDetConfig(name=name, task="rotated", size=size, num_classes=len(DOTA_CLASSES), class_names=DOTA_CLASSES,
                        net=NetConfig(deepen_factor=deepen, widen_factor=widen, neck_blocks=neck_blocks,
                                      exp_on_reg=exp_on_reg),
                        data=DataConfig(input_size=1024),
                        eval=PostprocessConfig(score_thr=0.05, iou_thr=0.1, nms_pre=2000, max_per_img=2000,
                                               min_bbox_size=0.0))


_PERSON_EVAL = PostprocessConfig(score_thr=0.05, iou_thr=0.6, nms_pre=1000, max_per_img=100)
_CONFIGS: dict[str, RTMDetConfig] = {c.name: c for c in (
    _det("rtmdet-tiny", "tiny", 0.167, 0.375, 1, exp_on_reg=False),
    _det("rtmdet-s", "s", 0.33, 0.5, 1, exp_on_reg=False),
    _det("rtmdet-m", "m", 0.67, 0.75, 2, exp_on_reg=True),
    _det("rtmdet-l", "l", 1.0, 1.0, 3, exp_on_reg=True),
    _det("rtmdet-x", "x", 1.33, 1.25, 4, exp_on_reg=True),
    _det("rtmdet-x-p6", "x", 1.33, 1.25, 4, exp_on_reg=True, arch="P6", input_size=1280),
    # RTMPose's detectors: depthwise convs everywhere, unshared head convs, 320 input. rtmdet-nano is that network
    # with COCO's 80 classes (no official weights; fast training from scratch on small data, edge devices).
    _det("rtmdet-nano", "nano", 0.33, 0.25, 1, exp_on_reg=False, depthwise=True, share_conv=False, input_size=320),
    _det("rtmdet-nano-person", "nano", 0.33, 0.25, 1, exp_on_reg=False, depthwise=True, share_conv=False, num_classes=1,
         input_size=320, class_names=("person",), eval=_PERSON_EVAL),
    _det("rtmdet-nano-hand", "nano", 0.33, 0.25, 1, exp_on_reg=False, depthwise=True, share_conv=False, num_classes=1,
         input_size=320, class_names=("hand",), eval=_PERSON_EVAL),
    # RTMPose's larger person detector: rtmdet-m with one class.
    _det("rtmdet-m-person", "m", 0.67, 0.75, 2, exp_on_reg=True, num_classes=1, class_names=("person",)),
    _ins("rtmdet-ins-tiny", "tiny", 0.167, 0.375, 1),
    _ins("rtmdet-ins-s", "s", 0.33, 0.5, 1),
    _ins("rtmdet-ins-m", "m", 0.67, 0.75, 2),
    _ins("rtmdet-ins-l", "l", 1.0, 1.0, 3),
    _ins("rtmdet-ins-x", "x", 1.33, 1.25, 4),
    _rot("rtmdet-r-tiny", "tiny", 0.167, 0.375, 1, exp_on_reg=False),
    _rot("rtmdet-r-s", "s", 0.33, 0.5, 1, exp_on_reg=False),
    _rot("rtmdet-r-m", "m", 0.67, 0.75, 2, exp_on_reg=True),
    _rot("rtmdet-r-l", "l", 1.0, 1.0, 3, exp_on_reg=True),
)}


# ----------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------

_MMDET = "https://download.openmmlab.com/mmdetection/v3.0/rtmdet/"
_CSPNEXT = _MMDET + "cspnext_rsb_pretrain/"
_MMROT = "https://download.openmmlab.com/mmrotate/v1.0/rotated_rtmdet/"
_MMPOSE = "https://download.openmmlab.com/mmpose/v1/projects/"
# The larger-model RTMDet files are GitHub release assets of orange0-jp (an OpenMMLab contributor); the
# official mmdetection metafile and README link to exactly these URLs.
_ORANGE = "https://github.com/orange0-jp/orange-weights/releases/download/"


def _entry(name: str, url: str | None, sha256_prefix: str | None, task: str, metrics: dict[str, float], *,
           arch: str | None = None, supported: bool = True, notes: str = "") -> ModelEntry:
    """A table row: ``name`` builds ``CONFIGS[arch or name]`` (when rtmkit has it) with these weights."""
    config = _CONFIGS.get(arch or name)
    weights = Pretrained(url, sha256_prefix, metrics) if url is not None else None
    return ModelEntry(name=name, task=task, arch=arch or name, config=config, weights=weights,
                      supported=supported, notes=notes)


def _mmdet(config_stem: str, stamp: str) -> str:
    """mmdetection layout: <base>/<config>/<config>_<date>_<time>-<hash>.pth."""
    return f"{_MMDET}{config_stem}/{config_stem}_{stamp}.pth"


def _mmrot(config_stem: str, sha: str) -> str:
    """mmrotate layout: <base>/<config>/<config>-<hash>.pth."""
    return f"{_MMROT}{config_stem}/{config_stem}-{sha}.pth"


_COCO_AP_NOTE = ("box_ap from mmdet metafile.yml; box_ap_readme from the README table, measured after the "
                 "test_cfg change of mmdetection PR #9494 (+0.1-0.3 AP)")
_INS_NOTE = ("RTMDet-Ins (instance segmentation): boxes and masks as the reference (boundary ties aside); "
             "trained, evaluated (box and mask AP) and exported")
_ROT_NOTE = ("RTMDet-R (rotated boxes, DOTA-v1.0, 15 classes): predict gives the reference's rotated boxes; "
             "training, DOTA evaluation and export are not implemented yet")
_DOTA_METRICS_NOTE = "DOTA-v1.0 test server mmAP/mAP50/mAP75 from the mmrotate README"

_ENTRIES: list[ModelEntry] = [
    # ---- COCO detection (mmdet metafile.yml + README) ----
    _entry("rtmdet-tiny", _mmdet("rtmdet_tiny_8xb32-300e_coco", "20220902_112414-78e30dcc"), "78e30dcc",
           "detect", {"box_ap": 40.9, "box_ap_readme": 41.1}, notes=_COCO_AP_NOTE),
    _entry("rtmdet-s", _mmdet("rtmdet_s_8xb32-300e_coco", "20220905_161602-387a891e"), "387a891e",
           "detect", {"box_ap": 44.5, "box_ap_readme": 44.6}, notes=_COCO_AP_NOTE),
    _entry("rtmdet-m", _mmdet("rtmdet_m_8xb32-300e_coco", "20220719_112220-229f527c"), "229f527c",
           "detect", {"box_ap": 49.1, "box_ap_readme": 49.4}, notes=_COCO_AP_NOTE),
    _entry("rtmdet-l", _mmdet("rtmdet_l_8xb32-300e_coco", "20220719_112030-5a0be7c4"), "5a0be7c4",
           "detect", {"box_ap": 51.3, "box_ap_readme": 51.5}, notes=_COCO_AP_NOTE),
    _entry("rtmdet-x", _mmdet("rtmdet_x_8xb32-300e_coco", "20220715_230555-cc79b9ae"), "cc79b9ae",
           "detect", {"box_ap": 52.6, "box_ap_readme": 52.8}, notes=_COCO_AP_NOTE),
    _entry("rtmdet-x-p6", _ORANGE + "v0.1.0rtmdet-p6/rtmdet_x_p6_4xb8-300e_coco-bf32be58.pth", "bf32be58",
           "detect", {"box_ap": 54.9}, notes="P6 (strides 8-64), 1280 input; GitHub release linked by mmdet"),
    # RTMDet-l with other backbones (mmdet metafile): reserved, rtmkit has only CSPNeXt backbones.
    _entry("rtmdet-l-convnext-b",
           _ORANGE + "v0.1.0rtmdet-swin-convnext/rtmdet_l_convnext_b_4xb32-100e_coco-d4731b3d.pth",
           "d4731b3d", "detect", {"box_ap": 53.1}, supported=False,
           notes="ConvNeXt-B backbone: reserved, rtmkit does not build this backbone"),
    _entry("rtmdet-l-swin-b",
           _ORANGE + "v0.1.0rtmdet-swin-convnext/rtmdet_l_swin_b_4xb32-100e_coco-0828ce5d.pth", "0828ce5d",
           "detect", {"box_ap": 52.4}, supported=False,
           notes="Swin-B backbone: reserved, rtmkit does not build this backbone"),
    _entry("rtmdet-l-swin-b-p6",
           _ORANGE + "v0.1.0rtmdet-swin-convnext/rtmdet_l_swin_b_p6_4xb16-100e_coco-a1486b6f.pth", "a1486b6f",
           "detect", {"box_ap": 56.4}, supported=False,
           notes="Swin-B backbone, P6, 1280 input: reserved, rtmkit does not build this backbone"),
    # ---- Single-class detectors published with RTMPose (mmpose projects/rtmpose/README.md) ----
    _entry("rtmdet-nano-person", _MMPOSE + "rtmpose/rtmdet_nano_8xb32-100e_coco-obj365-person-05d8511e.pth",
           "05d8511e", "detect", {"box_ap": 40.3},
           notes="person only, 320 input, trained on COCO+Objects365; box_ap = COCO person AP from the "
                 "RTMPose README. The RTMPose CPU SDK (rtmpose-cpu.zip) exports an earlier file, "
                 "rtmdet_nano_8xb32-300e_coco-person_in1kpretrain-96154d0b.pth, with no standalone URL"),
    _entry("rtmdet-m-person", _MMPOSE + "rtmpose/rtmdet_m_8xb32-100e_coco-obj365-person-235e8209.pth",
           "235e8209", "detect", {"box_ap": 62.5},
           notes="RTMDet-m with num_classes=1 (person), 640 input, COCO+Objects365; box_ap = COCO person AP "
                 "from the RTMPose README"),
    _entry("rtmdet-nano-hand", _MMPOSE + "rtmposev1/rtmdet_nano_8xb32-300e_hand-267f9c8f.pth",
           "267f9c8f", "detect", {"box_ap": 76.0},
           notes="hand only, same network as rtmdet-nano-person, 320 input ('alpha version' upstream); "
                 "box_ap on OneHand10K from the RTMPose README"),
    # ---- COCO instance segmentation (mmdet metafile.yml) ----
    _entry("rtmdet-ins-tiny", _mmdet("rtmdet-ins_tiny_8xb32-300e_coco", "20221130_151727-ec670f7e"),
           "ec670f7e", "segment", {"box_ap": 40.5, "mask_ap": 35.4}, notes=_INS_NOTE),
    _entry("rtmdet-ins-s", _mmdet("rtmdet-ins_s_8xb32-300e_coco", "20221121_212604-fdc5d7ec"),
           "fdc5d7ec", "segment", {"box_ap": 44.0, "mask_ap": 38.7}, notes=_INS_NOTE),
    _entry("rtmdet-ins-m", _mmdet("rtmdet-ins_m_8xb32-300e_coco", "20221123_001039-6eba602e"),
           "6eba602e", "segment", {"box_ap": 48.8, "mask_ap": 42.1}, notes=_INS_NOTE),
    _entry("rtmdet-ins-l", _mmdet("rtmdet-ins_l_8xb32-300e_coco", "20221124_103237-78d1d652"),
           "78d1d652", "segment", {"box_ap": 51.2, "mask_ap": 43.7}, notes=_INS_NOTE),
    _entry("rtmdet-ins-x", _mmdet("rtmdet-ins_x_8xb16-300e_coco", "20221124_111313-33d4595b"),
           "33d4595b", "segment", {"box_ap": 52.4, "mask_ap": 44.6}, notes=_INS_NOTE),
    # ---- Rotated detection, DOTA-v1.0 / HRSC (mmrotate 1.x README) ----
    # Single-scale training, ImageNet-pretrained backbone. The mmrotate metafile lists mAP 75.60 for tiny
    # (README: 75.36) and "Weights: todo" for all; the README URLs are used.
    _entry("rtmdet-r-tiny", _mmrot("rotated_rtmdet_tiny-3x-dota", "9d821076"), "9d821076", "rotated",
           {"dota_mmap": 47.37, "dota_map50": 75.36, "dota_map75": 50.64}, notes=_ROT_NOTE),
    _entry("rtmdet-r-s", _mmrot("rotated_rtmdet_s-3x-dota", "11f6ccf5"), "11f6ccf5", "rotated",
           {"dota_mmap": 48.16, "dota_map50": 76.93, "dota_map75": 50.59}, notes=_ROT_NOTE),
    _entry("rtmdet-r-m", _mmrot("rotated_rtmdet_m-3x-dota", "beeadda6"), "beeadda6", "rotated",
           {"dota_mmap": 50.56, "dota_map50": 78.24, "dota_map75": 54.47}, notes=_ROT_NOTE),
    _entry("rtmdet-r-l", _mmrot("rotated_rtmdet_l-3x-dota", "23992372"), "23992372", "rotated",
           {"dota_mmap": 51.01, "dota_map50": 78.85, "dota_map75": 55.21}, notes=_ROT_NOTE),
    # Multi-scale + random-rotate training: same networks as above (``arch``), other weights: "<arch>.<tag>".
    _entry("rtmdet-r-tiny.ms", _mmrot("rotated_rtmdet_tiny-3x-dota_ms", "f12286ff"), "f12286ff", "rotated",
           {"dota_mmap": 53.59, "dota_map50": 79.82, "dota_map75": 58.87}, arch="rtmdet-r-tiny",
           notes=_ROT_NOTE + "; multi-scale training"),
    _entry("rtmdet-r-s.ms", _mmrot("rotated_rtmdet_s-3x-dota_ms", "20ead048"), "20ead048", "rotated",
           {"dota_mmap": 54.43, "dota_map50": 79.98, "dota_map75": 60.07}, arch="rtmdet-r-s",
           notes=_ROT_NOTE + "; multi-scale training"),
    _entry("rtmdet-r-m.ms", _mmrot("rotated_rtmdet_m-3x-dota_ms", "c71eb375"), "c71eb375", "rotated",
           {"dota_mmap": 55.00, "dota_map50": 80.26, "dota_map75": 61.26}, arch="rtmdet-r-m",
           notes=_ROT_NOTE + "; multi-scale training"),
    _entry("rtmdet-r-l.ms", _mmrot("rotated_rtmdet_l-3x-dota_ms", "2738da34"), "2738da34", "rotated",
           {"dota_mmap": 55.52, "dota_map50": 80.54, "dota_map75": 61.47}, arch="rtmdet-r-l",
           notes=_ROT_NOTE + "; multi-scale training"),
    _entry("rtmdet-r-l.coco-ms", _mmrot("rotated_rtmdet_l-coco_pretrain-3x-dota_ms", "06d248a2"), "06d248a2",
           "rotated", {"dota_mmap": 56.74, "dota_map50": 81.33, "dota_map75": 63.45}, arch="rtmdet-r-l",
           notes=_ROT_NOTE + "; COCO-pretrained, multi-scale training"),
    _entry("rtmdet-r-l.aug", _mmrot("rotated_rtmdet_l-100e-aug-dota", "bc59fd88"), "bc59fd88", "rotated",
           {"dota_mmap": 54.59, "dota_map50": 80.16, "dota_map75": 61.16}, arch="rtmdet-r-l",
           notes=_ROT_NOTE + "; 100 epochs with Mixup+Mosaic"),
    _entry("rtmdet-r-tiny-hrsc", _mmrot("rotated_rtmdet_tiny-9x-hrsc", "9f2e3ca6"), "9f2e3ca6", "rotated",
           {"hrsc_map07": 90.6, "hrsc_map12": 97.1}, supported=False,
           notes="RTMDet-R tiny on HRSC2016 (1 class, 800 input): reserved, rtmkit does not build it yet"),
    # ---- Networks without official weights ----
    _entry("rtmdet-nano", None, None, "detect", {},
           notes="RTMPose's nano network with COCO's 80 classes: no official COCO weights (the built-in demo "
                 "trains it from scratch)"),
    # ---- CSPNeXt ImageNet backbones (mmdet configs/rtmdet/classification/README.md) ----
    # Keys are prefixed "backbone."; used to initialise training. The mmdet tiny/s detector configs point to
    # hash-less copies (cspnext-tiny_imagenet_600e.pth, cspnext-s_imagenet_600e.pth) in the same folder.
    _entry("cspnext-tiny", _CSPNEXT + "cspnext-tiny_imagenet_600e-3a2dd350.pth", "3a2dd350", "classify",
           {"top1": 69.44, "top5": 89.45}, notes="ImageNet-1k, 224 input"),
    _entry("cspnext-s", _CSPNEXT + "cspnext-s_imagenet_600e-ea671761.pth", "ea671761", "classify",
           {"top1": 74.41, "top5": 92.23}, notes="ImageNet-1k, 224 input"),
    _entry("cspnext-m", _CSPNEXT + "cspnext-m_8xb256-rsb-a1-600e_in1k-ecb3bbd9.pth", "ecb3bbd9", "classify",
           {"top1": 79.27, "top5": 94.79}, notes="ImageNet-1k, 224 input, RSB-A1 recipe"),
    _entry("cspnext-l", _CSPNEXT + "cspnext-l_8xb256-rsb-a1-600e_in1k-6a760974.pth", "6a760974", "classify",
           {"top1": 81.30, "top5": 95.62}, notes="ImageNet-1k, 224 input, RSB-A1 recipe"),
    _entry("cspnext-x", _CSPNEXT + "cspnext-x_8xb256-rsb-a1-600e_in1k-b3f78edd.pth", "b3f78edd", "classify",
           {"top1": 82.10, "top5": 95.69}, notes="ImageNet-1k, 224 input, RSB-A1 recipe"),
]

MODELS: dict[str, ModelEntry] = {entry.name: entry for entry in _ENTRIES}
if len(MODELS) != len(_ENTRIES):  # a duplicate name would silently shadow an entry
    raise RuntimeError("duplicate names in the rtmkit model table")
if set(_CONFIGS) - set(MODELS):
    raise RuntimeError(f"configs without a table entry: {sorted(set(_CONFIGS) - set(MODELS))}")

# The buildable configs by name (a view of MODELS).
CONFIGS: dict[str, RTMDetConfig] = {name: e.config for name, e in MODELS.items() if e.config is not None
                                    and e.arch == name}


def list_models(task: str | None = None) -> list[str]:
    """Names, in table order, optionally only those of one task ("detect", "segment", "rotated", "classify")."""
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return [name for name, entry in MODELS.items() if task is None or entry.task == task]


def list_configs() -> list[str]:
    """The names rtmkit can build."""
    return list(CONFIGS)


def lookup(name: str) -> ModelEntry | None:
    """The table entry of ``name``, lenient about case and underscores ("RTMDet_s"), never about anything else."""
    return MODELS.get(name) or MODELS.get(name.strip().lower().replace("_", "-"))


def get_config(name: str, **overrides: Any) -> RTMDetConfig:
    """A fresh copy of a named config with ``overrides`` applied (``num_classes=3``, ``input_size=416``, ``eval=
    {...}``; see :meth:`RTMDetConfig.replace`). Changing ``num_classes`` drops the default class names unless new
    ones are given."""
    entry = lookup(name)
    if entry is None:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(CONFIGS)}")
    if entry.config is None:
        raise UnsupportedModelError(f"{entry.name!r} is a reserved name: rtmkit does not build {entry.task} models "
                                    f"of this family yet. {entry.notes}")
    return entry.config.replace(**overrides)


def config_from_dict(d: dict[str, Any]) -> RTMDetConfig:
    """A stored config (checkpoint, export metadata); files written before configs had a ``size`` get the size
    of their named architecture."""
    cfg = RTMDetConfig.from_dict(d)
    entry = MODELS.get(cfg.name)
    if "size" not in d and entry is not None and entry.config is not None:
        cfg = cfg.replace(size=entry.config.size)
    return cfg
