"""A DINOv2-shaped ViT built directly as an ONNX graph from seeded random weights, with the
model repository's inputs and outputs (see model_repo/README.md).

Why not export with torch: the GPU check runs on a machine with a bare Python and no package
registry, where carrying torch is not worth it, and the benchmark's service figures only need
a graph of the right shape and cost. The weights are synthetic; every figure says so.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract import defects, layout
from contract.manifest import Architecture, Manifest, Preprocessing, Provenance, defect_block, tensor_specs
from contract.preprocess import IMAGENET_MEAN as MEAN
from contract.preprocess import IMAGENET_STD as STD
from contract.preprocess import Resize
from contract.triton_config import config_pbtxt as _config_pbtxt

PATCH = 14
POS_GRID = 37  # DINOv2's position embedding grid (518 / 14)
OPSET = 17


@dataclass(frozen=True)
class Shape:
    name: str
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    num_register_tokens: int = 0


SHAPES = {
    "vits14": Shape("vits14", 384, 12, 6),
    "vitb14": Shape("vitb14", 768, 12, 12),
    "vitl14": Shape("vitl14", 1024, 24, 16),
    # SwiGLU FFN in the real ViT-g; a plain MLP of the same width here (cost within a few %)
    "vitg14": Shape("vitg14", 1536, 40, 24, mlp_ratio=4096 / 1536),
}


def flops_per_image(shape: Shape, resolution: int) -> float:
    """Multiply-adds x 2 of one forward pass (patch embedding, attention, MLP; norms ignored)."""
    n_patch = (resolution // PATCH) ** 2
    n = n_patch + 1 + shape.num_register_tokens
    c = shape.embed_dim
    hidden = int(c * shape.mlp_ratio)
    per_block = n * (3 * c * c + c * c + 2 * c * hidden) + 2 * n * n * c
    return 2.0 * (shape.depth * per_block + n_patch * 3 * PATCH * PATCH * c)


def build_vit_onnx(shape: Shape | str = "vits14", precision: str = "fp32", seed: int = 0,
                   layerscale: float = 0.1):
    """The ONNX model: ``images`` uint8 [B, H, W, 3] → cls_token, patch_tokens, token_norms,
    defect_alignment, defect_mask. ``precision`` "fp16" computes the transformer in float16
    (diagnostics stay float32, as the contract says)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if isinstance(shape, str):
        shape = SHAPES[shape]
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be fp32 or fp16, not {precision!r}")
    rng = np.random.default_rng(seed)
    wdt = np.float16 if precision == "fp16" else np.float32
    tdt = TensorProto.FLOAT16 if precision == "fp16" else TensorProto.FLOAT
    c, heads = shape.embed_dim, shape.num_heads
    hd = c // heads
    hidden = int(c * shape.mlp_ratio)
    r = shape.num_register_tokens

    inits: list = []
    nodes: list = []
    counter = [0]

    def const(name, arr, dtype=None):
        arr = np.asarray(arr, dtype=dtype) if dtype is not None else np.asarray(arr)
        inits.append(numpy_helper.from_array(arr, name))
        return name

    def w(name, *dims, std=0.02):
        return const(name, (rng.standard_normal(dims) * std).astype(wdt))

    def node(op, inputs, n_out=1, **attrs):
        counter[0] += 1
        outs = [f"{op.lower()}_{counter[0]}_{i}" for i in range(n_out)]
        nodes.append(helper.make_node(op, inputs, outs, **attrs))
        return outs[0] if n_out == 1 else outs

    def layernorm(x, prefix):
        g = const(f"{prefix}.weight", np.ones(c, wdt))
        b = const(f"{prefix}.bias", np.zeros(c, wdt))
        return node("LayerNormalization", [x, g, b], axis=-1, epsilon=1e-6)

    def linear(x, prefix, din, dout):
        return node("Add", [node("MatMul", [x, w(f"{prefix}.weight", din, dout)]), const(f"{prefix}.bias", np.zeros(dout, wdt))])

    i64 = lambda name, v: const(name, np.asarray(v, dtype=np.int64))  # noqa: E731

    # normalisation in the graph: (x / 255 - mean) / std as one multiply-add, NHWC
    scale = (1.0 / (255.0 * np.asarray(STD))).astype(np.float32).reshape(1, 1, 1, 3)
    shift = (-np.asarray(MEAN) / np.asarray(STD)).astype(np.float32).reshape(1, 1, 1, 3)
    x = node("Cast", ["images"], to=TensorProto.FLOAT)
    x = node("Add", [node("Mul", [x, const("norm.scale", scale)]), const("norm.shift", shift)])
    x = node("Transpose", [x], perm=[0, 3, 1, 2])
    if precision == "fp16":
        x = node("Cast", [x], to=tdt)
    x = node("Conv", [x, w("patch_embed.proj.weight", c, 3, PATCH, PATCH), const("patch_embed.proj.bias", np.zeros(c, wdt))],
             kernel_shape=[PATCH, PATCH], strides=[PATCH, PATCH])  # [B, C, gh, gw]
    shp = node("Shape", [x])
    batch = node("Slice", [shp, i64("s0", [0]), i64("s1", [1])])
    grid = node("Slice", [shp, i64("s2", [2]), i64("s4", [4])])  # [gh, gw]
    tokens = node("Transpose", [node("Reshape", [x, i64("bc_1", [0, c, -1])])], perm=[0, 2, 1])  # [B, N, C]

    # position embedding, bicubic-resized from the 37 x 37 grid to this image's grid
    pos = w("pos_embed.patch", 1, c, POS_GRID, POS_GRID)
    pos_f = node("Cast", [pos], to=TensorProto.FLOAT) if precision == "fp16" else pos
    sizes = node("Concat", [i64("one_c", [1, c]), grid], axis=0)
    pos_r = node("Resize", [pos_f, "", "", sizes], mode="cubic", cubic_coeff_a=-0.75)
    if precision == "fp16":
        pos_r = node("Cast", [pos_r], to=tdt)
    pos_r = node("Transpose", [node("Reshape", [pos_r, i64("c_1", [1, c, -1])])], perm=[0, 2, 1])
    tokens = node("Add", [tokens, pos_r])
    cls = node("Add", [w("cls_token.param", 1, 1, c), w("pos_embed.cls", 1, 1, c)])
    expand_shape = node("Concat", [batch, i64("one_one", [1, 1])], axis=0)
    prefix_tokens = [node("Expand", [cls, expand_shape])]
    if r:
        prefix_tokens.append(node("Expand", [w("register_tokens.param", 1, r, c), node("Concat", [batch, i64("r_one", [r, 1])], axis=0)]))
    x = node("Concat", prefix_tokens + [tokens], axis=1)  # [B, 1 + R + N, C]

    q_scale = const("attn.scale", np.asarray(1.0 / math.sqrt(hd), dtype=wdt))
    for i in range(shape.depth):
        p = f"blocks.{i}"
        h = layernorm(x, f"{p}.norm1")
        qkv = linear(h, f"{p}.attn.qkv", c, 3 * c)
        qkv = node("Transpose", [node("Reshape", [qkv, i64(f"{p}.qkv_shape", [0, 0, 3, heads, hd])])], perm=[2, 0, 3, 1, 4])
        q = node("Mul", [node("Gather", [qkv, i64(f"{p}.i0", 0)], axis=0), q_scale])
        k = node("Gather", [qkv, i64(f"{p}.i1", 1)], axis=0)
        v = node("Gather", [qkv, i64(f"{p}.i2", 2)], axis=0)
        att = node("Softmax", [node("MatMul", [q, node("Transpose", [k], perm=[0, 1, 3, 2])])], axis=-1)
        o = node("Transpose", [node("MatMul", [att, v])], perm=[0, 2, 1, 3])
        o = linear(node("Reshape", [o, i64(f"{p}.o_shape", [0, 0, c])]), f"{p}.attn.proj", c, c)
        x = node("Add", [x, node("Mul", [o, const(f"{p}.ls1", np.full(c, layerscale, wdt))])])
        h = linear(layernorm(x, f"{p}.norm2"), f"{p}.mlp.fc1", c, hidden)
        # exact GELU: 0.5 x (1 + erf(x / sqrt 2)); onnxruntime fuses the pattern
        h = node("Mul", [node("Mul", [h, node("Add", [node("Erf", [node("Div", [h, const(f"{p}.sqrt2", np.asarray(math.sqrt(2), wdt))])]),
                                                      const(f"{p}.one", np.asarray(1, wdt))])]), const(f"{p}.half", np.asarray(0.5, wdt))])
        h = linear(h, f"{p}.mlp.fc2", hidden, c)
        x = node("Add", [x, node("Mul", [h, const(f"{p}.ls2", np.full(c, layerscale, wdt))])])

    start = i64("patch_start", [1 + r])
    big = i64("to_end", [2**62])
    ax1 = i64("axis1", [1])
    prenorm = node("Slice", [x, start, big, ax1])
    normed = layernorm(x, "norm")
    out_shape = node("Concat", [batch, grid, i64("c_last", [c])], axis=0)
    map_shape = node("Concat", [batch, grid], axis=0)
    nodes.append(helper.make_node("Gather", [normed, i64("cls_index", 0)], ["cls_token"], axis=1))
    nodes.append(helper.make_node("Reshape", [node("Slice", [normed, start, big, ax1]), out_shape], ["patch_tokens"]))
    if r:
        nodes.append(helper.make_node("Slice", [normed, i64("reg_start", [1]), start, ax1], ["register_tokens"]))

    # diagnostics in float32, the contract's rule: norms, |cos| to the defect direction, mean + k * sample std
    pre = node("Cast", [prenorm], to=TensorProto.FLOAT)
    direction = rng.standard_normal(c).astype(np.float32)
    direction /= np.linalg.norm(direction)
    norms = node("ReduceL2", [pre], axes=[-1], keepdims=0)
    align = node("Div", [node("Abs", [node("MatMul", [pre, const("defect.direction", direction)])]),
                         node("Max", [norms, const("eps", np.asarray(defects.NORM_EPS, np.float32))])])
    mean = node("ReduceMean", [align], axes=[1], keepdims=1)
    dev = node("Sub", [align, mean])
    n_tok = node("Cast", [node("Gather", [node("Shape", [align]), i64("one_idx", 1)])], to=TensorProto.FLOAT)
    # one token: a zero spread instead of NaN; either way nothing is flagged, as the contract says
    denom = node("Max", [node("Sub", [n_tok, const("ddof", np.asarray(defects.STD_DDOF, np.float32))]),
                         const("onef2", np.asarray(1, np.float32))])
    var = node("Div", [node("ReduceSum", [node("Mul", [dev, dev]), ax1], keepdims=1), denom])
    thr = node("Add", [mean, node("Mul", [node("Sqrt", [var]), const("k_std", np.asarray(defects.THRESHOLD_STD, np.float32))])])
    nodes.append(helper.make_node("Reshape", [norms, map_shape], ["token_norms"]))
    nodes.append(helper.make_node("Reshape", [align, map_shape], ["defect_alignment"]))
    nodes.append(helper.make_node("Reshape", [node("Greater", [align, thr]), map_shape], ["defect_mask"]))

    dims = ["batch", "height", "width"]
    inputs = [helper.make_tensor_value_info("images", TensorProto.UINT8, dims + [3])]
    outputs = [
        helper.make_tensor_value_info("cls_token", tdt, ["batch", c]),
        helper.make_tensor_value_info("patch_tokens", tdt, ["batch", "grid_h", "grid_w", c]),
    ]
    if r:
        outputs.append(helper.make_tensor_value_info("register_tokens", tdt, ["batch", r, c]))
    outputs += [
        helper.make_tensor_value_info("token_norms", TensorProto.FLOAT, ["batch", "grid_h", "grid_w"]),
        helper.make_tensor_value_info("defect_alignment", TensorProto.FLOAT, ["batch", "grid_h", "grid_w"]),
        helper.make_tensor_value_info("defect_mask", TensorProto.BOOL, ["batch", "grid_h", "grid_w"]),
    ]
    graph = helper.make_graph(nodes, f"{shape.name}_{precision}_synthetic", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sinder-bench")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, direction


def manifest_for(shape: Shape, name: str, version: int, precision: str, direction: np.ndarray,
                 max_batch_size: int, short_side: int = 224) -> Manifest:
    """The manifest of a synthetic bench model (the contract's ``Manifest``)."""
    inputs, outputs = tensor_specs(shape.embed_dim, shape.num_register_tokens, precision)
    return Manifest(
        name=name, version=version, synthetic=True,
        description=f"synthetic {shape.name}-shaped ViT with random weights, built by bench/onnx_vit.py (not a real model)",
        architecture=Architecture(arch=shape.name, patch_size=PATCH, embed_dim=shape.embed_dim, depth=shape.depth,
                                  num_heads=shape.num_heads, num_register_tokens=shape.num_register_tokens),
        precision=precision, max_batch_size=max_batch_size,
        preprocessing=Preprocessing(resize=Resize(short_side=short_side, multiple_of=PATCH)),
        inputs=inputs, outputs=outputs,
        defect=defect_block(direction.tolist(), shape.depth - 1),
        provenance=Provenance(source_checkpoint="synthetic:bench/onnx_vit.py", source_format="synthetic",
                              tool="bench", tool_version="bench",
                              exported_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
    )


def config_pbtxt(name: str, shape: Shape, precision: str, max_batch_size: int) -> str:
    """Triton's config for the folder (the contract's writer)."""
    inputs, outputs = tensor_specs(shape.embed_dim, shape.num_register_tokens, precision)
    return _config_pbtxt(name, inputs, outputs, max_batch_size, instance_kind="KIND_AUTO")


def write_model(repo: Path, name: str, shape: Shape | str = "vits14", precision: str = "fp32", seed: int = 0,
                max_batch_size: int = 32, version: int = 1, short_side: int = 224) -> Path:
    """Write ``repo/name/config.pbtxt`` and ``repo/name/version/{model.onnx, manifest.json}``;
    the version folder appears whole (built under a temporary name, then renamed)."""
    import os
    import shutil
    import tempfile

    if isinstance(shape, str):
        shape = SHAPES[shape]
    model, direction = build_vit_onnx(shape, precision, seed)
    folder = Path(repo) / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / layout.CONFIG_FILE).write_text(config_pbtxt(name, shape, precision, max_batch_size))
    dest = folder / str(version)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=folder))
    try:
        (tmp / layout.MODEL_FILE).write_bytes(model.SerializeToString())
        manifest = manifest_for(shape, name, version, precision, direction, max_batch_size, short_side)
        (tmp / layout.MANIFEST_FILE).write_text(manifest.to_json())
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
