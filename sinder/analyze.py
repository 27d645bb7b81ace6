"""`sinder analyze`: singular-defect statistics of a model on real images, and the pictures a person
looks at first. Everything lands in one folder: ``report.json``, ``layers.png`` and one
``images/<name>.png`` per image, each file written atomically."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .atomic import atomic_dir, write_bytes, write_json, write_with
from .defects.attention import cls_attention_report
from .defects.directions import directions_of
from .defects.measure import DEFAULT_MASK_THRESHOLD, DEFAULT_NORM_FACTOR, defect_mask, measure_layers
from .defects.observed import choose_directions
from .defects.rule import STD_DDOF
from .defects.where import where_summary
from .errors import ImageError, SinderError
from .images import denormalize, image_rule, load_image
from .model import LoadedModel

SYNTHETIC_LABEL = "synthetic demo weights"

RULES = {
    "defect_fraction": "share of patch tokens whose |cos| to the layer's predicted defect direction exceeds "
                       "mean + 4 std (sample std) of that image's |cos| (the paper's mask, contract/defects.py), "
                       "pooled over images",
    "high_norm_fraction": "share of patch tokens whose norm is at least 4x the layer's median patch-token norm "
                          "(median pooled over all images)",
    "alignment": "|cos| between the predicted direction and the mean unit vector of the layer's high-norm "
                 "tokens (null when there are none)",
    "aligned_high_norm_tokens": "high-norm tokens whose own |cos| to the predicted direction is at least 0.8",
    "first_defect_layer": "first layer with an aligned high-norm token",
    "first_mask_layer": "first layer where the paper's mask flags any token",
    "tokens": "block outputs before the final LayerNorm",
    "cls_attention": "do later blocks read the high-norm tokens? per block (`blocks`, see its `rule`) and "
                     "averaged over the blocks after first_defect_layer (`after_first_defect`: ratio > 1 means "
                     "the CLS token attends to them more than their number explains, as to attention sinks)",
}


def _load_images(paths: list[Path], resolution: int, progress: bool) -> list[torch.Tensor]:
    from tqdm import tqdm

    if not paths:
        raise ImageError("no images to analyse")
    return [load_image(p, resolution) for p in tqdm(paths, desc="loading images", unit="image",
                                                    file=sys.stderr, disable=not progress, leave=False)]


def _safe_stem(path: Path, used: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem) or "image"
    name, k = stem, 1
    while name in used:
        k += 1
        name = f"{stem}_{k}"
    used.add(name)
    return name


def _title(text: str, synthetic: bool) -> str:
    return f"{text} ({SYNTHETIC_LABEL})" if synthetic else text


def _image_picture(image: torch.Tensor, rows: list[tuple[str, torch.Tensor]], title: str,
                   direction: torch.Tensor, synthetic: bool = False) -> bytes:
    """PNG of one image, one row per model, drawn by the contract's renderer: the picture the
    service's /visualize draws (image | token norms on the row's own scale, defects outlined | PCA)."""
    from contract import pictures

    pixels = (denormalize(image) * 255).round().astype(np.uint8)
    drawn = []
    for label, tokens in rows:
        h, w, c = tokens.shape
        mask = defect_mask(tokens.reshape(-1, c), direction).reshape(h, w).numpy()
        drawn.append(pictures.Row(label, pixels, tokens.float().numpy(), tokens.float().norm(dim=-1).numpy(), mask,
                                  synthetic=synthetic, threshold_std=DEFAULT_MASK_THRESHOLD))
    return pictures.render(drawn, title)


def _layers_figure(runs: list[tuple[str, list[dict]]], title: str):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    for (label, rows), style in zip(runs, ("-", "--")):
        idx = [r["index"] for r in rows]
        top.plot(idx, [100 * r["defect_fraction"] for r in rows], style, marker="o", color="tab:red",
                 label=f"defect fraction, paper's mask ({label})")
        top.plot(idx, [100 * r["high_norm_fraction"] for r in rows], style, marker="s", color="tab:blue",
                 label=f"high-norm fraction, >= 4x median ({label})")
        ratio = [r["max_norm"] / r["median_norm"] if r["median_norm"] > 0 else float("nan") for r in rows]
        bottom.plot(idx, ratio, style, marker="o", color="tab:purple", label=f"max / median norm ({label})")
    top.set_ylabel("% of patch tokens")
    top.legend(fontsize=8)
    bottom.axhline(DEFAULT_NORM_FACTOR, color="grey", linewidth=0.8, linestyle=":")
    bottom.set_ylabel("max / median token norm")
    bottom.set_xlabel("layer (block index)")
    bottom.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _save(fig, dest: Path) -> None:
    import matplotlib.pyplot as plt

    try:
        write_with(dest, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)


def _model_info(loaded: LoadedModel) -> dict:
    info = loaded.describe()
    info.update({"embed_dim": loaded.arch.embed_dim, "depth": loaded.arch.depth,
                 "num_heads": loaded.arch.num_heads, "num_register_tokens": loaded.arch.num_register_tokens,
                 "patch_size": loaded.arch.patch_size})
    return info


def _check_pair(loaded: LoadedModel, repaired: LoadedModel | None) -> None:
    """A repaired model is measured along the original's directions: it must have its shape."""
    if repaired is not None and repaired.arch.embed_dim != loaded.arch.embed_dim:
        raise SinderError(f"repaired model {repaired.source} has width {repaired.arch.embed_dim}, "
                          f"the original {loaded.arch.embed_dim}")
    if repaired is not None and repaired.arch.depth != loaded.arch.depth:
        raise SinderError(f"repaired model {repaired.source} has {repaired.arch.depth} blocks, "
                          f"the original {loaded.arch.depth}")


