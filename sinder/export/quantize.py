"""An int8 CPU variant: dynamic quantization of the weights of the matrix products.

The weights of the attention's qkv and output projections and of the FFN's first layer are
quantized per output channel; activations are quantized on the fly, one scale per tensor.
The fused attention node (``fused_ops.py``) becomes onnxruntime's ``QAttention``.
Left in float32: the FFN's output projection (its input, the post-activation hidden layer,
has a few outlier neurons — the ones that write the singular defect — and one per-tensor
scale for them flattens every other neuron: on the demo model the patch-token cosine to
float32 drops from 0.9996 to 0.97 when it is quantized), attention's activation-by-activation
products, LayerNorm, the patch embedding and the diagnostics.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import onnx

# Weight names of the export wrapper (sinder/export/wrapper.py) that stay float32.
FLOAT_WEIGHTS = (".fc2.weight",)


def float_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the matrix products to leave in float32 (the quantizer renames a Gemm it
    converts to ``<name>_MatMul``, so both names are listed)."""
    rank = {t.name: len(t.dims) for t in model.graph.initializer}
    names = []
    for n in model.graph.node:
        if n.op_type not in ("MatMul", "Gemm") or len(n.input) < 2 or n.input[1] not in rank:
            continue
        if rank[n.input[1]] != 2 or n.input[1].endswith(FLOAT_WEIGHTS):
            names += [n.name, f"{n.name}_MatMul"]
    return names


def quantize_int8(fp32_path: Path, out_path: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exclude = float_nodes(onnx.load(str(fp32_path), load_external_data=False))
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
