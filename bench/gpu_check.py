"""The GPU check: one script for a machine with an NVIDIA GPU; under 5 minutes; writes a JSON.

    python -m bench.gpu_check --out docs/gpu_check.json --report docs/benchmarks.md   # on the GPU machine
    python -m bench.gpu_check --cpu-smoke --out smoke.json  # anywhere: the same code paths on CPU, tiny sizes

It measures, on DINOv2-shaped graphs with seeded random weights (bench/onnx_vit.py, synthetic):
1. that the CUDA execution provider really runs the session (``session.get_providers()``,
   not the list of providers the wheel was built with);
2. GPU vs CPU parity: fp32 max |difference| (target <= 1e-3, TF32 off; with TF32 on as
   information) and fp16-on-GPU vs fp32-on-CPU mean cosine of the patch tokens (target >= 0.999);
3. raw session throughput for ViT-S/14 and ViT-B/14 at 224x224, batch 1, 32 and 128, fp32
   and fp16, with I/O binding (the uint8 batch already on the device, outputs left there);
   targets on an H100, fp16, batch 128: ViT-S/14 >= 5000 images/s, ViT-B/14 >= 2500 images/s;
4. the service end to end on the GPU (bench/gpu_service.py): ViT-S/14 and ViT-B/14 at 224 in fp16,
   SINDER_WORKERS 1 and a larger count, v2 binary with raw pixels and with JPEGs, and JSON
   /features with JPEGs, each as a fraction of the raw session at batch 128 in the same run
   (target >= 0.8 for raw pixels over v2 with the better worker count);
5. the offline tool (bench/gpu_tool.py, needs torch with CUDA; skipped with a one-line reason
   otherwise): ViT-L/14 and ViT-g/14 at 518 px, directions time, one repair iteration's time and
   peak memory in bf16 and fp32, and the projected wall time of the paper's run.

Steps 1-4 need onnxruntime-gpu, onnx, numpy, pillow, httpx and the service's dependencies, no
torch; step 5 needs the tool installed with a CUDA build of torch (README).
The README's "GPU check" section says which wheels to carry to a machine without a registry.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file from anywhere: `python bench/gpu_check.py`
    sys.path.insert(0, str(ROOT))

from bench.onnx_vit import SHAPES, Shape, build_vit_onnx, write_model  # noqa: E402

TARGETS = {
    "parity_fp32_max_abs": 1e-3,
    "parity_fp16_mean_cosine": 0.999,
    "throughput_fp16_b128_images_per_s": {"vits14": 5000.0, "vitb14": 2500.0},  # H100
    "service_vs_raw": 0.8,
}


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def nvidia_lib_dirs() -> list[str]:
    """Library folders of the nvidia-* wheels (cuDNN, cuBLAS, CUDA runtime) in site-packages."""
    dirs = set()
    for base in sys.path:
        for lib in glob.glob(os.path.join(base, "nvidia", "**", "lib"), recursive=True):
            if glob.glob(os.path.join(lib, "*.so*")):
                dirs.add(lib)
    return sorted(dirs)


def preload_cuda(ort) -> str:
    """Load CUDA and cuDNN from the nvidia-* wheels when they are installed (onnxruntime >= 1.21)."""
    if not hasattr(ort, "preload_dlls"):
        return "onnxruntime has no preload_dlls"
    try:
        ort.preload_dlls()
        return "preload_dlls ok"
    except Exception as exc:  # a system CUDA may still work; the session says what runs
        return f"preload_dlls failed: {exc}"


def session(ort, model_bytes: bytes, provider: str, tf32: bool = True):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if provider == "cuda":
        providers = [("CUDAExecutionProvider", {"device_id": 0, "use_tf32": int(tf32)}), "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    return ort.InferenceSession(model_bytes, opts, providers=providers)


def images(batch: int, resolution: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, resolution, resolution, 3), dtype=np.uint8)


def run_outputs(sess, x: np.ndarray) -> dict[str, np.ndarray]:
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": x})))


def parity(ort, provider: str, shape: Shape, resolution: int, batch: int) -> dict:
    m32, _ = build_vit_onnx(shape, "fp32", seed=0)
    m16, _ = build_vit_onnx(shape, "fp16", seed=0)
    b32, b16 = m32.SerializeToString(), m16.SerializeToString()
    x = images(batch, resolution, seed=1)
    ref = run_outputs(session(ort, b32, "cpu"), x)
    out: dict = {"model": f"{shape.name} shape, synthetic weights", "resolution": resolution, "batch": batch}
    for label, tf32 in (("tf32_off", False), ("tf32_on", True)):
        got = run_outputs(session(ort, b32, provider, tf32=tf32), x)
        out[f"fp32_max_abs_{label}"] = {k: float(np.abs(got[k].astype(np.float64) - ref[k]).max())
                                         for k in ("cls_token", "patch_tokens", "token_norms")}
        out[f"fp32_mask_agreement_{label}"] = float((got["defect_mask"] == ref["defect_mask"]).mean())
    got16 = run_outputs(session(ort, b16, provider), x)
    a = ref["patch_tokens"].reshape(-1, shape.embed_dim).astype(np.float64)
    b = got16["patch_tokens"].reshape(-1, shape.embed_dim).astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)
    out["fp16_patch_cosine_mean"] = float(cos.mean())
    out["fp16_patch_cosine_min"] = float(cos.min())
    out["fp16_max_abs"] = float(np.abs(a - b).max())
    worst32 = max(out["fp32_max_abs_tf32_off"].values())
    out["pass_fp32"] = worst32 <= TARGETS["parity_fp32_max_abs"]
    out["pass_fp16"] = out["fp16_patch_cosine_mean"] >= TARGETS["parity_fp16_mean_cosine"]
    return out


def throughput(ort, sess, provider: str, batch: int, resolution: int, seconds: float) -> dict:
    """Images/s of run_with_iobinding with the input already on the device."""
    device = "cuda" if provider == "cuda" else "cpu"
    x = ort.OrtValue.ortvalue_from_numpy(images(batch, resolution), device, 0)
    binding = sess.io_binding()
    binding.bind_ortvalue_input("images", x)
    for o in sess.get_outputs():
        binding.bind_output(o.name, device, 0)
    for _ in range(3):
        sess.run_with_iobinding(binding)
    n, start = 0, time.perf_counter()
    lat = []
    while True:
        t0 = time.perf_counter()
        sess.run_with_iobinding(binding)  # synchronises the stream at the end of the run
        lat.append(time.perf_counter() - t0)
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= 3:
            break
    return {"images_per_s": n * batch / elapsed, "runs": n, "ms_per_batch_median": float(np.median(lat) * 1000)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="JSON of the figures")
    p.add_argument("--cpu-smoke", action="store_true", help="run every step on the CPU provider with tiny sizes")
    p.add_argument("--seconds", type=float, help="time per throughput measurement (default 2, 0.3 for the smoke)")
    p.add_argument("--service-seconds", type=float, help="time of the service load (default 20, 3 for the smoke)")
    p.add_argument("--skip-service", action="store_true")
    p.add_argument("--skip-tool", action="store_true", help="leave out the offline tool's figures (step 5)")
    p.add_argument("--only-tool", action="store_true", help="only the offline tool's figures (no onnxruntime needed)")
    p.add_argument("--budget", type=float, default=280.0, help="stop starting new measurements after this many seconds")
    p.add_argument("--report", type=Path, help="also rewrite the GPU section of this markdown file (docs/benchmarks.md)")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    smoke = args.cpu_smoke
    from bench import machine

    if args.only_tool:
        result = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "smoke": smoke,
                  "synthetic_weights": True, "machine": machine.describe(), "errors": {}}
        result["tool"] = _tool(smoke, t0, args.budget)
        _write(args.out, result, t0)
        _report(args, result)
        return 0 if not result["tool"].get("error") else 1
    import onnxruntime as ort

    result: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "smoke": smoke,
                    "synthetic_weights": True, "machine": machine.describe(), "onnxruntime": ort.__version__,
                    "available_providers": ort.get_available_providers(), "targets": TARGETS, "errors": {}}
    try:
        from onnxruntime.capi import build_and_package_info as info

        result["onnxruntime_build"] = {k: getattr(info, k) for k in ("package_name", "cuda_version", "cudnn_version") if hasattr(info, k)}
    except ImportError:
        pass
    provider = "cpu" if smoke else "cuda"
    if not smoke:
        result["preload"] = preload_cuda(ort)
        result["nvidia_wheel_lib_dirs"] = nvidia_lib_dirs()

    if smoke:
        shapes = {"vits14": Shape("vits14_smoke", 384, 2, 6), "vitb14": Shape("vitb14_smoke", 768, 1, 12)}
        batches, resolution, parity_res = (1, 4), 112, 112
    else:
        shapes = {"vits14": SHAPES["vits14"], "vitb14": SHAPES["vitb14"]}
        batches, resolution, parity_res = (1, 32, 128), 224, 224
    seconds = args.seconds or (0.3 if smoke else 2.0)

    def over_budget() -> bool:
        return time.perf_counter() - t0 > args.budget

    def step(name, fn):
        if over_budget():
            result["errors"][name] = f"skipped: over the {args.budget:.0f} s budget"
            return None
        log(name)
        try:
            return fn()
        except Exception as exc:
            traceback.print_exc()
            result["errors"][name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            return None

    # 1. the provider the session really uses
    def provider_check():
        m, _ = build_vit_onnx(shapes["vits14"], "fp32", seed=0)
        s = session(ort, m.SerializeToString(), provider)
        used = s.get_providers()
        return {"session_providers": used, "cuda_active": used[0] == "CUDAExecutionProvider"}

    result["provider"] = step("provider", provider_check)
    cuda_active = bool(result["provider"] and result["provider"]["cuda_active"])
    if not smoke and not cuda_active:
        log("CUDA execution provider is NOT active: figures below would be CPU figures; stopping")
        result["errors"]["cuda"] = "CUDAExecutionProvider not active (see available_providers and preload)"
        if not args.skip_tool:  # torch's CUDA may work where onnxruntime's does not
            result["tool"] = _tool(smoke, t0, args.budget + 600)
        _write(args.out, result, t0)
        _report(args, result)
        return 1

    # 2. parity
    result["parity"] = step("parity", lambda: parity(ort, provider, shapes["vits14"], parity_res, 4))

    # 3. raw throughput
    table = []
    for arch, shape in shapes.items():
        for precision in ("fp32", "fp16"):
            def build(shape=shape, precision=precision):
                m, _ = build_vit_onnx(shape, precision, seed=0)
                return session(ort, m.SerializeToString(), provider)

            sess = step(f"session {arch} {precision}", build)
            if sess is None:
                continue
            for batch in batches:
                r = step(f"throughput {arch} {precision} batch {batch}",
                         lambda: throughput(ort, sess, provider, batch, resolution, seconds))
                if r:
                    row = {"arch": arch, "precision": precision, "batch": batch, "resolution": resolution, **r}
                    target = TARGETS["throughput_fp16_b128_images_per_s"].get(arch)
                    if precision == "fp16" and batch == 128 and target:
                        row["target_images_per_s"] = target
                        row["pass"] = r["images_per_s"] >= target
                    table.append(row)
            del sess
    result["throughput"] = table

    # 4. the service end to end: v2 binary (pixels, JPEG) and JSON /features, workers 1 and more
    if not args.skip_service:
        from bench import gpu_service

        raw_batch = max(batches)
        raw = {r["arch"]: r["images_per_s"] for r in table if r["precision"] == "fp16" and r["batch"] == raw_batch}
        cores = os.cpu_count() or 2
        counts = [1, 2] if smoke else [1, max(2, min(8, cores // 2))]
        libs = nvidia_lib_dirs()
        env_extra = {}
        if libs:  # the service does not call preload_dlls: let the loader find the wheels' libraries
            env_extra["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [os.environ.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
        rows = []
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            for arch, shape in shapes.items():
                got = step(f"service end to end {arch}", lambda shape=shape: gpu_service.run(
                    shape, {k.split("_")[0]: v for k, v in raw.items()}, tmp=Path(tmp), provider=provider,
                    env_extra=env_extra, worker_counts=counts, batch=raw_batch, resolution=resolution,
                    seconds=args.service_seconds or (2.0 if smoke else 8.0), log=log, over_budget=over_budget))
                rows += got or []
            if any(k.startswith("service end to end") for k in result["errors"]):
                result["service_log_tails"] = {p.name: p.read_text(errors="replace").splitlines()[-30:]
                                               for p in Path(tmp).glob("service-*.log")}
        pixels = [r["ratio_vs_raw"] for r in rows if r.get("path") == "v2 binary, raw pixels" and r.get("ratio_vs_raw")]
        result["service"] = {"raw_batch": raw_batch, "worker_counts": counts, "rows": rows,
                             "best_pixels_ratio": max(pixels) if pixels else None,
                             "pass": bool(pixels) and min(
                                 max(r["ratio_vs_raw"] for r in rows if r.get("arch") == a and r.get("path") == "v2 binary, raw pixels"
                                     and r.get("ratio_vs_raw")) for a in {r["arch"] for r in rows if r.get("ratio_vs_raw")}
                             ) >= TARGETS["service_vs_raw"]}

    if not args.skip_tool:  # torch's CUDA, independent of onnxruntime's
        result["tool"] = _tool(smoke, t0, args.budget + 600)
    _write(args.out, result, t0)
    _report(args, result)
    checks = {
        "cuda_active": cuda_active,
        "parity_fp32": bool(result.get("parity") and result["parity"]["pass_fp32"]),
        "parity_fp16": bool(result.get("parity") and result["parity"]["pass_fp16"]),
        "throughput_targets": all(r.get("pass", True) for r in table) if table else False,
        "service_vs_raw": bool(result.get("service") and result["service"].get("pass")),
    }
    log("checks: " + ", ".join(f"{k}={'ok' if v else 'NO'}" for k, v in checks.items()))
    return 0


def _tool(smoke: bool, t0: float, budget: float) -> dict:
    from bench.gpu_tool import tool_check

    out = tool_check(smoke, log, lambda: budget - (time.perf_counter() - t0))
    if out.get("error"):
        log(out["error"])
    return out


def _report(args, result: dict) -> None:
    if not args.report:
        return
    from bench import report

    text = args.report.read_text() if args.report.exists() else "# Benchmarks\n"
    report.write(args.report, report.replace_gpu_section(text, report.render_gpu_section(result)))
    log(f"updated the GPU section of {args.report}")


def _write(path: Path, result: dict, t0: float) -> None:
    result["seconds"] = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    os.replace(tmp, path)  # a reader sees the old JSON or the new one, never half
    log(f"wrote {path} after {result['seconds']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
