"""``TrainArgs``: every training option, once. The ``rtmkit train`` flags are generated from these fields (their
``help`` metadata), so the CLI and the Python API cannot drift apart. No torch import: ``rtmkit --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


# `rtmkit train` without --data: the settings that make its demo learn in minutes on a CPU. rtmdet-nano at a 96 px
# input; no Mosaic/MixUp stage (they pay off over hundreds of epochs, not thirty); a learning rate far above the
# linear rule, which suits a short run from scratch.
DEMO_TRAIN = {"model": "rtmdet-nano", "imgsz": 96, "epochs": 32, "stage2_epochs": 32, "batch": 8, "lr": 0.02,
              "warmup_iters": 20, "workers": 0}


@dataclass
class TrainArgs:
    """Everything ``rtmkit train`` takes. ``batch`` is the total batch over all processes; the learning rate
    defaults to the linear rule 0.004 * batch * accumulate / 256."""

    model: str = _opt("rtmdet-tiny", "config name (rtmkit models lists them)")
    data: str = _opt("", "training data: COCO json, YOLO data.yaml, or a folder holding one")
    val: str | None = _opt(None, "validation COCO json (a data.yaml names its own val split)")
    epochs: int = _opt(300, "training epochs")
    stage2_epochs: int | None = _opt(None, "final epochs without Mosaic/MixUp (default: 20 of 300, scaled)")
    batch: int = _opt(16, "total batch over all processes")
    accumulate: int = _opt(1, "gradient accumulation steps")
    imgsz: int | None = _opt(None, "training input size (default: the config's)")
    lr: float | None = _opt(None, "learning rate (default: 0.004 x batch x accumulate / 256)")
    weight_decay: float = _opt(0.05, "AdamW weight decay (not applied to norms and biases)")
    optimizer: str = _opt("AdamW", "AdamW (the recipe) or SGD", choices=("AdamW", "SGD"))
    warmup_iters: int = _opt(1000, "linear warm-up iterations")
    weights: str | None = _opt(None, "detector checkpoint to start from (path, URL or zoo name): fine-tuning")
    backbone: str | None = _opt(None, "CSPNeXt ImageNet weights (path or zoo name) for training from scratch")
    device: str | None = _opt(None, "cpu, cuda, cuda:1 or a GPU index (default: GPU if available)")
    workers: int = _opt(2, "data-loading worker processes")
    amp: bool = _opt(False, "mixed precision (GPU)")
    patience: int = _opt(0, "stop after N validations without improvement (0: never)")
    val_interval: int = _opt(1, "validate every N epochs (and every stage-2 epoch)")
    freeze_bn: bool = _opt(False, "keep BatchNorm statistics fixed (short fine-tunes of BN-folded weights)")
    seed: int = _opt(0, "random seed")
    deterministic: bool = _opt(False, "deterministic algorithms (exact resume on CPU)")
    project: str = _opt("runs/train", "parent folder of run directories")
    name: str = _opt("exp", "run directory name (incremented if it exists)")
    resume: str | bool = _opt(False, "resume the latest run, or the given run directory / last.pt")
    dist_timeout: float | None = _opt(None, "seconds a rank may stay silent before a multi-process run stops, naming "
                                          "it (default: 600 on CPUs, 1800 on GPUs; waits for validation on rank "
                                          "0 are not counted)")

    def __post_init__(self) -> None:
        """Nonsense values are refused here, once for the CLI and the Python API (flag names in the messages)."""
        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"--{name.replace('_', '-')} must be {rule}, got {getattr(self, name)!r}")

        for name in ("epochs", "batch", "accumulate", "val_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "a positive integer")
        for name in ("workers", "warmup_iters", "patience", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise bad(name, "a non-negative integer")
        if self.stage2_epochs is not None and not 0 <= self.stage2_epochs <= self.epochs:
            raise bad("stage2_epochs", f"between 0 and --epochs ({self.epochs})")
        if self.imgsz is not None and (self.imgsz <= 0 or self.imgsz % 32):
            raise bad("imgsz", "a positive multiple of 32")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise bad("lr", "a positive finite number")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise bad("weight_decay", "a finite number >= 0")
        if self.dist_timeout is not None and not (math.isfinite(self.dist_timeout) and self.dist_timeout > 0):
            raise bad("dist_timeout", "a positive number of seconds")
        if self.optimizer not in ("AdamW", "SGD"):
            raise bad("optimizer", "AdamW or SGD")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> TrainArgs:
        """``TrainArgs`` from keyword arguments, refusing unknown ones (a typo must not be ignored silently)."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in kwargs if k not in known]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, known, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise TypeError(f"unknown training argument(s) {', '.join(hints)}; known: {', '.join(known)}")
        return cls(**kwargs)


def add_train_flags(parser: Any) -> None:
    """One ``--flag`` per :class:`TrainArgs` field (``stage2_epochs`` -> ``--stage2-epochs``), defaulting to
    ``None`` so that the caller can tell what was given."""
    for f in dataclasses.fields(TrainArgs):
        flag = "--" + f.name.replace("_", "-")
        meta = dict(f.metadata)
        help_text = meta.pop("help", None)
        shown = f" (default: {f.default})" if f.default not in (None, "", False) else ""
        if f.name == "resume":
            parser.add_argument(flag, dest=f.name, nargs="?", const=True, default=None, help=help_text)
        elif f.type in ("bool",):
            parser.add_argument(flag, dest=f.name, action="store_true", default=None, help=help_text)
        else:
            kind = {"int": int, "int | None": int, "float": float, "float | None": float}.get(f.type, str)
            parser.add_argument(flag, dest=f.name, type=kind, default=None, help=(help_text or "") + shown, **meta)
