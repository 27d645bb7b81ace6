"""An int8 CPU variant: dynamic quantization of the weights of the matrix products.

The weights of the attention's qkv and output projections and of the FFN's first layer are
quantized per output channel; activations are quantized on the fly, one scale per tensor.
The fused attention node (``fused_ops.py``) becomes onnxruntime's ``QAttention``.
Left in float32 by default: the FFN's output projection, because its input (the
post-activation hidden layer) is where a ViT's few massive-activation neurons live, the ones
that write the singular defect, and one per-tensor scale for them flattens every other
neuron. On the synthetic demo model (ViT-S/14, 224 px, 8 bundled photos) quantizing it too
makes the variant about 1.25x faster again but lowers the patch-token cosine to float32
from 0.998 to 0.996 (high-norm tokens: 0.94 to 0.92); real DINOv2 checkpoints have larger
outliers than the demo, so the default stays on the safe side (``keep_float=()`` opts out).
Also float32: attention's activation-by-activation products, LayerNorm, the patch
embedding and the diagnostics.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import onnx

# Weight names of the export wrapper (sinder/export/wrapper.py) that stay float32.
FLOAT_WEIGHTS = (".fc2.weight",)


def float_nodes(model: onnx.ModelProto, keep_float: tuple[str, ...] = FLOAT_WEIGHTS) -> list[str]:
    """Names of the matrix products to leave in float32: those whose weight name ends with one
    of ``keep_float`` and those that are not a Linear (the quantizer renames a Gemm it
    converts to ``<name>_MatMul``, so both names are listed)."""
    rank = {t.name: len(t.dims) for t in model.graph.initializer}
    names = []
    for n in model.graph.node:
        if n.op_type not in ("MatMul", "Gemm") or len(n.input) < 2 or n.input[1] not in rank:
            continue
        if rank[n.input[1]] != 2 or (keep_float and n.input[1].endswith(keep_float)):
            names += [n.name, f"{n.name}_MatMul"]
    return names


def quantize_int8(fp32_path: Path, out_path: Path, keep_float: tuple[str, ...] = FLOAT_WEIGHTS) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exclude = float_nodes(onnx.load(str(fp32_path), load_external_data=False), keep_float)
    # past the protobuf limit the source keeps its weights beside it; so must the result
    external = Path(str(fp32_path) + ".data").exists()
    logging.getLogger("root").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        quantize_dynamic(
            str(fp32_path),
            str(out_path),
            op_types_to_quantize=["MatMul", "Gemm", "Attention"],
            nodes_to_exclude=exclude,
            per_channel=True,
            weight_type=QuantType.QInt8,
            use_external_data_format=external,
        )
    return out_path
