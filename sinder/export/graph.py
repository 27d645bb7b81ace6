"""Trace the export wrapper into an ONNX file with dynamic batch, height and width."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch

from ..errors import SinderError
from . import fused_ops
from .wrapper import ExportWrapper

# 20: Gelu as one op, attention as onnxruntime's contrib Attention op; ORT >= 1.17 (Triton >= 24.01).
# 23: attention as the standard Attention op; ORT >= 1.22 (see fused_ops.py).
DEFAULT_OPSET = 20
# Headroom under the 2 GiB protobuf limit for the graph itself and the exporter's constants.
_EXTERNAL_DATA_ABOVE = int(1.8 * 1024**3)


def weight_bytes(wrapper: ExportWrapper) -> int:
    """Bytes of the weights the graph will hold (the wrapper's blocks replace the model's)."""
    used = [p for n, p in wrapper.model.named_parameters() if not n.startswith("blocks.")]
    used += list(wrapper.blocks.parameters()) + list(wrapper.norm.parameters())
    return sum(t.numel() * t.element_size() for t in used)


def export_graph(
    wrapper: ExportWrapper,
    path: Path,
    min_side: int,
    max_side: int,
    max_batch_size: int,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write ``wrapper`` to ``path`` (+ ``path.data`` only past the protobuf limit); return ``path``."""
    p = wrapper.patch_size
    batch = torch.export.Dim("batch", min=1, max=max(max_batch_size, 2))
    grid_h = torch.export.Dim("grid_h", min=max(min_side // p, 2), max=max(max_side // p, 3))
    grid_w = torch.export.Dim("grid_w", min=max(min_side // p, 2), max=max(max_side // p, 3))
    # A non-square, non-native example so that nothing shape-dependent is specialised.
    gh, gw = max(min_side // p, 2) + 1, max(min_side // p, 2) + 2
    example = torch.zeros(2, gh * p, gw * p, 3, dtype=torch.uint8)
    wrapper = wrapper.eval()
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(
                wrapper,
                (example,),
                None,
                dynamo=True,
                input_names=["images"],
                output_names=wrapper.output_names,
                dynamic_shapes={"images": {0: batch, 1: p * grid_h, 2: p * grid_w}},
                opset_version=opset,
                custom_translation_table=fused_ops.translation_table(opset),
                optimize=True,
                verbose=False,
                report=False,
            )
    except Exception as exc:  # the exporter raises many types; name the step and keep the cause
        raise SinderError(f"ONNX export of {wrapper.model.cfg.name} failed: {type(exc).__name__}: {exc}") from exc
    program.model.producer_name = "sinder"
    external = weight_bytes(wrapper) > _EXTERNAL_DATA_ABOVE
    program.save(str(path), external_data=external)
    return path


@contextlib.contextmanager
def _quiet():
    """The exporter prints progress to stdout and warns about optional torchvision ops."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
