"""GET /v2/models/{name}[/versions/{v}]/config: Triton's model configuration extension.

Triton's clients read it (``tritonclient``'s ``get_model_config``; perf_analyzer needs it to
size its batches). The answer is the JSON form of Triton's ``ModelConfig`` for what this
service really runs: the batch size it uses, the ``images`` input as the pixels the graph
takes (``BYTES`` files are accepted too, as the metadata says), the outputs of the metadata
(graph outputs plus ``pooled``), the batching delay and where the session runs.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from service.api.deps import get_service, require_api_key
from service.api.routes.v2 import V2Route, _entry, _metadata
from service.api.schemas_v2 import V2_ERROR_RESPONSES
from service.core.service import FeatureService

router = APIRouter(prefix="/v2", tags=["kserve v2"], route_class=V2Route, dependencies=[Depends(require_api_key)])

_TRITON_TYPES = {"BYTES": "TYPE_STRING"}  # every other v2 datatype X is Triton's TYPE_X


def _tensor(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
    # Triton's dims leave out the batch dimension when max_batch_size > 0
    return {"name": name, "data_type": _TRITON_TYPES.get(datatype, f"TYPE_{datatype}"), "dims": shape[1:]}


def model_config(service: FeatureService, name: str, version: str | None) -> dict[str, Any]:
    entry = _entry(service, name, version)
    meta = _metadata(service, name, version)
    batch = entry.batcher.max_batch_size if entry.batcher is not None else min(service.settings.max_batch_size,
                                                                                entry.max_batch_size)
    gpu = (entry.provider or "").startswith(("CUDA", "Tensorrt"))
    policy = {"all": {}} if service.settings.version_policy == "all" else {"latest": {"num_versions": 1}}
    return {
        "name": entry.name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": policy,
        "max_batch_size": batch,
        "input": [{**_tensor(t.name, t.datatype, t.shape), "format": "FORMAT_NONE"} for t in meta.inputs],
        "output": [_tensor(t.name, t.datatype, t.shape) for t in meta.outputs],
        "dynamic_batching": {"max_queue_delay_microseconds": int(service.settings.max_queue_delay_ms * 1000)},
        "instance_group": [{"count": 1, "kind": "KIND_GPU" if gpu else "KIND_CPU"}],
        "default_model_filename": "model.onnx",
    }


_DOC = dict(response_model=dict[str, Any], responses=V2_ERROR_RESPONSES,
            description="Triton's model configuration extension: the JSON form of the model's `ModelConfig` "
                        "(`max_batch_size`, `input`, `output` with dims after the batch dimension, "
                        "`dynamic_batching`, `instance_group`), as this service runs it.")


@router.get("/models/{name}/config", summary="v2 model configuration (Triton extension)", **_DOC)
async def config(name: str, service: FeatureService = Depends(get_service)) -> dict[str, Any]:
    return model_config(service, name, None)


@router.get("/models/{name}/versions/{version}/config", summary="v2 model version configuration (Triton extension)",
            **_DOC)
async def version_config(name: str, version: str, service: FeatureService = Depends(get_service)) -> dict[str, Any]:
    return model_config(service, name, version)
