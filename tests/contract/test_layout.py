"""The repository layout (contract/layout.py) and the rules Triton documents for it."""

import pytest

from contract import layout
from contract.errors import LayoutError
from contract.manifest import tensor_specs
from contract.triton_config import config_pbtxt


def model(repo, name, versions=(1,), config_name=None, filename="model.onnx"):
    inputs, outputs = tensor_specs(4, 0, "fp32")
    (repo / name).mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(config_pbtxt(config_name or name, inputs, outputs, 4,
                                                           default_model_filename=filename))
    for v in versions:
        (repo / name / str(v)).mkdir()
        (repo / name / str(v) / filename).write_bytes(b"onnx")
        (repo / name / str(v) / "manifest.json").write_text("{}")


def test_versions_are_numeric_folders_without_leading_zero(tmp_path):
    for name in ("1", "3", "10", "01", "0", "tmp", ".2.abc", "reports"):
        (tmp_path / name).mkdir()
    assert layout.versions(tmp_path) == [1, 3, 10] and layout.next_version(tmp_path) == 11
    assert layout.versions(tmp_path / "nope") == [] and layout.next_version(tmp_path / "nope") == 1


def test_a_repository_with_reports_inside_the_model_folders_is_valid_for_triton(tmp_path):
    model(tmp_path, "a", versions=(1, 2))
    model(tmp_path, "a_sinder")
    layout.reports_dir(tmp_path, "a").mkdir()
    (layout.reports_dir(tmp_path, "a") / "build.json").write_text("{}")
    assert layout.triton_problems(tmp_path) == []
    assert [p.name for p in layout.model_folders(tmp_path)] == ["a", "a_sinder"]


def test_each_triton_rule_is_checked(tmp_path):
    model(tmp_path, "renamed", config_name="other")
    model(tmp_path, "empty", versions=())
    model(tmp_path, "custom", filename="net.onnx")
    (tmp_path / "custom" / "1" / "net.onnx").unlink()
    (tmp_path / "reports").mkdir()
    problems = "\n".join(layout.triton_problems(tmp_path))
    assert "renamed: config.pbtxt names the model 'other'" in problems
    assert "empty: no numeric version folder" in problems
    assert "custom/1: no net.onnx" in problems
    assert "reports: no config.pbtxt" in problems
    assert "reports" not in [p.name for p in layout.model_folders(tmp_path)]


@pytest.mark.parametrize("name", ["", ".x", "a/b", "a b"])
def test_model_names_must_be_folder_names(name):
    with pytest.raises(LayoutError, match="model name"):
        layout.check_model_name(name)
