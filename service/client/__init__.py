"""A typed client of the feature service, for downstream Python services.

    from service.client import FeatureClient

    with FeatureClient("http://localhost:8000") as client:
        results = client.features(["cat.jpg", "dog.png"], outputs=("cls", "patch_tokens"))
        results[0].cls            # numpy float32 [C]
        results[0].patch_tokens   # numpy float32 [h, w, C]

``AsyncFeatureClient`` has the same calls, awaited. Both retry 429 and 503 answers (honouring
``Retry-After``, capped, with jitter), split long image lists by the service's limits, and
raise subclasses of :class:`FeatureClientError`. Needs only httpx, numpy and pillow:
``pip install 'sinder-serve[client]'`` (no FastAPI, onnxruntime or torch).
"""

from service.client.aio import AsyncFeatureClient
from service.client.errors import ClientInputError, FeatureClientError, ServiceError, TransportError
from service.client.policy import NO_RETRY, RetryPolicy, ServerLimits
from service.client.sync import FeatureClient
from service.client.wire import FeatureResponse, FeatureResult, HealthStatus, ImageInput, decode_array, encode_image

__all__ = [
    "AsyncFeatureClient", "ClientInputError", "FeatureClient", "FeatureClientError", "FeatureResponse",
    "FeatureResult", "HealthStatus", "ImageInput", "NO_RETRY", "RetryPolicy", "ServerLimits", "ServiceError",
    "TransportError", "decode_array", "encode_image",
]
