"""The contract imports numpy, Pillow and pydantic only: both halves can depend on it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_contract_imports_neither_torch_nor_fastapi_nor_either_half():
    code = ("import sys; import contract.layout, contract.manifest, contract.triton_config, contract.defects, "
            "contract.preprocess; bad = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'fastapi', 'starlette', 'onnx', 'onnxruntime', 'sinder', 'service'}); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
