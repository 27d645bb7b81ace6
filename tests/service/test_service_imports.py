"""The service never imports torch or the offline tool (its image has neither)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_importing_and_building_the_app_does_not_import_torch_or_sinder(tiny_repo):
    code = f"""
import sys
import service, service.__main__, service.openapi
from service.api.app import create_app
from service.config import Settings
from service.backends.onnx_runtime import OnnxRuntimeBackend
from fastapi.testclient import TestClient
app = create_app(Settings(model_repo={str(tiny_repo)!r}))
with TestClient(app) as client:
    import time
    for _ in range(500):
        if client.get('/health/ready').status_code == 200:
            break
        time.sleep(0.01)
    assert client.get('/health/ready').status_code == 200
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'sinder', 'onnx', 'matplotlib'))
print(bad)
sys.exit(1 if bad else 0)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
