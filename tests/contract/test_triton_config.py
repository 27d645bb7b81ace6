"""config.pbtxt (contract/triton_config.py): what is written reads back."""

import pytest

from contract.errors import LayoutError
from contract.manifest import tensor_specs
from contract.triton_config import config_pbtxt, parse_config, read_config


def test_a_written_config_reads_back(tmp_path):
    inputs, outputs = tensor_specs(16, 4, "fp32")
    path = tmp_path / "config.pbtxt"
    path.write_text(config_pbtxt("m", inputs, outputs, 8, instance_kind="KIND_CPU"))
    config = read_config(path)
    assert (config.name, config.platform, config.max_batch_size) == ("m", "onnxruntime_onnx", 8)
    assert config.default_model_filename == "model.onnx"
    assert config.inputs == ("images",) and config.outputs == tuple(t.name for t in outputs)
    fields = parse_config(path.read_text())
    assert fields["instance_group"] == [{"count": [1], "kind": ["KIND_CPU"]}]
    assert fields["output"][2] == {"name": ["register_tokens"], "data_type": ["TYPE_FP32"], "dims": [4, 16]}


def test_hand_written_configs_with_comments_and_one_line_messages():
    text = ('# a comment\nname: "a_b" # trailing\nmax_batch_size: 4\n'
            'input [ { name: "images" data_type: TYPE_UINT8 dims: [ -1, -1, 3 ] } ]\n'
            'dynamic_batching { }\nparameters { key: "k" value: { string_value: "v#1" } }\n')
    fields = parse_config(text)
    assert fields["name"] == ["a_b"] and fields["max_batch_size"] == [4]
    assert fields["input"][0]["dims"] == [-1, -1, 3] and fields["dynamic_batching"] == [{}]
    assert fields["parameters"][0]["value"][0]["string_value"] == ["v#1"]


@pytest.mark.parametrize("text", ['name: "x" input [ { name: "a" ', "name: ", 'name: "x" ~'])
def test_broken_configs_are_layout_errors(tmp_path, text):
    (tmp_path / "config.pbtxt").write_text(text)
    with pytest.raises(LayoutError, match="config.pbtxt"):
        read_config(tmp_path / "config.pbtxt")
