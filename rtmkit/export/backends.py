"""Run exported graphs behind the same ``predict`` API (ONNX Runtime, OpenVINO)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.postprocess import Candidates
from ..ops.levels import input_level_sizes, prior_level_ids
from .onnx import read_metadata


def _rtmkit_onnx(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """The path of an rtmkit ONNX export and its metadata, with clear errors for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    meta: dict[str, Any] = read_metadata(path, verify=True)
    if "rtmkit_version" not in meta:
        raise ValueError(f"{path}: not an rtmkit export (no rtmkit metadata); export it with "
                         "`rtmkit export` or model.export(format='onnx')")
    return path, meta


class ExportedGraph:
    """What every runtime of an exported rtmkit graph shares (the :class:`rtmkit.inference.Backend` shape).

    ``forward(batch)`` takes the letterboxed batch (normalised float, or uint8 when the graph normalises itself)
    and returns the graph's outputs as torch tensors: raw graphs give (scores [B,N,C], boxes [B,N,4]),
    end-to-end graphs (dets [B,K,5], labels [B,K]); RTMDet-Ins graphs (``task == "segment"``) add (kernels
    [B,N,169], mask_feat [B,P,h,w]) to a raw graph's and masks [B,K,H,W] to an end-to-end graph's.
    ``decode`` turns raw outputs into ``Candidates``.
    """

    path: Path
    meta: dict[str, Any]
    device: torch.device = torch.device("cpu")
    channels_last = False

    def _read_meta(self) -> None:
        meta = self.meta
        self.graph = "end2end" if meta.get("graph") == "end2end" else "raw"
        self.end2end = self.graph == "end2end"
        self.input_dtype = "uint8" if meta.get("normalized_in_graph") else (
            "float16" if meta.get("input_dtype") == "float16" else "float32")
        self.fixed_batch = None if meta.get("dynamic", True) else int(meta.get("batch", 1))
        self.strides = tuple(meta["strides"])
        self.task = meta.get("task", "detect")

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def forward(self, batch: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, ...]:
        if self.meta.get("dynamic") is False and batch.shape[-1] != self.meta.get("imgsz"):
            raise ValueError(f"{self.path} was exported for imgsz={self.meta.get('imgsz')} (not dynamic)")
        array = batch.cpu().numpy() if isinstance(batch, torch.Tensor) else batch
        first, second, *rest = self._run(np.ascontiguousarray(array.astype(self.input_dtype, copy=False)))
        return (torch.from_numpy(np.asarray(first)).float(), torch.from_numpy(np.asarray(second)),
                *(torch.from_numpy(np.asarray(r)) for r in rest))

    __call__ = forward

    def decode(self, outputs: tuple[torch.Tensor, torch.Tensor], input_hw: tuple[int, int]) -> Candidates:
        sizes = input_level_sizes(*input_hw, self.strides)
        return Candidates(outputs[0], outputs[1], prior_level_ids(sizes), input_hw)


class OnnxRuntimeBackend(ExportedGraph):
    """An exported rtmkit graph in an ONNX Runtime session."""

    def __init__(self, path: str | os.PathLike, device: torch.device | None = None, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError("running .onnx models needs onnxruntime: pip install 'rtmkit[onnx]'") from e
        self.path, self.meta = _rtmkit_onnx(path)
        providers = ["CPUExecutionProvider"]
        if device is not None and device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        options = ort.SessionOptions()
        # ORT's idle worker threads spin after each run by default, taking the cores from the host-side
        # post-processing that follows (measured: RTMDet-Ins mask post-processing 2x slower on 2 cores)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self._read_meta()

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: batch})


class OpenVINOBackend(ExportedGraph):
    """The same exported rtmkit ONNX file compiled by OpenVINO for the CPU (``RTMDet("x.onnx", runtime="openvino")``).

    OpenVINO reads ONNX directly, so there is one export for every runtime; the rtmkit metadata is read from the
    file with ``onnx``. Outputs are those of :class:`OnnxRuntimeBackend`. One inference request is reused:
    do not call one instance from several threads at once.
    """

    def __init__(self, path: str | os.PathLike, device: torch.device | None = None, threads: int | None = None):
        try:
            import openvino as ov
        except ImportError as e:
            raise ImportError("runtime='openvino' needs OpenVINO: pip install openvino") from e
        self.path, self.meta = _rtmkit_onnx(path)
        if device is not None and device.type != "cpu":
            raise ValueError("the OpenVINO backend runs on the CPU here; use device='cpu'")
        # f32 inference: OpenVINO would otherwise run in bf16 on CPUs that have it, moving boxes by pixels.
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(self.path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self._read_meta()

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        out = self.request.infer([batch])
        return [np.array(out[o]) for o in self.compiled.outputs]
