"""`sinder export` from the command line: a checkpoint in, a model folder out; bad input named."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from sinder.checkpoints import save_official
from sinder.cli import main
from sinder.export import graph

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
from export_helpers import tiny_loaded  # noqa: E402  (the tiny random model of the export tests)


@pytest.fixture
def checkpoint(tmp_path):
    return save_official(tiny_loaded().model, tmp_path / "tiny.pth")


def _error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    return [line for line in err if line.startswith("sinder export: error:")]


def test_export_cli_versions_and_overwrite(tmp_path, checkpoint, capsys, monkeypatch):
    repo = tmp_path / "repo"
    assert main(["export", "--checkpoint", str(checkpoint), "--name", "tiny", "--model-repo", str(repo)]) == 0
    first = repo / "tiny" / "1"
    manifest = json.loads((first / "manifest.json").read_text())
    assert manifest["provenance"]["source_format"] == "official" and len(manifest["provenance"]["sha256"]) == 64
    assert manifest["architecture"]["embed_dim"] == 64 and (repo / "tiny" / "config.pbtxt").is_file()

    # the graph of the same checkpoint, copied instead of traced again: the rest of the path is the same
    saved = tmp_path / "saved.onnx"
    shutil.copyfile(first / "model.onnx", saved)
    monkeypatch.setattr(graph, "export_graph", lambda w, path, *a, **k: shutil.copyfile(saved, path))
    capsys.readouterr()
    args = ["export", "--checkpoint", str(checkpoint), "--name", "tiny", "--model-repo", str(repo), "--version", "1"]
    assert main(args) == 2
    (err,) = _error(capsys)
    assert str(first) in err and "--overwrite" in err
    assert main(args + ["--overwrite"]) == 0
    assert main(["export", "--checkpoint", str(checkpoint), "--name", "tiny", "--model-repo", str(repo)]) == 0
    assert sorted(p.name for p in (repo / "tiny").iterdir()) == ["1", "2", "config.pbtxt"]


def test_export_cli_arch_mismatch_names_keys(tmp_path, checkpoint, capsys):
    code = main(["export", "--checkpoint", str(checkpoint), "--arch", "vitb14", "--name", "x",
                 "--model-repo", str(tmp_path / "repo")])
    assert code == 2
    err = capsys.readouterr().err
    assert "error:" in err and ("embed" in err or "blocks." in err or "cls_token" in err), err
    assert not (tmp_path / "repo" / "x" / "1").exists()


def test_export_cli_missing_checkpoint(tmp_path, capsys):
    code = main(["export", "--checkpoint", str(tmp_path / "nope.pth"), "--name", "x",
                 "--model-repo", str(tmp_path / "repo")])
    assert code == 2
    assert "nope.pth" in capsys.readouterr().err


def test_export_cli_variant_of_needs_a_repair_report(tmp_path, checkpoint, capsys):
    code = main(["export", "--checkpoint", str(checkpoint), "--name", "x", "--variant-of", "orig",
                 "--model-repo", str(tmp_path / "repo")])
    assert code == 2
    (err,) = _error(capsys)
    assert "--variant-of" in err and "--repair-report" in err
    assert not (tmp_path / "repo" / "x").exists()


def test_export_int8_with_test_time_registers(tmp_path, monkeypatch):
    """`--int8 --registers` on a model with trained registers too: the int8 variant loads in onnxruntime,
    has the outputs its manifest lists (register tokens included), keeps the neuron edit and stays close
    to the float32 graph with the same registers."""
    import numpy as np
    import onnxruntime as ort

    from sinder.export.parity import parity_images, reference_outputs

    base = tiny_loaded(registers=4)
    checkpoint = save_official(base.model, tmp_path / "tiny_reg.pth")
    report = tmp_path / "ttr.json"
    neurons = {"0": [1, 5, 30], "1": [2]}
    report.write_text(json.dumps({"neurons": neurons, "neuron_count": 4, "verdict": "removed"}))
    repo = tmp_path / "repo"
    # NAME and NAME_int8 trace the same float32 graph: trace it once (the slow part), copy it the second time
    traced, trace = [], graph.export_graph

    def trace_once(wrapper, path, *args, **kwargs):
        if traced:
            return shutil.copyfile(traced[0], path)
        traced.append(tmp_path / "traced.onnx")
        trace(wrapper, path, *args, **kwargs)
        return shutil.copyfile(path, traced[0])

    monkeypatch.setattr(graph, "export_graph", trace_once)
    assert main(["export", "--checkpoint", str(checkpoint), "--registers", str(report), "--name", "tiny_ttr",
                 "--model-repo", str(repo), "--int8"]) == 0
    images = parity_images(3, 70, 98, seed=5)  # a size the parity check did not use
    got, manifests = {}, {}
    for name in ("tiny_ttr", "tiny_ttr_int8"):
        folder = repo / name / "1"
        manifests[name] = m = json.loads((folder / "manifest.json").read_text())
        assert m["variant"] == {"kind": "ttr", "of": "tiny"}
        assert m["registers"]["neurons"] == neurons
        session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        outputs = {o.name: o for o in session.get_outputs()}
        assert set(outputs) == {o["name"] for o in m["outputs"]}
        got[name] = dict(zip(outputs, session.run(None, {"images": images})))
    assert manifests["tiny_ttr_int8"]["precision"] == "int8"
    assert manifests["tiny_ttr_int8"]["architecture"]["num_register_tokens"] == 4
    fp32, int8 = got["tiny_ttr"], got["tiny_ttr_int8"]
    assert int8["register_tokens"].shape == (3, 4, 64) and int8["patch_tokens"].shape == (3, 5, 7, 64)

    def mean_cosine(a, b):
        a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
        return float(((a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)).mean())

    for f in ("cls_token", "patch_tokens", "register_tokens"):
        assert mean_cosine(int8[f], fp32[f]) >= 0.99, f
    # the edit survives quantization: int8 is nearer the float32 graph with registers than the plain model
    plain = reference_outputs(base.model, images, base.model.cls_token.new_ones(64), 4.0)["patch_tokens"]
    assert np.abs(fp32["patch_tokens"] - plain).max() > 1e-3
    assert np.abs(int8["patch_tokens"] - fp32["patch_tokens"]).mean() < np.abs(int8["patch_tokens"] - plain).mean()
