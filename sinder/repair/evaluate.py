"""Before/after figures of a repair, on held-out images: defects at the last layer and fidelity.

"Last layer" means the last block's output before the final LayerNorm, as in ``sinder analyze``.
Defects use the analysis rules (``sinder.defects.measure``): the paper's mask with the
original model's predicted direction, and tokens of at least 4x the layer's median norm
pooled over the image set (each model its own median). Fidelity compares the two models on
the tokens the original did not flag by either rule: those the repair should leave alone.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..defects.measure import DEFAULT_MASK_THRESHOLD, DEFAULT_NORM_FACTOR, defect_mask


def _features(vit, image: torch.Tensor) -> dict[str, torch.Tensor]:
    param = next(vit.parameters())
    with torch.no_grad():
        out = vit.forward_features(image[None].to(param.device, param.dtype))
    parts = vit.split(out["x_prenorm"])
    return {
        "patch": parts["patch"][0].float().cpu(),
        "cls": parts["cls"][0].float().cpu(),
        "patch_normed": out["x_norm_patchtokens"][0].float().cpu(),
        "cls_normed": out["x_norm_clstoken"][0].float().cpu(),
    }


def _summary(flags: list[torch.Tensor], norms: list[torch.Tensor], factor: float) -> dict:
    all_norms = torch.cat(norms)
    median = all_norms.median()
    # high_norm_mask's rule, applied to stored norms with the median pooled over the image set
    high = [n >= factor * float(median) for n in norms]
    n_tokens = all_norms.numel()
    defect_tokens = int(torch.cat(flags).sum())
    high_tokens = int(torch.cat(high).sum())
    return {
        "defect_fraction": defect_tokens / n_tokens,
        "high_norm_fraction": high_tokens / n_tokens,
        "defect_tokens": defect_tokens,
        "high_norm_tokens": high_tokens,
        "tokens": n_tokens,
        "median_norm": float(median),
        "max_norm": float(all_norms.max()),
    }, high


def _collect(orig_vit, rep_vit, direction, images, resolution, threshold_std, repaired_direction, progress):
    """Per image: both models' mask flags and norms, and the two models' cosines."""
    from ..images import load_image

    flags = {"before": [], "after": [], "own": []}
    norms = {"before": [], "after": []}
    pairs = []  # (patch cos, patch-normed cos, cls cos, cls-normed cos) per image
    for path in tqdm(images, desc="held-out", unit="image", file=sys.stderr, disable=not progress, leave=False):
        image = load_image(path, resolution)
        a, b = _features(orig_vit, image), _features(rep_vit, image)
        flags["before"].append(defect_mask(a["patch"], direction, threshold_std))
        flags["after"].append(defect_mask(b["patch"], direction, threshold_std))
        if repaired_direction is not None:
            flags["own"].append(defect_mask(b["patch"], repaired_direction, threshold_std))
        norms["before"].append(a["patch"].norm(dim=-1))
        norms["after"].append(b["patch"].norm(dim=-1))
        pairs.append((
            F.cosine_similarity(a["patch"], b["patch"], dim=-1),
            F.cosine_similarity(a["patch_normed"], b["patch_normed"], dim=-1),
            float(F.cosine_similarity(a["cls"], b["cls"], dim=0)),
            float(F.cosine_similarity(a["cls_normed"], b["cls_normed"], dim=0)),
        ))
    return flags, norms, pairs


def _fidelity(pairs, flags_before: list[torch.Tensor], high_before: list[torch.Tensor]) -> dict:
    # Only tokens the original flagged by neither rule: those the repair should leave alone.
    keep = [~(f | h) for f, h in zip(flags_before, high_before)]
    kept = torch.cat(keep)
    patch_cos = torch.cat([p[0] for p in pairs])[kept]
    patch_cos_normed = torch.cat([p[1] for p in pairs])[kept]
    all_cos = torch.cat([p[0] for p in pairs])
    return {
        "patch_cosine": float(patch_cos.mean()) if patch_cos.numel() else None,
        "patch_cosine_min": float(patch_cos.min()) if patch_cos.numel() else None,
        "patch_cosine_normed": float(patch_cos_normed.mean()) if patch_cos_normed.numel() else None,
        "patch_cosine_all_tokens": float(all_cos.mean()),
        "patch_tokens_compared": int(kept.sum()),
        "cls_cosine": sum(p[2] for p in pairs) / len(pairs),
        "cls_cosine_min": min(p[2] for p in pairs),
        "cls_cosine_normed": sum(p[3] for p in pairs) / len(pairs),
    }


def compare_models(
    original,
    repaired,
    direction: torch.Tensor,
    images: Sequence[Path],
    resolution: int,
    threshold_std: float = DEFAULT_MASK_THRESHOLD,
    norm_factor: float = DEFAULT_NORM_FACTOR,
    repaired_direction: torch.Tensor | None = None,
    progress: bool = False,
) -> dict:
    """``{"before", "after", "fidelity"}`` of two models on ``images`` (loaded at ``resolution``).

    ``direction`` is the original model's last-layer defect direction; ``repaired_direction``
    (optional) the repaired model's own, reported as ``after.defect_fraction_own_direction``.
    """
    if not images:
        raise ValueError("compare_models needs at least one image")
    orig_vit, rep_vit = getattr(original, "model", original), getattr(repaired, "model", repaired)
    orig_vit.eval()
    rep_vit.eval()
    flags, norms, pairs = _collect(orig_vit, rep_vit, direction, images, resolution, threshold_std,
                                   repaired_direction, progress)
    before, high_before = _summary(flags["before"], norms["before"], norm_factor)
    after, _ = _summary(flags["after"], norms["after"], norm_factor)
    if repaired_direction is not None:
        after["defect_fraction_own_direction"] = float(torch.cat(flags["own"]).float().mean())
    fidelity = _fidelity(pairs, flags["before"], high_before)

    def reduction(key: str) -> float | None:
        return None if before[key] == 0 else 1.0 - after[key] / before[key]

    return {
        "before": before,
        "after": after,
        "reduction": {"defect_fraction": reduction("defect_fraction"),
                      "high_norm_fraction": reduction("high_norm_fraction")},
        "fidelity": fidelity,
        "measured_on": {"images": [Path(p).name for p in images], "resolution": resolution,
                        "layer": len(orig_vit.blocks) - 1, "tokens": "last block output, before the final norm",
                        "fidelity_tokens": "patch tokens neither defective nor high-norm in the original model"},
    }
