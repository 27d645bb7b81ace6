"""The service against the raw onnxruntime session, over loopback, in one run.

Figures: throughput at saturation (service / raw session, same model, resolution and batch),
mean batch size under 4 x max_batch_size concurrent clients (from /metrics), latency at one
client against raw inference + max_queue_delay, and bytes and encode time per encoding.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
from pathlib import Path

import numpy as np

from .loadgen import run_load_sync
from .server import ServiceProcess
from .stats import percentile, ratio_summary, summary


def test_image(resolution: int, seed: int = 0, fmt: str = "JPEG") -> bytes:
    """A photo-like image (smooth shapes plus noise) already at the model's resolution."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:resolution, 0:resolution] / resolution
    base = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in (0.0, 1.0, 2.0)], -1)
    img = ((base * 0.5 + 0.5) * 200 + rng.normal(0, 12, base.shape)).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, quality=90)
    return buf.getvalue()


def request_body(image: bytes, n_images: int = 1, outputs=("cls",), **opts) -> bytes:
    payload = {"images": [base64.b64encode(image).decode()] * n_images, "outputs": list(outputs), **opts}
    return json.dumps(payload).encode()


def scrape(url: str) -> str:
    import httpx

    return httpx.get(f"{url}/metrics", timeout=10).text


def histogram_sum_count(metrics_text: str, name_suffix: str = "batch_size", model: str | None = None) -> tuple[float, float]:
    """Sum and count of a Prometheus histogram whose name ends with ``name_suffix`` (all label sets,
    or only those whose ``model`` label is ``model`` or ``model:<version>``)."""
    total = {"sum": 0.0, "count": 0.0}
    pat = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)_(sum|count)(\{[^}]*\})?\s+([0-9.eE+-]+|NaN)$")
    for line in metrics_text.splitlines():
        m = pat.match(line.strip())
        if not m or not m.group(1).endswith(name_suffix):
            continue
        # the service labels a model "name:version"; accept either form
        if model is not None and not re.search(rf'model="{re.escape(model)}(:\d+)?"', m.group(3) or ""):
            continue
        total[m.group(2)] += float(m.group(4))
    return total["sum"], total["count"]


def raw_session(model_path: Path, intra_op_threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads:
        opts.intra_op_num_threads = intra_op_threads
    return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])


def raw_images_per_s(session, batch: np.ndarray, seconds: float) -> float:
    """Images per second of ``session.run`` on ``batch``, run back to back for about ``seconds``."""
    feed = {session.get_inputs()[0].name: batch}
    session.run(None, feed)
    n, start = 0, time.perf_counter()
    while True:
        session.run(None, feed)
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n * batch.shape[0] / elapsed


def raw_latencies(session, batch: np.ndarray, n: int) -> list[float]:
    feed = {session.get_inputs()[0].name: batch}
    session.run(None, feed)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        session.run(None, feed)
        out.append(time.perf_counter() - t0)
    return out


def decoded_pixels(image: bytes) -> np.ndarray:
    """The pixels the service decodes ``image`` to (the contract's decoding)."""
    from contract.preprocess import decode

    return decode(image)


