"""Training: the RTMDet recipe on one device or many (torchrun), with an Ultralytics-style run directory.

Per optimiser step: flat-cosine LR with warm-up -> forward + loss (QFL + GIoU after dynamic soft-label assignment)
-> backward (AMP optional, gradient accumulation) -> AdamW -> EMA update. Stage 2 (the last ``stage2_epochs``)
switches the data pipeline from Mosaic/MixUp to large-scale jitter. Validation and checkpoints use the EMA
weights. Checkpoints are written atomically at the end of every epoch; ``resume`` restores model, EMA,
optimiser, scaler, epoch, RNG and pipeline stage, so a killed run resumes to the same weights.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import random
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..allocator import keep_freed_memory
from ..catalog import get_config
from ..checkpoint import CheckpointError, extract_state_dict, load_checkpoint_file, load_weights, save_checkpoint
from ..data.loader import normalize_batch
from ..device import select_device
from ..runs import RunLock, atomic_write_text, increment_dir
from .args import TrainArgs
from .distributed import (
    DistInfo,
    Heartbeat,
    barrier,
    broadcast_object,
    cleanup_distributed,
    convert_sync_batchnorm,
    setup_distributed,
)
from .ema import ExpMomentumEMA
from .optim import FlatCosineSchedule, build_optimizer, scaled_lr
from .task import DetectionTask, task_for


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite losses, a dead rank ...); the last good checkpoint is kept."""


