"""Self-attention as one graph node, so that onnxruntime runs its fused kernel.

Traced as it is, a block's attention becomes a dozen ONNX nodes (QKV projection and bias,
head split, two batched MatMuls, Softmax, transposes): on a 2-core CPU about a fifth of
the ViT-S run time. ``qkv_attention`` is a torch custom op (its eager body is the plain
computation) that the exporter writes as:

- opset < 23: ``com.microsoft.Attention``, an onnxruntime contrib op present in every
  onnxruntime build (and in Triton's onnxruntime backend), CPU and CUDA, which also runs
  the QKV projection and its bias;
- opset >= 23: MatMul, Add, Split and the standard ``Attention`` op (onnxruntime >= 1.22).

(onnxruntime's ``SkipLayerNormalization`` and ``BiasGelu`` were measured too: on this CPU
they are slower than the plain ops they replace.)
"""

from __future__ import annotations

import onnxscript
import torch
import torch.nn.functional as F
from onnx.defs import OpSchema
from onnxscript import opset23 as op23

FIRST_STANDARD_OPSET = 23  # the opset that added Attention


@torch.library.custom_op("sinder::qkv_attention", mutates_args=())
def qkv_attention(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Multi-head self-attention of ``x`` ``[B, N, C]``; ``weight`` ``[C, 3C]`` projects to q, k, v (in that order)."""
    b, n, c = x.shape
    q, k, v = (x @ weight + bias).reshape(b, n, 3, num_heads, c // num_heads).permute(2, 0, 3, 1, 4)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)


@qkv_attention.register_fake
def _(x, weight, bias, num_heads):
    return torch.empty_like(x)


# onnx ships no schemas for onnxruntime's contrib ops; the exporter's tracer needs one per node.
_P = OpSchema.FormalParameter
_OPTIONAL = OpSchema.FormalParameterOption.Optional
_FLOATS = [("T", ["tensor(float)", "tensor(float16)"], "")]
_MS = onnxscript.values.Opset("com.microsoft", 1)
_ATTENTION = onnxscript.values.Op(_MS, "Attention", OpSchema(
    "Attention", "com.microsoft", 1,
    inputs=[_P("input", "T"), _P("weights", "T"), _P("bias", "T", param_option=_OPTIONAL)],
    outputs=[_P("output", "T")],
    type_constraints=_FLOATS,
    attributes=[OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "number of attention heads")],
))


def _contrib_attention(x, weight, bias, num_heads: int):
    return _ATTENTION(x, weight, bias, num_heads=num_heads)


def _standard_attention(x, weight, bias, num_heads: int):
    q, k, v = op23.Split(op23.Add(op23.MatMul(x, weight), bias), axis=-1, num_outputs=3)
    out, *_ = op23.Attention(q, k, v, q_num_heads=num_heads, kv_num_heads=num_heads)
    return out


def translation_table(opset: int) -> dict:
    """The exporter's ``custom_translation_table`` for these ops at ``opset``."""
    standard = opset >= FIRST_STANDARD_OPSET
    return {torch.ops.sinder.qkv_attention.default: _standard_attention if standard else _contrib_attention}
