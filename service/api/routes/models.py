"""GET /models and /models/{name}: what is served, on which execution provider, with what defect rule."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from contract.manifest import Manifest

from service.api.deps import get_service, require_api_key
from service.api.errors import error_responses
from service.api.schemas import DefectStats, ModelDetail, ModelList, ModelSummary, VariantLink, parse_model_ref
from service.core.errors import ModelNotFound
from service.core.registry import ModelVersion
from service.core.service import FeatureService

router = APIRouter(tags=["models"], dependencies=[Depends(require_api_key)])


def _summary(entry: ModelVersion, default: str | None) -> ModelSummary:
    m = entry.manifest  # None until the version has loaded (or when it failed to)
    return ModelSummary(
        name=entry.name, version=entry.version, state=entry.state, error=entry.error, provider=entry.provider,
        default=entry.name == default, synthetic=m.synthetic if m else None,
        repaired=bool(m.repair) if m else None, patch_size=m.architecture.patch_size if m else None,
        embed_dim=m.architecture.embed_dim if m else None, description=m.description if m else None,
    )


def _defect_rule(manifest: Manifest | None) -> dict | None:
    if manifest is None:
        return None
    out = manifest.defect.model_dump(exclude={"direction"})
    out["direction_dim"] = len(manifest.defect.direction)
    return out


def _link(entry: ModelVersion) -> VariantLink | None:
    if entry.manifest is None:
        return None
    v = entry.manifest.variant
    return VariantLink(name=entry.name, version=entry.version, kind=v.kind, of=v.of)


def _dump(manifest: Manifest | None, field: str) -> dict | None:
    if manifest is None:
        return None
    value = getattr(manifest, field)
    return value.model_dump() if hasattr(value, "model_dump") else value


@router.get("/models", response_model=ModelList, summary="Every model version and its state",
            responses=error_responses(401))
async def list_models(service: FeatureService = Depends(get_service)) -> ModelList:
    default = service.registry.default_name()
    return ModelList(default_model=default, models=[_summary(e, default) for e in service.registry.versions])


@router.get(
    "/models/{name}",
    response_model=ModelDetail,
    summary="One model: manifest summary, defect rule and statistics, repair summary, variants, provider in use",
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
        architecture=_dump(m, "architecture"),
        precision=m.precision if m else None,
        preprocessing=_dump(m, "preprocessing"),
        max_batch_size=entry.batcher.max_batch_size if entry.batcher else None,
        outputs=[{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in entry.backend.outputs] if entry.backend else [],
        defect=_defect_rule(m),
        defect_stats=DefectStats(images=stats.images, mean_defect_fraction=stats.mean_defect_fraction),
        repair=_dump(m, "repair"),
        registers=_dump(m, "registers"),
        variant=_link(entry),
        variants=[_link(e) for e in service.registry.family(entry)] if m else [],
        provenance=_dump(m, "provenance"),
        parity=_dump(m, "parity"),
        queue_depth=entry.batcher.depth if entry.batcher else None,
        load_seconds=entry.load_seconds,
    )
