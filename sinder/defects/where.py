"""Where the defect lives: before/after figures at the layers that matter, not only the last.

A real ViT-S/14 can hold its high-norm tokens at block 10 (median norm 6.7, max 28.8) while the
last block's max/median is about 1.4 (a third-party measurement in the
jroth1414/test-time-registers-meet-lora repository), so a last-layer-only score may see nothing
to remove. The layers reported are:

- ``last``: the last block's output (what the service's diagnostics use);
- ``loss``: the layer where the repair's loss fired most often (repairs only);
- ``peak``: the layer where max / median patch-token norm peaks in the original model;
- ``first_defect``: the first layer with a high-norm token along its defect direction.

Tokens are block outputs before the final norm; defect and high-norm rules are the contract's
(``sinder.defects.rule``), the high-norm median pooled over the images, each model its own.
"""

from __future__ import annotations

import torch

from . import rule


def peak_layer(rows: list[dict]) -> int:
    """The layer whose max / median patch-token norm is largest (``measure_layers`` rows)."""
    ratios = [r["max_norm"] / r["median_norm"] if r["median_norm"] > 0 else 0.0 for r in rows]
    return int(max(range(len(rows)), key=lambda i: ratios[i]))


def layers_of_interest(rows: list[dict], first_defect: int | None, loss_layer: int | None = None) -> dict[str, int]:
    where = {"last": len(rows) - 1, "peak": peak_layer(rows)}
    if first_defect is not None:
        where["first_defect"] = int(first_defect)
    if loss_layer is not None:
        where["loss"] = int(loss_layer)
    return where


def _patch_outputs(vit, image: torch.Tensor, layers: list[int]) -> dict[int, torch.Tensor]:
    param = next(vit.parameters())
    with torch.no_grad():
        outs = vit.block_outputs(image[None].to(param.device, param.dtype))
    return {i: vit.split(outs[i])["patch"][0].float().cpu() for i in layers}


def _summary(flags: list[torch.Tensor], norms: list[torch.Tensor], norm_factor: float) -> dict:
    all_norms = torch.cat(norms)
    median = float(all_norms.median())
    high = int(rule.high_norm_mask(all_norms, norm_factor, median).sum())
    defect = int(torch.cat(flags).sum())
    n = all_norms.numel()
    return {"defect_fraction": defect / n, "defect_tokens": defect, "high_norm_fraction": high / n,
            "high_norm_tokens": high, "tokens": n, "median_norm": median, "max_norm": float(all_norms.max()),
            "max_median_ratio": float(all_norms.max()) / median if median > 0 else None}


def compare_at_layers(original, repaired, directions: torch.Tensor, images: list[torch.Tensor],
                      layers: dict[str, int], threshold_std: float = rule.THRESHOLD_STD,
                      norm_factor: float = rule.HIGH_NORM_FACTOR) -> dict[str, dict]:
    """``{name: {"layer", "before", "after", "reduction"}}`` for each named layer, on ``images``
    (normalised ``[3, H, W]`` tensors), both models measured along ``directions[layer]``."""
    a_vit, b_vit = getattr(original, "model", original), getattr(repaired, "model", repaired)
    wanted = sorted(set(layers.values()))
    acc = {m: {i: ([], []) for i in wanted} for m in ("before", "after")}
    for image in images:
        for m, vit in (("before", a_vit), ("after", b_vit)):
            for i, tok in _patch_outputs(vit, image, wanted).items():
                flags, norms = acc[m][i]
                _, align, mask = rule.diagnostics(tok[None], directions[i], threshold_std)
                flags.append(mask[0])
                norms.append(tok.norm(dim=-1))
    out = {}
    for name, i in layers.items():
        before, after = (_summary(*acc[m][i], norm_factor) for m in ("before", "after"))

        def reduction(key: str) -> float | None:
            return None if before[key] == 0 else 1.0 - after[key] / before[key]

        out[name] = {"layer": i, "before": before, "after": after,
                     "reduction": {"defect_fraction": reduction("defect_fraction"),
                                   "high_norm_fraction": reduction("high_norm_fraction")}}
    return out


_ROW_KEYS = ("defect_fraction", "defect_tokens", "high_norm_fraction", "high_norm_tokens", "median_norm", "max_norm")


def _row_figures(row: dict) -> dict:
    figures = {k: row[k] for k in _ROW_KEYS}
    figures["max_median_ratio"] = row["max_norm"] / row["median_norm"] if row["median_norm"] > 0 else None
    return figures


def where_summary(before: dict, after: dict | None = None) -> dict[str, dict]:
    """``{name: {"layer", "before"[, "after"]}}`` at the layers of interest, from ``measure_layers``
    results of the original (and of the repaired model, measured along the same directions)."""
    out = {}
    for name, i in layers_of_interest(before["layers"], before["first_defect_layer"]).items():
        entry = {"layer": i, "before": _row_figures(before["layers"][i])}
        if after is not None:
            entry["after"] = _row_figures(after["layers"][i])
        out[name] = entry
    return out
