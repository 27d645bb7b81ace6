"""A tiny model repository that follows model_repo/README.md, for tests and manual runs.

The graph takes uint8 NHWC RGB, normalises inside, average-pools each 14x14 patch, maps the
3 colours to C channels with a fixed matrix (plus a bias), and computes the contract's
diagnostics. A bright planted patch has tokens aligned with the "defect direction", so it
comes out as the one defect token. ``python tests/service/tiny_repo.py DIR`` writes one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PATCH = 14
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def _weights(dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(3, dim)).astype(np.float32)
    bias = rng.normal(size=(dim,)).astype(np.float32)
    white = ((1.0 - np.array(MEAN)) / np.array(STD)).astype(np.float32)
    direction = white @ weight + bias  # the token of a white patch: a planted white patch is "defective"
    return weight, bias, (direction / np.linalg.norm(direction)).astype(np.float32)


def build_graph(dim: int = 8, registers: int = 0, seed: int = 0, threshold_std: float = 4.0,
                dtype: int = TensorProto.FLOAT) -> tuple[onnx.ModelProto, np.ndarray]:
    weight, bias, direction = _weights(dim, seed)
    init = [
        numpy_helper.from_array(np.float32(255.0), "c255"),
        numpy_helper.from_array(np.array(MEAN, np.float32), "mean"),
        numpy_helper.from_array(np.array(STD, np.float32), "std"),
        numpy_helper.from_array(weight, "weight"),
        numpy_helper.from_array(bias, "bias"),
        numpy_helper.from_array(direction.reshape(dim, 1), "direction"),
        numpy_helper.from_array(np.float32(threshold_std), "k"),
        numpy_helper.from_array(np.float32(1e-6), "eps"),
        numpy_helper.from_array(np.array([3], np.int64), "axis3"),
    ]
    n = helper.make_node
    nodes = [
        n("Cast", ["images"], ["x_f"], to=TensorProto.FLOAT),
        n("Div", ["x_f", "c255"], ["x_01"]),
        n("Sub", ["x_01", "mean"], ["x_c"]),
        n("Div", ["x_c", "std"], ["x_n"]),
        n("Transpose", ["x_n"], ["x_nchw"], perm=[0, 3, 1, 2]),
        n("AveragePool", ["x_nchw"], ["pooled"], kernel_shape=[PATCH, PATCH], strides=[PATCH, PATCH]),
        n("Transpose", ["pooled"], ["pooled_nhwc"], perm=[0, 2, 3, 1]),
        n("MatMul", ["pooled_nhwc", "weight"], ["proj"]),
        n("Add", ["proj", "bias"], ["tokens"]),
        n("ReduceL2", ["tokens"], ["token_norms"], axes=[3], keepdims=0),
        n("MatMul", ["tokens", "direction"], ["dot4"]),
        n("Squeeze", ["dot4", "axis3"], ["dot"]),
        n("Abs", ["dot"], ["absdot"]),
        n("Add", ["token_norms", "eps"], ["norms_eps"]),
        n("Div", ["absdot", "norms_eps"], ["defect_alignment"]),
        n("ReduceMean", ["defect_alignment"], ["a_mean"], axes=[1, 2], keepdims=1),
        n("Sub", ["defect_alignment", "a_mean"], ["a_dev"]),
        n("Mul", ["a_dev", "a_dev"], ["a_dev2"]),
        n("ReduceMean", ["a_dev2"], ["a_var"], axes=[1, 2], keepdims=1),
        n("Sqrt", ["a_var"], ["a_std"]),
        n("Mul", ["a_std", "k"], ["a_kstd"]),
        n("Add", ["a_mean", "a_kstd"], ["a_thr"]),
        n("Greater", ["defect_alignment", "a_thr"], ["defect_mask"]),
        n("LayerNormalization", ["tokens", "ln_scale", "ln_bias"], ["patch_f32"], axis=-1, epsilon=1e-6),
        n("ReduceMean", ["patch_f32"], ["cls_f32"], axes=[1, 2], keepdims=0),
    ]
    init += [numpy_helper.from_array(np.ones(dim, np.float32), "ln_scale"),
             numpy_helper.from_array(np.zeros(dim, np.float32), "ln_bias")]
    cast_to = dtype
    nodes += [n("Cast", ["patch_f32"], ["patch_tokens"], to=cast_to), n("Cast", ["cls_f32"], ["cls_token"], to=cast_to)]
    outputs = [
        helper.make_tensor_value_info("cls_token", cast_to, ["B", dim]),
        helper.make_tensor_value_info("patch_tokens", cast_to, ["B", "h", "w", dim]),
    ]
    if registers:
        init.append(numpy_helper.from_array(np.array([1, registers, 1], np.int64), "reg_repeats"))
        init.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
        nodes += [n("Unsqueeze", ["cls_f32", "axis1"], ["cls_3d"]), n("Tile", ["cls_3d", "reg_repeats"], ["reg_f32"]),
                  n("Cast", ["reg_f32"], ["register_tokens"], to=cast_to)]
        outputs.append(helper.make_tensor_value_info("register_tokens", cast_to, ["B", registers, dim]))
    outputs += [
        helper.make_tensor_value_info("token_norms", TensorProto.FLOAT, ["B", "h", "w"]),
        helper.make_tensor_value_info("defect_alignment", TensorProto.FLOAT, ["B", "h", "w"]),
        helper.make_tensor_value_info("defect_mask", TensorProto.BOOL, ["B", "h", "w"]),
    ]
    graph = helper.make_graph(nodes, "tiny_dinov2", [helper.make_tensor_value_info("images", TensorProto.UINT8, ["B", "H", "W", 3])],
                              outputs, init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, direction


CONFIG = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch}
input [ {{ name: "images" data_type: TYPE_UINT8 dims: [ -1, -1, 3 ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: 5000 }}
instance_group [ {{ kind: KIND_AUTO count: 1 }} ]
"""


