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
