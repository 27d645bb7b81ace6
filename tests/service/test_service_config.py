"""Settings from SINDER_* variables, validated at start; the command line's flags and errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings, settings_error_line, unknown_variables

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
    ("max_batch_size", "0", "SINDER_MAX_BATCH_SIZE (got '0')"),
    ("model_repo", "/no/such/folder", "SINDER_MODEL_REPO (or --model-repo): '/no/such/folder' is not a folder"),
    ("port", "70000", "SINDER_PORT"),
    ("version_policy", "some", "SINDER_VERSION_POLICY"),
])
def test_invalid_settings_fail_at_start_naming_the_variable(monkeypatch, tmp_path, field, value, fragment):
    monkeypatch.setenv("SINDER_MODEL_REPO", str(tmp_path))
    monkeypatch.setenv(f"SINDER_{field.upper()}", value)
    with pytest.raises(ValidationError) as err:
        Settings()
    line = settings_error_line(err.value)
    assert fragment in line and "\n" not in line
    if field != "model_repo":
        assert f" {field}" not in line.replace(f"SINDER_{field.upper()}", "")  # the variable, not the field


def test_a_model_validator_names_both_variables(tmp_path):
    with pytest.raises(ValidationError) as err:
        Settings(model_repo=tmp_path, max_body_bytes=4096, max_inflight_bytes=2048)
    line = settings_error_line(err.value)
    assert "SINDER_MAX_INFLIGHT_BYTES (2048) must be at least SINDER_MAX_BODY_BYTES (4096)" in line


def test_unknown_variables_name_the_closest_setting():
    env = {"SINDER_API_KEYS": "k", "SINDER_MAX_IMAGE": "3", "SINDER_PORT": "1", "sinder_host": "h",
           "SINDER_CACHE": "/tmp/c", "SINDER_ZZZZZZZZZZ": "?", "OTHER": "x"}
    messages = unknown_variables(env)
    assert messages[0] == "unknown setting SINDER_API_KEYS; did you mean SINDER_API_KEY?"
    assert messages[1] == "unknown setting SINDER_MAX_IMAGE; did you mean SINDER_MAX_IMAGES?"
    assert messages[2].startswith("unknown setting SINDER_ZZZZZZZZZZ; known: ") and "SINDER_PORT" in messages[2]
    assert len(messages) == 3  # known settings (any case) and the tool's SINDER_CACHE pass


def test_kubernetes_service_links_are_not_taken_for_typos():
    links = {"SINDER_SERVE_SERVICE_HOST": "10.0.0.7", "SINDER_SERVE_SERVICE_PORT": "8000",
             "SINDER_SERVE_SERVICE_PORT_HTTP": "8000", "SINDER_SERVE_PORT": "tcp://10.0.0.7:8000",
             "SINDER_SERVE_PORT_8000_TCP": "tcp://10.0.0.7:8000", "SINDER_SERVE_PORT_8000_TCP_PROTO": "tcp",
             "SINDER_SERVE_PORT_8000_TCP_PORT": "8000", "SINDER_SERVE_PORT_8000_TCP_ADDR": "10.0.0.7"}
    assert unknown_variables(links) == []
    assert unknown_variables({"SINDER_SERVE_PORT": "8000"}) == ["unknown setting SINDER_SERVE_PORT; did you mean SINDER_PORT?"]


def test_cli_stops_on_a_misspelled_variable_with_exit_2(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SINDER_")},
           "SINDER_API_KEYS": "secret-key", "SINDER_MODEL_REPO": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "service", "--port", "0"], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: unknown setting SINDER_API_KEYS; did you mean SINDER_API_KEY?"


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
