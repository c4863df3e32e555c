"""Export (ONNX) and inference backends (ONNX Runtime)."""
