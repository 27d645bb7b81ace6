"""Finding register neurons: the few FFN neurons that fire on a model's high-norm tokens.

The method of Jiang et al. (arXiv 2506.08010, code: nickjiang2378/test-time-registers,
``find_register_neurons``): run images, record every block's FFN activation after the
non-linearity, mark the outlier tokens by their norm at a detection layer, score each
(layer, neuron) by its mean |activation| over the outlier tokens (averaged over the images
that have outliers), optionally keep only neurons that are sparse elsewhere (at least half
of an image's tokens below 0.5), rank every pair of every layer together, keep layers up to
a highest layer, and take the top k.

Their settings are for DINOv2 ViT-L/14 (detection at the second to last block, norm 150,
layers up to 17, k = 50). A model of another size or kind has other norms and depths, so
here each is chosen from the images unless given (all recorded in the report):

- outlier tokens: norm at least ``norm_factor`` (4, the analysis's high-norm rule) times the
  image's median patch-token norm at the detection layer, or above ``norm_threshold`` when
  that absolute value is given (the paper's way);
- detection layer: where max / median patch-token norm peaks over the images (the outliers
  are clearest there);
- highest layer: the first layer at which most (half) of those outlier tokens are already
  outliers of that layer, i.e. where the high norm appears. The neurons that write it live
  in that block or before it; later blocks only carry it;
- k: the smallest of 1, 2, 4, ... ``max_k`` whose intervention leaves at most ``residual``
  (10%) of the outlier tokens at the detection layer on (a few of) the images; when none
  does (natural high-norm tokens, textured patches that are outliers from the first block on,
  stay whatever is edited), the smallest k within 2 points of the fewest left. The report
  gives the whole sweep.

Only patch tokens are scored and counted as outliers (the reference scores every token,
CLS included).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from ..model import DinoVisionTransformer
from .model import TestTimeRegisters, ffn_hidden, ffn_project, ffn_width

SPARSE_BELOW = 0.5  # reference: sparsity_activation_threshold
SPARSE_FRACTION = 0.5  # reference: sparsity_frac_threshold
EMERGED_FRACTION = 0.5  # share of the outlier tokens that must already be outliers at the highest layer
# Choosing k: a gain below this share of the outlier tokens counts as none (natural high-norm tokens,
# textured patches that are outliers from the first block on, stay whatever neurons are edited).
PLATEAU = 0.02


@dataclass(frozen=True)
class NeuronSearch:
    """How register neurons are found; ``None`` means "chosen from the images" (see the module doc)."""

    norm_factor: float = 4.0
    norm_threshold: float | None = None
    detect_layer: int | None = None
    highest_layer: int | None = None
    top_k: int | None = None
    max_k: int = 64
    residual: float = 0.1
    sparsity_filter: bool = True
    sweep_images: int = 4  # images (with outliers) used to choose k

    def __post_init__(self) -> None:
        if not self.norm_factor > 1:
            raise ValueError(f"norm factor must be > 1, got {self.norm_factor}")
        if self.norm_threshold is not None and not self.norm_threshold > 0:
            raise ValueError(f"norm threshold must be > 0, got {self.norm_threshold}")
        for name in ("top_k", "max_k", "sweep_images"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be at least 1, got {value}")
        if not 0 <= self.residual < 1:
            raise ValueError(f"residual must be in [0, 1), got {self.residual}")

    def to_dict(self) -> dict:
        return asdict(self)


def _forward(vit: DinoVisionTransformer, image: torch.Tensor, record=None) -> list[torch.Tensor]:
    """Patch-token norms ``[h*w]`` of every block for one ``[3, H, W]`` image; ``record(layer, hidden)``
    sees every FFN activation ``[N, H]``."""
    p = vit.num_prefix_tokens
    param = next(vit.parameters())
    norms = []
    with torch.no_grad():
        x = vit.prepare_tokens(image[None].to(param.device, param.dtype))
        for i, blk in enumerate(vit.blocks):
            x = x + blk.ls1(blk.attn(blk.norm1(x)))
            hidden = ffn_hidden(blk.mlp, blk.norm2(x))
            if record is not None:
                record(i, hidden[0].float())
            x = x + blk.ls2(ffn_project(blk.mlp, hidden))
            norms.append(x[0, p:].float().norm(dim=-1).cpu())
    return norms


def _outliers(norms: torch.Tensor, search: NeuronSearch) -> torch.Tensor:
    if search.norm_threshold is not None:
        return norms > search.norm_threshold
    return norms >= search.norm_factor * norms.median()


def _progress(items, desc: str, progress: bool):
    return tqdm(items, desc=desc, unit="image", file=sys.stderr, disable=not progress, leave=False)


def _layers(norms: list[list[torch.Tensor]], search: NeuronSearch, depth: int) -> dict:
    """Detection layer, highest layer and the evidence for both, from every image's per-layer norms."""
    ratios = []
    for layer in range(depth):
        pooled = torch.cat([n[layer] for n in norms])
        ratios.append(float(pooled.max() / pooled.median().clamp_min(1e-12)))
    detect = search.detect_layer if search.detect_layer is not None else max(range(depth), key=ratios.__getitem__)
    if not -depth <= detect < depth:
        raise ValueError(f"detection layer {detect} is outside the model's blocks 0..{depth - 1}")
    detect %= depth
    masks = [_outliers(n[detect], search) for n in norms]
    total = sum(int(m.sum()) for m in masks)
    emerged = []
    for layer in range(depth):
        hits = sum(int((n[layer] >= search.norm_factor * n[layer].median())[m].sum()) for n, m in zip(norms, masks))
        emerged.append(hits / total if total else 0.0)
    highest = search.highest_layer
    if highest is None:
        highest = next((i for i, f in enumerate(emerged) if f >= EMERGED_FRACTION), detect)
    if not 0 <= highest < depth:
        raise ValueError(f"highest layer {highest} is outside the model's blocks 0..{depth - 1}")
    return {"detect_layer": detect, "highest_layer": int(highest), "max_median_ratio": ratios,
            "emerged_fraction": emerged, "outlier_tokens": total, "masks": masks}


