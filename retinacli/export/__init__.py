"""Exporting a detector to ONNX, OpenVINO and TorchScript, INT8 quantization of its network, and
running the exported files."""
