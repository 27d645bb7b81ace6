"""The fused attention op: same numbers as DINOv2's attention, one node in the graph at either opset."""

import collections
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from sinder.export import graph
from sinder.export.fused_ops import qkv_attention
from sinder.model.layers import Attention


def _attention(dim: int = 64, heads: int = 4, seed: int = 0) -> Attention:
    torch.manual_seed(seed)
    return Attention(dim, heads).eval()


def test_eager_body_matches_dinov2_attention():
    attn = _attention()
    x = torch.randn(3, 17, 64)
    with torch.no_grad():
        got = attn.proj(qkv_attention(x, attn.qkv.weight.t().contiguous(), attn.qkv.bias, 4))
        assert torch.allclose(got, attn(x), atol=1e-6)


class _Block(torch.nn.Module):
    def __init__(self, attn: Attention):
        super().__init__()
        self.attn = attn
        self.weight = torch.nn.Parameter(attn.qkv.weight.detach().t().contiguous())

    def forward(self, x):
        return qkv_attention(x, self.weight, self.attn.qkv.bias, self.attn.num_heads)


@pytest.mark.parametrize("opset, node", [(20, ("com.microsoft", "Attention")), (23, ("", "Attention"))])
def test_exports_as_one_attention_node_and_matches_eager(tmp_path, opset, node):
    attn = _attention()
    module = _Block(attn).eval()
    batch, tokens = torch.export.Dim("batch", min=1, max=16), torch.export.Dim("tokens", min=2, max=4096)
    with torch.no_grad():
        program = torch.onnx.export(module, (torch.randn(2, 9, 64),), None, dynamo=True, input_names=["x"],
                                    dynamic_shapes={"x": {0: batch, 1: tokens}}, opset_version=opset,
                                    custom_translation_table=graph.fused_ops.translation_table(opset),
                                    optimize=True, report=False)
    path = tmp_path / "attn.onnx"
    program.save(str(path))
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    ops = collections.Counter((n.domain, n.op_type) for n in model.graph.node)
    assert ops[node] == 1 and ("", "Softmax") not in ops and ("", "Transpose") not in ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b, n in [(1, 5), (4, 37)]:  # neither is the traced example's shape
        x = torch.randn(b, n, 64)
        with torch.no_grad():
            ref = module(x).numpy()
        assert np.abs(session.run(None, {"x": x.numpy()})[0] - ref).max() <= 1e-5


def test_exported_float32_model_runs_attention_fused_in_every_block(exported, tiny):
    _, out = exported
    model = onnx.load(str(out / "model.onnx"))
    ops = collections.Counter((n.domain, n.op_type) for n in model.graph.node)
    assert ops[("com.microsoft", "Attention")] == tiny.arch.depth
    assert ("", "Softmax") not in ops
    imports = json.loads((out / "manifest.json").read_text())["provenance"]["onnx_opset_imports"]
    assert imports == {"": graph.DEFAULT_OPSET, "com.microsoft": 1}
