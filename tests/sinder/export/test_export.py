"""A real export of a tiny model: files, graph signature, numbers, and the repository rules."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from export_helpers import SMALL_CASES, tiny_loaded, unit_direction

from sinder.errors import SinderError
from sinder.export import Resolution, export_model, next_version, parity, versions
from sinder.export.parity import parity_images, reference_outputs


def _session(version_dir):
    return ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])


def test_export_writes_a_triton_model_folder(exported):
    repo, out = exported
    assert out == repo / "tiny" / "1"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx"]
    assert not [p for p in (repo / "tiny").iterdir() if p.name.startswith(".")]  # no temporary left
    config = (repo / "tiny" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and "max_batch_size: 32" in config
    assert "TYPE_UINT8" in config and "TYPE_BOOL" in config and "dims: [ -1, -1, 3 ]" in config
    assert "dims: [ -1, -1, 64 ]" in config  # patch_tokens without the batch dim
    onnx.checker.check_model(str(out / "model.onnx"), full_check=True)


def test_manifest_has_the_contract_fields(exported, tiny):
    _, out = exported
    m = json.loads((out / "manifest.json").read_text())
    assert m["name"] == "tiny" and m["version"] == 1 and m["synthetic"] is True and m["precision"] == "fp32"
    assert m["architecture"]["embed_dim"] == 64 and m["architecture"]["depth"] == 2
    pre = m["preprocessing"]
    assert pre["normalization_in_graph"] and pre["layout"] == "NHWC" and pre["resize"]["multiple_of"] == 14
    assert [o["name"] for o in m["outputs"]] == ["cls_token", "patch_tokens", "token_norms", "defect_alignment",
                                                 "defect_mask"]
    assert all(o["meaning"] for o in m["outputs"])
    direction = np.array(m["defect"]["direction"])
    assert direction.shape == (64,) and abs(np.linalg.norm(direction) - 1) < 1e-6
    assert m["defect"]["layer"] == 1 and m["defect"]["threshold_std"] == 4.0
    prov = m["provenance"]
    assert prov["sha256"] == tiny.sha256 and prov["exported_at"].endswith("Z") and prov["tool_version"]
    assert m["parity"]["max_abs"]["patch_tokens"] <= 1e-4 and m["parity"]["max_abs"]["cls_token"] <= 1e-4
    assert {(c["batch"], c["height"], c["width"]) for c in m["parity"]["cases"]} == set(SMALL_CASES)
    assert m["repair"] is None
    assert m["parity"]["batch_invariant"] is True and m["parity"]["batch_vs_alone_max_abs"] <= 1e-5


def test_graph_signature_and_dynamic_shapes(exported, tiny):
    _, out = exported
    session = _session(out)
    (inp,) = session.get_inputs()
    assert inp.name == "images" and inp.type == "tensor(uint8)" and inp.shape[3] == 3
    assert all(isinstance(d, str) for d in inp.shape[:3])
    types = {o.name: o.type for o in session.get_outputs()}
    assert types == {"cls_token": "tensor(float)", "patch_tokens": "tensor(float)", "token_norms": "tensor(float)",
                     "defect_alignment": "tensor(float)", "defect_mask": "tensor(bool)"}
    d = torch.tensor(json.loads((out / "manifest.json").read_text())["defect"]["direction"])
    for b, h, w in [(3, 70, 42), (1, 112, 112), (2, 154, 98)]:  # none is the traced example's size
        images = parity_images(b, h, w, seed=b + h)
        got = dict(zip(types, session.run(None, {"images": images})))
        ref = reference_outputs(tiny.model, images, d, 4.0)
        assert got["patch_tokens"].shape == (b, h // 14, w // 14, 64)
        assert got["defect_mask"].shape == (b, h // 14, w // 14)
        for name in ("cls_token", "patch_tokens", "defect_alignment"):
            assert np.abs(got[name] - ref[name]).max() <= 1e-4, (name, b, h, w)


def test_an_image_gives_the_same_outputs_alone_or_in_a_batch(exported):
    session = _session(exported[1])
    images = parity_images(5, 70, 98, seed=9)
    batch = session.run(None, {"images": images})
    for i in (0, 3):
        alone = session.run(None, {"images": images[i:i + 1]})
        for a, b in zip(alone, batch):
            assert np.abs(a.astype(np.float64) - b[i:i + 1].astype(np.float64)).max() <= 1e-5


def test_default_version_is_next_and_existing_is_refused(tmp_path, tiny, fast_graph):
    kw = dict(direction=unit_direction(64), parity_cases=SMALL_CASES[:1], progress=False)
    assert export_model(tiny, tmp_path, "m", **kw).name == "1"
    assert export_model(tiny, tmp_path, "m", **kw).name == "2"
    assert export_model(tiny, tmp_path, "m", version=7, **kw).name == "7"
    assert next_version(tmp_path / "m") == 8
    with pytest.raises(SinderError, match="already exists.*--overwrite"):
        export_model(tiny, tmp_path, "m", version=2, **kw)
    (tmp_path / "m" / "2" / "stale.txt").write_text("from the old version")
    export_model(tiny, tmp_path, "m", version=2, overwrite=True, **kw)
    assert sorted(p.name for p in (tmp_path / "m" / "2").iterdir()) == ["manifest.json", "model.onnx"]
    assert versions(tmp_path / "m") == [1, 2, 7]


def test_interrupted_export_leaves_no_version_folder(tmp_path, tiny, fast_graph, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(parity, "measure_parity", boom)
    with pytest.raises(KeyboardInterrupt):
        export_model(tiny, tmp_path, "m", direction=unit_direction(64), progress=False)
    model_dir = tmp_path / "m"
    assert not model_dir.exists() or list(model_dir.iterdir()) == []
    assert versions(model_dir) == []


def test_failed_parity_fails_the_export_and_writes_nothing(tmp_path, tiny, fast_graph):
    other = tiny_loaded(seed=5)  # different weights than the copied graph: parity must catch it
    with pytest.raises(SinderError, match="fp32 export differs from PyTorch"):
        export_model(other, tmp_path, "m", direction=unit_direction(64), parity_cases=SMALL_CASES[:1],
                     progress=False)
    assert versions(tmp_path / "m") == []


@pytest.mark.parametrize("bad, match", [
    (dict(name="a/b"), "model name"),
    (dict(name=".hidden"), "model name"),
    (dict(resolution=Resolution(short_side=230, max_side=1036)), "multiple of the patch size"),
    (dict(precision="int4"), "precision"),
    (dict(version=0), "version"),
    (dict(direction=torch.zeros(64)), "non-zero"),
    (dict(direction=torch.ones(5)), "width"),
])
def test_bad_arguments_are_named(tmp_path, tiny, bad, match):
    kw = dict(name="m", direction=unit_direction(64), progress=False) | bad
    with pytest.raises(SinderError, match=match):
        export_model(tiny, tmp_path, **kw)


def test_fp16_export_types_and_cosine(tmp_path, monkeypatch):
    # also the ViT-g path: weights in external data (forced here by a zero threshold)
    from sinder.export import graph

    monkeypatch.setattr(graph, "_EXTERNAL_DATA_ABOVE", 0)
    loaded = tiny_loaded(registers=4)
    out = export_model(loaded, tmp_path, "h", precision="fp16", direction=unit_direction(64),
                       parity_cases=SMALL_CASES, progress=False)
    onnx.checker.check_model(str(out / "model.onnx"), full_check=True)
    types = {o.name: o.type for o in _session(out).get_outputs()}
    assert types["patch_tokens"] == types["cls_token"] == types["register_tokens"] == "tensor(float16)"
    assert types["token_norms"] == "tensor(float)" and types["defect_mask"] == "tensor(bool)"
    m = json.loads((out / "manifest.json").read_text())
    assert m["precision"] == "fp16" and m["parity"]["min_mean_cosine"]["patch_tokens"] >= 0.999
    assert {o["name"]: o["dtype"] for o in m["outputs"]}["register_tokens"] == "float16"
    assert "TYPE_FP16" in (tmp_path / "h" / "config.pbtxt").read_text()
    assert m["provenance"]["external_data"] is True and (out / "model.onnx.data").is_file()
    assert (out / "model.onnx").stat().st_size < (out / "model.onnx.data").stat().st_size


def test_int8_variant_is_close_to_float32(tmp_path, tiny, fast_graph):
    # fast_graph hands the quantizer the session's fp32 export of the same model
    out = export_model(tiny, tmp_path, "q", precision="int8", direction=unit_direction(64),
                       parity_cases=SMALL_CASES[:1], progress=False)
    graph = onnx.load(str(out / "model.onnx")).graph
    assert {n.op_type for n in graph.node} & {"MatMulInteger", "DynamicQuantizeMatMul"}
    weights = {t.name: t.data_type for t in graph.initializer}
    fc2 = {t for n, t in weights.items() if n.startswith("blocks.0.fc2.weight")}
    assert fc2 == {onnx.TensorProto.FLOAT}  # the outlier-prone layer stays float
    assert any(n.startswith("blocks.0.qkv.weight") and t == onnx.TensorProto.INT8 for n, t in weights.items())
    m = json.loads((out / "manifest.json").read_text())
    assert m["precision"] == "int8" and m["parity"]["min_mean_cosine"]["patch_tokens"] >= parity.INT8_MIN_COSINE
    assert isinstance(m["parity"]["batch_invariant"], bool)  # dynamic activation scales are per batch
    assert "KIND_CPU" in (tmp_path / "q" / "config.pbtxt").read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_exported_files_are_readable_by_other_users(exported):
    repo, out = exported
    for p in [out, out / "model.onnx", out / "manifest.json", repo / "tiny" / "config.pbtxt"]:
        assert p.stat().st_mode & 0o004, p  # a server in another container may run as another user


def test_fp32_cases_past_the_bound_are_judged_against_float64():
    def row(max_abs, graph, pytorch):
        return {"max_abs": {"patch_tokens": max_abs, "cls_token": 1e-6},
                "float64_max_abs": {"patch_tokens": {"graph": graph, "pytorch_float32": pytorch},
                                    "cls_token": {"graph": 1e-6, "pytorch_float32": 1e-6}}}

    # float32 rounding moves the model itself by 3.7e-4: a graph 2.5e-4 from float64 is as good as PyTorch
    parity._enforce_fp32_case(row(3.6e-4, 2.5e-4, 3.7e-4), (1, 224, 280))
    # a well-conditioned model: 3e-4 is the graph's own error, not rounding
    with pytest.raises(SinderError, match="at 1x224x280, more than float32 rounding explains"):
        parity._enforce_fp32_case(row(3e-4, 3e-4, 1e-6), (1, 224, 280))
    with pytest.raises(SinderError):
        parity._enforce_fp32_case(row(float("nan"), float("nan"), 1e-6), (1, 224, 280))
