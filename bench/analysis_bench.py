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
    fig = {
        "section": "Offline tool",
        "name": "one repair iteration vs one plain forward + backward of the same blocks",
        "model": "ViT-S/14, the synthetic demo model (defect at block 5)", "resolution": f"{resolution}x{resolution}",
        "details": {k: v for k, v in out.items() if not isinstance(v, (dict, list))},
        "ratio_label": "repair iteration / forward+backward of the same blocks",
        "target": {"op": "<=", "value": REPAIR_TARGET},
        "note": "ratio against the whole model's forward+backward: details.ratio. Where the extra goes: "
                "sinder/repair/bench.py's docstring (the weight rebuild after each step, details."
                "rebuild_vs_forward_linears, is the part that does not shrink with the token count).",
    }
    if out.get("ratio_same_blocks") is not None:
        fig["ratio"] = summary([out["ratio_same_blocks"]])
    else:
        fig["error"] = f"iteration_vs_forward_backward returned no ratio: keys {sorted(out)}"
    return [fig]


def repair_precision_figures(quick: bool = False) -> list[dict]:
    """The demo repair in bf16 (autocast) against fp32 on this CPU: the same fidelity bars, wall time."""
    import tempfile
    from pathlib import Path

    from sinder.demo import load_demo
    from sinder.device import resolve
    from sinder.images import demo_images_dir, list_images, split_images
    from sinder.repair import RepairOptions, run_repair

    opts = RepairOptions(resolution=224, **({"max_iterations": 60} if quick else {}))
    train, held = split_images(list_images(demo_images_dir()), opts.held_out_fraction, seed=opts.seed)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        for precision in ("fp32", "bf16"):
            _, rep = run_repair(load_demo(0), train, held, Path(tmp) / precision / "m.pth", opts, progress=False,
                                resume="never", compute=resolve("cpu", precision))
            rows[precision] = {"precision": precision, "seconds": rep["train_seconds"],
                               "iterations": rep["iterations"], "images_per_s": rep["throughput"]["images_per_s"],
                               "held_out_defect_fraction": rep["after"]["defect_fraction"],
                               "held_out_high_norm_fraction": rep["after"]["high_norm_fraction"],
                               "defect_fraction_before": rep["before"]["defect_fraction"],
                               "patch_cosine": rep["fidelity"]["patch_cosine"], "cls_cosine": rep["fidelity"]["cls_cosine"]}
    a, b = rows["bf16"], rows["fp32"]
    bars = all(r["held_out_defect_fraction"] == 0 and r["held_out_high_norm_fraction"] == 0
               and r["patch_cosine"] >= 0.999 and r["cls_cosine"] >= 0.999 for r in rows.values())
    return [{
        "section": "Offline tool", "name": "demo repair in bf16 (autocast) vs fp32, wall time",
        "model": "ViT-S/14, the synthetic demo model" + (" (--quick: 60 iterations, fidelity not final)" if quick else ""),
        "resolution": "224x224", "a_label": "bf16 training seconds", "b_label": "fp32 training seconds", "unit": "s",
        "a": summary([a["seconds"]]), "b": summary([b["seconds"]]), "ratio": summary([a["seconds"] / b["seconds"]]),
        "ratio_label": "bf16 / fp32 wall time", "table": [b, a],
        "details": {"both_meet_the_bars": bars,
                    "bars": "held-out defect and high-norm fractions 0, patch and CLS cosine >= 0.999"},
    }]


PROBE = """
import json, sys
import torch
from sinder.device import resolve
from sinder.model import get_arch
from sinder.repair.bench import measure_iteration
print(json.dumps(measure_iteration(get_arch(sys.argv[1]), int(sys.argv[2]), compute=resolve("cpu", sys.argv[3]))))
"""


def repair_memory_figures(arch: str = "vitl14", resolution: int = 518, precision: str = "fp32") -> list[dict]:
    """One repair iteration of ``arch`` (random weights) on this CPU: measured memory against --dry-run's estimate."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "MALLOC_ARENA_MAX": "1"}
    done = subprocess.run([sys.executable, "-c", PROBE, arch, str(resolution), precision], capture_output=True,
                          text=True, env=env, timeout=1800)
    if done.returncode != 0:
        return [{"section": "Offline tool", "name": f"repair iteration memory, {arch} {resolution} px",
                 "error": (done.stderr.strip().splitlines() or ["failed"])[-1][:300]}]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    g = 2**30
    return [{
        "section": "Offline tool", "name": f"one repair iteration, {arch} at {resolution} px: memory vs --dry-run",
        "model": f"{arch} shape, random weights (synthetic), {precision}, full window of {r['window_blocks']} blocks",
        "resolution": f"{resolution}x{resolution}", "a_label": "measured rise (GiB)", "b_label": "estimated rise (GiB)",
        "a": summary([r["measured_rise_bytes"] / g]), "b": summary([r["estimated_rise_bytes"] / g]),
        "ratio": summary([r["estimated_rise_bytes"] / r["measured_rise_bytes"]]), "ratio_label": "estimate / measured",
        "details": {"iteration_s": r["iteration_s"], "first_iteration_s (with the SVDs)": r["first_iteration_s"],
                    "estimated_peak_GiB (whole process)": r["estimated_peak_bytes"] / g,
                    "TFLOP_per_iteration": r["flops_per_iteration"] / 1e12},
    }]


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
