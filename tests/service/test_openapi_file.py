"""The committed openapi.yaml is the app's own schema, and documents every error status it returns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from service.openapi import schema

ROOT = Path(__file__).resolve().parents[2]


def test_committed_openapi_yaml_equals_the_app_schema():
    committed = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    current = json.loads(json.dumps(schema()))
    assert committed == current, "openapi.yaml is stale: run `python -m service.openapi > openapi.yaml`"


def test_writer_prints_yaml_that_round_trips(tmp_path):
    out = subprocess.run([sys.executable, "-m", "service.openapi"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["paths"].keys() == schema()["paths"].keys()


def test_routes_document_their_errors_and_both_body_types():
    spec = schema()
    features = spec["paths"]["/features"]["post"]
    assert set(features["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert {"200", "400", "401", "404", "413", "415", "422", "429", "503", "504"} <= set(features["responses"])
    assert features["responses"]["429"]["headers"]["Retry-After"]
    envelope = features["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
    assert envelope.endswith("/ErrorResponse")
    assert spec["paths"]["/visualize"]["post"]["responses"]["200"]["content"].keys() == {"image/png"}
    assert "503" in spec["paths"]["/health/ready"]["get"]["responses"]
    for path in ("/models", "/models/{name}", "/health/live", "/metrics", "/visualize"):
        assert path in spec["paths"]
    for name in ("FeaturesRequest", "FeaturesMultipart", "FeaturesResponse", "ErrorResponse", "ModelDetail"):
        assert name in spec["components"]["schemas"], name
    refs = set()

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"].rsplit("/", 1)[-1])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    assert refs <= set(spec["components"]["schemas"])  # every reference resolves