def _write_pictures(out_dir: Path, image_paths: list[Path], images, loaded: LoadedModel, before: dict,
                    after: dict | None, direction: torch.Tensor, synthetic: bool, progress: bool) -> list[str]:
    """One picture per image (a row per model) under ``out_dir/images``; returns their report paths."""
    from tqdm import tqdm

    from contract import pictures

    used: set[str] = set()
    picture_names = []
    # The pictures folder is replaced as a whole, so no picture of an earlier run lingers in it.
    with atomic_dir(out_dir / "images", overwrite=True) as folder:
        for j, (path, image) in enumerate(tqdm(list(zip(image_paths, images)), desc="pictures", unit="image",
                                               file=sys.stderr, disable=not progress, leave=False)):
            rows = [(pictures.row_label("original", loaded.arch.name), before["last_tokens"][j])]
            if after is not None:
                rows.append((pictures.row_label("sinder", loaded.arch.name), after["last_tokens"][j]))
            stem = _safe_stem(path, used)
            png = _image_picture(image, rows, _title(path.name, synthetic), direction, synthetic)
            write_bytes(folder / f"{stem}.png", png)
            picture_names.append(f"images/{stem}.png")
    return picture_names


def _report(loaded: LoadedModel, repaired: LoadedModel | None, compute, synthetic: bool, names: list[str],
            resolution: int, before: dict, after: dict | None, summary: list[dict], choice) -> dict:
    report = {
        "tool": {"name": "sinder", "version": __version__},
        "runtime": compute.describe(),
        "synthetic": synthetic,
        "model": _model_info(loaded),
        "images": len(names),
        "image_names": names,
        "resolution": resolution,
        "preprocessing": image_rule(resolution).model_dump(),  # the contract's resize, as the service's
        "rules": {**RULES, "mask_threshold_std": DEFAULT_MASK_THRESHOLD, "std_ddof": STD_DDOF,
                  "high_norm_factor": DEFAULT_NORM_FACTOR},
        "layers": before["layers"],
        "first_defect_layer": before["first_defect_layer"],
        "first_mask_layer": before["first_mask_layer"],
        "per_image": before["per_image"],
        "directions": [{k: v for k, v in row.items() if k != "direction"} for row in summary],
        "direction": choice.record(),
        "warnings": choice.warnings,
        "where": where_summary(before, after),
        "cls_attention": before["cls_attention"],
    }
    if synthetic:
        from .demo import demo_note

        report["note"] = f"SYNTHETIC: {demo_note(loaded.source)}"
    if after is not None:
        report["repaired"] = {"model": _model_info(repaired),
                              "measured_along": f"the original model's {choice.used} directions",
                              **{k: after[k] for k in ("layers", "first_defect_layer", "first_mask_layer", "per_image",
                                                    "cls_attention")}}
    return report


