"""``sinder repair --dry-run``: what one repair iteration will cost, from shapes alone.

The model is built on the meta device (no weights), rewritten by ``apply_svd`` to count the
trainable ε, and the memory of one iteration is added up from what autograd keeps per block
of the training window (``limit_layers`` blocks, the worst case: a loss layer with a full
window behind it). Per block, with T tokens, width C, FFN width H and ``a`` bytes per
activation element (4 in fp32, 2 under bf16/fp16 autocast), the block keeps:

- the residual stream in float32 (LayerNorm and the residual adds run in float32 under
  autocast): the block input, the mid-block sum and the output, 3·T·C·4 bytes;
- the Linear inputs and outputs in ``a``: qkv in and out (4·T·C), attention output and its
  contiguous copy (2·T·C), fc1 in (T·C), fc1 out and GELU out (2·T·H; SwiGLU: 4·T·H);
- fused attention (flash / memory-efficient kernels, no T×T matrix): q, k, v copies (3·T·C)
  and the log-sum-exp (heads·T·4).

Weights: the original model (kept to measure the result) and the parametrised copy, both
float32, plus per trained Linear its factors U, S, Vh and the cached effective weight, and
under autocast a cast of every weight the forward pass touched. The backward pass adds one
block's worth of transient gradients. ``tests/sinder/repair/test_repair_estimate.py`` checks
the estimate against the measured peak of a real iteration on a small model; the bench's
"Offline tool" section does it for ViT-L/14 at 518 px.

FLOPs per iteration: forward through the window's blocks (the loss layer found at the end of
the window) and backward through them (input gradients and the ε projections).
"""

from __future__ import annotations

import torch

from ..model import ArchConfig
from .svd import named_epsilons

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# Process overhead outside the tensors: the CPU interpreter with torch and onnx loaded, or the
# CUDA context (not counted by max_memory_allocated, but taken from the card).
OVERHEAD = {"cpu": 600 * 2**20, "cuda": 600 * 2**20}
# Workspaces an iteration takes beyond its tensors (LAPACK's SVD, oneDNN and cuBLAS scratch): on
# the CPU the part of the anonymous-memory rise that does not grow with the token count (measured);
# on CUDA a guess for cuBLAS' workspace, not yet measured.
WORKSPACE = {"cpu": 8 * 2**20, "cuda": 64 * 2**20}


def _meta_model(cfg: ArchConfig):
    from ..model import build_model
    from .svd import apply_svd

    with torch.device("meta"):
        model = build_model(cfg)
        params = sum(p.numel() for p in model.parameters())
        apply_svd(model)
    return model, params


def _linear_shapes(block) -> list[tuple[int, int, int]]:
    from .svd import SVDLinear

    return [(m.out_features, m.in_features, m.row0) for m in block.modules() if isinstance(m, SVDLinear)]


def estimate(cfg: ArchConfig, resolution: int, limit_layers: int, precision: str = "fp32",
             device_type: str = "cpu") -> dict:
    """Peak bytes and FLOPs of one repair iteration at ``resolution`` (square), from shapes."""
    model, params = _meta_model(cfg)
    a = BYTES[precision]
    side = resolution // cfg.patch_size
    t = side * side + 1 + cfg.num_register_tokens
    c, h, heads = cfg.embed_dim, cfg.ffn_hidden, cfg.num_heads
    window = min(limit_layers, cfg.depth)
    ffn_act = (4 if cfg.ffn == "swiglu" else 2) * t * h
    per_block = 3 * t * c * 4 + (7 * t * c + ffn_act) * a + 3 * t * c * a + heads * t * 4
    transient = (4 * t * c + ffn_act) * max(a, 4)
    linears = _linear_shapes(model.blocks[0])
    weight_elems = sum(o * i for o, i, _ in linears)
    factor_elems = sum((o - r0) * min(o - r0, i) + min(o - r0, i) * i + min(o - r0, i) for o, i, r0 in linears)
    trained = window * (factor_elems + weight_elems) * 4
    casts = 0 if a == 4 else cfg.depth * weight_elems * a + window * (factor_elems * a)
    weights = 2 * params * 4
    activations = window * per_block + transient + WORKSPACE["cuda" if device_type == "cuda" else "cpu"]
    eps = sum(p.numel() for p in named_epsilons(model).values())
    fwd_block = 2 * t * weight_elems + 4 * t * t * c  # matmuls + attention (QKᵀ and AV)
    # backward: input gradients (one forward's matmuls), the ε projections (tokens times rank
    # times (out + in) per Linear) and attention's backward (twice its forward)
    eps_proj = sum(2 * t * min(o - r0, i) * ((o - r0) + i) for o, i, r0 in linears)
    bwd_block = 2 * t * weight_elems + eps_proj + 8 * t * t * c
    peak = weights + trained + casts + activations + OVERHEAD["cuda" if device_type == "cuda" else "cpu"]
    return {
        "arch": cfg.name,
        "resolution": side * cfg.patch_size,
        "tokens": t,
        "precision": precision,
        "device_type": device_type,
        "parameters": params,
        "trainable_epsilon": eps,
        "window_blocks": window,
        "memory_bytes": {"weights": weights, "trained_layers": trained, "autocast_casts": casts,
                         "activations": activations, "overhead": OVERHEAD["cuda" if device_type == "cuda" else "cpu"],
                         "peak": peak},
        "flops_per_iteration": window * (fwd_block + bwd_block),
        "forward_flops_full_model": cfg.depth * fwd_block,
    }


def _arch_of(args) -> ArchConfig:
    """The architecture from the checkpoint's shapes (memory-mapped: no weights read) or the demo."""
    from ..model import get_arch

    if args.demo:
        from ..demo import DEMO_ARCH

        return DEMO_ARCH
    if args.arch:
        return get_arch(args.arch)
    from ..checkpoints.arch import detect_arch
    from ..checkpoints.convert import to_official
    from ..checkpoints.formats import detect_format
    from ..checkpoints.reading import read_state_dict

    sd = read_state_dict(args.checkpoint)
    return detect_arch(to_official(sd, detect_format(sd)))


def dry_run(args, options, compute) -> str:
    """The ``--dry-run`` text: what would run, and what one iteration will take."""
    cfg = _arch_of(args)
    e = estimate(cfg, options.resolution, options.limit_layers, compute.precision, compute.device.type)
    m = e["memory_bytes"]
    g = 2**30
    lines = [
        f"architecture      {cfg.name} (width {cfg.embed_dim}, depth {cfg.depth}, {cfg.num_register_tokens} registers, "
        f"{e['parameters'] / 1e6:.1f} M parameters)",
        f"resolution        {e['resolution']} x {e['resolution']} ({e['tokens']} tokens)",
        f"trainable epsilon {e['trainable_epsilon']:,} (gradients reach {e['window_blocks']} blocks per iteration)",
        f"device            {compute.device} {compute.precision}",
        f"peak memory       {m['peak'] / g:.2f} GiB estimated (weights {m['weights'] / g:.2f}, trained layers "
        f"{m['trained_layers'] / g:.2f}, autocast casts {m['autocast_casts'] / g:.2f}, activations "
        f"{m['activations'] / g:.2f}, process {m['overhead'] / g:.2f})",
        f"FLOPs/iteration   {e['flops_per_iteration'] / 1e12:.2f} TFLOP (forward of the full model: "
        f"{e['forward_flops_full_model'] / 1e12:.2f} TFLOP)",
    ]
    return "\n".join(lines)
