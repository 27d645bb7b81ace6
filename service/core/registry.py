"""The models the service serves, read from a model repository (model_repo/README.md)
through the contract (``contract.layout``, ``contract.manifest``, ``contract.triton_config``).

A model is a folder holding ``config.pbtxt`` or numeric version folders; anything else
(hidden folders, a model's ``reports/``) is skipped. Each version loads on its own: its
manifest is parsed and validated once, then used typed; a broken version is kept with its
error (listed by ``/models``, answered ``model_failed`` to its callers) and the others serve.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract import layout
from contract.errors import LayoutError, ManifestError
from contract.manifest import ORIGINAL, REQUIRED_OUTPUTS, SINDER, TTR, Manifest, read_manifest
from contract.triton_config import read_config
from service.backends.base import Backend
from service.core.batcher import Batcher
from service.core.errors import ModelFailed, ModelNotFound, ModelUnavailable
from service.core.images import ResizeRule
from service.core.metrics import Metrics

log = logging.getLogger(__name__)

BackendFactory = Callable[[Path], Backend]
VARIANT_ORDER = (ORIGINAL, SINDER, TTR)  # how a family is listed and drawn
__all__ = ["ManifestError", "ModelRegistry", "ModelVersion", "discover", "parse_manifest", "read_max_batch_size"]


@dataclass
class ModelVersion:
    name: str
    version: int
    path: Path
    state: str = "pending"  # pending -> loading -> ready | failed
    error: str | None = None
    manifest: Manifest | None = None  # parsed when the version loads
    patch_size: int = 14
    resize: ResizeRule | None = None
    max_batch_size: int = 1
    backend: Backend | None = None
    batcher: Batcher | None = None
    load_seconds: float | None = None
    warm_seconds: float | None = None  # one image through the warmed-up backend: the first drain-rate estimate

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def provider(self) -> str | None:
        return self.backend.provider if self.backend is not None else None

    @property
    def output_names(self) -> list[str]:
        return self.backend.output_names if self.backend is not None else []


def read_max_batch_size(config: Path) -> int | None:
    """``max_batch_size`` from a Triton config.pbtxt, if the file is there and names one above 0."""
    if not config.is_file():
        return None
    try:
        found = read_config(config).max_batch_size
    except LayoutError as exc:
        raise ManifestError(str(exc)) from None
    return found or None


def parse_manifest(path: Path) -> Manifest:
    """The typed manifest (``ManifestError`` names the file and the bad field)."""
    return read_manifest(path)


def discover(repo: Path, names: list[str] | None = None, policy: str = "all") -> list[ModelVersion]:
    """Every model version in ``repo`` (not loaded yet), sorted by name then version."""
    found: list[ModelVersion] = []
    for folder in layout.model_folders(repo):
        versions = [(v, folder / str(v)) for v in layout.versions(folder)]
        if names is not None and folder.name not in names:
            continue
        if not versions:
            entry = ModelVersion(folder.name, 0, folder, state="failed", error=f"{folder} has no version folder (1, 2, ...)")
            log.error("model %s unavailable: %s", folder.name, entry.error)
            found.append(entry)
            continue
        if policy == "latest":
            versions = versions[-1:]
        found += [ModelVersion(folder.name, number, path) for number, path in versions]
    if names is not None:
        missing = sorted(set(names) - {m.name for m in found})
        for name in missing:
            entry = ModelVersion(name, 0, repo / name, state="failed", error=f"model {name!r} is not in {repo}")
            log.error("model %s unavailable: %s", name, entry.error)
            found.append(entry)
    return found


class ModelRegistry:
    def __init__(self, repo: Path, backend_factory: BackendFactory, *, max_batch_size: int, max_queue_delay_s: float,
                 queue_size: int, metrics: Metrics | None = None, names: list[str] | None = None,
                 version_policy: str = "all", default_model: str | None = None, warmup: bool = True):
        self.repo = repo
        self._factory = backend_factory
        self._metrics = metrics
        self._batching = dict(max_batch_size=max_batch_size, max_queue_delay_s=max_queue_delay_s, queue_size=queue_size)
        self._warmup = warmup
        self._default = default_model
        self.versions: list[ModelVersion] = discover(repo, names, version_policy)
        self._update_info()

    # -- loading ------------------------------------------------------------------------
    async def load_all(self) -> None:
        """Load every version in a thread, one after another (bounded memory at start)."""
        loop = asyncio.get_running_loop()
        for entry in self.versions:
            if entry.state != "pending":
                continue
            entry.state = "loading"
            self._update_info()
            try:
                await loop.run_in_executor(None, self._load, entry)
            except Exception as exc:
                entry.state, entry.error = "failed", f"{type(exc).__name__}: {exc}".replace("\n", " ")
                log.error("model %s unavailable: %s", entry.key, entry.error)
                if entry.backend is not None:
                    entry.backend.close()
                    entry.backend = None
            else:
                entry.batcher = Batcher(entry.key, entry.backend.run, metrics=self._metrics, wait_only_for_incoming=True,
                                        seconds_per_image=entry.warm_seconds, **{
                    **self._batching, "max_batch_size": min(self._batching["max_batch_size"], entry.max_batch_size)})
                entry.batcher.start()
                entry.state = "ready"
                log.info("model %s ready on %s in %.2f s", entry.key, entry.provider, entry.load_seconds)
            self._update_info()

    def _load(self, entry: ModelVersion) -> None:
        start = time.monotonic()
        entry.manifest = manifest = parse_manifest(entry.path / layout.MANIFEST_FILE)
        entry.patch_size = manifest.architecture.patch_size
        entry.resize = ResizeRule.of(manifest.preprocessing.resize)
        limits = [n for n in (manifest.max_batch_size, read_max_batch_size(entry.path.parent / layout.CONFIG_FILE)) if n]
        entry.max_batch_size = min(limits)
        model_file = entry.path / layout.MODEL_FILE
        if not model_file.is_file():
            raise FileNotFoundError(f"{model_file} is missing")
        backend = self._factory(model_file)
        entry.backend = backend
        names = backend.output_names
        missing = [n for n in REQUIRED_OUTPUTS if n not in names]
        if missing:
            raise ManifestError(f"{model_file} lacks required outputs {missing} (has {names})")
        inp = backend.inputs[0]
        if inp.dtype != "uint8" or len(inp.shape) != 4:
            raise ManifestError(f"{model_file}: input {inp.name!r} must be uint8 [B, H, W, 3], got {inp.dtype} {inp.shape}")
        if self._warmup:
            h, w = entry.resize.target(entry.resize.short_side, entry.resize.short_side)
            backend.run(np.zeros((1, h, w, 3), np.uint8))  # the first run pays one-off set-up costs
            warm = time.monotonic()
            backend.run(np.zeros((1, h, w, 3), np.uint8))
            entry.warm_seconds = time.monotonic() - warm
        entry.load_seconds = time.monotonic() - start

    async def close(self, grace_s: float) -> None:
        batchers = [e.batcher for e in self.versions if e.batcher is not None]
        await asyncio.gather(*(b.close(grace_s) for b in batchers))
        for entry in self.versions:
            if entry.backend is not None:
                entry.backend.close()

    # -- lookups ------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(e.name for e in self.versions))

    def all_loaded(self) -> bool:
        """No version is still pending or loading."""
        return all(e.state in ("ready", "failed") for e in self.versions)

    def ready_versions(self) -> list[ModelVersion]:
        return [e for e in self.versions if e.state == "ready"]

    def default_name(self) -> str | None:
        if self._default:
            return self._default
        ready = self.ready_versions()
        repaired = [e for e in ready if e.manifest.repair]
        pick = repaired or ready or self.versions
        return pick[0].name if pick else None

    def family(self, entry: ModelVersion) -> list[ModelVersion]:
        """``entry``'s family among the ready models, one version per name (``entry`` for its own): the
        original, then its variants (SINDER, test-time registers, then other kinds by name), linked by
        the manifests' ``variant`` fields. Just ``[entry]`` when nothing links to it."""
        variant = entry.manifest.variant if entry.manifest else None
        if variant is None:
            return [entry]
        root = entry.name if variant.kind == ORIGINAL else variant.of
        latest: dict[str, ModelVersion] = {}
        for e in self.ready_versions():
            v = e.manifest.variant
            if (v.kind == ORIGINAL and e.name == root) or (v.kind != ORIGINAL and v.of == root):
                if e.name not in latest or e.version > latest[e.name].version:
                    latest[e.name] = e
        latest[entry.name] = entry
        # of each kind, the copies in entry's precision (not an int8 copy beside the fp32 one) when there are any
        precision = entry.manifest.precision
        same = {e.manifest.variant.kind for e in latest.values() if e.manifest.precision == precision}
        members = [e for e in latest.values() if e.manifest.precision == precision or e.manifest.variant.kind not in same]

        def order(e: ModelVersion):
            kind = e.manifest.variant.kind
            return (VARIANT_ORDER.index(kind) if kind in VARIANT_ORDER else len(VARIANT_ORDER), e.name)

        return sorted(members, key=order)

    def _ready(self, name: str | None) -> ModelVersion | None:
        ready = [e for e in self.ready_versions() if e.name == name]
        return ready[-1] if ready else None

    def versions_of(self, name: str) -> list[ModelVersion]:
        return [e for e in self.versions if e.name == name]

    def resolve(self, name: str | None, version: int | None = None) -> ModelVersion:
        """The version to serve: the named one, or the highest ready one of ``name``."""
        name = name or self.default_name()
        if name is None:
            raise ModelUnavailable("no model is configured in the repository")
        candidates = self.versions_of(name)
        if not candidates:
            raise ModelNotFound(f"unknown model {name!r}; available: {', '.join(self.names) or 'none'}")
        if version is not None:
            match = [e for e in candidates if e.version == version]
            if not match:
                have = ", ".join(str(e.version) for e in candidates)
                raise ModelNotFound(f"model {name!r} has no version {version}; available: {have}")
            entry = match[0]
        else:
            ready = [e for e in candidates if e.state == "ready"]
            entry = ready[-1] if ready else candidates[-1]
        if entry.state != "ready":
            if entry.state == "failed":
                raise ModelFailed(f"model {entry.key} failed to load: {entry.error}")
            raise ModelUnavailable(f"model {entry.key} is still loading", retry_after=1)
        return entry

    def _update_info(self) -> None:
        if self._metrics is None:
            return
        self._metrics.set_model_info([(e.name, str(e.version), e.provider or "none", e.state) for e in self.versions])
