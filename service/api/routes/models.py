"""GET /models and /models/{name}: what is served, on which execution provider, with what defect rule."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.api.deps import get_service, require_api_key
from service.api.errors import error_responses
from service.api.schemas import DefectStats, ModelDetail, ModelList, ModelSummary, parse_model_ref
from service.core.errors import ModelNotFound
from service.core.registry import ModelVersion
from service.core.service import FeatureService

router = APIRouter(tags=["models"], dependencies=[Depends(require_api_key)])


def _summary(entry: ModelVersion, default: str | None) -> ModelSummary:
    m = entry.manifest
    arch = m.get("architecture") if isinstance(m.get("architecture"), dict) else {}
    return ModelSummary(
        name=entry.name, version=entry.version, state=entry.state, error=entry.error, provider=entry.provider,
        default=entry.name == default, synthetic=m.get("synthetic") if isinstance(m.get("synthetic"), bool) else None,
        repaired=bool(m.get("repair")) if m else None, patch_size=arch.get("patch_size"),
        embed_dim=arch.get("embed_dim") if isinstance(arch.get("embed_dim"), int) else None,
        description=m.get("description") if isinstance(m.get("description"), str) else None,
    )


def _defect_rule(manifest: dict) -> dict | None:
    defect = manifest.get("defect")
    if not isinstance(defect, dict):
        return None
    out = {k: v for k, v in defect.items() if k != "direction"}
    if isinstance(defect.get("direction"), list):
        out["direction_dim"] = len(defect["direction"])
    return out


def _dict_or_none(value):
    return value if isinstance(value, dict) else None


@router.get("/models", response_model=ModelList, summary="Every model version and its state",
            responses=error_responses(401))
async def list_models(service: FeatureService = Depends(get_service)) -> ModelList:
    default = service.registry.default_name()
    return ModelList(default_model=default, models=[_summary(e, default) for e in service.registry.versions])


@router.get(
    "/models/{name}",
    response_model=ModelDetail,
    summary="One model: manifest summary, defect rule and statistics, repair summary, provider in use",
    description="`name` or `name:version`; without a version, the highest loaded version.",
    responses=error_responses(401, 404),
)
async def model_detail(name: str, service: FeatureService = Depends(get_service)) -> ModelDetail:
    model, version = parse_model_ref(name)
    candidates = service.registry.versions_of(model)
    if not candidates:
        raise ModelNotFound(f"unknown model {model!r}; available: {', '.join(service.registry.names) or 'none'}")
    if version is not None:
        chosen = [e for e in candidates if e.version == version]
        if not chosen:
            raise ModelNotFound(f"model {model!r} has no version {version}")
        entry = chosen[0]
    else:
        ready = [e for e in candidates if e.state == "ready"]
        entry = (ready or candidates)[-1]
    default = service.registry.default_name()
    m = entry.manifest
    stats = service.stats.of(entry.key)
    return ModelDetail(
        **_summary(entry, default).model_dump(),
        versions=[_summary(e, default) for e in candidates],
        architecture=_dict_or_none(m.get("architecture")),
        precision=m.get("precision") if isinstance(m.get("precision"), str) else None,
        preprocessing=_dict_or_none(m.get("preprocessing")),
        max_batch_size=entry.batcher.max_batch_size if entry.batcher else None,
        outputs=[{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in entry.backend.outputs] if entry.backend else [],
        defect=_defect_rule(m),
        defect_stats=DefectStats(images=stats.images, mean_defect_fraction=stats.mean_defect_fraction),
        repair=_dict_or_none(m.get("repair")),
        provenance=_dict_or_none(m.get("provenance")),
        parity=_dict_or_none(m.get("parity")),
        queue_depth=entry.batcher.depth if entry.batcher else None,
        load_seconds=entry.load_seconds,
    )
