"""What singular defects look like on real tokens: the paper's mask, high-norm tokens, and
per-layer statistics over an image set."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import rule

DEFAULT_MASK_THRESHOLD = rule.THRESHOLD_STD  # the contract's (contract/defects.py)
DEFAULT_NORM_FACTOR = rule.HIGH_NORM_FACTOR
# A high-norm token counts as lying along the predicted direction above this |cos|.
ALIGNED_COS = 0.8
# Keep every layer's tokens for the alignment statistic only below this size; above it the
# images are run a second time instead.
_KEEP_TOKENS_BYTES = 768 * 2**20


def token_cosines(patch_tokens: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """|cosine| of each ``[N, C]`` token with ``direction`` ``[C]`` (the contract's alignment)."""
    return rule.token_alignment(patch_tokens, direction)


def defect_mask(patch_tokens: torch.Tensor, direction: torch.Tensor,
                threshold_std: float = DEFAULT_MASK_THRESHOLD) -> torch.Tensor:
    """The paper's rule on one image's ``[N, C]`` patch tokens: ``|cos| > mean + k * std``.

    Statistics are over the image's own tokens (sample std, the contract's convention), so
    past roughly 1/(1+k^2) of tokens aligned with ``direction`` the threshold exceeds 1 and
    nothing is flagged.
    """
    return rule.defect_mask(token_cosines(patch_tokens.float(), direction.float()), threshold_std)


def high_norm_mask(patch_tokens: torch.Tensor, factor: float = DEFAULT_NORM_FACTOR,
                   median: float | torch.Tensor | None = None) -> torch.Tensor:
    """Tokens whose norm is at least ``factor`` times ``median`` (default: these tokens' median norm)."""
    return rule.high_norm_mask(patch_tokens.float().norm(dim=-1), factor, median)


def _patch_tokens_per_layer(vit, image: torch.Tensor) -> list[torch.Tensor]:
    param = next(vit.parameters())
    with torch.no_grad():  # under the caller's autocast, if any; the statistics are float32 on the CPU
        outs = vit.block_outputs(image.unsqueeze(0).to(param.device, param.dtype))
    return [vit.split(t)["patch"][0].float().cpu() for t in outs]


def _mean_unit(vectors: torch.Tensor) -> torch.Tensor | None:
    if vectors.shape[0] == 0:
        return None
    return F.normalize(vectors, dim=-1).mean(dim=0)


def _first_pass(vit, images, grids, directions, threshold_std, keep, keep_last_tokens, progress):
    """Norms and paper-mask flags per layer and image; tokens too where ``keep`` allows."""
    depth = len(vit.blocks)
    norms = [[] for _ in range(depth)]
    flagged = [[] for _ in range(depth)]
    kept = [[] for _ in range(depth)]
    last_tokens = []
    iterator = images
    if progress:
        from tqdm import tqdm

        iterator = tqdm(images, desc="measuring", unit="image", leave=False)
    for img, (h, w) in zip(iterator, grids):
        layers = _patch_tokens_per_layer(vit, img)
        for i, tok in enumerate(layers):
            norms[i].append(tok.norm(dim=-1))
            flagged[i].append(defect_mask(tok, directions[i], threshold_std))
            if keep:
                kept[i].append(tok.half())
        if keep_last_tokens:
            last_tokens.append(layers[-1].reshape(h, w, -1))
    return norms, flagged, kept, last_tokens


def _high_norm_pass(vit, images, kept, keep, norms, medians, directions, norm_factor):
    """Per layer: sum of unit vectors of high-norm tokens, their Gram matrix, and counts.

    Needs a second look at the tokens because the pooled threshold is known only after the
    first pass; the observed defect direction is the Gram matrix's leading eigenvector.
    """
    depth = len(vit.blocks)
    dim = vit.cfg.embed_dim
    unit_sums = [torch.zeros(dim) for _ in range(depth)]
    grams = [torch.zeros(dim, dim, dtype=torch.float64) for _ in range(depth)]
    high_counts = [0] * depth
    aligned_counts = [0] * depth
    for j, img in enumerate(images):
        layers = [k[j].float() for k in kept] if keep else _patch_tokens_per_layer(vit, img)
        for i, tok in enumerate(layers):
            mask = norms[i][j] >= norm_factor * medians[i]
            if mask.any():
                units = F.normalize(tok[mask], dim=-1)
                unit_sums[i] += units.sum(dim=0)
                grams[i] += units.double().T @ units.double()
                high_counts[i] += int(mask.sum())
                aligned_counts[i] += int((token_cosines(tok[mask], directions[i]) >= ALIGNED_COS).sum())
    return unit_sums, grams, high_counts, aligned_counts


def _layer_rows(norms, flagged, medians, directions, unit_sums, high_counts, aligned_counts,
                observations) -> list[dict]:
    from .observed import agreement

    rows = []
    for i in range(len(norms)):
        all_norms = torch.cat(norms[i])
        all_flags = torch.cat(flagged[i])
        if high_counts[i]:
            mean_unit = unit_sums[i] / high_counts[i]
            alignment = float(token_cosines(mean_unit[None], directions[i])[0])
        else:
            alignment = None
        rows.append({
            "index": i,
            "defect_fraction": float(all_flags.float().mean()),
            "defect_tokens": int(all_flags.sum()),
            "high_norm_fraction": high_counts[i] / all_norms.numel(),
            "high_norm_tokens": high_counts[i],
            "aligned_high_norm_tokens": aligned_counts[i],
            "median_norm": float(medians[i]),
            "max_norm": float(all_norms.max()),
            "alignment": alignment,
            "observed_coherence": observations[i].coherence,
            "agreement_with_observed": agreement(directions[i], observations[i].direction),
        })
    return rows


def _per_image_rows(names, grids, last_norms, last_flagged, last_median, norm_factor) -> list[dict]:
    per_image = []
    for j, name in enumerate(names):
        n = last_norms[j]
        per_image.append({
            "name": name,
            "grid": list(grids[j]),
            "tokens": int(n.numel()),
            "defect_fraction": float(last_flagged[j].float().mean()),
            "high_norm_fraction": float((n >= norm_factor * last_median).float().mean()),
            "median_norm": float(n.median()),
            "max_norm": float(n.max()),
        })
    return per_image


def measure_layers(model, images: list[torch.Tensor], directions: torch.Tensor,
                   threshold_std: float = DEFAULT_MASK_THRESHOLD, norm_factor: float = DEFAULT_NORM_FACTOR,
                   names: list[str] | None = None, progress: bool = False,
                   keep_last_tokens: bool = False) -> dict:
    """Per-layer defect statistics over ``images`` (each ``[3, H, W]``, normalised).

    Returns ``{"layers": [...], "per_image": [...], "first_defect_layer": int | None,
    "first_mask_layer": int | None, "observations": [LayerObservation, ...]}`` (and ``"last_tokens"``, a list of ``[h, w, C]`` tensors,
    with ``keep_last_tokens``). Norms and fractions are pooled over all patch tokens of all
    images; the high-norm threshold is ``norm_factor`` times the layer's pooled median.
    """
    vit = getattr(model, "model", model)
    vit.eval()
    if not images:
        raise ValueError("measure_layers needs at least one image")
    depth = len(vit.blocks)
    if directions.shape[0] != depth:
        raise ValueError(f"{directions.shape[0]} directions for a model of depth {depth}")
    names = names or [f"image_{i}" for i in range(len(images))]
    p = vit.patch_size
    grids = [(img.shape[-2] // p, img.shape[-1] // p) for img in images]
    n_tokens = sum(h * w for h, w in grids)
    keep = n_tokens * depth * vit.cfg.embed_dim * 2 <= _KEEP_TOKENS_BYTES

    norms, flagged, kept, last_tokens = _first_pass(vit, images, grids, directions, threshold_std,
                                                    keep, keep_last_tokens, progress)
    medians = [torch.cat(n).median() for n in norms]
    unit_sums, grams, high_counts, aligned_counts = _high_norm_pass(
        vit, images, kept, keep, norms, medians, directions, norm_factor)

    from .observed import observe_from_gram

    observations = observe_from_gram(grams, high_counts)
    rows = _layer_rows(norms, flagged, medians, directions, unit_sums, high_counts, aligned_counts,
                       observations)
    per_image = _per_image_rows(names, grids, norms[-1], flagged[-1], medians[-1], norm_factor)
    result = {
        "layers": rows,
        "per_image": per_image,
        "first_defect_layer": first_defect_layer(rows),
        "first_mask_layer": next((r["index"] for r in rows if r["defect_tokens"] > 0), None),
        "observations": observations,  # per layer: the observed direction (sinder.defects.observed)
    }
    if keep_last_tokens:
        result["last_tokens"] = last_tokens
    return result


def first_defect_layer(rows: list[dict]) -> int | None:
    """The first layer with a high-norm token along its predicted direction (|cos| >= ``ALIGNED_COS``).

    Counting tokens one by one, rather than using the pooled ``alignment``, keeps natural
    high-norm outliers (textured patches at early layers) from hiding where the defect starts.
    """
    for r in rows:
        if r.get("aligned_high_norm_tokens", 0) > 0:
            return r["index"]
    return None
