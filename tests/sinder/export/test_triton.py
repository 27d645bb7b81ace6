import re

import pytest

from contract.manifest import tensor_specs
from contract.triton_config import config_pbtxt


def test_config_lists_every_tensor_without_the_batch_dim():
    inputs, outputs = tensor_specs(384, 4, "fp16")
    text = config_pbtxt("m", inputs, outputs, max_batch_size=8, instance_kind="KIND_CPU", max_queue_delay_us=1500)
    names = re.findall(r'^\s*name: "([a-z_]+)"$', text, flags=re.M)
    assert names == ["m"] + [t.name for t in inputs + outputs]
    assert 'name: "register_tokens"' in text and "dims: [ 4, 384 ]" in text
    assert "dims: [ -1, -1, 3 ]" in text and "dims: [ 384 ]" in text
    assert "max_queue_delay_microseconds: 1500" in text and "preferred_batch_size: [ 4, 8 ]" in text
    assert "kind: KIND_CPU" in text and "TYPE_FP16" in text and "TYPE_FP32" in text
    assert text.count("{") == text.count("}") and text.count("[") == text.count("]")


@pytest.mark.parametrize("kw", [dict(instance_kind="GPU"), dict(max_batch_size=0)])
def test_config_rejects_bad_settings(kw):
    inputs, outputs = tensor_specs(64, 0, "fp32")
    args = dict(max_batch_size=4) | kw
    with pytest.raises(ValueError):
        config_pbtxt("m", inputs, outputs, **args)
