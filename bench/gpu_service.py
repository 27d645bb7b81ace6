"""The service end to end on the GPU, for bench/gpu_check.py: each path as a fraction of the raw session.

For ViT-S/14 and ViT-B/14 at 224 in fp16 (bench/onnx_vit.py graphs, synthetic weights), with
SINDER_WORKERS = 1 and a larger count, clients in several processes (bench/rawload.py) send
8 images per request by three paths, each asking for fp16 patch tokens:

- v2 binary, raw pixels (UINT8 [8, 224, 224, 3]): no decoding at all;
- v2 binary, JPEGs at 224 (BYTES): decoded in the service, no resizing;
- JSON ``POST /features``, the same JPEGs in base64, fp16 base64 tokens back.

Each figure is images/s of the service over images/s of the bare session at batch 128 in the
same run (the GPU check's throughput table), with the service's mean batch size from /metrics.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from .frontend_bench import Scenario, request_for
from .onnx_vit import write_model

PATHS = (
    Scenario("v2 binary, raw pixels", "v2-pixels", 8, (224, 224)),
    Scenario("v2 binary, JPEG", "v2-bytes", 8, (224, 224)),
    Scenario("JSON /features, JPEG", "features", 8, (224, 224)),
)


def _batch_mean(url: str, model: str) -> float | None:
    import httpx

    from .service_bench import histogram_sum_count

    s, c = histogram_sum_count(httpx.get(f"{url}/metrics", timeout=10).text, "batch_size", model)
    return s / c if c else None


def run(shape, raw_b128: dict[str, float], *, tmp: Path, provider: str, env_extra: dict, worker_counts: list[int],
        seconds: float, batch: int = 128, resolution: int = 224, paths=PATHS, log=print,
        over_budget=lambda: False) -> list[dict]:
    """One row per (workers, path) for ``shape``; ``raw_b128`` maps arch -> raw images/s at ``batch``."""
    from . import rawload
    from .server import ServiceProcess

    repo = tmp / f"repo_{shape.name}"
    name = f"gpu_{shape.name}_fp16"
    write_model(repo, name, shape, "fp16", seed=0, max_batch_size=batch, short_side=resolution)
    cores = os.cpu_count() or 2
    rows = []
    for workers in worker_counts:
        if over_budget():
            rows.append({"arch": shape.name, "workers": workers, "error": "skipped: over the time budget"})
            continue
        env = {"SINDER_PROVIDERS": provider, "SINDER_REQUIRE_GPU": str(provider == "cuda").lower(),
               "SINDER_MAX_BATCH_SIZE": batch, "SINDER_MAX_QUEUE_DELAY_MS": 2, "SINDER_QUEUE_SIZE": 8 * batch,
               "SINDER_MAX_INFLIGHT_REQUESTS": 4096, "SINDER_WORKERS": workers, "SINDER_MODELS": name,
               "SINDER_DEFAULT_MODEL": name, "SINDER_LOG_LEVEL": "warning", **env_extra}
        log(f"service {shape.name} fp16, workers={workers}")
        with ServiceProcess(repo, env=env, log_path=tmp / f"service-{shape.name}-{workers}.log") as svc:
            for path in paths:
                path = dataclasses.replace(path, size=(resolution, resolution))
                url, body, headers = request_for(path, svc.url, model=name)
                processes = max(1, min(8, cores // 2))
                connections = max(2, (2 * batch * max(1, workers)) // path.images // processes)
                rawload.run_processes(url, body, processes=processes, connections=connections, seconds=1.0,
                                      headers=headers)  # warm-up
                before = _batch_mean(svc.url, name)
                t0 = time.perf_counter()
                res = rawload.run_processes(url, body, processes=processes, connections=connections, seconds=seconds,
                                            headers=headers)
                rate = res.ok * path.images / (res.seconds or (time.perf_counter() - t0))
                raw = raw_b128.get(shape.name.split("_")[0])
                rows.append({"arch": shape.name, "workers": workers, "path": path.label, "images_per_s": rate,
                             "raw_b128_images_per_s": raw, "ratio_vs_raw": rate / raw if raw else None,
                             "statuses": dict(res.statuses), "errors": dict(res.errors),
                             "mean_batch_size_since_start": _batch_mean(svc.url, name), "batch_before": before,
                             "client_processes": processes, "connections_per_process": connections})
    return rows
