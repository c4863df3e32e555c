"""What runs the network: the :class:`Backend` protocol and the PyTorch backend.

A backend takes a letterboxed batch and returns its graph's outputs (``forward``), then turns raw outputs into
decoded :class:`~rtmkit.models.postprocess.Candidates` (``decode``). ``graph == "end2end"`` backends return
``(dets [B, K, 5], labels [B, K])`` with NMS already done and are not decoded.
"""

from __future__ import annotations

from itertools import chain
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from ..allocator import keep_freed_memory
from ..models.fuse import compile_for_inference, fuse_model
from ..models.postprocess import Candidates, decode


@runtime_checkable
class Backend(Protocol):
    """The network part of the pipeline.

    ``graph``: ``"raw"`` (outputs are decoded and post-processed on the host) or ``"end2end"`` (NMS inside).
    ``input_dtype``: ``"float32"``/``"float16"`` for a normalised NCHW batch, ``"uint8"`` when the graph normalises
    BGR pixels itself. ``fixed_batch``: the only batch size a static graph accepts (``None``: any).
    ``channels_last``: the batch should be handed over in channels-last layout (a torch-only hint).
    """

    graph: str
    input_dtype: str
    fixed_batch: int | None
    channels_last: bool
    device: torch.device

    def forward(self, batch: torch.Tensor) -> Any: ...

    def decode(self, outputs: Any, input_hw: tuple[int, int]) -> Candidates: ...


def _weights_stamp(net: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer of ``net`` is modified in place or replaced (optimiser steps,
    ``load_state_dict``, ``.to()``): tensor version counters and storage addresses."""
    return tuple((t.data_ptr(), t._version) for t in chain(net.parameters(), net.buffers()))


class TorchBackend:
    """A PyTorch detector (``RTMDetNet``) as a backend.

    ``fuse=True`` (the default of ``RTMDet.predict``) runs an eval-mode copy with BatchNorm folded into the convs,
    in channels-last layout (and, on CPUs, with freed memory kept in the heap): 0.6x the reference's forward time
    on CPUs, outputs equal to the plain net up to float rounding. The copy is rebuilt whenever the plain net's
    weights change, so it never runs stale weights. ``compile=True`` also compiles that copy with
    ``torch.compile`` (frozen weights). ``fuse=False`` runs the plain net itself (in eval mode): bit-identical to
    the reference.
    """

    graph = "raw"
    input_dtype = "float32"
    fixed_batch = None

    def __init__(self, net: nn.Module, *, fuse: bool = True, channels_last: bool = True, compile: bool = False,
                 compile_size: int | None = None):
        self.net = net
        self.fuse = fuse or compile
        self.channels_last = channels_last and self.fuse
        self.compile = compile
        self.compile_size = compile_size or getattr(getattr(net, "cfg", None), "input_size", 640)
        self.strides = tuple(net.strides)
        self._stamp: tuple | None = None
        self._module: nn.Module | None = None

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def module(self) -> nn.Module:
        """The module ``forward`` runs: the plain net, or its fused (compiled) copy, rebuilt when stale."""
        if not self.fuse:
            return self.net
        stamp = _weights_stamp(self.net)
        if self._module is None or stamp != self._stamp:
            if self.device.type == "cpu":
                keep_freed_memory()  # large activations reuse heap pages instead of page-faulting
            fused = fuse_model(self.net)
            if self.channels_last:
                fused = fused.to(memory_format=torch.channels_last)
            if self.compile:
                fused = compile_for_inference(fused, self.compile_size, self.device, self.channels_last)
            self._module, self._stamp = fused, stamp
        return self._module

    def forward(self, batch: torch.Tensor) -> Any:
        module = self.module()
        if module is self.net and self.net.training:  # prediction always uses running BN statistics
            self.net.eval()
            try:
                return self.net(batch)
            finally:
                self.net.train()
        return module(batch)

    def decode(self, outputs: Any, input_hw: tuple[int, int]) -> Candidates:  # noqa: ARG002 (sizes from outputs)
        return decode(outputs, self.strides)
