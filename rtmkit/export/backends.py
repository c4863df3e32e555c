"""Run exported graphs behind the same ``predict`` API (ONNX Runtime, OpenVINO)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .onnx import read_metadata


def _rtmkit_onnx(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """The path of an rtmkit ONNX export and its metadata, with clear errors for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    meta: dict[str, Any] = read_metadata(path)
    if "rtmkit_version" not in meta:
        raise ValueError(f"{path}: not an rtmkit export (no rtmkit metadata); export it with "
                         "`rtmkit export` or model.export(format='onnx')")
    return path, meta


class OnnxRuntimeBackend:
    """An exported rtmkit graph in an ONNX Runtime session.

    ``__call__(batch)`` takes the letterboxed batch (normalised float32, or uint8 when the graph normalises
    itself) and returns the graph's two outputs as torch tensors: raw graphs give (scores [B,N,C], boxes [B,N,4]),
    end-to-end graphs (dets [B,K,5], labels [B,K]).
    """

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
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.input_dtype = np.uint8 if self.meta.get("normalized_in_graph") else (
            np.float16 if self.meta.get("input_dtype") == "float16" else np.float32)
        self.end2end = self.meta.get("graph") == "end2end"

    def __call__(self, batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        first, second = self.session.run(None, {self.input_name: batch.astype(self.input_dtype, copy=False)})
        return torch.from_numpy(np.asarray(first)).float(), torch.from_numpy(np.asarray(second))


class OpenVINOBackend:
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
        self.input_dtype = np.uint8 if self.meta.get("normalized_in_graph") else (
            np.float16 if self.meta.get("input_dtype") == "float16" else np.float32)
        self.end2end = self.meta.get("graph") == "end2end"

    def __call__(self, batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.request.infer([np.ascontiguousarray(batch.astype(self.input_dtype, copy=False))])
        first, second = (np.array(out[o]) for o in self.compiled.outputs)
        return torch.from_numpy(first).float(), torch.from_numpy(second)
