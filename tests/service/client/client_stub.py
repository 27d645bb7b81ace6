"""A stub of the service's HTTP contract for the client tests: the answers the tiny app cannot be
made to give on demand (429/503 with Retry-After, a chosen error for a chosen image, /info limits).

It computes simple known features from the pixels it receives (mean colour as "cls", etc.) so
that the tests can check that what the client sent is what the server decoded, and that every
encoding decodes to the same numbers. ``app.state.flags`` steers it:
``fail``: a list of (status, retry_after) answered to the next /features requests, in order;
``busy``: every /features answers 429; ``ready``; ``info``: the /info body, or None for 404.
``app.state.seen`` records the image count of every /features request that got an answer.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image

GRID = (2, 3)
C = 4


def _encode(arr: np.ndarray, dtype: str, encoding: str):
    arr = np.asarray(arr)
    if arr.dtype != np.bool_:
        arr = arr.astype(dtype)
    if encoding == "base64":
        return {"dtype": str(arr.dtype), "shape": list(arr.shape),
                "data": base64.b64encode(arr.astype(arr.dtype.newbyteorder("<")).tobytes()).decode()}
    return arr.tolist()


def features_of(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Deterministic stand-in features: easy to predict from the pixels the client sent."""
    mean = pixels.reshape(-1, 3).mean(0) / 255.0
    cls = np.concatenate([mean, [pixels.shape[0] / 100.0]]).astype(np.float32)
    patch = np.broadcast_to(cls, (*GRID, C)).copy()
    patch[0, 0] *= 3  # one outlier token, so the mask is not all False
    mask = np.zeros(GRID, bool)
    mask[0, 0] = True
    return {"cls": cls, "patch": patch, "mask": mask, "norms": np.linalg.norm(patch, axis=-1)}


def stub_app() -> FastAPI:
    app = FastAPI()
    state = {"ready": True, "fail": [], "info": None}

    def envelope(status: int, type_: str, message: str, index=None, headers=None):
        return JSONResponse({"error": {"type": type_, "message": message, "index": index}}, status, headers=headers)

    @app.get("/health/live")
    def live():
        return {"status": "live"}

    @app.get("/health/ready")
    def ready():
        if not state["ready"]:
            return JSONResponse({"status": "not ready"}, 503)
        return {"status": "ready"}

    @app.get("/models")
    def models():
        return {"models": [{"name": "demo", "version": 1, "provider": "CPUExecutionProvider"}]}

    @app.get("/models/{name}")
    def model(name: str):
        if name != "demo":
            return envelope(404, "model_not_found", f"unknown model {name!r}")
        return {"name": "demo", "version": 1}

    @app.get("/info")
    def info():
        if state.get("info") is None:
            return envelope(404, "not_found", "Not Found")
        return state["info"]

    @app.post("/visualize")
    async def visualize(request: Request):
        form = await request.form()
        if "image" not in form:
            return envelope(422, "invalid_request", "field image missing")
        return Response(b"\x89PNG\r\n\x1a\n" + await form["image"].read(), media_type="image/png")

    @app.post("/features")
    async def features(request: Request):
        if request.headers.get("authorization") not in (None, "Bearer secret") or (
            app.state.need_key and request.headers.get("authorization") != "Bearer secret"
        ):
            return envelope(401, "unauthorized", "missing or wrong API key")
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/"):
            form = await request.form()
            blobs = [await f.read() for f in form.getlist("images")]
            opts = {k: v for k, v in form.items() if k not in ("images", "outputs")}
            opts["outputs"] = form.getlist("outputs") or ["cls", "pooled"]
        else:
            body = await request.json()
            blobs = []
            for i, text in enumerate(body.pop("images")):
                try:
                    blobs.append(base64.b64decode(text, validate=True))
                except ValueError:
                    return envelope(400, "invalid_base64", "image is not valid base64", i)
            opts = body
        if opts.get("model", "demo") != "demo":
            return envelope(404, "model_not_found", f"unknown model {opts['model']!r}")
        if state.get("busy"):
            return envelope(429, "queue_full", "queue full", headers={"Retry-After": "2"})
        if state["fail"]:
            status, retry_after = state["fail"].pop(0)
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
            return envelope(status, {429: "queue_full", 503: "not_ready"}.get(status, "internal"), "try later", headers=headers)
        app.state.seen.append(len(blobs))
        dtype, encoding = opts.get("dtype", "float32"), opts.get("encoding", "base64")
        results = []
        for i, blob in enumerate(blobs):
            try:
                pixels = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
            except Exception:
                return envelope(400, "invalid_image", "cannot decode image", i)
            f = features_of(pixels)
            entry = {"index": i, "grid": list(GRID), "timing": {"queue_ms": 1.0, "inference_ms": 2.0}}
            for out in opts.get("outputs", ["cls", "pooled"]):
                if out == "cls":
                    entry["cls"] = _encode(f["cls"], dtype, encoding)
                elif out == "pooled":
                    entry["pooled"] = _encode(f["patch"].mean((0, 1)), dtype, encoding)
                elif out == "patch_tokens":
                    entry["patch_tokens"] = _encode(f["patch"], dtype, encoding)
                elif out == "diagnostics":
                    entry["diagnostics"] = {"defect_tokens": int(f["mask"].sum()), "defect_fraction": float(f["mask"].mean()),
                                            "mask": _encode(f["mask"], dtype, encoding), "norms": _encode(f["norms"], dtype, encoding)}
            results.append(entry)
        return {"model": "demo", "model_version": 1, "results": results}

    app.state.need_key = False
    app.state.seen = []
    app.state.flags = state
    return app