def run(model_repo: Path, model_name: str, model_desc: str, resolution: int, max_batch_size: int, channels: int, *,
        repeats: int = 3, phase_seconds: float = 10.0, latency_requests: int = 200, queue_delay_ms: float = 5.0,
        log_dir: Path | None = None, progress=print) -> list[dict]:
    """All the service figures, from one service process."""
    from contract import layout

    model_path = layout.version_dir(model_repo, model_name, layout.versions(model_repo / model_name)[-1]) / layout.MODEL_FILE
    where = {"model": model_desc, "resolution": f"{resolution}x{resolution}"}
    image = test_image(resolution)
    pixels = decoded_pixels(image)
    batch = np.ascontiguousarray(np.broadcast_to(pixels, (max_batch_size, *pixels.shape)))
    one = batch[:1].copy()
    session = raw_session(model_path)

    env = {"SINDER_MAX_BATCH_SIZE": max_batch_size, "SINDER_MAX_QUEUE_DELAY_MS": queue_delay_ms,
           "SINDER_QUEUE_SIZE": max(256, 16 * max_batch_size), "SINDER_MAX_INFLIGHT_REQUESTS": max(128, 8 * max_batch_size),
           "SINDER_MODELS": model_name, "SINDER_DEFAULT_MODEL": model_name, "SINDER_PROVIDERS": "cpu",
           "SINDER_LOG_LEVEL": "warning"}
    log_path = (log_dir / "bench-service.log") if log_dir else None
    figures: list[dict] = []
    with ServiceProcess(model_repo, env=env, log_path=log_path) as svc:
        url = f"{svc.url}/features"
        body = request_body(image, 1, outputs=("cls",), model=model_name)
        clients = 4 * max_batch_size
        run_load_sync(url, body, concurrency=clients, max_requests=clients * 4, max_seconds=30)  # warm-up

        svc_rates, raw_rates, batch_means, statuses = [], [], [], {}
        for r in range(repeats):
            progress(f"  saturation {r + 1}/{repeats}: raw session, then the service with {clients} clients")
            raw_rates.append(raw_images_per_s(session, batch, phase_seconds))
            s0, c0 = histogram_sum_count(scrape(svc.url), "batch_size", model_name)
            res = run_load_sync(url, body, concurrency=clients, max_requests=100_000, max_seconds=phase_seconds)
            s1, c1 = histogram_sum_count(scrape(svc.url), "batch_size", model_name)
            svc_rates.append(res.images_per_s)
            batch_means.append((s1 - s0) / (c1 - c0) if c1 > c0 else 0.0)
            for k, v in res.statuses.items():
                statuses[str(k)] = statuses.get(str(k), 0) + v
            for k, v in res.errors.items():
                statuses[k] = statuses.get(k, 0) + v
        figures.append({
            "section": "Service", "name": "throughput at saturation vs the raw session", **where, "batch": max_batch_size,
            "a_label": f"service ({clients} concurrent clients, 1 image per request, outputs cls)",
            "b_label": f"raw onnxruntime session.run at batch {max_batch_size}", "unit": "images/s",
            "a": summary(svc_rates), "b": summary(raw_rates), "ratio": ratio_summary(svc_rates, raw_rates),
            "ratio_label": "service / raw", "target": {"op": ">=", "value": 0.9},
            "details": {"responses": statuses},
            "note": "Load generator and service share this machine's cores; clients send JPEGs already at the model's resolution.",
        })
        figures.append({
            "section": "Service", "name": f"mean batch size under {clients} concurrent clients", **where,
            "batch": max_batch_size, "a_label": "mean images per batch (sinder_batch_size from /metrics)",
            "a": summary(batch_means), "ratio": summary([b / max_batch_size for b in batch_means]),
            "ratio_label": "mean batch / max_batch_size", "target": {"op": ">=", "value": 0.8},
        })

        progress(f"  latency: one client, {latency_requests} requests, against raw batch-1 inference")
        p50s, p99s, raw50, raw99 = [], [], [], []
        for r in range(repeats):
            raw = raw_latencies(session, one, max(20, latency_requests // 4))
            res = run_load_sync(url, body, concurrency=1, max_requests=latency_requests, max_seconds=phase_seconds * 2)
            if not res.latencies:
                raise RuntimeError(f"no successful request at one client: {res.as_dict()}")
            p50s.append(percentile(res.latencies, 50) * 1000)
            p99s.append(percentile(res.latencies, 99) * 1000)
            raw50.append(percentile(raw, 50) * 1000)
            raw99.append(percentile(raw, 99) * 1000)
        for q, svc_q, raw_q in (("p50", p50s, raw50), ("p99", p99s, raw99)):
            bound = [x + queue_delay_ms + 5.0 for x in raw_q]
            figures.append({
                "section": "Service", "name": f"{q} latency at one client", **where, "batch": 1,
                "a_label": f"service {q} (HTTP round trip, outputs cls)", "b_label": f"raw inference {q} + max_queue_delay ({queue_delay_ms:g} ms) + 5 ms",
                "unit": "ms", "a": summary(svc_q), "b": summary(bound), "ratio": ratio_summary(svc_q, bound),
                "ratio_label": "service / bound", "target": {"op": "<=", "value": 1.0},
                "details": {f"raw inference {q} (ms)": summary(raw_q)["median"]},
            })

        progress("  encodings: bytes per image and encode time")
        figures.append(encoding_figure(url, image, model_name, where, repeats, channels))
    return figures


def encoding_figure(url: str, image: bytes, model_name: str, where: dict, repeats: int, channels: int) -> dict:
    """Response bytes per image (measured on the wire) and server-side encode time of the patch tokens."""
    import httpx

    from .stats import time_call

    try:
        from service.api.encode import dumps, encode_array
    except ImportError:
        encode_array = None
    rows = []
    combos = [("base64", "float32"), ("base64", "float16"), ("json", "float32"), ("json", "float16")]
    with httpx.Client(timeout=60) as http:
        for encoding, dtype in combos:
            body = request_body(image, 1, outputs=("cls", "patch_tokens"), model=model_name, encoding=encoding, dtype=dtype)
            sizes, times, shape = [], [], None
            for _ in range(max(repeats, 3)):
                t0 = time.perf_counter()
                resp = http.post(url, content=body, headers={"content-type": "application/json"})
                times.append((time.perf_counter() - t0) * 1000)
                resp.raise_for_status()
                sizes.append(len(resp.content))
                if shape is None:
                    shape = resp.json()["results"][0]["grid"]
            row = {"encoding": encoding, "dtype": dtype, "bytes/image": int(np.median(sizes)),
                   "request ms (median)": float(np.median(times))}
            if encode_array is not None and shape is not None:
                tokens = np.random.default_rng(0).standard_normal((*shape, channels)).astype(np.float32)
                enc = [time_call(lambda: dumps(encode_array(tokens, dtype, encoding)), min_time=0.1) * 1000
                       for _ in range(repeats)]
                row["encode ms (server, patch tokens)"] = float(np.median(enc))
            rows.append(row)
    base = rows[0]
    for row in rows:
        row["bytes vs base64 float32"] = row["bytes/image"] / base["bytes/image"]
    json_f32 = next(r for r in rows if r["encoding"] == "json" and r["dtype"] == "float32")
    return {
        "section": "Service", "name": "payload bytes and encode time per encoding", **where, "batch": 1,
        "a_label": "json float32 bytes/image", "b_label": "base64 float32 bytes/image", "unit": "bytes",
        "a": summary([json_f32["bytes/image"]]), "b": summary([base["bytes/image"]]),
        "ratio": summary([json_f32["bytes/image"] / base["bytes/image"]]), "ratio_label": "json / base64 (float32)",
        "table": rows,
        "note": "outputs cls + patch_tokens of one image; encode time is service.api.encode.encode_array then its JSON dump on a "
                "patch-token array of the same grid and width, median of repeats.",
    }