class TrainingInterrupted(TrainingError):
    """SIGTERM or SIGINT: the run stopped between two writes; its last checkpoint is complete and resumable."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class _LossModule(nn.Module):
    """What DDP wraps: forward = the task's criterion on the network's outputs."""

    def __init__(self, net: nn.Module, criterion):
        super().__init__()
        self.net = net
        self.criterion = criterion

    def forward(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return self.criterion(self.net(images), targets)


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _rng_state() -> dict[str, Any]:
    return {"python": list(random.getstate()[1]), "python_pos": random.getstate()[2],
            "numpy": np.random.get_state()[1].tolist(), "numpy_pos": int(np.random.get_state()[2]),
            "torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])


def _write_args_yaml(path: Path, args: dict[str, Any]) -> None:
    import yaml

    atomic_write_text(path, yaml.safe_dump(args, sort_keys=False))


# parameters an RTMDet-Ins net has and a detector does not
INS_ONLY_PREFIXES = ("bbox_head.kernel_convs.", "bbox_head.rtm_kernel.", "bbox_head.mask_head.")


class Trainer:
    """``Trainer(TrainArgs(...)).fit()`` -> final metrics. See :class:`TrainArgs`."""

    def __init__(self, args: TrainArgs):
        self.args = args
        self.dist = DistInfo()
        self.save_dir: Path | None = None

    # ------------------------------------------------------------------ setup
    def _device(self) -> torch.device:
        dev = select_device(self.args.device)
        if dev.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(dev)
        return dev

    def _datasets(self):
        from ..data.datasets import load_dataset

        a = self.args
        if not a.data:
            raise ValueError("no training data: pass data='path/to/train.json' or 'data.yaml'")
        train = load_dataset(a.data, "train")
        if str(a.data).endswith((".yaml", ".yml")):
            val = load_dataset(a.val or a.data, "val", filter_empty_gt=False)
        else:
            val = load_dataset(a.val, "val", filter_empty_gt=False, min_size=0) if a.val else None
        return train, val

    def _build_task(self, train_set) -> DetectionTask:
        a = self.args
        names = tuple(train_set.classes)
        overrides: dict[str, Any] = {"num_classes": len(names), "class_names": names}
        if a.imgsz:
            overrides["input_size"] = a.imgsz
        task = task_for(get_config(a.model, **overrides))
        task.check_dataset(train_set)
        return task

    def _build_net(self, task: DetectionTask) -> nn.Module:
        a = self.args
        net = task.network()
        if a.backbone:
            self._load_backbone(net, a.backbone)
        if a.weights:
            self._load_detector_weights(net, a.weights)
        return net

    def _load_backbone(self, net: nn.Module, spec: str) -> None:
        from ..zoo import resolve_weights

        sd = extract_state_dict(load_checkpoint_file(resolve_weights(spec)), spec)
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")} or sd
        missing, unexpected = load_weights(net.backbone, sd, strict=False, source=spec)
        self._log(f"backbone weights from {spec}: {len(sd) - len(unexpected)} tensors loaded, {len(missing)} missing")

    def _load_detector_weights(self, net: nn.Module, spec: str) -> None:
        from ..zoo import resolve_weights

        sd = extract_state_dict(load_checkpoint_file(resolve_weights(spec)), spec)
        own = net.state_dict()
        may_miss: set[str] = set()
        head_keys = [k for k in sd if k.startswith("bbox_head.rtm_cls.")]
        if head_keys and head_keys[0] in own and sd[head_keys[0]].shape != own[head_keys[0]].shape:
            old = sd[head_keys[0]].shape[0]
            self._log(f"{spec}: checkpoint has {old} classes, the data {net.cfg.num_classes}: the class "
                      "predictors (bbox_head.rtm_cls.*) are re-initialised")
            sd = {k: v for k, v in sd.items() if k not in head_keys}
            may_miss |= set(head_keys)
        mask_parts = [k for k in own if k.startswith(INS_ONLY_PREFIXES)]
        if mask_parts and not any(k in sd for k in mask_parts):  # a detection checkpoint for an Ins model
            self._log(f"{spec}: a detection checkpoint: backbone, neck, the head's shared tower and its "
                      "class/box predictors are loaded (the Ins head has one tower for both branches: it gets "
                      "the detector's box tower, loaded last, as MMDetection loads it); new and randomly "
                      "initialised: the kernel towers, rtm_kernel and mask_head")
            may_miss |= set(mask_parts)
        missing = set(own) - set(sd) - may_miss
        if may_miss and not missing:
            load_weights(net, sd, strict=False, source=spec)
            unexpected = set(sd) - set(own)
            if unexpected:
                raise CheckpointError(f"{spec}: keys this model does not have: {sorted(unexpected)[:10]}")
        else:
            load_weights(net, sd, strict=True, source=spec)
        self._log(f"initialised from {spec}")

    def _build_loader(self, train_ds):
        """A DataLoader over this rank's shard; its workers restart every epoch with empty Mosaic/MixUp caches.

        torch's DistributedSampler draws one permutation from (seed, epoch) on every rank, pads it by wrapping and
        deals it round-robin, so the ranks' k-th batches together are one process's k-th batch of the combined
        size, and a resumed run sees the same order."""
        from torch.utils.data import DataLoader, DistributedSampler

        from ..data.loader import collate, worker_context, worker_init

        a = self.args
        sampler = DistributedSampler(train_ds, num_replicas=self.dist.world_size, rank=self.dist.rank, shuffle=True,
                                     seed=a.seed)
        return DataLoader(train_ds, batch_size=max(a.batch // self.dist.world_size, 1), sampler=sampler,
                          num_workers=a.workers, collate_fn=collate, persistent_workers=False,
                          pin_memory=torch.cuda.is_available(), worker_init_fn=worker_init(a.workers),
                          multiprocessing_context=worker_context(a.workers))

    def _log(self, msg: str) -> None:
        if self.dist.is_main:
            print(msg, flush=True)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, path: Path, epoch: int, history: list[dict]) -> None:
        """EMA weights as the MMDetection-style ``state_dict``; everything needed to resume under ``train_state``."""
        net = self.net
        model_state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        ema_state = self.ema.module.state_dict()
        bad = _non_finite(model_state) + [f"ema: {k}" for k in _non_finite(ema_state)]
        if bad:  # never leave a checkpoint that would silently detect nothing
            raise TrainingError(f"refusing to write {path}: {len(bad)} tensors are not finite ({', '.join(bad[:5])}"
                                f"{', ...' if len(bad) > 5 else ''}); {self._last_good()}. Try a lower --lr.")
        state = {"model": model_state, "ema": self.ema.state_dict(),
                 "optimizer": self.opt.state_dict(),
                 "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                 "epoch": epoch, "iter": self.it, "best_fitness": self.best, "bad_epochs": self.bad_epochs,
                 "rng": _rng_state(), "args": _plain(self.args.to_dict()), "history": _plain(history)}
        save_checkpoint(path, ema_state, class_names=list(self.task.cfg.class_names or ()),
                        config=self.task.cfg.to_dict(), extra={"train_state": state})

    # ------------------------------------------------------------------ main loop
    def fit(self) -> dict[str, Any]:
        a = self.args
        device = self._device()
        timeout = a.dist_timeout or (1800.0 if device.type == "cuda" else 600.0)
        self.dist = setup_distributed(device, timeout)
        self._lock: RunLock | None = None
        previous = self._catch_stop_signals()
        try:
            return self._fit(device)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if self._lock is not None:
                self._lock.release()
            cleanup_distributed()

    def _catch_stop_signals(self) -> dict[int, Any]:
        """SIGTERM/SIGINT end the run through the normal exits (a checkpoint being written is completed or
        removed, workers are stopped, the run lock is released) instead of killing it mid-write."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def stop(signum: int, frame: Any) -> None:  # noqa: ARG001
            name = signal.Signals(signum).name
            last = self.save_dir / "weights" / "last.pt" if self.save_dir is not None else None
            where = (f"{last} holds the last complete epoch; continue with: rtmkit train --resume "
                     f"{self.save_dir}" if last is not None and last.is_file() else "no epoch had finished yet")
            raise TrainingInterrupted(f"stopped by {name}: {where}", signum)

        return {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}

    def _setup(self, device: torch.device, train_set) -> None:
        """Task, network, EMA, optimiser, AMP and the module DDP wraps, all on ``self``."""
        a = self.args
        self.device = device
        self.task = self._build_task(train_set)
        net = self._build_net(self.task).to(device)
        if device.type == "cpu":
            keep_freed_memory()  # fewer page faults on the large activations of every step
        if self.dist.enabled:
            net = convert_sync_batchnorm(net, device)
        self.net = net
        self.ema = ExpMomentumEMA(net)
        self.lr = a.lr or scaled_lr(a.batch * a.accumulate)
        self.opt = build_optimizer(net, self.lr, a.weight_decay, a.optimizer)
        use_amp = a.amp and device.type == "cuda"
        amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
        self.amp_dtype = amp_dtype if use_amp else None
        self.scaler = torch.amp.GradScaler("cuda") if use_amp and amp_dtype == torch.float16 else None
        self.loss_module: nn.Module = _LossModule(net, self.task.criterion())
        if self.dist.enabled:
            self.loss_module = nn.parallel.DistributedDataParallel(
                self.loss_module, device_ids=[device.index] if device.type == "cuda" else None)
        self.it, self.best, self.bad_epochs = 0, -1.0, 0
        self.heartbeat = Heartbeat()
        self.schedule: FlatCosineSchedule | None = None

    def _fit(self, device: torch.device) -> dict[str, Any]:
        a = self.args
        resume_state = self._resume_state()
        if resume_state is not None:
            a = self.args = _resumed_args(self.args, resume_state["args"], self.save_dir)
            if self.dist.is_main:
                self._lock = RunLock(self.save_dir).acquire()
        _seed_everything(a.seed + self.dist.rank, a.deterministic)
        train_set, val_set = self._datasets()
        self._setup(device, train_set)
        stage2 = a.stage2_epochs if a.stage2_epochs is not None else (round(a.epochs * 20 / 300) if a.epochs >= 5
                                                                     else 0)
        switch_epoch = a.epochs - stage2
        start_epoch, history = 0, []
        if resume_state is not None:
            self.net.load_state_dict(resume_state["model"])
            self.ema.load_state_dict(resume_state["ema"])
            self.opt.load_state_dict(resume_state["optimizer"])
            if self.scaler is not None and resume_state.get("scaler"):
                self.scaler.load_state_dict(resume_state["scaler"])
            start_epoch, self.it = resume_state["epoch"] + 1, resume_state["iter"]
            self.best, self.bad_epochs = resume_state["best_fitness"], resume_state["bad_epochs"]
            history = resume_state["history"]
            _set_rng_state(resume_state["rng"])
            self._log(f"resumed from {self.save_dir / 'weights' / 'last.pt'} at epoch {start_epoch}")
        else:
            self.save_dir = broadcast_object(increment_dir(a.project, a.name) if self.dist.is_main else None)
            if self.dist.is_main:
                self._lock = RunLock(self.save_dir).acquire()
        weights_dir = self.save_dir / "weights"
        if self.dist.is_main:
            weights_dir.mkdir(parents=True, exist_ok=True)
            _write_args_yaml(self.save_dir / "args.yaml", _plain(a.to_dict()))
        barrier()

        task = self.task
        train_ds = task.train_dataset(train_set, seed=a.seed, epochs=a.epochs, stage2_epochs=stage2,
                                      epoch=start_epoch)
        predictor = task.predictor(self.ema.module) if val_set is not None else None
        loader = None
        metrics: dict[str, Any] = {}
        for epoch in range(start_epoch, a.epochs):
            stage = 2 if epoch >= switch_epoch else 1
            changed = train_ds.set_epoch(epoch)
            if loader is None or changed:  # a new loader restarts the workers and their caches
                if changed:
                    self._log(f"epoch {epoch + 1}: switching to the stage-2 pipeline (no Mosaic/MixUp)")
                loader = self._build_loader(train_ds)
            loader.sampler.set_epoch(epoch)
            # Caches start empty every epoch (workers are restarted; without workers, reset here), so an epoch
            # depends only on (seed, epoch) and a resumed run repeats it exactly.
            if a.workers == 0 and hasattr(train_ds.pipeline, "reset"):
                train_ds.pipeline.reset()
            if self.schedule is None:
                iters_per_epoch = max(len(loader) // a.accumulate, 1)
                self.schedule = FlatCosineSchedule(self.lr, a.epochs, iters_per_epoch, warmup_iters=a.warmup_iters)
            try:
                losses = self._train_epoch(epoch, loader)
            except RuntimeError as e:  # a collective timed out or failed: say which rank went silent
                if "exited unexpectedly" in str(e) and not isinstance(e, TrainingError):
                    # Workers start from a fresh interpreter that imports the calling script (forkserver/spawn):
                    # a script that calls train() at top level makes each worker run it again and die.
                    raise TrainingError(
                        f"{(str(e).splitlines() or [''])[0]}. If you call train() from a script, put the call "
                        "under `if __name__ == \"__main__\":` (data workers import the script), or pass workers=0. "
                        f"{self._last_good()}.") from e
                if not self.dist.enabled or isinstance(e, TrainingError):
                    raise
                who = self.heartbeat.silent()
                raise TrainingError(f"rank {self.dist.rank}: a collective failed in epoch {epoch + 1} "
                                    f"({(str(e).splitlines() or [''])[0][:200]}); "
                                    f"{who or 'every rank answers a check now (the failure was transient?)'}. "
                                    f"{self._last_good()}.") from None
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": self.schedule.lr_at(max(self.it - 1, 0)), **losses}
            last_epoch = epoch == a.epochs - 1
            do_val = val_set is not None and ((epoch + 1) % a.val_interval == 0 or last_epoch or stage == 2)
            if do_val and self.dist.is_main:
                metrics = task.evaluate(predictor, val_set, batch=max(a.batch // self.dist.world_size, 1))
                row.update({k: metrics[k] for k in task.metric_keys})
            history.append(row)
            fitness = task.fitness(row) if do_val else -1.0
            improved = do_val and fitness > self.best
            if improved:
                self.best, self.bad_epochs = fitness, 0
            elif do_val:
                self.bad_epochs += 1
            if self.dist.is_main:
                self._checkpoint(weights_dir / "last.pt", epoch, history)
                if improved or (val_set is None and last_epoch):
                    self._checkpoint(weights_dir / "best.pt", epoch, history)
                self._write_results(history, metrics, val_set)
                self._log(_epoch_line(row, a.epochs))
            stop = bool(a.patience and self.bad_epochs >= a.patience)
            barrier(VALIDATION_WAIT_S)  # rank 0 validates and writes while the others wait: not a hang
            if broadcast_object(stop):
                self._log(f"early stop: no improvement in {a.patience} validations (best AP {self.best:.4f})")
                break
            barrier()
        return {"best_fitness": self.best, "save_dir": str(self.save_dir), "history": history, "metrics": metrics}

    def _train_epoch(self, epoch: int, loader) -> dict[str, float]:
        """One epoch of optimiser steps; returns the mean of each loss over the applied steps."""
        a, net, opt, scaler, device = self.args, self.net, self.opt, self.scaler, self.device
        cfg = self.task.cfg
        self.loss_module.train()
        if a.freeze_bn:
            for m in net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        sums: dict[str, float] = {}
        count = 0
        bad_steps = 0
        bn_stats = _BatchNormStats(net)
        bar = loader
        if self.dist.is_main:
            from tqdm import tqdm

            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{a.epochs}", unit="batch", leave=False, dynamic_ncols=True)
        opt.zero_grad(set_to_none=True)
        for i, (images, targets) in enumerate(bar):
            if i == 0 and epoch < 2 and self.dist.is_main:  # what the network actually sees, per stage
                from ..plots import plot_train_batch

                plot_train_batch(images, targets, cfg.data.mean, cfg.data.std, dict(enumerate(cfg.class_names)),
                                 self.save_dir / f"train_batch_epoch{epoch + 1}.jpg")
            images = normalize_batch(images, cfg.data.mean, cfg.data.std, device)
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            self.heartbeat.beat(self.it + 1)  # "beginning step n": a rank that stops beating is the one to name
            if i % a.accumulate == 0:
                self.schedule.apply(opt, self.it)
            # A training-mode forward updates BatchNorm's running statistics before the loss is known: keep a
            # copy, so that a skipped step leaves no trace in the model (or in the checkpoints written later).
            bn_saved = bn_stats.save()
            with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                losses = self.loss_module(images, targets)
            total = sum(losses.values())
            problem = None if self._all_ranks_agree(torch.isfinite(total)) else "non-finite loss"
            if problem is None:
                scaled = total / a.accumulate
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
                # fp16 overflow is the scaler's to handle (it skips that step and lowers its scale)
                if scaler is None and not self._all_ranks_agree(_grads_finite(net)):
                    problem = "non-finite gradients"
            if problem is not None:
                bad_steps += 1
                bn_stats.restore(bn_saved)
                opt.zero_grad(set_to_none=True)
                detail = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
                self._log(f"warning: {problem} at epoch {epoch + 1}, step {self.it} ({detail}): step skipped")
                if bad_steps >= 3:
                    plural = {"non-finite loss": "non-finite losses"}.get(problem, problem)
                    raise TrainingError(f"{plural} in {bad_steps} steps of epoch {epoch + 1} (last at step "
                                        f"{self.it}: {detail}); {self._last_good()}. Try a lower --lr or disable "
                                        "--amp.")
                continue
            if (i + 1) % a.accumulate == 0 or i + 1 == len(loader):
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                opt.zero_grad(set_to_none=True)
                self.ema.update(net)
                self.it += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            count += 1
            if self.dist.is_main and hasattr(bar, "set_postfix"):
                shown = {k: f"{s / count:.4f}" for k, s in sums.items()}
                bar.set_postfix(shown | {"lr": f"{opt.param_groups[0]['lr']:.2e}"})
        return {k: s / max(count, 1) for k, s in sums.items()}

    def _all_ranks_agree(self, ok: torch.Tensor) -> bool:
        """``ok`` on every rank (ranks must skip a step together, or DDP's gradient all-reduce would diverge)."""
        flag = ok.detach().reshape(1).to(self.device, torch.float32)
        if self.dist.enabled:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag.item() > 0)

    def _last_good(self) -> str:
        last = self.save_dir / "weights" / "last.pt"
        if last.is_file():
            return f"the last good checkpoint is {last} (all its tensors finite)"
        return "no checkpoint was written yet (the first epoch did not finish)"

    # ------------------------------------------------------------------ resume and outputs
    def _resume_state(self) -> dict[str, Any] | None:
        a = self.args
        if not a.resume:
            return None
        if a.resume is True or a.resume == "True":
            runs = sorted(Path(a.project).glob("*/weights/last.pt"), key=lambda p: p.stat().st_mtime)
            if not runs:
                raise FileNotFoundError(f"--resume: no run with weights/last.pt under {a.project}")
            path = runs[-1]
        else:
            path = Path(a.resume)
            if path.is_dir():
                path = path / "weights" / "last.pt"
        ckpt = load_checkpoint_file(path)
        if "train_state" not in ckpt:
            raise CheckpointError(f"{path}: not an rtmkit training checkpoint (no train_state): cannot resume")
        self.save_dir = path.parent.parent
        state = ckpt["train_state"]
        if state["epoch"] + 1 >= state["args"]["epochs"]:
            raise ValueError(f"{path}: training already finished ({state['epoch'] + 1} epochs); nothing to resume. "
                             f"To train longer, start a new run from its weights: rtmkit train --weights {path} ...")
        return state

    def _write_results(self, history: list[dict], metrics: dict[str, Any], val_set) -> None:
        from ..plots import plot_pr_curve, plot_results

        keys: list[str] = []
        for row in history:
            keys += [k for k in row if k not in keys]
        table = io.StringIO(newline="")
        w = csv.DictWriter(table, fieldnames=keys)
        w.writeheader()
        for row in history:
            w.writerow(row)
        atomic_write_text(self.save_dir / "results.csv", table.getvalue())
        plot_results(history, self.save_dir / "results.png")
        if metrics and val_set is not None:
            masks = metrics.get("per_class_mask_AP")
            lines = ["class,AP" + (",mask_AP" if masks else "")] + [
                f"{n},{ap:.4f}" + (f",{masks[n]:.4f}" if masks else "") for n, ap in metrics["per_class_AP"].items()]
            atomic_write_text(self.save_dir / "per_class_ap.csv", "\n".join(lines) + "\n")
            if "precision" in metrics:
                plot_pr_curve(metrics["precision"], list(val_set.classes), self.save_dir / "pr_curve.png")


# How long the other ranks wait for rank 0's validation and checkpoint writing before calling it a hang.
VALIDATION_WAIT_S = 6 * 3600.0

# Settings a resumed run may change; every other one is the run's own (args.yaml), or the data, the augmentations
# (seeded per worker) or the schedule would differ from the run that was interrupted.
RESUME_MAY_CHANGE = ("device", "dist_timeout")


def _resumed_args(given: TrainArgs, saved: dict[str, Any], run_dir: Path) -> TrainArgs:
    """The interrupted run's own arguments; a setting given now that differs from them is an error (only
    ``RESUME_MAY_CHANGE`` may), so a resume never trains something else than the run it continues."""
    defaults = TrainArgs()
    restored = TrainArgs.from_kwargs(**{k: v for k, v in saved.items() if k != "resume"})
    changes = {}
    for f in dataclasses.fields(TrainArgs):
        new, old = getattr(given, f.name), getattr(restored, f.name)
        if f.name in ("resume", "project", "name") or new is None or new == getattr(defaults, f.name) or new == old:
            continue  # not given (a default), or the same
        if f.name in RESUME_MAY_CHANGE:
            changes[f.name] = new
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = (" To train longer, start a new run from its weights: rtmkit train --weights "
                f"{run_dir}/weights/last.pt ..." if f.name == "epochs" else "")
        raise ValueError(f"{flag} {new!r} differs from the run's own {old!r} ({run_dir}/args.yaml): a resumed run "
                         f"keeps its settings (only {', '.join('--' + k.replace('_', '-') for k in RESUME_MAY_CHANGE)}"
                         f" may change).{hint}")
    return dataclasses.replace(restored, resume=given.resume, **changes)


class _BatchNormStats:
    """Save and restore the running statistics of every BatchNorm of a module (a few hundred small tensors)."""

    def __init__(self, net: nn.Module):
        self.tensors = [t for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                        for t in (m.running_mean, m.running_var, m.num_batches_tracked) if t is not None]

    def save(self) -> list[torch.Tensor]:
        return [t.clone() for t in self.tensors]

    def restore(self, saved: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for t, s in zip(self.tensors, saved):
                t.copy_(s)


def _grads_finite(net: nn.Module) -> torch.Tensor:
    """One fused norm over all gradients: inf or NaN anywhere makes it non-finite."""
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    if not grads:
        return torch.tensor(True)
    total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    norm = total_norm(grads) if total_norm is not None else torch.stack(torch._foreach_norm(grads)).norm()
    return torch.isfinite(norm)


def _non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _plain(obj: Any) -> Any:
    """Only plain types survive a weights-only load: convert numpy scalars and tuples."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return -1.0
    return obj


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}"]
    parts += [f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "lr") and isinstance(v, float)]
    parts.append(f"lr {row['lr']:.2e}")
    return "  ".join(parts)


def train(**kwargs: Any) -> dict[str, Any]:
    """``rtmkit.engine.trainer.train(model="rtmdet-tiny", data="train.json", val="val.json", epochs=10)``; unknown
    keywords are an error."""
    return Trainer(TrainArgs.from_kwargs(**kwargs)).fit()

