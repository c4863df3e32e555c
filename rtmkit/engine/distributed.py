"""Distributed helpers: process-group setup from torchrun's environment, rank-0 utilities, and a SyncBN that also
works on CPU (PyTorch's SyncBatchNorm accepts only accelerator tensors)."""

from __future__ import annotations

import datetime
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce as differentiable_all_reduce


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: torch.device, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (nothing to do otherwise).

    ``timeout_s`` bounds every collective: if a rank dies, the others fail with an error instead of hanging."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(timeout_s: float | None = None) -> None:
    """Wait for every rank. On CPUs (gloo) a monitored barrier: after ``timeout_s`` (default: the process group's)
    it fails naming the ranks that did not arrive."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_backend() == "gloo":
        timeout = datetime.timedelta(seconds=timeout_s) if timeout_s is not None else None
        dist.monitored_barrier(timeout=timeout, wait_all_ranks=True)
    else:
        dist.barrier()


class Heartbeat:
    """Each rank records its last training step (and when) in the process group's key-value store, so that after a
    collective times out the survivors can say which rank stopped answering and since when. Nothing happens
    without a process group, or where the store cannot be reached (a torch without the private accessor)."""

    def __init__(self) -> None:
        self.store = None
        if dist.is_available() and dist.is_initialized():
            try:
                self.store = dist.distributed_c10d._get_default_store()
            except (AttributeError, RuntimeError):
                self.store = None
        self.rank = dist.get_rank() if self.store is not None else 0
        self.world = dist.get_world_size() if self.store is not None else 1

    def beat(self, step: int) -> None:
        if self.store is not None:
            self.store.set(f"rtmkit/beat/{self.rank}", f"{step} {time.time():.3f}")

    def silent(self) -> str | None:
        """The ranks behind the others, in words (None when it cannot be told)."""
        if self.store is None:
            return None
        seen: dict[int, tuple[int, float]] = {}
        for r in range(self.world):
            try:
                step, when = self.store.get(f"rtmkit/beat/{r}").decode().split()
                seen[r] = (int(step), float(when))
            except Exception:  # a rank that never beat, or a store that went away with the failure
                continue
        if not seen:
            return None
        front = max(step for step, _ in seen.values())
        behind = [f"rank {r} (last began step {step}, {time.time() - when:.0f} s ago)"
                  for r, (step, when) in sorted(seen.items()) if step < front]
        behind += [f"rank {r} (never reported a step)" for r in range(self.world) if r not in seen]
        return ("stopped answering: " + ", ".join(behind) + f"; the others began step {front}") if behind else None


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are computed over the whole distributed batch, on any device.

    Per-channel sums and sums of squares are all-reduced (with gradients flowing through the reduction), so the
    result equals BatchNorm over the concatenated batch up to float rounding. Without a process group it is a
    plain BatchNorm2d. State-dict layout is BatchNorm2d's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        xf = x.float()
        local = torch.cat([xf.sum(dim=(0, 2, 3)), (xf * xf).sum(dim=(0, 2, 3)),
                           xf.new_full((1,), float(x.numel() // c))])
        total = differentiable_all_reduce(local)
        n = total[-1]
        mean = total[:c] / n
        var = total[c:2 * c] / n - mean * mean  # biased, used to normalise
        with torch.no_grad():
            self.num_batches_tracked += 1
            unbiased = var.detach() * n / (n - 1).clamp(min=1)
            self.running_mean.mul_(1 - self.momentum).add_(mean.detach(), alpha=self.momentum)
            self.running_var.mul_(1 - self.momentum).add_(unbiased, alpha=self.momentum)
        inv = torch.rsqrt(var + self.eps)
        y = (xf - mean.view(1, -1, 1, 1)) * inv.view(1, -1, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Swap every BatchNorm2d for a synchronised one: PyTorch's on CUDA, :class:`SyncBatchNorm2d` elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            sync = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            sync.to(child.weight.device)
            setattr(module, name, sync)
        else:
            convert_sync_batchnorm(child, device)
    return module
