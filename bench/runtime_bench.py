"""onnxruntime's rate on the bench model against this machine's float32 matmul rate (numpy)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .onnx_vit import SHAPES, flops_per_image
from .stats import ratio_summary, summary


def matmul_gflops(m: int, k: int, n: int, seconds: float) -> float:
    """GFLOP/s of numpy float32 ``[m, k] @ [k, n]`` (the shape of a ViT MLP layer), back to back."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    out = np.empty((m, n), np.float32)
    np.matmul(a, b, out=out)
    calls, start = 0, time.perf_counter()
    while True:
        np.matmul(a, b, out=out)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2.0 * m * k * n * calls / elapsed / 1e9


def run(model_path: Path, arch: str, resolution: int, batch_size: int, model_desc: str, *,
        repeats: int = 3, seconds: float = 5.0) -> list[dict]:
    from .service_bench import raw_images_per_s, raw_session

    shape = SHAPES[arch]
    session = raw_session(model_path)
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (batch_size, resolution, resolution, 3), dtype=np.uint8)
    flops = flops_per_image(shape, resolution)
    tokens = (resolution // 14) ** 2 + 1
    ort_rates, np_rates = [], []
    for _ in range(repeats):
        ort_rates.append(raw_images_per_s(session, batch, seconds) * flops / 1e9)
        np_rates.append(matmul_gflops(batch_size * tokens, shape.embed_dim, 4 * shape.embed_dim, seconds))
    return [{
        "section": "Runtime", "name": "onnxruntime vs numpy float32 matmul of the model's MLP shape",
        "model": model_desc, "resolution": f"{resolution}x{resolution}", "batch": batch_size,
        "a_label": "onnxruntime (CPU EP), model GFLOP/s", "b_label": f"numpy float32 matmul [{batch_size * tokens}x{shape.embed_dim}] @ [{shape.embed_dim}x{4 * shape.embed_dim}]",
        "unit": "GFLOP/s", "a": summary(ort_rates), "b": summary(np_rates), "ratio": ratio_summary(ort_rates, np_rates),
        "ratio_label": "onnxruntime / numpy matmul",
        "details": {"model GFLOP per image (2 x multiply-adds)": flops / 1e9,
                    "images/s (median)": summary(ort_rates)["median"] * 1e9 / flops},
        "note": "A ratio near 1 means the runtime runs the model about as fast as this machine multiplies matrices; "
                "attention, norms and activations make it lower.",
    }]
