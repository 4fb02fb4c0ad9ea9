"""Exporting a detector to ONNX and TorchScript, and running the exported files."""