def write_model(repo: Path, name: str, version: int = 1, *, dim: int = 8, registers: int = 0, seed: int = 0,
                repair: dict | None = None, max_batch: int = 16, short_side: int = 56, max_side: int = 224,
                fp16: bool = False) -> Path:
    model, direction = build_graph(dim, registers, seed, dtype=TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT)
    folder = repo / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (repo / name / "config.pbtxt").write_text(CONFIG.format(name=name, max_batch=max_batch))
    onnx.save(model, str(folder / "model.onnx"))
    manifest = {
        "format_version": 1, "name": name, "version": version, "synthetic": True,
        "description": "tiny test model: average-pooled patches through a fixed matrix",
        "architecture": {"arch": "tiny", "patch_size": PATCH, "embed_dim": dim, "depth": 1, "num_heads": 1,
                         "num_register_tokens": registers, "ffn": "none", "interpolation": "official"},
        "precision": "fp16" if fp16 else "fp32",
        "max_batch_size": max_batch,
        "preprocessing": {"layout": "NHWC", "dtype": "uint8", "color": "RGB", "normalization_in_graph": True,
                          "mean": MEAN, "std": STD,
                          "resize": {"policy": "keep_aspect", "short_side": short_side, "multiple_of": PATCH,
                                     "min_side": 28, "max_side": max_side, "max_pixels": max_side * max_side}},
        "inputs": [{"name": "images", "dtype": "uint8", "shape": [-1, -1, -1, 3]}],
        "outputs": [{"name": o.name, "shape": [-1] * 2} for o in model.graph.output],
        "defect": {"layer": 0, "direction": direction.tolist(), "threshold_std": 4.0,
                   "rule": "defect_mask = |cos(token, direction)| > mean + 4 * std", "high_norm_factor": 4.0},
        "provenance": {"source_checkpoint": "none", "sha256": "0" * 64, "source_format": "test",
                       "tool_version": "test", "exported_at": "2026-01-01T00:00:00Z"},
        "parity": {"fp32_max_abs": {"patch_tokens": 0.0, "cls_token": 0.0}, "cases": []},
        "repair": repair,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return folder


def write_repo(repo: Path) -> Path:
    """``tiny`` and its repaired pair ``tiny_sinder``, ``tiny_reg`` (2 registers), and a non-model ``reports/``."""
    repo.mkdir(parents=True, exist_ok=True)
    write_model(repo, "tiny", 1)
    write_model(repo, "tiny_sinder", 1, seed=1, repair={"before": {"defect_fraction": 0.02}, "after": {"defect_fraction": 0.0},
                                                        "fidelity": 0.99, "iterations": 10, "seconds": 1.0})
    write_model(repo, "tiny_reg", 1, registers=2)
    (repo / "reports").mkdir(exist_ok=True)
    (repo / "reports" / "analysis.json").write_text("{}")
    return repo


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "model_repo_tiny")
    write_repo(target)
    print(target)
