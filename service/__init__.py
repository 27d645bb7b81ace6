"""The online feature service: FastAPI + onnxruntime, no torch.

Layers, one direction: ``api`` (HTTP) -> ``core`` (queue, batcher, images, metrics,
registry) -> ``backends`` (onnxruntime, fake).
"""

__version__ = "0.1.0"
