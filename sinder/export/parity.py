"""Numeric parity of an exported graph with the PyTorch model it came from.

The reference is the untouched PyTorch model in float32 (``forward_features`` and
``block_outputs``), fed the same uint8 pixels normalised in PyTorch.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import numpy as np
import torch

from ..errors import SinderError
from ..model import IMAGENET_MEAN, IMAGENET_STD, DinoVisionTransformer
from ..defects.rule import diagnostics as defect_diagnostics

FP32_MAX_ABS = 1e-4
FP16_MIN_COSINE = 0.999
INT8_MIN_COSINE = 0.99
BATCH_INVARIANCE = 1e-4  # max abs between an image alone and in a batch (fp32, fp16)
FLOAT64_FACTOR = 2.0  # where float32 itself misses the bound: the graph may stray from float64 this many times as far
FEATURES = ("cls_token", "patch_tokens", "register_tokens")


def parity_images(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Deterministic uint8 ``[B, H, W, 3]`` images: smooth shapes plus texture, not pure noise,
    so that tokens differ the way they do on photos (flat regions and edges)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((batch, height, width, 3), dtype=np.uint8)
    for i in range(batch):
        img = np.zeros((height, width, 3), np.float32) + rng.uniform(0, 255, 3)
        for _ in range(4):
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            r = rng.uniform(0.1, 0.4) * min(height, width)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            img += blob[..., None] * rng.uniform(-150, 150, 3)
        img += rng.normal(0, 12, (height, width, 1)) * (xx / width)[..., None]
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def reference_outputs(model: DinoVisionTransformer, images: np.ndarray, direction: torch.Tensor,
                      threshold_std: float) -> dict[str, np.ndarray]:
    """The graph's outputs computed with the PyTorch model, in the model's dtype."""
    param = next(model.parameters())
    dtype, dev = param.dtype, param.device
    x = torch.from_numpy(images).to(dev).permute(0, 3, 1, 2).to(dtype) / 255.0
    mean = torch.tensor(IMAGENET_MEAN, dtype=dtype, device=dev).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=dtype, device=dev).reshape(1, 3, 1, 1)
    x = (x - mean) / std
    b, gh, gw = images.shape[0], images.shape[1] // model.patch_size, images.shape[2] // model.patch_size
    with torch.no_grad():
        out = model.forward_features(x)
        last = model.split(out["x_prenorm"])["patch"]
        norms, align, mask = defect_diagnostics(last, direction.to(dev, dtype), threshold_std)
    ref = {
        "cls_token": out["x_norm_clstoken"],
        "patch_tokens": out["x_norm_patchtokens"].reshape(b, gh, gw, -1),
        "token_norms": norms.reshape(b, gh, gw),
        "defect_alignment": align.reshape(b, gh, gw),
        "defect_mask": mask.reshape(b, gh, gw),
    }
    if model.num_register_tokens:
        ref["register_tokens"] = out["x_norm_regtokens"]
    return {k: v.cpu().numpy() for k, v in ref.items()}


def run_session(session, images: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"images": images})))


def make_session(path: Path, threads: int | None = None, device: torch.device | None = None):
    """An onnxruntime session on the CPU, or on ``device``'s GPU (TF32 off) when it is a CUDA device
    and this onnxruntime has the CUDA provider; ``session.get_providers()`` says which ran."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    providers: list = ["CPUExecutionProvider"]
    if device is not None and device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0, "use_tf32": 0}))
    return ort.InferenceSession(str(path), opts, providers=providers)


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return float(np.mean(num / np.maximum(den, 1e-30)))


