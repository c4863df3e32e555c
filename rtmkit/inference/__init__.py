"""The one inference pipeline: preprocess -> backend -> decode -> post-process -> ``Result``.

``Predictor`` runs it for every caller (``RTMDet.predict``/``val``, ``rtmkit benchmark``, the trainer's validation);
a backend is anything with the :class:`Backend` shape: :class:`TorchBackend` here, ONNX Runtime / OpenVINO /
TensorRT in :mod:`rtmkit.export`.
"""

from .backend import Backend, TorchBackend
from .predictor import Predictor

__all__ = ["Backend", "TorchBackend", "Predictor"]
