"""Offline tool: DINOv2 in PyTorch, singular-defect analysis, SINDER repair, ONNX export."""

__version__ = "0.1.0"
