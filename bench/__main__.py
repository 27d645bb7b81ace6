"""`python -m bench`: every benchmark of the project in one run; rewrites docs/benchmarks.md.

    python -m bench            # full run, about 15 min on a small machine
    python -m bench --quick    # smoke run: one repeat, short phases (figures are rough)
    python -m bench --only repair --keep   # rerun one section, keep the others' last figures

Run it on an otherwise idle machine: the figures are ratios measured side by side, but the
load generator, the service and the raw session share the CPU.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import machine, report

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("export", "runtime", "service", "frontend", "analysis", "repair")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: one repeat and short phases")
    p.add_argument("--repeats", type=int, help="repeats of each comparison (default 3, 1 with --quick)")
    p.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md", help="report to rewrite")
    p.add_argument("--json", type=Path, help="raw figures as JSON (default: beside --out, .json)")
    p.add_argument("--keep", action="store_true", help="with --only: keep the other sections' figures from the "
                   "existing --json, each marked with the run it came from")
    p.add_argument("--arch", default="vits14", choices=("vits14", "vitb14"), help="shape of the bench model")
    p.add_argument("--resolution", type=int, default=224, help="square input side, a multiple of 14")
    p.add_argument("--max-batch-size", type=int, help="service max_batch_size and raw batch (default 8, 4 with --quick)")
    p.add_argument("--queue-delay-ms", type=float, default=5.0, help="service max_queue_delay")
    p.add_argument("--model-repo", type=Path, help="bench this repository's --model (e.g. the demo repo of `sinder build "
                   "--demo`) instead of the bench's own model; its shape comes from the manifest")
    p.add_argument("--model", help="model name inside --model-repo (default: the first model folder)")
    p.add_argument("--graph", choices=("sinder", "synthetic"), default="sinder",
                   help="bench model: exported by sinder.export (default) or built by bench/onnx_vit.py (no torch)")
    args = p.parse_args(argv)
    if args.resolution % 14 or args.resolution < 56:
        p.error("--resolution must be a multiple of 14, at least 56")
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.max_batch_size = args.max_batch_size or (4 if args.quick else 8)
    args.json = args.json or args.out.with_suffix(".json")
    return args


def build_bench_repo(repo: Path, arch: str, max_batch_size: int, resolution: int, graph: str) -> tuple[str, str]:
    """A model repository with one model of the bench shape; returns (name, description).

    ``graph`` "sinder": the product's own graph, exported by sinder.export.export_model from the
    demo model (ViT-S/14) or a randomly initialised DINOv2 of ``arch``; "synthetic": the graph
    of bench/onnx_vit.py (no torch needed). Both carry synthetic weights.
    """
    label = {"vits14": "ViT-S/14", "vitb14": "ViT-B/14"}[arch]
    name = f"bench_{arch}"
    if graph == "sinder":
        import torch

        from sinder.export import export_model
        from sinder.export.manifest import Resolution

        if arch == "vits14":
            from sinder.demo import load_demo

            loaded = load_demo(seed=0)
            source = "the synthetic demo model"
        else:
            from sinder.model import LoadedModel, build_model, get_arch

            torch.manual_seed(0)
            cfg = get_arch(arch)
            loaded = LoadedModel(build_model(cfg), cfg, f"random:{arch}", "demo", "0" * 64, synthetic=True)
            source = "random weights (synthetic)"
        log(f"exporting {label} ({source}) with sinder.export.export_model")
        export_model(loaded, repo, name, max_batch_size=max_batch_size, resolution=Resolution(short_side=resolution),
                     parity_cases=[(1, resolution, resolution)], progress=False)
        return name, f"{label}, fp32, exported by sinder.export from {source}"
    from .onnx_vit import write_model

    # short_side = the bench resolution: the service's default resize then leaves the images as they are
    write_model(repo, name, arch, "fp32", seed=0, max_batch_size=max_batch_size, short_side=resolution)
    return name, f"{label} shape, fp32, bench/onnx_vit.py graph, synthetic random weights"


def use_existing_repo(repo: Path, name: str | None) -> tuple[str, str, str]:
    """(name, description, arch) of a model of an existing repository, from its manifest."""
    from contract import layout
    from contract.manifest import read_manifest

    names = [p.name for p in layout.model_folders(repo) if layout.versions(p)] if repo.is_dir() else []
    if not names:
        raise SystemExit(f"python -m bench: {repo} holds no model folder")
    name = name or names[0]
    if name not in names:
        raise SystemExit(f"python -m bench: no model {name!r} in {repo}; has {', '.join(names)}")
    manifest = read_manifest(layout.version_dir(repo, name, layout.versions(repo / name)[-1]) / layout.MANIFEST_FILE)
    arch = manifest.architecture.arch.removesuffix("_reg")
    synthetic = "synthetic weights" if manifest.synthetic else "real weights"
    return name, f"{name} ({arch}, {manifest.precision}, {synthetic})", arch


def latest_model_file(repo: Path, name: str) -> Path:
    from contract import layout

    return layout.version_dir(repo, name, layout.versions(repo / name)[-1]) / layout.MODEL_FILE


def export_figures(repeats: int, quick: bool) -> list[dict]:
    """bench/export_bench.py's PyTorch eager vs onnxruntime (and int8) comparison, as figures."""
    import inspect

    try:
        from .export_bench import run as export_run
    except ImportError as exc:
        return [{"section": "Export", "name": "PyTorch eager vs onnxruntime", "error": f"bench/export_bench.py unavailable: {exc}"}]
    kwargs = {"seconds": 1.0} if quick and "seconds" in inspect.signature(export_run).parameters else {}
    out = export_run(repeats, **kwargs)
    figs = out.get("figures") if isinstance(out, dict) else out
    if isinstance(figs, list) and all(isinstance(f, dict) and "name" in f for f in figs):
        return [{"section": "Export", **f} for f in figs]
    return [{"section": "Export", "name": "PyTorch eager vs onnxruntime", "details": {k: v for k, v in out.items()},
             "note": "export_bench.run returned no figure list; its raw result is shown."}]


