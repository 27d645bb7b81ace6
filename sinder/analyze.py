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
from .atomic import atomic_dir, write_json, write_with
from .defects.directions import directions_of
from .defects.measure import DEFAULT_MASK_THRESHOLD, DEFAULT_NORM_FACTOR, defect_mask, measure_layers
from .errors import ImageError, SinderError
from .images import denormalize, load_image
from .model import LoadedModel

SYNTHETIC_LABEL = "synthetic demo weights"

RULES = {
    "defect_fraction": "share of patch tokens whose |cos| to the layer's predicted defect direction exceeds "
                       "mean + 4 std of that image's |cos| (the paper's mask), pooled over images",
    "high_norm_fraction": "share of patch tokens whose norm is at least 4x the layer's median patch-token norm "
                          "(median pooled over all images)",
    "alignment": "|cos| between the predicted direction and the mean unit vector of the layer's high-norm "
                 "tokens (null when there are none)",
    "aligned_high_norm_tokens": "high-norm tokens whose own |cos| to the predicted direction is at least 0.8",
    "first_defect_layer": "first layer with an aligned high-norm token",
    "first_mask_layer": "first layer where the paper's mask flags any token",
    "tokens": "block outputs before the final LayerNorm",
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


def _pca_rgb(tokens: torch.Tensor) -> np.ndarray:
    """``[h, w, C]`` tokens -> ``[h, w, 3]`` in [0, 1]: the first three principal components, each
    stretched over its 1st-99th percentile (as the service's /visualize does)."""
    h, w, c = tokens.shape
    x = tokens.reshape(-1, c).double()
    x = x - x.mean(dim=0, keepdim=True)
    k = min(3, x.shape[0], c)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    proj = (x @ vh[:k].T).numpy()
    if k < 3:
        proj = np.pad(proj, ((0, 0), (0, 3 - k)))
    lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)
    proj = np.clip((proj - lo) / np.where(hi - lo > 1e-12, hi - lo, 1.0), 0, 1)
    return proj.reshape(h, w, 3).astype(np.float32)


def _title(text: str, synthetic: bool) -> str:
    return f"{text} ({SYNTHETIC_LABEL})" if synthetic else text


# The legend of the per-image pictures; the service's /visualize draws the same layout with the
# same words (service/core/visualize.py, with Pillow): change both together.
PICTURE_LEGEND = (
    "Left: the image as the model saw it (resized to its input size).",
    "Middle: the norm of each patch token after the last block, on the row's own colour scale (the bar beside it "
    "gives the values), so a repaired model's map is not dark just because the original's defects are large.",
    "Cyan boxes, on the image too: the tokens the defect rule flags, |cos| to the defect direction > mean + "
    f"{DEFAULT_MASK_THRESHOLD:g} std of the image's tokens (the SINDER paper's mask).",
    "Right: the first three principal components of the row's patch tokens as red, green and blue (each stretched "
    "over its 1st-99th percentile). A colour means nothing by itself and is not comparable between rows; patches "
    "of similar colour have similar features.",
)
SYNTHETIC_PICTURE_NOTE = ("SYNTHETIC demo weights: generated, not trained, so the PCA colours carry no meaning at "
                          "all and the norm maps show the defects planted in them.")
_DEFECT_COLOUR = "cyan"


def _outline(ax, mask: np.ndarray, scale: float = 1.0) -> None:
    from matplotlib.patches import Rectangle

    for y, x in zip(*np.nonzero(mask)):
        ax.add_patch(Rectangle((x * scale - 0.5, y * scale - 0.5), scale, scale, fill=False,
                               edgecolor=_DEFECT_COLOUR, linewidth=1.8))


