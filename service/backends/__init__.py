"""Inference backends behind one small interface."""

from service.backends.base import Backend, TensorSpec

__all__ = ["Backend", "TensorSpec"]