def _measure(loaded: LoadedModel, repaired: LoadedModel | None, images, names: list[str],
             predicted: torch.Tensor, direction: str, progress: bool):
    """(before, after or None, the direction choice): both models' statistics along the directions
    in use, with the CLS token's attention to high-norm tokens."""
    before = measure_layers(loaded.model, images, predicted, names=names, progress=progress, keep_last_tokens=True)
    choice = choose_directions(predicted, before["observations"], direction)
    if choice.used == "observed":  # the figures along the directions in use
        before = measure_layers(loaded.model, images, choice.directions, names=names, progress=progress,
                                keep_last_tokens=True)
    # Both models summarised over the blocks after the original's first defect layer.
    first = before["first_defect_layer"]
    before["cls_attention"] = cls_attention_report(loaded, images, first)
    after = None
    if repaired is not None:
        after = measure_layers(repaired.model, images, choice.directions, names=names, progress=progress,
                               keep_last_tokens=True)
        after["cls_attention"] = cls_attention_report(repaired, images, first)
    return before, after, choice


def run_analysis(loaded: LoadedModel, image_paths: list[Path], out_dir: Path, resolution: int = 224,
                 repaired: LoadedModel | None = None, progress: bool = True, compute=None,
                 direction: str = "auto") -> dict:
    """Measure ``loaded`` (and ``repaired``, if given) on the images and write the report and pictures.

    Both models are measured along the original model's directions, so that "after" answers
    whether the defect the original model has is still there; ``direction`` (``predicted``,
    ``observed`` or ``auto``, see ``sinder.defects.observed``) says which, and the report records
    the choice, the agreement of predicted and observed directions, and a warning when high-norm
    tokens exist that the prediction does not explain. ``compute``
    (:class:`sinder.device.Compute`, default CPU fp32): where the forward passes run and their
    autocast precision; the statistics are float32 on the CPU. Returns the report.
    """
    from . import device

    start = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SinderError(f"output {out_dir} exists and is not a folder")
    image_paths = [Path(p) for p in image_paths]
    _check_pair(loaded, repaired)
    compute = compute or device.resolve("cpu", "fp32")
    images = _load_images(image_paths, resolution, progress)
    loaded.model.to(compute.device)
    if repaired is not None:
        repaired.model.to(compute.device)
    synthetic = bool(loaded.synthetic or (repaired is not None and repaired.synthetic))
    names = [p.name for p in image_paths]

    predicted = directions_of(loaded)
    summary = predicted.summary()
    with compute.autocast():
        before, after, choice = _measure(loaded, repaired, images, names, predicted.vectors, direction, progress)
    directions = choice.directions

    out_dir.mkdir(parents=True, exist_ok=True)
    picture_names = _write_pictures(out_dir, image_paths, images, loaded, before, after, directions[-1],
                                    synthetic, progress)
    runs = [("before" if after is not None else loaded.arch.name, before["layers"])]
    if after is not None:
        runs.append(("after", after["layers"]))
    _save(_layers_figure(runs, _title(f"singular defects per layer: {loaded.arch.name}", synthetic)),
          out_dir / "layers.png")

    report = _report(loaded, repaired, compute, synthetic, names, resolution, before, after, summary, choice)
    report["pictures"] = {"layers": "layers.png", "images": picture_names}
    report["seconds"] = round(time.perf_counter() - start, 3)
    # Round-trip through json first so that a serialisation problem never leaves a half report.
    write_json(out_dir / "report.json", json.loads(json.dumps(report)))
    return report
