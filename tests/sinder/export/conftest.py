"""The tiny model exported once per session and shared by the export tests."""

import shutil
from pathlib import Path

import pytest
from export_helpers import SMALL_CASES, tiny_loaded, unit_direction


@pytest.fixture(scope="session")
def tiny():
    return tiny_loaded()


@pytest.fixture(scope="session")
def exported(tmp_path_factory, tiny):
    """One real fp32 export of the tiny model: (model_repo, version_dir)."""
    from sinder.export import export_model

    repo = tmp_path_factory.mktemp("repo")
    out = export_model(tiny, repo, "tiny", direction=unit_direction(64), parity_cases=SMALL_CASES, progress=False)
    return repo, out


@pytest.fixture
def fast_graph(monkeypatch, exported):
    """Replace tracing by a copy of the session's export (same model): for repository-logic tests."""
    from sinder.export import graph

    src = exported[1] / "model.onnx"

    def copy_graph(wrapper, path, *args, **kwargs):
        shutil.copyfile(src, path)
        return Path(path)

    monkeypatch.setattr(graph, "export_graph", copy_graph)
    return copy_graph
