"""The offline tool on the GPU (part of ``python -m bench.gpu_check``): ViT-L/14 and ViT-g/14 shapes
with random weights at 518 px, in bf16 and fp32.

Per shape: the time of the defect directions of every layer (``sinder directions``), and per
precision one repair iteration with a full window of 10 blocks (the second of two; the first
also factorises the window's weights), its CUDA peak memory beside the ``--dry-run`` estimate,
and the projected wall time of the paper's run: 30 000 images, one epoch, one image per
iteration, every iteration taken at this cost (an upper bound: a clean image costs a forward
pass only). Goal for ViT-g on one H100/H200: at most one hour (the paper: about 6 V100-hours).

Needs torch with CUDA; without it, it says so in one line and measures nothing (``--cpu-smoke``
runs the same code on the CPU with a tiny shape).
"""

from __future__ import annotations

import time

PAPER_IMAGES = 30_000
GOAL_HOURS = {"vitg14": 1.0}
SHAPES = ("vitl14", "vitg14")


def _smoke_arch():
    from sinder.model import ArchConfig

    return ArchConfig("tiny_smoke", embed_dim=64, depth=3, num_heads=2)


def tool_check(smoke: bool, log, budget_left) -> dict:
    """Figures of the offline tool on ``cuda`` (or the CPU with ``smoke``); errors are recorded, not raised."""
    try:
        import torch
    except ImportError as exc:
        return {"error": f"torch is not installed ({exc}): install the tool with a CUDA build of torch (README)"}
    out: dict = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "rows": [], "errors": {}}
    if not smoke and not torch.cuda.is_available():
        why = "torch was built without CUDA" if torch.version.cuda is None else "torch sees no CUDA device"
        out["error"] = f"the tool's GPU figures need CUDA: {why} (torch {torch.__version__}); nothing measured"
        return out
    from sinder.defects.directions import predict_directions
    from sinder.device import resolve
    from sinder.model import build_model, get_arch
    from sinder.repair.bench import measure_iteration

    device = "cpu" if smoke else "cuda"
    resolution = 56 if smoke else 518
    shapes = {"tiny_smoke": _smoke_arch()} if smoke else {a: get_arch(a) for a in SHAPES}
    for name, cfg in shapes.items():
        if budget_left() <= 0:
            out["errors"][name] = "skipped: over the time budget"
            continue
        try:
            log(f"tool: directions {name}")
            model = build_model(cfg).to(device)
            start = time.perf_counter()
            predict_directions(model)
            out.setdefault("directions_s", {})[name] = time.perf_counter() - start
            del model
        except Exception as exc:  # noqa: BLE001 - one shape's failure must not hide the others
            out["errors"][f"directions {name}"] = f"{type(exc).__name__}: {exc}"[:300]
        for precision in ("bf16", "fp32"):
            if budget_left() <= 0:
                out["errors"][f"{name} {precision}"] = "skipped: over the time budget"
                continue
            try:
                log(f"tool: repair iteration {name} {precision}")
                compute = resolve(device, precision, "repair")
                r = measure_iteration(cfg, resolution, limit_layers=10, compute=compute)
                hours = PAPER_IMAGES * r["iteration_s"] / 3600
                row = {"arch": name, "precision": precision, "resolution": r["resolution"],
                       "iteration_s": r["iteration_s"], "first_iteration_s": r["first_iteration_s"],
                       "peak_memory_gib": r["measured_rise_bytes"] / 2**30,
                       "estimated_gib": r["estimated_rise_bytes"] / 2**30,
                       "images_per_s": 1 / r["iteration_s"], "projected_paper_run_hours": hours}
                if name in GOAL_HOURS:
                    row["goal_hours"] = GOAL_HOURS[name]
                    row["pass"] = hours <= GOAL_HOURS[name]
                out["rows"].append(row)
            except Exception as exc:  # noqa: BLE001 - an out-of-memory fp32 run must not hide bf16
                out["errors"][f"{name} {precision}"] = f"{type(exc).__name__}: {exc}"[:300]
            finally:
                if not smoke:
                    torch.cuda.empty_cache()
    return out


def render(tool: dict | None) -> list[str]:
    """Markdown lines of the tool's figures for the GPU section of docs/benchmarks.md."""
    if not tool:
        return []
    lines = ["", "### The offline tool on the GPU (random weights, synthetic)", ""]
    if tool.get("error"):
        return lines + [f"Not measured: {tool['error']}"]
    dirs = tool.get("directions_s") or {}
    if dirs:
        lines.append("- defect directions of every layer: " + ", ".join(f"{k} {v:.2f} s" for k, v in dirs.items()))
    rows = tool.get("rows") or []
    if rows:
        lines += ["", "| model | precision | iteration s | peak GiB (estimate) | images/s | 30k images, one epoch | goal |",
                  "|---|---|---|---|---|---|---|"]
        for r in rows:
            goal = f"<= {r['goal_hours']:g} h: {'pass' if r['pass'] else 'FAIL'}" if "goal_hours" in r else "—"
            lines.append(f"| {r['arch']} {r['resolution']} px | {r['precision']} | {r['iteration_s']:.3f} | "
                         f"{r['peak_memory_gib']:.1f} ({r['estimated_gib']:.1f}) | {r['images_per_s']:.1f} | "
                         f"{r['projected_paper_run_hours']:.2f} h | {goal} |")
    for name, err in (tool.get("errors") or {}).items():
        lines.append(f"- not measured: {name}: {err}")
    return lines
