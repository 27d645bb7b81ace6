"""Cost of the offline tool's analysis and repair, on DINOv2-shaped models with random weights."""

from __future__ import annotations

import time

from .stats import summary

ANALYSIS_TARGET_S = 10.0  # ViT-S/14: the defect directions of every layer within 10 s on a laptop-class CPU
REPAIR_TARGET = 1.3  # one repair iteration / one plain forward+backward


def _random_model(arch: str):
    import torch

    from sinder.model import build_model, get_arch

    torch.manual_seed(0)
    model = build_model(get_arch(arch))
    model.eval()
    return model


def analysis_figures(repeats: int, archs=("vits14", "vitb14")) -> list[dict]:
    try:
        from sinder.defects.directions import defect_directions
    except ImportError as exc:
        return [{"section": "Offline tool", "name": "defect directions (analysis) cost", "error": f"sinder.defects.directions unavailable: {exc}"}]
    figures = []
    for arch in archs:
        model = _random_model(arch)
        times = []
        for _ in range(repeats if arch == "vits14" else max(1, repeats // 2)):
            t0 = time.perf_counter()
            defect_directions(model)
            times.append(time.perf_counter() - t0)
        fig = {
            "section": "Offline tool", "name": f"defect directions of every layer, {arch}",
            "model": f"{arch} shape ({'ViT-S/14' if arch == 'vits14' else 'ViT-B/14'}), random weights (synthetic)",
            "resolution": "weights only (no images)", "a_label": "seconds", "unit": "s", "a": summary(times),
        }
        if arch == "vits14":
            fig.update(b_label="target", b=summary([ANALYSIS_TARGET_S]), ratio=summary([t / ANALYSIS_TARGET_S for t in times]),
                       ratio_label=f"seconds / {ANALYSIS_TARGET_S:g} s", target={"op": "<=", "value": 1.0})
        figures.append(fig)
        del model
    return figures


def repair_figures(resolution: int = 224) -> list[dict]:
    try:
        from sinder.repair.bench import iteration_vs_forward_backward
    except ImportError as exc:
        return [{"section": "Offline tool", "name": "repair iteration cost", "error": f"sinder.repair.bench unavailable: {exc}"}]
    # The demo model has a defect at block 5, so an iteration trains the blocks up to it as a
    # real repair does; random weights put the "first defective layer" anywhere.
    from sinder.demo import load_demo

    model = load_demo(0).model
    out = iteration_vs_forward_backward(model, resolution)
    ratio = _find_ratio(out)
    fig = {
        "section": "Offline tool", "name": "one repair iteration vs one plain forward + backward",
        "model": "ViT-S/14, the synthetic demo model (defect at block 5)", "resolution": f"{resolution}x{resolution}",
        "details": {k: v for k, v in out.items() if not isinstance(v, (dict, list))},
        "ratio_label": "repair iteration / forward+backward", "target": {"op": "<=", "value": REPAIR_TARGET},
    }
    if isinstance(ratio, dict):
        fig["ratio"] = ratio
    elif ratio is not None:
        fig["ratio"] = summary([ratio])
    else:
        fig["error"] = f"iteration_vs_forward_backward returned no ratio: keys {sorted(out)}"
    return [fig]


def _find_ratio(out: dict):
    for key in ("ratio", "ratio_median", "median_ratio"):
        if key in out:
            val = out[key]
            if isinstance(val, dict) and "median" in val:
                return {"median": val["median"], "min": val.get("min", val["median"]), "max": val.get("max", val["median"]),
                        "n": val.get("n", 1), "spread": val.get("spread", 0.0)}
            if isinstance(val, (list, tuple)):
                return summary(val)
            return float(val)
    if "ratios" in out:
        return summary(out["ratios"])
    return None