def default_cases(patch_size: int, min_side: int, max_side: int, short_side: int) -> list[tuple[int, int, int]]:
    """Batch 1 and 4, at a square and a non-square resolution within the bounds."""
    side = min(max(short_side // patch_size * patch_size, min_side), max_side)
    wide = min(side + 4 * patch_size, max_side)
    if wide == side:  # bounds too tight for a wider image: go narrower
        wide = max(side - 2 * patch_size, min_side)
    return [(1, side, side), (4, side, side), (1, side, wide), (4, side, wide)]


def measure_parity(
    model: DinoVisionTransformer,
    onnx_path: Path,
    direction: torch.Tensor,
    precision: str,
    cases: list[tuple[int, int, int]],
    threshold_std: float,
    session=None,
    device: torch.device | None = None,
) -> dict:
    """Compare the graph at ``onnx_path`` with ``model`` on ``cases`` (batch, height, width).

    fp32: max abs ≤ 1e-4 against float32 PyTorch on the features. A model whose sharp non-linearities
    amplify rounding (the entangled demo) can miss that in PyTorch itself: for a case past the bound,
    the graph and float32 PyTorch are both compared with PyTorch in float64 (``float64_max_abs``), and
    the case passes when the graph is no further from float64 than twice float32 PyTorch is. fp16:
    mean cosine ≥ 0.999, int8 ≥ 0.99. Returns the manifest's ``parity`` block; raises
    ``SinderError`` when a bound is missed.
    ``device``: where the PyTorch reference runs (TF32 off) and, with onnxruntime's CUDA
    provider, the session too; the model is moved there.
    """
    if device is not None:
        model.to(device)
    session = session or make_session(onnx_path, device=device)
    with _no_tf32():
        result = _measure(model, session, direction, precision, cases, threshold_std)
    from ..device import Compute, runtime_info

    result["reference_runtime"] = runtime_info(Compute(next(model.parameters()).device, "fp32"))
    result["session_providers"] = list(session.get_providers())
    return result


@contextlib.contextmanager
def _no_tf32():
    """The float32 reference in float32 on a GPU too (TF32 rounds matmul inputs to 10 mantissa bits)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _measure(model, session, direction, precision, cases, threshold_std) -> dict:
    feats = [f for f in FEATURES if f != "register_tokens" or model.num_register_tokens]
    rows, worst_abs, worst_cos = [], {f: 0.0 for f in feats}, {f: 1.0 for f in feats}
    for i, (b, h, w) in enumerate(cases):
        images = parity_images(b, h, w, seed=i)
        ref = reference_outputs(model, images, direction, threshold_std)
        got = run_session(session, images)
        row = {"batch": b, "height": h, "width": w, "max_abs": {}, "mean_cosine": {}}
        for f in feats:
            if got[f].shape != ref[f].shape:
                raise SinderError(f"exported {f} has shape {got[f].shape}, expected {ref[f].shape} at {b}x{h}x{w}")
        for f in feats:
            row["max_abs"][f] = _max_abs(got[f], ref[f])
            row["mean_cosine"][f] = _mean_cosine(got[f], ref[f])
        if precision == "fp32" and any(not row["max_abs"][f] <= FP32_MAX_ABS for f in feats):  # NaN too
            row["float64_max_abs"] = _against_float64(model, images, ref, got, feats, direction, threshold_std)
            _enforce_fp32_case(row, (b, h, w))
        for f in feats:
            worst_abs[f] = max(worst_abs[f], row["max_abs"][f])
            worst_cos[f] = min(worst_cos[f], row["mean_cosine"][f])
        row["max_abs"]["token_norms_relative"] = _max_abs(got["token_norms"], ref["token_norms"]) / max(
            float(np.abs(ref["token_norms"]).max()), 1e-12)
        row["max_abs"]["defect_alignment"] = _max_abs(got["defect_alignment"], ref["defect_alignment"])
        row["defect_mask_agreement"] = float((got["defect_mask"] == ref["defect_mask"]).mean())
        if b > 1:
            alone = run_session(session, images[:1])
            row["batch_vs_alone_max_abs"] = max(_max_abs(alone[f], got[f][:1]) for f in feats)
        rows.append(row)
    result = {
        "reference": "PyTorch float32 model on the same uint8 images",
        "precision": precision,
        "max_abs": worst_abs,
        "min_mean_cosine": worst_cos,
        "batch_vs_alone_max_abs": max((r.get("batch_vs_alone_max_abs", 0.0) for r in rows), default=0.0),
        "cases": rows,
    }
    # int8 quantizes activations with one scale per batch tensor: an image's features then
    # depend (slightly) on the other images of its batch; the manifest says so
    result["batch_invariant"] = result["batch_vs_alone_max_abs"] <= BATCH_INVARIANCE
    if precision != "int8" and not result["batch_invariant"]:
        raise SinderError(f"an image's outputs differ alone and in a batch by {result['batch_vs_alone_max_abs']:.3g} "
                          f"(bound {BATCH_INVARIANCE:g})")
    _enforce(result, precision, feats)
    return result


def _against_float64(model, images, ref32, got, feats, direction, threshold_std) -> dict:
    """How far the graph and float32 PyTorch each are from PyTorch in float64, per feature."""
    ref64 = reference_outputs(copy.deepcopy(model).double(), images, direction.double(), threshold_std)
    return {f: {"graph": _max_abs(got[f], ref64[f]), "pytorch_float32": _max_abs(ref32[f], ref64[f])} for f in feats}


def _enforce_fp32_case(row: dict, case: tuple[int, int, int]) -> None:
    """A case past 1e-4 against float32 PyTorch passes only where float32 rounding explains it: the graph
    no further from float64 than FLOAT64_FACTOR times float32 PyTorch is (and never past 1e-4 of its own)."""
    bad = {}
    for f, err in row["float64_max_abs"].items():
        allowed = max(FP32_MAX_ABS, FLOAT64_FACTOR * err["pytorch_float32"])
        if f in ("cls_token", "patch_tokens") and not row["max_abs"][f] <= FP32_MAX_ABS and not err["graph"] <= allowed:
            bad[f] = (row["max_abs"][f], err["graph"], err["pytorch_float32"])
    if bad:
        raise SinderError(f"fp32 export differs from PyTorch beyond 1e-4 (max abs) at {'x'.join(map(str, case))}, more "
                          "than float32 rounding explains: " + ", ".join(
                              f"{k}={v[0]:.3g} (graph {v[1]:.3g} from float64, PyTorch float32 {v[2]:.3g})"
                              for k, v in bad.items()))


def _enforce(result: dict, precision: str, feats: list[str]) -> None:
    if precision == "fp32":
        return  # per case, in _measure (_enforce_fp32_case)
    else:
        bound = FP16_MIN_COSINE if precision == "fp16" else INT8_MIN_COSINE
        bad = {f: v for f, v in result["min_mean_cosine"].items() if not v >= bound}
        if bad:
            raise SinderError(f"{precision} export's mean cosine to the float32 model is below {bound}: "
                              + ", ".join(f"{k}={v:.5f}" for k, v in bad.items()))
