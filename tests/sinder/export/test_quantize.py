"""Which matrix products the int8 variant leaves in float32."""

import onnx

from sinder.export.quantize import float_nodes


def _weights_of(model: onnx.ModelProto, names: list[str]) -> set[str]:
    return {n.input[1] for n in model.graph.node if n.name in names}


def test_ffn_output_layers_stay_float_by_default_and_can_be_quantized(exported, tiny):
    model = onnx.load(str(exported[1] / "model.onnx"))
    default = _weights_of(model, float_nodes(model))
    every = _weights_of(model, float_nodes(model, keep_float=()))
    fc2 = {w for w in default if ".fc2." in w}
    assert len(fc2) == tiny.arch.depth  # one per block
    assert not any(".fc2." in w for w in every)
    assert not any(".fc1." in w or ".proj." in w for w in default)  # those are quantized either way
    assert every == default - fc2  # what stays float either way: products that are not a Linear