def main(argv=None) -> int:
    args = parse_args(argv)
    sections = args.only or SECTIONS
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    t_start = time.perf_counter()
    info = machine.describe()
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    log(f"bench: {info['cpu']}, {info['usable_cores']} cores; sections {', '.join(sections)}; repeats {args.repeats}")
    figures: list[dict] = []
    notes: list[str] = []
    if info.get("load_avg_1m_at_start") and info["load_avg_1m_at_start"] > 0.5 * (info["usable_cores"] or 1):
        notes.append(f"The machine was busy at start (load {info['load_avg_1m_at_start']:.1f} on "
                     f"{info['usable_cores']} cores): treat the figures as rough.")
    phase = 3.0 if args.quick else 10.0

    def attempt(key: str, section: str, name: str, fn):
        """Run one benchmark of the ``--only`` section ``key`` (report heading ``section``)."""
        log(f"[{section}] {name}")
        try:
            figures.extend({**f, "bench_section": key} for f in fn())
        except Exception as exc:  # one broken benchmark must not lose the others' figures
            traceback.print_exc()
            figures.append({"section": section, "name": name, "bench_section": key,
                            "error": f"{type(exc).__name__}: {exc}".splitlines()[0]})

    with tempfile.TemporaryDirectory(prefix="sinder-bench-") as tmp:
        if args.model_repo:
            repo = args.model_repo
            model_name, model_desc, args.arch = use_existing_repo(repo, args.model)
        elif {"runtime", "service"} & set(sections):
            repo = Path(tmp) / "model_repo"
            model_name, model_desc = build_bench_repo(repo, args.arch, args.max_batch_size, args.resolution, args.graph)
        if {"runtime", "service"} & set(sections):
            model_path = latest_model_file(repo, model_name)
        if "export" in sections:
            attempt("export", "Export", "PyTorch eager vs onnxruntime", lambda: export_figures(args.repeats, args.quick))
        if "runtime" in sections:
            from . import runtime_bench

            attempt("runtime", "Runtime", "onnxruntime vs numpy matmul", lambda: runtime_bench.run(
                model_path, args.arch, args.resolution, args.max_batch_size, model_desc,
                repeats=args.repeats, seconds=2.0 if args.quick else 5.0))
        if "service" in sections:
            from . import service_bench
            from .onnx_vit import SHAPES

            attempt("service", "Service", "service vs raw session", lambda: service_bench.run(
                repo, model_name, model_desc, args.resolution, args.max_batch_size, SHAPES[args.arch].embed_dim,
                repeats=args.repeats, phase_seconds=phase, latency_requests=50 if args.quick else 200,
                queue_delay_ms=args.queue_delay_ms, log_dir=Path(tmp), progress=log))
        if "frontend" in sections:
            from . import frontend_bench

            front_repo = Path(tmp) / "frontend_repo"
            front_seconds = 2.0 if args.quick else 6.0
            attempt("frontend", "Front end", "JPEG draft decoding", lambda: frontend_bench.draft_figures(args.repeats))
            attempt("frontend", "Front end", "service CPU per image", lambda: frontend_bench.run(
                front_repo, repeats=args.repeats, seconds=front_seconds, log_dir=Path(tmp), progress=log))
            cores = info["usable_cores"] or 1
            if cores > 1:
                attempt("frontend", "Front end", "workers", lambda: frontend_bench.workers_figure(
                    front_repo, cores, repeats=args.repeats, seconds=front_seconds, log_dir=Path(tmp), progress=log))
        if "analysis" in sections:
            from . import analysis_bench

            archs = ("vits14",) if args.quick else ("vits14", "vitb14")
            attempt("analysis", "Offline tool", "defect directions", lambda: analysis_bench.analysis_figures(args.repeats, archs))
        if "repair" in sections:
            from . import analysis_bench

            attempt("repair", "Offline tool", "repair iteration", lambda: analysis_bench.repair_figures(args.resolution))
            attempt("repair", "Offline tool", "repair precision", lambda: analysis_bench.repair_precision_figures(args.quick))
            attempt("repair", "Offline tool", "repair memory", lambda: analysis_bench.repair_memory_figures(
                "vits14" if args.quick else "vitl14", 224 if args.quick else 518))

    if args.keep and args.only:
        kept, note = report.kept_figures(args.json, set(SECTIONS) - set(sections))
        figures.extend(kept)
        notes.extend([note] if note else [])
        order = {s: i for i, s in enumerate(SECTIONS)}
        figures.sort(key=lambda f: order.get(f.get("bench_section"), len(order)))  # stable: in-section order kept
    seconds = time.perf_counter() - t_start
    if args.quick:
        notes.append("--quick run: one repeat and short phases; a smoke test of the harness, not figures to quote.")
    text = report.render(info, command.strip(), figures, started, seconds, notes)
    # the GPU figures come from another machine (bench/gpu_check.py): keep the last ones
    gpu_json = args.out.with_name("gpu_check.json")
    gpu = None
    if gpu_json.exists():
        import json

        try:
            gpu = json.loads(gpu_json.read_text())
        except ValueError:
            log(f"bench: {gpu_json} is not valid JSON; leaving the GPU section empty")
    text = report.replace_gpu_section(text, report.render_gpu_section(gpu))
    report.write(args.out, text)
    report.write_json(args.json, {"machine": info, "command": command.strip(), "started": started,
                                  "seconds": seconds, "figures": figures, "notes": notes})
    failed = [f for f in figures if report.verdict(f) == "FAIL"]
    errors = [f for f in figures if f.get("error")]
    log(f"bench: wrote {args.out} and {args.json} in {seconds / 60:.1f} min; "
        f"{len(figures)} figures, {len(failed)} below target, {len(errors)} not measured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
