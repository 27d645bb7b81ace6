"""KServe Open Inference Protocol v2 (REST) with Triton's binary tensor data extension.

``request`` parses an inference request body (JSON, or a JSON header followed by binary
tensors) into typed values; ``response`` writes the answer. Both are pure functions of bytes
and arrays: the routes in ``service.api.routes.v2`` join them to the service.
"""
