"""`pip install 'sinder-serve[client]'` gives a client without the server: its requirements, what
importing it loads, and the PEP 561 marker in the wheel."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[3]
SERVER_STACK = {"fastapi", "starlette", "uvicorn", "onnxruntime", "onnxruntime-gpu", "torch", "onnx", "pydantic",
                "pydantic-settings", "prometheus-client", "python-multipart", "matplotlib"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_the_client_extra_pulls_none_of_the_server_stack():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["client"]}
    assert "httpx" in names
    assert not names & SERVER_STACK, names & SERVER_STACK


def test_importing_the_client_loads_none_of_the_server_stack():
    code = ("import sys, service.client\n"
            "mods = {m.split('.')[0].replace('_', '-') for m in sys.modules}\n"
            "print(sorted(mods & set(sys.argv[1:])))")
    stack = sorted(n.replace("-", "_") if n == "python-multipart" else n for n in SERVER_STACK | {"multipart"})
    out = subprocess.run([sys.executable, "-c", code, *stack], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_the_wheel_ships_py_typed_and_declares_the_client_extra(tmp_path):
    src = tmp_path / "src"  # a copy: building in the checkout would leave build/ and *.egg-info there
    for name in ("pyproject.toml", "README.md"):
        src.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, src / name)
    for package in ("service", "sinder"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("sinder_serve-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "service/py.typed" in names and "service/client/sync.py" in names
    client_reqs = {_name(line.split(":", 1)[1]) for line in metadata.splitlines()
                   if line.startswith("Requires-Dist:") and "extra == \"client\"" in line}
    assert client_reqs == {"httpx"}
