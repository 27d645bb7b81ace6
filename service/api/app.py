"""The app factory: settings in, a FastAPI app whose lifespan loads models and drains on shutdown."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service import __version__
from service.api import errors
from service.api.routes import docs, embeddings, features, health, info, models, openai_models, v2, v2_config, visualize
from service.api.schemas import FeaturesMultipart, FeaturesRequest, VisualizeMultipart, VisualizeRequest
from service.api.schemas_v2 import V2InferenceRequest
from service.backends.base import Backend
from service.config import Settings
from service.core.service import FeatureService

log = logging.getLogger(__name__)

DESCRIPTION = """\
Clean dense DINOv2 features as a service: patch tokens, CLS and pooled features, and singular-defect
diagnostics (SINDER), from ONNX models in a Triton-compatible model repository, with dynamic batching.

Errors share one envelope: `{"error": {"type", "message", "index"}}`; `index` names the image at fault.
Statuses: 400 malformed, 401 API key, 404 unknown model, 413 over a limit, 415 content type, 422 invalid
option or image, 424 the backend failed and would fail again (broken model, failed batch: do not retry
unchanged), 429 overloaded or the deadline cannot be met (`Retry-After`), 503 not ready or draining
(`Retry-After`), 504 deadline passed (only when the machine stalls).
A request may carry its own shorter deadline in seconds: `X-Request-Timeout: 5`.
"""

# Schemas referenced only from hand-written request bodies (JSON or multipart on one route).
_EXTRA_SCHEMAS = (FeaturesRequest, FeaturesMultipart, VisualizeRequest, VisualizeMultipart, V2InferenceRequest,
                  embeddings.EmbeddingsRequest)


class MetricsMiddleware:
    """Counts requests by route template (bounded label values) and status; times them."""

    def __init__(self, app, get_service: Callable[[], FeatureService]):
        self.app = app
        self._service = get_service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.monotonic()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics = self._service().metrics
            metrics.requests.labels(route, scope.get("method", ""), str(status["code"])).inc()
            metrics.request_duration.labels(route).observe(time.monotonic() - start)


def create_app(settings: Settings | None = None, backend_factory: Callable[[Path], Backend] | None = None) -> FastAPI:
    settings = settings or Settings()
    service = FeatureService(settings, backend_factory)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        yield
        # Under uvicorn, in-flight requests have finished by now; this drains what is left.
        await service.stop()

    app = FastAPI(title="sinder feature service", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # served offline by routes/docs.py
    app.state.service = service
    errors.install(app)
    for router in (features.router, visualize.router, embeddings.router, openai_models.router, models.router, info.router,
                   health.router, v2.health, v2.router, v2_config.router):
        app.include_router(router)
    docs.install(app)
    app.add_middleware(MetricsMiddleware, get_service=lambda: service)
    app.openapi = lambda: _openapi(app)
    return app


def _openapi(app: FastAPI) -> dict:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in _EXTRA_SCHEMAS:
            extra = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(extra.pop("$defs", {}))
            components[model.__name__] = extra
        schema["components"]["schemas"] = dict(sorted(components.items()))
        # The API key is optional (only when SINDER_API_KEY is set): an empty requirement says so.
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                if isinstance(operation, dict) and operation.get("security"):
                    operation["security"] = [*operation["security"], {}]
        app.openapi_schema = schema
    return app.openapi_schema