def _image_figure(image: torch.Tensor, rows: list[tuple[str, torch.Tensor]], title: str,
                  direction: torch.Tensor, synthetic: bool = False):
    """One row per model: image | token norms on the row's own scale, defects outlined | PCA colours."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    picture = denormalize(image)
    patch = picture.shape[0] / rows[0][1].shape[0]
    legend = [(line, "firebrick" if text == SYNTHETIC_PICTURE_NOTE else "dimgray")
              for text in list(PICTURE_LEGEND) + ([SYNTHETIC_PICTURE_NOTE] if synthetic else [])
              for line in textwrap.wrap(text, 165)]
    row_h, legend_h = 3.9, 0.2 * len(legend) + 0.2
    fig = plt.figure(figsize=(13, row_h * len(rows) + legend_h + 0.5), layout="constrained")
    fig.get_layout_engine().set(wspace=0.09)  # room for the colour bar's values between the map and the PCA
    fig.suptitle(title, fontsize=14, color="firebrick" if synthetic else "black")
    *row_figs, legend_fig = fig.subfigures(len(rows) + 1, 1, height_ratios=[row_h] * len(rows) + [legend_h])
    for sub, (label, tokens) in zip(row_figs, rows):
        h, w, c = tokens.shape
        norm = tokens.norm(dim=-1).numpy()
        mask = defect_mask(tokens.reshape(-1, c), direction).reshape(h, w).numpy()
        count = int(mask.sum())
        sub.suptitle(label, fontsize=13, fontweight="bold", x=0.01, ha="left")
        ax = sub.subplots(1, 3)
        ax[0].imshow(picture)
        _outline(ax[0], mask, patch)
        im = ax[1].imshow(norm, cmap="inferno", vmin=float(norm.min()), vmax=float(norm.max()), interpolation="nearest")
        _outline(ax[1], mask)
        # inset in the map's own coordinates: the bar is exactly as tall as the map
        bar = sub.colorbar(im, cax=ax[1].inset_axes((1.02, 0.0, 0.035, 1.0)))
        bar.ax.tick_params(labelsize=9)
        ax[2].imshow(_pca_rgb(tokens), interpolation="nearest")
        texts = [(f"image ({picture.shape[0]}x{picture.shape[1]} px)", f"{h}x{w} tokens; cyan: defect tokens"),
                 ("token norm, last block (own scale)", f"{count} defect token{'s' * (count != 1)} outlined in cyan"),
                 ("PCA of patch tokens", "colours: components 1-3 as R, G, B")]
        for a, (caption, note) in zip(ax, texts):
            a.set_title(caption, fontsize=11, loc="left")
            a.set_xlabel(note, fontsize=10, color="dimgray", loc="left")
            a.set_xticks([])
            a.set_yticks([])
    for i, (line, colour) in enumerate(legend):
        legend_fig.text(0.01, 1 - (i + 0.8) / (len(legend) + 0.4), line, fontsize=9.5, color=colour, va="center")
    return fig


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


def run_analysis(loaded: LoadedModel, image_paths: list[Path], out_dir: Path, resolution: int = 224,
                 repaired: LoadedModel | None = None, progress: bool = True, compute=None) -> dict:
    """Measure ``loaded`` (and ``repaired``, if given) on the images and write the report and pictures.

    Both models are measured along the original model's predicted directions, so that "after"
    answers whether the defect the original model has is still there. ``compute``
    (:class:`sinder.device.Compute`, default CPU fp32): where the forward passes run and their
    autocast precision; the statistics are float32 on the CPU. Returns the report.
    """
    from tqdm import tqdm

    from . import device

    start = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SinderError(f"output {out_dir} exists and is not a folder")
    image_paths = [Path(p) for p in image_paths]
    if repaired is not None and repaired.arch.embed_dim != loaded.arch.embed_dim:
        raise SinderError(f"repaired model {repaired.source} has width {repaired.arch.embed_dim}, "
                          f"the original {loaded.arch.embed_dim}")
    if repaired is not None and repaired.arch.depth != loaded.arch.depth:
        raise SinderError(f"repaired model {repaired.source} has {repaired.arch.depth} blocks, "
                          f"the original {loaded.arch.depth}")
    compute = compute or device.resolve("cpu", "fp32")
    images = _load_images(image_paths, resolution, progress)
    loaded.model.to(compute.device)
    if repaired is not None:
        repaired.model.to(compute.device)
    synthetic = bool(loaded.synthetic or (repaired is not None and repaired.synthetic))
    names = [p.name for p in image_paths]

    predicted = directions_of(loaded)
    directions, summary = predicted.vectors, predicted.summary()
    with compute.autocast():
        before = measure_layers(loaded.model, images, directions, names=names, progress=progress,
                                keep_last_tokens=True)
        after = None
        if repaired is not None:
            after = measure_layers(repaired.model, images, directions, names=names, progress=progress,
                                   keep_last_tokens=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    picture_names = []
    # The pictures folder is replaced as a whole, so no picture of an earlier run lingers in it.
    with atomic_dir(out_dir / "images", overwrite=True) as folder:
        for j, (path, image) in enumerate(tqdm(list(zip(image_paths, images)), desc="pictures", unit="image",
                                               file=sys.stderr, disable=not progress, leave=False)):
            rows = [("original, before repair" if after is not None else loaded.arch.name, before["last_tokens"][j])]
            if after is not None:
                rows.append(("repaired, after SINDER", after["last_tokens"][j]))
            stem = _safe_stem(path, used)
            figure = _image_figure(image, rows, _title(path.name, synthetic), directions[-1], synthetic)
            _save(figure, folder / f"{stem}.png")
            picture_names.append(f"images/{stem}.png")
    runs = [("before" if after is not None else loaded.arch.name, before["layers"])]
    if after is not None:
        runs.append(("after", after["layers"]))
    _save(_layers_figure(runs, _title(f"singular defects per layer: {loaded.arch.name}", synthetic)),
          out_dir / "layers.png")

    report = {
        "tool": {"name": "sinder", "version": __version__},
        "runtime": compute.describe(),
        "synthetic": synthetic,
        "model": _model_info(loaded),
        "images": len(images),
        "image_names": names,
        "resolution": resolution,
        "rules": {**RULES, "mask_threshold_std": DEFAULT_MASK_THRESHOLD, "high_norm_factor": DEFAULT_NORM_FACTOR},
        "layers": before["layers"],
        "first_defect_layer": before["first_defect_layer"],
        "first_mask_layer": before["first_mask_layer"],
        "per_image": before["per_image"],
        "directions": [{k: v for k, v in row.items() if k != "direction"} for row in summary],
    }
    if synthetic:
        from .demo import demo_note

        report["note"] = f"SYNTHETIC: {demo_note(loaded.source)}"
    if after is not None:
        report["repaired"] = {
            "model": _model_info(repaired),
            "measured_along": "the original model's predicted directions",
            "layers": after["layers"],
            "first_defect_layer": after["first_defect_layer"],
            "first_mask_layer": after["first_mask_layer"],
            "per_image": after["per_image"],
        }
    report["pictures"] = {"layers": "layers.png", "images": picture_names}
    report["seconds"] = round(time.perf_counter() - start, 3)
    # Round-trip through json first so that a serialisation problem never leaves a half report.
    write_json(out_dir / "report.json", json.loads(json.dumps(report)))
    return report
