"""The typed manifest (contract/manifest.py): one parse, errors that name the field, its JSON Schema."""

import json

import pytest

from contract import manifest as m
from contract.errors import ManifestError
from contract.preprocess import Resize


def make(**over) -> m.Manifest:
    inputs, outputs = m.tensor_specs(4, 0, "fp32")
    fields = dict(name="x", version=1, precision="fp32", max_batch_size=2, inputs=inputs, outputs=outputs,
                  architecture=m.Architecture(arch="t", patch_size=14, embed_dim=4, depth=1, num_heads=1),
                  defect=m.defect_block([0.0, 1.0, 0.0, 0.0], 0), provenance=m.Provenance(tool_version="t"))
    return m.Manifest(**(fields | over))


def test_the_committed_schema_is_the_models():
    assert m.SCHEMA_FILE.read_text() == m.json_schema(), "regenerate: python -m contract.manifest > contract/manifest.schema.json"


def test_a_written_manifest_reads_back_equal():
    one = make(variant=m.Variant(kind=m.SINDER, of="x_orig"), repair={"iterations": 3},
               preprocessing=m.Preprocessing(resize=Resize(short_side=112, multiple_of=14),
                                             training=Resize(policy="center_square", short_side=224)))
    again = m.parse_manifest(one.to_json())
    assert again == one and again.format_version == m.FORMAT_VERSION
    assert again.defect.std_ddof == 1 and again.variant.of == "x_orig"


@pytest.mark.parametrize("damage, field", [
    (lambda d: d["defect"].update(threshold_std=0), "defect.threshold_std"),
    (lambda d: d["architecture"].update(patch_size="14px"), "architecture.patch_size"),
    (lambda d: d["preprocessing"]["resize"].update(min_side=500), "preprocessing.resize"),
    (lambda d: d["outputs"].pop(1), "outputs lack ['patch_tokens']"),
    (lambda d: d.update(format_version=m.FORMAT_VERSION + 1), "format_version"),
    (lambda d: d.update(variant={"kind": "sinder", "of": None, "x": 1}), "variant.x"),
    (lambda d: d.update(variant={"kind": "original", "of": "y"}), "an original has no 'of'"),
    (lambda d: d["defect"].update(direction=[0, 0, 0, 0]), "defect.direction"),
])
def test_a_bad_manifest_names_the_field(damage, field):
    data = json.loads(make().to_json())
    damage(data)
    with pytest.raises(ManifestError, match=field.replace("[", r"\[").replace("]", r"\]")):
        m.parse_manifest(json.dumps(data), "here/manifest.json")


def test_read_manifest_names_the_file(tmp_path):
    with pytest.raises(ManifestError, match="missing"):
        m.read_manifest(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text("[1]")
    with pytest.raises(ManifestError, match="expected a JSON object"):
        m.read_manifest(tmp_path / "manifest.json")


def test_tensor_specs_follow_precision_and_registers():
    inputs, outputs = m.tensor_specs(8, 2, "fp16")
    assert [t.name for t in inputs] == ["images"] and inputs[0].dtype == "uint8"
    assert [t.name for t in outputs] == ["cls_token", "patch_tokens", "register_tokens", *m.DIAGNOSTIC_OUTPUTS]
    assert [t.dtype for t in outputs] == ["float16"] * 3 + ["float32", "float32", "bool"]