def _scores(vit: DinoVisionTransformer, images: list[torch.Tensor], masks: list[torch.Tensor],
            search: NeuronSearch, progress: bool) -> tuple[torch.Tensor, int]:
    """Mean over images with outliers of each (layer, neuron)'s mean |activation| on them: ``[L, H]``."""
    p = vit.num_prefix_tokens
    total = torch.zeros(len(vit.blocks), ffn_width(vit), dtype=torch.float64)
    used = 0
    for image, mask in zip(_progress(images, "register neurons", progress), masks):
        if not mask.any():
            continue

        def record(layer, hidden, mask=mask):
            patch = hidden[p:]
            score = patch[mask.to(patch.device)].abs().mean(dim=0)
            if search.sparsity_filter:
                sparse = (patch < SPARSE_BELOW).sum(dim=0) >= SPARSE_FRACTION * patch.shape[0]
                score = score * sparse
            total[layer] += score.double().cpu()

        _forward(vit, image, record)
        used += 1
    return (total / max(used, 1)).float(), used


def _outlier_share(model, images: list[torch.Tensor], masks: list[torch.Tensor], layer: int,
                   search: NeuronSearch) -> float:
    """Share of the unedited model's outlier tokens at ``layer`` that are still outliers in ``model``
    (each image against its own unedited median, so a model that lowers every token counts)."""
    p, kept, total = model.num_prefix_tokens, 0, 0
    param = next(model.parameters())
    for image, mask in zip(images, masks):
        if not mask.any():
            continue
        with torch.no_grad():
            tokens = model.run(image[None].to(param.device, param.dtype), upto=layer)[layer][0, p:-1]  # extra last
        norms = tokens.float().norm(dim=-1).cpu()
        kept += int(_outliers(norms, search)[mask].sum())
        total += int(mask.sum())
    return kept / total if total else 0.0


