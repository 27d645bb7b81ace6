"""Settings from SINDER_* variables, validated at start; the command line's flags and errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings, settings_error_line

ROOT = Path(__file__).resolve().parents[2]


def test_environment_variables_with_prefix(monkeypatch, tmp_path):
    monkeypatch.setenv("SINDER_MODEL_REPO", str(tmp_path))
    monkeypatch.setenv("SINDER_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("SINDER_PROVIDERS", "cuda, cpu")
    monkeypatch.setenv("SINDER_MODELS", "a,b")
    monkeypatch.setenv("SINDER_API_KEY", "hunter2-key")
    monkeypatch.setenv("SINDER_REQUIRE_GPU", "true")
    s = Settings()
    assert s.model_repo == tmp_path and s.max_batch_size == 8 and s.require_gpu
    assert s.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert s.models == ["a", "b"] and s.api_key.get_secret_value() == "hunter2-key"
    assert "hunter2" not in repr(s)  # the key is a secret


def test_empty_api_key_means_none(monkeypatch, tmp_path):
    monkeypatch.setenv("SINDER_API_KEY", "")
    assert Settings(model_repo=tmp_path).api_key is None


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("providers", "quantum", "unknown provider"),
    ("max_batch_size", "0", "max_batch_size"),
    ("model_repo", "/no/such/folder", "not a folder"),
    ("port", "70000", "port"),
    ("version_policy", "some", "version_policy"),
])
def test_invalid_settings_fail_at_start_naming_the_field(tmp_path, field, value, fragment):
    kwargs = {"model_repo": tmp_path, field: value}
    with pytest.raises(ValidationError) as err:
        Settings(**kwargs)
    line = settings_error_line(err.value)
    assert fragment in line and "\n" not in line


def test_cli_reports_a_bad_setting_in_one_line_and_exits_2(tmp_path):
    out = subprocess.run([sys.executable, "-m", "service", "--model-repo", str(tmp_path / "missing")],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing" in lines[0] and lines[0].startswith("error:")


def test_cli_help_lists_the_flags():
    out = subprocess.run([sys.executable, "-m", "service", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0
    for flag in ("--model-repo", "--host", "--port"):
        assert flag in out.stdout
