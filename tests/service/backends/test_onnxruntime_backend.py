"""The onnxruntime backend on the tiny model: provider from the session, outputs, provider lists."""

from __future__ import annotations

import numpy as np

import tiny_repo
from service.backends.onnx_runtime import OnnxRuntimeBackend, resolve_providers


def reference(images: np.ndarray, dim: int = 8, seed: int = 0) -> np.ndarray:
    weight, bias, _ = tiny_repo._weights(dim, seed)
    x = (images.astype(np.float32) / 255 - np.array(tiny_repo.MEAN, np.float32)) / np.array(tiny_repo.STD, np.float32)
    b, h, w, _ = x.shape
    pooled = x.reshape(b, h // 14, 14, w // 14, 14, 3).mean(axis=(2, 4))
    return pooled @ weight + bias


def test_runs_the_contract_and_reports_the_provider_in_use(tmp_path):
    folder = tiny_repo.write_model(tmp_path, "m", 1)
    backend = OnnxRuntimeBackend(folder / "model.onnx", ["auto"])
    assert backend.provider == "CPUExecutionProvider"
    assert backend.inputs[0].dtype == "uint8" and len(backend.inputs[0].shape) == 4
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 42, 3), dtype=np.uint8)
    out = backend.run(images)
    assert set(out) == {"cls_token", "patch_tokens", "token_norms", "defect_alignment", "defect_mask"}
    tokens = reference(images)
    np.testing.assert_allclose(out["token_norms"], np.linalg.norm(tokens, axis=-1), rtol=1e-4)
    assert out["patch_tokens"].shape == (3, 2, 3, 8) and out["defect_mask"].dtype == np.bool_


def test_unavailable_providers_fall_back_to_cpu(tmp_path):
    providers = resolve_providers(["TensorrtExecutionProvider", "CUDAExecutionProvider"])
    names = [p if isinstance(p, str) else p[0] for p in providers]
    assert names[-1] == "CPUExecutionProvider"
    folder = tiny_repo.write_model(tmp_path, "m", 1)
    backend = OnnxRuntimeBackend(folder / "model.onnx", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert backend.provider == "CPUExecutionProvider"  # really what runs, not what was asked
