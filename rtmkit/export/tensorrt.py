"""TensorRT engines built from rtmkit's ONNX export (GPU machines with ``pip install tensorrt``).

``build_engine`` parses the ONNX file and builds a serialized engine (FP16 by default) with one optimisation
profile over the batch sizes asked for; the rtmkit metadata of the ONNX file is kept beside the engine as
``<engine>.json``. ``TensorRTBackend`` runs it with the same call contract as the ONNX Runtime backend, so
``RTMDet("model.engine")`` predicts through the usual API. Written against the TensorRT 10 name-based tensor API.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .backends import ExportedGraph
from .onnx import read_metadata


def _trt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise ImportError("TensorRT engines need the tensorrt package (GPU machines): pip install tensorrt") from e
    if not torch.cuda.is_available():
        raise RuntimeError("TensorRT needs a CUDA GPU, and none is available")
    return trt


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike | None = None, *, fp16: bool = True,
                 batches: tuple[int, ...] = (1,), imgsz: int | None = None, workspace_gb: float = 4.0) -> Path:
    """Build a TensorRT engine from an rtmkit ONNX export and return its path."""
    trt = _trt()
    onnx_path = Path(onnx_path)
    meta = read_metadata(onnx_path)
    size = imgsz or int(meta["imgsz"])
    engine_path = Path(engine_path) if engine_path is not None else onnx_path.with_suffix(".engine")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT could not parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    inp = network.get_input(0)
    if any(d < 0 for d in inp.shape):  # dynamic axes: one profile covering the requested batch sizes
        profile = builder.create_optimization_profile()
        lo, hi = min(batches), max(batches)
        profile.set_shape(inp.name, (lo, 3, size, size), (hi, 3, size, size), (hi, 3, size, size))
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
    engine_path.write_bytes(bytes(serialized))
    meta.update({"tensorrt_fp16": fp16, "tensorrt_batches": list(batches), "imgsz": size})
    Path(f"{engine_path}.json").write_text(json.dumps(meta))
    return engine_path


_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "INT32": torch.int32, "INT64": torch.int64,
           "BOOL": torch.bool, "UINT8": torch.uint8, "INT8": torch.int8}


class TensorRTBackend(ExportedGraph):
    """A serialized engine in an execution context; ``forward`` takes the letterboxed batch and returns the
    graph's outputs as CPU tensors (like :class:`~rtmkit.export.backends.OnnxRuntimeBackend`)."""

    def __init__(self, path: str | os.PathLike, device: torch.device | None = None):
        trt = _trt()
        self.path = Path(path)
        meta_file = Path(f"{self.path}.json")
        if not self.path.is_file() or not meta_file.is_file():
            raise FileNotFoundError(f"{self.path}: engine or its metadata {meta_file.name} is missing")
        self.meta: dict[str, Any] = json.loads(meta_file.read_text())
        self.device = device if device is not None and device.type == "cuda" else torch.device("cuda", 0)
        self.logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise RuntimeError(f"{self.path}: cannot deserialize the engine (built with another TensorRT?)")
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = [n for n in names if n != self.input_name]
        self._read_meta()

    def _torch_dtype(self, name: str) -> torch.dtype:
        return _DTYPES[self.engine.get_tensor_dtype(name).name]

    def run_device(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Run on a CUDA tensor already on the device; returns CUDA tensors (no host copies)."""
        self.context.set_input_shape(self.input_name, tuple(batch.shape))
        batch = batch.contiguous()
        self.context.set_tensor_address(self.input_name, batch.data_ptr())
        outputs = []
        for name in self.output_names:
            out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self._torch_dtype(name),
                              device=self.device)
            self.context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"{self.path}: TensorRT execution failed")
        stream.synchronize()
        return outputs

    def forward(self, batch: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, ...]:
        x = torch.as_tensor(batch).to(self.device, getattr(torch, self.input_dtype))
        first, second, *rest = self.run_device(x)  # RTMDet-Ins graphs have more outputs (masks; kernels, prototypes)
        return (first.float().cpu(), second.cpu(), *(r.float().cpu() for r in rest))

    __call__ = forward


def build_engine_model(model, workdir: str | os.PathLike, *, imgsz: int | None = None,
                       batches: tuple[int, ...] | list[int] = (1,), fp16: bool = True) -> Path:
    """Export ``model`` (an :class:`rtmkit.RTMDet`) to a dynamic raw ONNX graph, build an FP16 engine from it and
    return the engine's path (``RTMDet(path)`` runs it)."""
    _trt()
    workdir = Path(workdir)
    onnx_path = model.export("onnx", workdir / f"{model.cfg.name}_trt.onnx", imgsz=imgsz, nms=False, dynamic=True)
    engine = build_engine(onnx_path, workdir / f"{model.cfg.name}_{'fp16' if fp16 else 'fp32'}.engine", fp16=fp16,
                          batches=tuple(batches), imgsz=imgsz)
    return engine
