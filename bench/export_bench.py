"""Export benchmark: onnxruntime (CPU EP) against PyTorch eager for the ViT-S/14 shape at 224x224,
the runtime's model GFLOP/s against numpy's float32 matmul rate, and the int8 variant.

``run(repeats)`` returns ``{"figures": [...], "raw": {...}}``; every pair of numbers in a figure
was measured side by side in the same repeat, the variants taking short turns (``_interleaved_rates``). The weights are the synthetic demo
model (ViT-S/14 shape, generated from a seed): the figures are about speed, not features.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

RESOLUTION = 224
BATCHES = (1, 8)
SECONDS = 4.0  # per measurement


def physical_cores() -> int:
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except ImportError:
        n = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(n or usable, usable))


def session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _rate(fn, n_images: int, seconds: float) -> float:
    fn()  # warm-up
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls * n_images / elapsed


def _interleaved_rates(fns: dict, n_images: int, seconds: float, slice_s: float = 0.25) -> dict[str, float]:
    """Images/s of each of ``fns``, timed in short turns one after another for ``seconds`` each, so that a
    change in the machine's load falls on every variant alike rather than on whichever ran then."""
    calls = dict.fromkeys(fns, 0)
    spent = dict.fromkeys(fns, 0.0)
    for fn in fns.values():
        fn()  # warm-up
    while min(spent.values()) < seconds:
        for key, fn in fns.items():
            start = time.perf_counter()
            while True:
                fn()
                calls[key] += 1
                elapsed = time.perf_counter() - start
                if elapsed >= slice_s:
                    break
            spent[key] += elapsed
    return {k: calls[k] * n_images / spent[k] for k in fns}