def _choose_k(vit, ranked: list[tuple[int, int, float]], images, masks, layer: int, search: NeuronSearch,
              progress: bool) -> tuple[int, list[dict]]:
    """The smallest k (1, 2, 4, ...) that leaves at most ``residual`` of the outliers on, else the smallest
    k within ``PLATEAU`` of the fewest left. Every doubling is tried: a plateau proves nothing (on the entangled
    demo k = 2 and 4 leave 93% of the outliers, 64 leaves 44%), and each try is a few forward passes."""
    if search.top_k is not None:
        return min(search.top_k, len(ranked)), []
    limit = min(search.max_k, len(ranked))
    candidates = [1 << i for i in range(limit.bit_length()) if 1 << i < limit] + [limit]
    chosen_idx = [i for i, m in enumerate(masks) if m.any()][: search.sweep_images]
    sub_images, sub_masks = [images[i] for i in chosen_idx], [masks[i] for i in chosen_idx]
    sweep = []
    for k in _progress(candidates, "choosing k", progress):
        share = _outlier_share(TestTimeRegisters(vit, group(ranked[:k])), sub_images, sub_masks, layer, search)
        sweep.append({"k": k, "outliers_left": share})
        if share <= search.residual:
            return k, sweep
    best = min(row["outliers_left"] for row in sweep)
    return next(row["k"] for row in sweep if row["outliers_left"] <= best + PLATEAU), sweep


def group(ranked: list[tuple[int, int, float]]) -> dict[int, list[int]]:
    """``{layer: [neuron, ...]}`` from ranked ``(layer, neuron, score)`` rows."""
    out: dict[int, list[int]] = {}
    for layer, neuron, _ in ranked:
        out.setdefault(int(layer), []).append(int(neuron))
    return out


def find_register_neurons(vit: DinoVisionTransformer, images: list[torch.Tensor], search: NeuronSearch = NeuronSearch(),
                          progress: bool = False, report_top: int = 100) -> dict:
    """Register neurons of ``vit`` from ``images`` (each ``[3, H, W]``, normalised).

    Returns ``{"neurons": {layer: [neuron, ...]}, "ranked": [{"layer", "neuron", "score"}, ...] (the
    top ``report_top`` within the layer limit), "k", "k_sweep", "detect_layer", "highest_layer",
    "threshold", "images_with_outliers", ...}``; ``neurons`` is empty when no image has outliers.
    """
    vit = vit.eval()
    if not images:
        raise ValueError("finding register neurons needs at least one image")
    depth = len(vit.blocks)
    norms = [_forward(vit, img) for img in _progress(images, "token norms", progress)]
    layers = _layers(norms, search, depth)
    masks = layers.pop("masks")
    threshold = ({"kind": "absolute", "norm": search.norm_threshold} if search.norm_threshold is not None
                 else {"kind": "relative", "factor": search.norm_factor, "of": "the image's median patch-token norm"})
    result = {"search": search.to_dict(), "threshold": threshold, "images": len(images), **layers,
              "images_with_outliers": sum(bool(m.any()) for m in masks)}
    if layers["outlier_tokens"] == 0:
        return {**result, "neurons": {}, "ranked": [], "k": 0, "k_sweep": [], "outliers_left": None}
    scores, _ = _scores(vit, images, masks, search, progress)
    allowed = scores[: layers["highest_layer"] + 1]
    values, flat = torch.sort(allowed.flatten(), descending=True)
    width = scores.shape[1]
    ranked = [(int(i) // width, int(i) % width, float(v)) for v, i in zip(values, flat)]
    k, sweep = _choose_k(vit, ranked, images, masks, layers["detect_layer"], search, progress)
    chosen = group(ranked[:k])
    left = next((row["outliers_left"] for row in sweep if row["k"] == k), None)
    if left is None:
        left = _outlier_share(TestTimeRegisters(vit, chosen), images, masks, layers["detect_layer"], search)
    return {**result, "neurons": chosen, "k": k, "k_sweep": sweep, "outliers_left": left,
            "scores_by_layer": [float(v) for v in scores.max(dim=1).values],
            "ranked": [{"layer": layer, "neuron": n, "score": s} for layer, n, s in ranked[:report_top]]}
