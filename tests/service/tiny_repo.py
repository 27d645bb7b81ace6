"""A tiny model repository that follows model_repo/README.md, for tests and manual runs.

The graph takes uint8 NHWC RGB, normalises inside, average-pools each 14x14 patch, maps the
3 colours to C channels with a fixed matrix (plus a bias), and computes the contract's
diagnostics (``contract/defects.py``: its constants, its sample std). A bright planted patch
has tokens aligned with the "defect direction", so it comes out as the one defect token.
The folders, ``config.pbtxt`` and ``manifest.json`` are written through the contract.
``python tests/service/tiny_repo.py DIR`` writes one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from contract import defects, layout
from contract.manifest import (SINDER, Architecture, Manifest, Preprocessing, Provenance, Variant, defect_block,
                               tensor_specs)
from contract.preprocess import IMAGENET_MEAN, IMAGENET_STD, Resize
from contract.triton_config import config_pbtxt

PATCH = 14
MEAN = list(IMAGENET_MEAN)
STD = list(IMAGENET_STD)


def _weights(dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(3, dim)).astype(np.float32)
    bias = rng.normal(size=(dim,)).astype(np.float32)
    white = ((1.0 - np.array(MEAN)) / np.array(STD)).astype(np.float32)
    direction = white @ weight + bias  # the token of a white patch: a planted white patch is "defective"
    return weight, bias, (direction / np.linalg.norm(direction)).astype(np.float32)


def build_graph(dim: int = 8, registers: int = 0, seed: int = 0, threshold_std: float = defects.THRESHOLD_STD,
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
        numpy_helper.from_array(np.float32(defects.NORM_EPS), "eps"),
        numpy_helper.from_array(np.float32(1.0), "one"),
        numpy_helper.from_array(np.float32(defects.STD_DDOF), "ddof"),
        numpy_helper.from_array(np.array([3], np.int64), "axis3"),
        numpy_helper.from_array(np.array([1, 2], np.int64), "axes12"),
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
        n("Max", ["token_norms", "eps"], ["norms_eps"]),
        n("Div", ["absdot", "norms_eps"], ["defect_alignment"]),
        n("ReduceMean", ["defect_alignment"], ["a_mean"], axes=[1, 2], keepdims=1),
        n("Sub", ["defect_alignment", "a_mean"], ["a_dev"]),
        n("Mul", ["a_dev", "a_dev"], ["a_dev2"]),
        # the contract's sample variance: sum of squares / (tokens - ddof)
        n("Shape", ["defect_alignment"], ["a_shape"]),
        n("Expand", ["one", "a_shape"], ["a_ones"]),
        n("ReduceSum", ["a_ones", "axes12"], ["a_count"], keepdims=1),
        n("Sub", ["a_count", "ddof"], ["a_dof"]),
        n("ReduceSum", ["a_dev2", "axes12"], ["a_ss"], keepdims=1),
        n("Div", ["a_ss", "a_dof"], ["a_var"]),
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


def write_model(repo: Path, name: str, version: int = 1, *, dim: int = 8, registers: int = 0, seed: int = 0,
                repair: dict | None = None, max_batch: int = 16, short_side: int = 56, max_side: int = 224,
                fp16: bool = False, variant: Variant | None = None, registers_summary: dict | None = None) -> Path:
    model, direction = build_graph(dim, registers, seed, dtype=TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT)
    folder = layout.version_dir(repo, name, version)
    folder.mkdir(parents=True, exist_ok=True)
    precision = "fp16" if fp16 else "fp32"
    inputs, outputs = tensor_specs(dim, registers, precision)
    (repo / name / layout.CONFIG_FILE).write_text(config_pbtxt(name, inputs, outputs, max_batch, instance_kind="KIND_AUTO"))
    onnx.save(model, str(folder / layout.MODEL_FILE))
    manifest = Manifest(
        name=name, version=version, synthetic=True,
        description="tiny test model: average-pooled patches through a fixed matrix",
        architecture=Architecture(arch="tiny", patch_size=PATCH, embed_dim=dim, depth=1, num_heads=1,
                                  num_register_tokens=registers, ffn="none"),
        precision=precision, max_batch_size=max_batch,
        preprocessing=Preprocessing(resize=Resize(short_side=short_side, multiple_of=PATCH, min_side=28,
                                                  max_side=max_side, max_pixels=max_side * max_side)),
        inputs=inputs, outputs=outputs,
        defect=defect_block(direction.tolist(), 0),
        variant=variant or Variant(),
        provenance=Provenance(source_checkpoint="none", sha256="0" * 64, source_format="test", tool="tiny_repo",
                              tool_version="test", exported_at="2026-01-01T00:00:00Z"),
        parity={"fp32_max_abs": {"patch_tokens": 0.0, "cls_token": 0.0}, "cases": []},
        repair=repair,
        registers=registers_summary,
    )
    (folder / layout.MANIFEST_FILE).write_text(manifest.to_json())
    return folder


def write_repo(repo: Path) -> Path:
    """``tiny`` and its repaired variant ``tiny_sinder``, ``tiny_reg`` (2 registers); ``tiny/reports/`` as a build leaves it."""
    repo.mkdir(parents=True, exist_ok=True)
    write_model(repo, "tiny", 1)
    write_model(repo, "tiny_sinder", 1, seed=1, repair={"before": {"defect_fraction": 0.02}, "after": {"defect_fraction": 0.0},
                                                        "fidelity": 0.99, "iterations": 10, "seconds": 1.0},
                variant=Variant(kind=SINDER, of="tiny"))
    write_model(repo, "tiny_reg", 1, registers=2)
    reports = layout.reports_dir(repo, "tiny")
    reports.mkdir(exist_ok=True)
    (reports / "analysis.json").write_text("{}")
    return repo


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "model_repo_tiny")
    write_repo(target)
    print(target)
