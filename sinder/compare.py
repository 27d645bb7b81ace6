"""One report and one picture that put a model's variants side by side (original, SINDER, test-time
registers) on the same held-out images and the same diagnostics.

Per variant, at three layers: the last block, the loss layer (where SINDER's neighbour loss
fired most; without a SINDER variant, the original's first defective layer) and the layer
where the original's max/median patch-token norm peaks:

- ``defect_fraction``: the paper's mask along the *original* model's predicted direction of
  that layer (does the defect the original has remain?);
- ``high_norm_fraction``: tokens of at least 4x the layer's median norm, the variant's own
  median pooled over the images;

and, at the last layer, patch and CLS cosine to the original (``repair.evaluate``), the CPU
seconds the method took to produce the variant, and for test-time registers the number of
neurons edited. A variant that leaves defect or high-norm tokens at a layer is reported as not
having removed them there.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from . import __version__
from .atomic import write_json
from .model import LoadedModel

LAYER_KEYS = ("last", "loss", "peak_norm")


def _layer_choice(original_rows: list[dict], loss_layers: dict | None) -> dict[str, int]:
    last = len(original_rows) - 1
    if loss_layers:
        loss = int(Counter({int(k): int(v) for k, v in loss_layers.items()}).most_common(1)[0][0])
    else:
        first = next((r["index"] for r in original_rows if r.get("aligned_high_norm_tokens", 0) > 0), None)
        loss = first if first is not None else last
    ratio = [r["max_norm"] / r["median_norm"] if r["median_norm"] > 0 else 0.0 for r in original_rows]
    peak = max(range(len(ratio)), key=ratio.__getitem__)
    return {"last": last, "loss": loss, "peak_norm": peak}


def _at(row: dict) -> dict:
    keys = ("defect_fraction", "defect_tokens", "high_norm_fraction", "high_norm_tokens", "median_norm", "max_norm")
    return {k: row[k] for k in keys}




def compare_variants(original: LoadedModel, variants: dict[str, dict], held_out: list[Path], resolution: int,
                     loss_layers: dict | None = None, progress: bool = False) -> dict:
    """``variants``: ``{name: {"method", "loaded", "cpu_seconds", ...extra}}``, the original included
    (method ``"original"``). Returns the comparison report (see the module docstring)."""
    from .defects.directions import directions_of
    from .defects.measure import measure_layers
    from .images import load_image
    from .repair.evaluate import compare_models
    from .registers.report import verdict

    started = time.perf_counter()
    images = [load_image(p, resolution) for p in held_out]
    names = [Path(p).name for p in held_out]
    directions = directions_of(original).vectors
    measured = {name: measure_layers(v["loaded"].model, images, directions, names=names, progress=progress,
                                     keep_last_tokens=True) for name, v in variants.items()}
    orig_name = next(n for n, v in variants.items() if v["method"] == "original")
    layers = _layer_choice(measured[orig_name]["layers"], loss_layers)
    rows = {}
    for name, v in variants.items():
        at = {key: {"layer": idx, **_at(measured[name]["layers"][idx])} for key, idx in layers.items()}
        if name != orig_name:  # the original is the reference: it has a defect, no verdict
            for key, idx in layers.items():
                at[key]["verdict"] = verdict(measured[orig_name]["layers"][idx], measured[name]["layers"][idx],
                                             nothing="no defect here")
        fidelity = None
        if name != orig_name:
            fidelity = compare_models(original.model, v["loaded"].model, directions[-1], held_out, resolution)["fidelity"]
        extra = {k: val for k, val in v.items() if k not in ("loaded", "method", "cpu_seconds")}
        rows[name] = {"method": v["method"], "cpu_seconds": v.get("cpu_seconds"), "layers": at,
                      "fidelity": fidelity, **extra}
    report = {
        "tool": {"name": "sinder", "version": __version__},
        "synthetic": bool(original.synthetic),
        "model": original.describe(),
        "held_out_images": names,
        "resolution": resolution,
        "layers": layers,
        "rules": {
            "defect_fraction": "paper's mask (|cos| > mean + 4 std of the image's |cos|) along the original model's "
                               "predicted direction of the layer, pooled over the held-out images",
            "high_norm_fraction": "patch tokens with norm >= 4x the layer's median (each variant its own median)",
            "loss": "layer where SINDER's neighbour loss fired most often (else the original's first defective layer)",
            "peak_norm": "layer where the original's max / median patch-token norm peaks on these images",
            "fidelity": "last layer, on tokens the original flags by neither rule (sinder.repair.evaluate)",
            "cpu_seconds": "process CPU time of producing the variant (every thread); 0 for the original",
        },
        "variants": rows,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if original.synthetic:
        from .demo import demo_note

        report["note"] = f"SYNTHETIC: {demo_note(original.source)}"
    report["_last_tokens"] = {name: m["last_tokens"] for name, m in measured.items()}
    return report


def write_comparison(report: dict, images: list[Path], out_dir: Path, resolution: int) -> dict:
    """``out_dir/comparison.json`` and ``out_dir/comparison.png``; returns the report as written."""
    tokens = report.pop("_last_tokens")
    report["picture"] = "comparison.png"
    _save_picture(report, tokens, images, out_dir / "comparison.png", resolution)
    clean = json.loads(json.dumps(report))
    write_json(out_dir / "comparison.json", clean)
    return clean


def _save_picture(report: dict, tokens: dict, images: list[Path], dest: Path, resolution: int) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from contract.pictures import pca_colors

    from .analyze import _save, _title
    from .images import denormalize, load_image

    names = list(report["variants"])
    methods = [report["variants"][n]["method"] for n in names]
    fig, axes = plt.subplots(len(images), 1 + 2 * len(names), figsize=(2.3 * (1 + 2 * len(names)), 2.5 * len(images)),
                             squeeze=False)
    for j, path in enumerate(images):
        norms = {n: tokens[n][j].norm(dim=-1).numpy() for n in names}
        vmax = max(float(v.max()) for v in norms.values())  # one scale per image, so variants compare
        original = tokens[names[0]][j].numpy()
        axes[j][0].imshow(denormalize(load_image(path, resolution)))
        axes[j][0].set_title(Path(path).name, fontsize=8)
        for i, (n, method) in enumerate(zip(names, methods)):
            shown = axes[j][1 + i].imshow(norms[n], cmap="inferno", vmin=0, vmax=vmax, interpolation="nearest")
            head = f"{method}\ntoken norms, " if j == 0 else ""
            axes[j][1 + i].set_title(f"{head}max {norms[n].max():.0f}", fontsize=8)
            # one basis (the original's) for every variant: a colour that changes is a feature that changed
            axes[j][1 + len(names) + i].imshow(pca_colors(tokens[n][j].numpy(), fit=original), interpolation="nearest")
            if j == 0:
                axes[j][1 + len(names) + i].set_title(f"{method}\nPCA, the original's basis", fontsize=8)
        fig.colorbar(shown, ax=axes[j][len(names)], fraction=0.046, pad=0.02)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    last = report["layers"]["last"]
    models = ", ".join(f"{m}: {n}" for n, m in zip(names, methods))
    fig.suptitle(_title(f"block {last} patch tokens on held-out images ({models}); norms share one scale per image",
                        report["synthetic"]), fontsize=9)
    fig.tight_layout()
    _save(fig, dest)
