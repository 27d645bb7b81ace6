"""A near-zero-cost ONNX graph with the model repository's I/O contract, for front-end benchmarks.

``images`` uint8 [B, H, W, 3] in; ``cls_token`` [B, C], ``patch_tokens`` [B, H/14, W/14, C],
``token_norms``, ``defect_alignment`` and ``defect_mask`` [B, H/14, W/14] out, sliced from
fixed random tables and broadcast over the batch: the outputs have the sizes and the
(incompressible, random) values of a real ViT's, while the graph costs little more than writing
them. With it, a benchmark sees the service's own work (parsing, decoding, batching, encoding)
where a GPU would run the model in a fraction of a millisecond. Synthetic: not a model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from contract import layout

from .onnx_vit import PATCH, SHAPES, Shape, config_pbtxt, manifest_for

MAX_GRID = 1036 // PATCH  # the manifest's max_side


def build_null_onnx(shape: Shape, precision: str = "fp16", seed: int = 0):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    c = shape.embed_dim
    out_np = np.float16 if precision == "fp16" else np.float32
    out_t = TensorProto.FLOAT16 if precision == "fp16" else TensorProto.FLOAT
    norms = rng.uniform(20, 60, (MAX_GRID, MAX_GRID)).astype(np.float32)
    inits = [
        numpy_helper.from_array(rng.standard_normal((MAX_GRID, MAX_GRID, c)).astype(out_np), "token_table"),
        numpy_helper.from_array(rng.standard_normal(c).astype(out_np), "cls_vec"),
        numpy_helper.from_array(norms, "norm_table"),
        numpy_helper.from_array(rng.uniform(0, 0.3, (MAX_GRID, MAX_GRID)).astype(np.float32), "align_table"),
        numpy_helper.from_array(norms > 58, "mask_table"),
        numpy_helper.from_array(np.array([PATCH], np.int64), "patch"),
        numpy_helper.from_array(np.array([c], np.int64), "width"),
        numpy_helper.from_array(np.array([0, 0], np.int64), "zeros2"),
        numpy_helper.from_array(np.array([0, 1], np.int64), "axes01"),
    ]
    for name, (lo, hi) in {"i0": (0, 1), "i1": (1, 2), "i2": (2, 3)}.items():
        inits += [numpy_helper.from_array(np.array([lo], np.int64), f"{name}_lo"),
                  numpy_helper.from_array(np.array([hi], np.int64), f"{name}_hi")]
    n = helper.make_node
    nodes = [
        n("Shape", ["images"], ["shape"]),
        n("Slice", ["shape", "i0_lo", "i0_hi"], ["batch"]),
        n("Slice", ["shape", "i1_lo", "i1_hi"], ["height"]),
        n("Slice", ["shape", "i2_lo", "i2_hi"], ["width_px"]),
        n("Div", ["height", "patch"], ["gh"]),
        n("Div", ["width_px", "patch"], ["gw"]),
        n("Concat", ["gh", "gw"], ["grid"], axis=0),
        n("Concat", ["batch", "gh", "gw", "width"], ["tokens_shape"], axis=0),
        n("Concat", ["batch", "gh", "gw"], ["map_shape"], axis=0),
        n("Concat", ["batch", "width"], ["cls_shape"], axis=0),
        n("Slice", ["token_table", "zeros2", "grid", "axes01"], ["tokens_hw"]),
        n("Expand", ["tokens_hw", "tokens_shape"], ["patch_tokens"]),
        n("Expand", ["cls_vec", "cls_shape"], ["cls_token"]),
    ]
    for table, out in (("norm_table", "token_norms"), ("align_table", "defect_alignment"), ("mask_table", "defect_mask")):
        nodes += [n("Slice", [table, "zeros2", "grid", "axes01"], [f"{out}_hw"]),
                  n("Expand", [f"{out}_hw", "map_shape"], [out])]
    outputs = [
        helper.make_tensor_value_info("cls_token", out_t, ["B", c]),
        helper.make_tensor_value_info("patch_tokens", out_t, ["B", "h", "w", c]),
        helper.make_tensor_value_info("token_norms", TensorProto.FLOAT, ["B", "h", "w"]),
        helper.make_tensor_value_info("defect_alignment", TensorProto.FLOAT, ["B", "h", "w"]),
        helper.make_tensor_value_info("defect_mask", TensorProto.BOOL, ["B", "h", "w"]),
    ]
    graph = helper.make_graph(nodes, "null_vit", [helper.make_tensor_value_info("images", TensorProto.UINT8, ["B", "H", "W", 3])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, rng.standard_normal(c).astype(np.float32)


def write_null_model(repo: Path, name: str, arch: str = "vits14", precision: str = "fp16", max_batch_size: int = 32,
                     short_side: int = 224) -> Path:
    """``repo/name/{config.pbtxt, 1/model.onnx, 1/manifest.json}``, the version folder written whole."""
    shape = SHAPES[arch]
    model, direction = build_null_onnx(shape, precision)
    folder = Path(repo) / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / layout.CONFIG_FILE).write_text(config_pbtxt(name, shape, precision, max_batch_size))
    manifest = manifest_for(shape, name, 1, precision, direction, max_batch_size, short_side)
    manifest = manifest.model_copy(update={
        "description": f"near-zero-cost graph with the I/O of a {shape.name} (bench/null_model.py): outputs sliced "
                       "from fixed random tables, no transformer; synthetic, not a model",
        "provenance": manifest.provenance.model_copy(update={"source_checkpoint": "synthetic:bench/null_model.py"})})
    tmp = Path(tempfile.mkdtemp(prefix=".1.", dir=folder))
    try:
        (tmp / layout.MODEL_FILE).write_bytes(model.SerializeToString())
        (tmp / layout.MANIFEST_FILE).write_text(manifest.to_json())
        dest = folder / "1"
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder / "1"
