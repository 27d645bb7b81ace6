"""Test-time registers in ONNX: parity with the PyTorch wrapper, per-image edits, dynamic shapes."""

import sys
from pathlib import Path

import numpy as np
import pytest

from sinder.model import LoadedModel
from sinder.registers import TestTimeRegisters

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
from export_helpers import SMALL_CASES, tiny_loaded, unit_direction  # noqa: E402

NEURONS = {0: [1, 5, 30], 1: [2]}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from sinder.export import export_model

    base = tiny_loaded()
    ttr = TestTimeRegisters(base.model, NEURONS)
    loaded = LoadedModel(model=ttr, arch=base.arch, source=base.source, source_format=base.source_format,
                         sha256=base.sha256, synthetic=True)
    repo = tmp_path_factory.mktemp("repo")
    out = export_model(loaded, repo, "tiny_ttr", direction=unit_direction(64), parity_cases=SMALL_CASES,
                       progress=False)
    return base, ttr, out


def test_export_matches_pytorch_and_is_batch_invariant(exported):
    from contract.manifest import read_manifest

    _, _, out = exported
    manifest = read_manifest(out / "manifest.json")
    assert manifest.parity["max_abs"]["patch_tokens"] <= 1e-4
    assert manifest.parity["batch_invariant"]


def test_graph_differs_from_the_plain_model_and_keeps_its_outputs(exported):
    import onnxruntime as ort

    from sinder.export.parity import parity_images, reference_outputs

    base, _, out = exported
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    images = parity_images(3, 70, 98, seed=5)  # a size the parity check did not use
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": images})))
    assert got["patch_tokens"].shape == (3, 5, 7, 64)
    plain = reference_outputs(base.model, images, unit_direction(64), 4.0)
    assert np.abs(got["patch_tokens"] - plain["patch_tokens"]).max() > 1e-3  # the edit is in the graph


def test_the_edit_uses_standard_operators(exported):
    import onnx

    _, _, out = exported
    graph = onnx.load(str(out / "model.onnx")).graph
    contrib = {n.op_type for n in graph.node if n.domain not in ("", "ai.onnx")}
    assert contrib <= {"Attention"}  # only the fused attention at opset 20 (see fused_ops.py)
    ops = {n.op_type for n in graph.node}
    assert {"ReduceMax", "ReduceMin", "Concat"} <= ops


def test_a_variant_is_linked_to_the_original_its_name_derives_from():
    from sinder.errors import SinderError
    from sinder.export.api import default_variant

    assert default_variant("dinov2_vits14_ttr", "ttr").of == "dinov2_vits14"
    assert default_variant("m_sinder", "sinder").model_dump() == {"kind": "sinder", "of": "m"}
    assert default_variant("anything", "original").of is None
    with pytest.raises(SinderError, match="--variant-of"):
        default_variant("plain_name", "ttr")
