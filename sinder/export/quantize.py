"""An int8 CPU variant: dynamic quantization of the weights of the matrix products.

Only the weights of the Linear layers (Gemm, or MatMul by a 2-D constant) are quantized,
per output channel; activations are quantized on the fly. Attention's activation-by-
activation products, LayerNorm, the patch embedding and the diagnostics stay float32,
which keeps the features' cosine to float32 high.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import onnx


def non_linear_products(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul nodes whose constant operand is not a 2-D weight matrix
    (the diagnostics' product with the defect direction): they stay float32."""
    init_rank = {t.name: len(t.dims) for t in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and n.input[1] in init_rank and init_rank[n.input[1]] != 2]


def quantize_int8(fp32_path: Path, out_path: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exclude = non_linear_products(onnx.load(str(fp32_path), load_external_data=False))
    logging.getLogger("root").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        quantize_dynamic(
            str(fp32_path),
            str(out_path),
            op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_exclude=exclude,
            per_channel=True,
            weight_type=QuantType.QInt8,
        )
    return out_path