def matmul_gflops(n: int, seconds: float) -> float:
    """numpy float32 ``[n, n] @ [n, n]`` back to back."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    return _rate(lambda: np.matmul(a, b, out=out), 1, seconds) * 2.0 * n**3 / 1e9


def flops_per_image(embed_dim: int, depth: int, tokens: int, patches: int, patch: int = 14) -> float:
    c, hidden = embed_dim, 4 * embed_dim
    per_block = tokens * (3 * c * c + c * c + 2 * c * hidden) + 2 * tokens * tokens * c
    return 2.0 * (depth * per_block + patches * 3 * patch * patch * c)


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    return float(np.mean((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))))


def run(repeats: int = 3, seconds: float = SECONDS) -> dict:
    import torch

    from sinder.demo import load_demo
    from sinder.export import graph
    from sinder.export.parity import parity_images
    from sinder.export.quantize import quantize_int8
    from sinder.export.wrapper import ExportWrapper
    from sinder.model import IMAGENET_MEAN, IMAGENET_STD

    from .stats import ratio_summary, summary

    threads = physical_cores()
    torch.set_num_threads(threads)
    loaded = load_demo(seed=0)
    model = loaded.model.eval()
    arch = loaded.arch
    direction = torch.zeros(arch.embed_dim)
    direction[0] = 1.0  # the direction does not change the cost
    tmp = Path(tempfile.mkdtemp(prefix="sinder-export-bench-"))
    started = time.perf_counter()
    paths = {}
    for opset in (graph.DEFAULT_OPSET, 23):
        paths[opset] = graph.export_graph(ExportWrapper(model, direction), tmp / f"vits14_op{opset}.onnx",
                                          56, 1036, 32, opset=opset)
    int8_path = quantize_int8(paths[graph.DEFAULT_OPSET], tmp / "vits14_int8.onnx")
    int8_all_path = quantize_int8(paths[graph.DEFAULT_OPSET], tmp / "vits14_int8_all.onnx", keep_float=())
    export_seconds = time.perf_counter() - started

    sessions = {"fp32": session(paths[graph.DEFAULT_OPSET], threads), "fp32_opset23": session(paths[23], threads),
                "int8": session(int8_path, threads), "int8_all": session(int8_all_path, threads)}
    mean = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1)

    def eager(images_u8: torch.Tensor):
        with torch.inference_mode():
            x = (images_u8.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
            return model.forward_features(x)

    patches = (RESOLUTION // 14) ** 2
    flops = flops_per_image(arch.embed_dim, arch.depth, patches + 1, patches)
    raw: dict = {"threads": threads, "export_seconds": export_seconds, "gflop_per_image": flops / 1e9}
    figures = []
    for b in BATCHES:
        images = parity_images(b, RESOLUTION, RESOLUTION, seed=b)
        images_t = torch.from_numpy(images)
        feed = {"images": images}
        rates = {k: [] for k in ("eager", "fp32", "fp32_opset23", "int8", "int8_all", "numpy")}
        fns = {"eager": lambda: eager(images_t)} | {
            k: (lambda s=sessions[k]: s.run(None, feed)) for k in ("fp32", "fp32_opset23", "int8", "int8_all")}
        for _ in range(repeats):
            for k, rate in _interleaved_rates(fns, b, seconds).items():
                rates[k].append(rate)
            rates["numpy"].append(matmul_gflops(1024, seconds / 2))
        outs = {k: sessions[k].run(["patch_tokens"], feed)[0] for k in ("fp32", "int8", "int8_all")}
        with torch.inference_mode():
            ref = eager(images_t)["x_norm_patchtokens"].numpy()
        cos_int8 = _mean_cosine(outs["int8"], outs["fp32"])
        cos_int8_all = _mean_cosine(outs["int8_all"], outs["fp32"])
        fp32_vs_eager = float(np.abs(outs["fp32"].reshape(ref.shape) - ref).max())
        gflops = [r * flops / 1e9 for r in rates["fp32"]]
        raw[f"batch{b}"] = {k: summary(v) for k, v in rates.items()} | {
            "int8_mean_cosine_to_fp32": cos_int8, "fp32_max_abs_to_eager": fp32_vs_eager}
        model_desc = "ViT-S/14 shape (synthetic demo weights), uint8 224x224 in, features + diagnostics out"
        figures.append({
            "name": "onnxruntime fp32 vs PyTorch eager", "model": model_desc, "resolution": "224x224", "batch": b,
            "a_label": f"onnxruntime CPU EP, opset {graph.DEFAULT_OPSET}, images/s",
            "b_label": "PyTorch eager (inference_mode), images/s", "unit": "images/s",
            "a": summary(rates["fp32"]), "b": summary(rates["eager"]),
            "ratio": ratio_summary(rates["fp32"], rates["eager"]), "ratio_label": "onnxruntime / eager",
            "target": ">= 1.1", "details": {"threads": threads, "fp32 max abs to eager (patch_tokens)": fp32_vs_eager,
                                            "opset 23 (standard Attention op) images/s": summary(rates["fp32_opset23"])["median"]},
        })
        figures.append({
            "name": "onnxruntime model GFLOP/s vs numpy float32 matmul", "model": model_desc, "resolution": "224x224",
            "batch": b, "a_label": "onnxruntime fp32, model GFLOP/s", "b_label": "numpy float32 [1024x1024] @ [1024x1024]",
            "unit": "GFLOP/s", "a": summary(gflops), "b": summary(rates["numpy"]),
            "ratio": ratio_summary(gflops, rates["numpy"]), "ratio_label": "onnxruntime / numpy matmul",
            "target": ">= 0.75", "details": {
                "model GFLOP per image": flops / 1e9,
                "PyTorch eager, model GFLOP/s (same run)": summary([r * flops / 1e9 for r in rates["eager"]])["median"]},
        })
        figures.append({
            "name": "onnxruntime int8 (dynamic quantization) vs fp32", "model": model_desc, "resolution": "224x224",
            "batch": b, "a_label": "int8 images/s", "b_label": "fp32 images/s", "unit": "images/s",
            "a": summary(rates["int8"]), "b": summary(rates["fp32"]),
            "ratio": ratio_summary(rates["int8"], rates["fp32"]), "ratio_label": "int8 / fp32",
            "target": ">= 1.5 with mean cosine >= 0.99",
            "details": {"mean patch-token cosine int8 vs fp32": cos_int8,
                        "every Linear int8 (keep_float=()), images/s": summary(rates["int8_all"])["median"],
                        "every Linear int8, ratio to fp32": ratio_summary(rates["int8_all"], rates["fp32"])["median"],
                        "every Linear int8, mean patch-token cosine vs fp32": cos_int8_all},
        })
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    return {"figures": figures, "raw": raw}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 1,
                         float(sys.argv[2]) if len(sys.argv) > 2 else SECONDS), indent=1, default=str))
