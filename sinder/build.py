"""``sinder build``: fill a model repository with a model, its SINDER repair and its test-time registers.

Layout (documented in model_repo/README.md). Reports live in the original model's folder,
where Triton ignores a folder that is not a version number; it exists from the first step
on, so an interrupted build never leaves a top-level folder that is not a model:

    model_repo/<name>/config.pbtxt, <name>/1/{model.onnx, manifest.json}         the original
    model_repo/<name>_sinder/config.pbtxt, <name>_sinder/1/{...}                  the repaired model
    model_repo/<name>/reports/analysis/                                           analysis of the original
    model_repo/<name>/reports/build.json                                          what the build did
    model_repo/<name>/reports/repair/{<name>_sinder.pth, repair_report.json}      repair output
    model_repo/<name>/reports/repair/analysis/                                    before/after analysis
    model_repo/<name>_ttr/config.pbtxt, <name>_ttr/1/{...}                        with test-time registers
    model_repo/<name>/reports/registers/{registers.json, analysis/}              register neurons, before/after
    model_repo/<name>/reports/comparison.{json,png}                               the three side by side

Every step writes atomically and is skipped when its output is already complete, so a
second run only checks and says what it reuses; ``force`` redoes every step.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from contract import layout
from contract.errors import ManifestError
from contract.manifest import ORIGINAL, SINDER, Variant, read_manifest

from .atomic import atomic_dir, write_json
from .demo_kinds import DEMO_NAMES
from .errors import SinderError
from .model import LoadedModel

DEMO_NAME = DEMO_NAMES["planted"]
REPAIRED_SUFFIX = "_sinder"
VERSION = 1
DEMO_RESOLUTION = 224


@dataclass
class BuildPlan:
    model_repo: Path
    name: str
    force: bool = False
    progress: bool = True
    resolution: int = DEMO_RESOLUTION  # analysis and repair resolution
    images: Path | None = None  # default: the bundled demo photos
    device: str | None = None  # --device (default: the first CUDA device, else the CPU)
    precision: str = "auto"  # --precision of analysis and repair ("auto": each job's measured default)
    direction: str = "auto"  # --direction of analysis, repair and export (sinder.defects.observed)
    steps: list[dict] = field(default_factory=list)

    def compute(self, job: str):
        from .device import resolve

        return resolve(self.device, self.precision, job)

    @property
    def repaired_name(self) -> str:
        return self.name + REPAIRED_SUFFIX

    @property
    def reports(self) -> Path:
        return layout.reports_dir(self.model_repo, self.name)

    @property
    def repair_dir(self) -> Path:
        return self.reports / "repair"

    def version_dir(self, name: str) -> Path:
        return self.model_repo / name / str(VERSION)

    @property
    def checkpoint(self) -> Path:
        return self.repair_dir / f"{self.repaired_name}.pth"

    @property
    def repair_report(self) -> Path:
        return self.repair_dir / "repair_report.json"


def _say(plan: BuildPlan, msg: str) -> None:
    if plan.progress:
        print(f"[build] {msg}", file=sys.stderr, flush=True)


def _step(plan: BuildPlan, title: str, done: bool, action, reuse_msg: str | None = None):
    """Run ``action`` unless ``done`` (and not forced); record what happened."""
    n = len(plan.steps) + 1
    if done and not plan.force:
        _say(plan, f"{n}. {title}: reusing {reuse_msg}")
        plan.steps.append({"step": title, "status": "reused", "seconds": 0.0})
        return None
    _say(plan, f"{n}. {title} ...")
    started = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - started
    _say(plan, f"{n}. {title}: done in {seconds:.1f}s")
    plan.steps.append({"step": title, "status": "built", "seconds": round(seconds, 2)})
    return result


def _complete_export(plan: BuildPlan, version_dir: Path, sha256: str | None, variant: Variant) -> bool:
    """A version to reuse: complete, its manifest valid under this contract, the same model and variant."""
    if plan.force or not layout.is_complete(version_dir):
        return False
    try:
        manifest = read_manifest(version_dir / layout.MANIFEST_FILE)
    except ManifestError as exc:
        _say(plan, f"   {exc}; exporting it again")
        return False
    if manifest.variant != variant:
        return False
    found = manifest.provenance.sha256
    if sha256 is not None and found != sha256:
        raise SinderError(f"{version_dir} holds another model (sha256 {found}, expected {sha256}); "
                          "pass --force to rebuild it")
    return True


def _images(plan: BuildPlan) -> list[Path]:
    from .images import demo_images_dir, list_images

    folder = plan.images if plan.images is not None else demo_images_dir()
    return list_images(folder)


def _analysis(plan: BuildPlan, loaded: LoadedModel, paths: list[Path], out: Path, repaired=None) -> None:
    from .analyze import run_analysis  # an ImportError here is a broken install: it fails the build

    with atomic_dir(out, overwrite=True) as tmp:
        run_analysis(loaded, paths, tmp, resolution=plan.resolution, repaired=repaired, progress=plan.progress,
                     compute=plan.compute("analyze"), direction=plan.direction)


def build(plan: BuildPlan, loaded: LoadedModel, repair_options=None) -> dict:
    """Export ``loaded`` as ``plan.name``, repair it, export the result as ``<name>_sinder``, find its
    test-time registers and export them as ``<name>_ttr``, with analyses, the repair and registers
    reports and the comparison of the three in the original's ``reports/`` folder."""
    from . import build_registers as ttr_steps
    from .export import export_model, is_complete

    try:
        layout.check_model_name(plan.name)
    except ValueError as exc:
        raise SinderError(str(exc)) from None
    original, linked = Variant(kind=ORIGINAL), Variant(kind=SINDER, of=plan.name)
    parity_device = plan.compute("analyze").device  # a device that is not there fails before any step
    plan.compute("repair")
    started = time.perf_counter()
    original_dir, repaired_dir = plan.version_dir(plan.name), plan.version_dir(plan.repaired_name)
    paths = _images(plan)
    if len(paths) < 2:
        raise SinderError(f"the build needs at least 2 images (training and held out); found {len(paths)}")

    _step(plan, f"export {plan.name} v{VERSION}", _complete_export(plan, original_dir, loaded.sha256, original),
          lambda: export_model(loaded, plan.model_repo, plan.name, version=VERSION, overwrite=True,
                               progress=plan.progress, variant=original, device=parity_device,
                               **_direction(plan, loaded, paths)), str(original_dir))

    analysis_dir = plan.reports / "analysis"
    _step(plan, f"analyse {plan.name} on {len(paths)} images", analysis_dir.is_dir(),
          lambda: _analysis(plan, loaded, paths, analysis_dir), str(analysis_dir))

    repaired = _repair_or_reuse(plan, loaded, paths, repair_options)

    after_dir = plan.repair_dir / "analysis"
    _step(plan, "analyse before/after repair", after_dir.is_dir(),
          lambda: _analysis(plan, loaded, paths, after_dir, repaired=repaired.model()), str(after_dir))

    _step(plan, f"export {plan.repaired_name} v{VERSION}",
          _complete_export(plan, repaired_dir, repaired.sha256, linked),
          lambda: export_model(repaired.model(), plan.model_repo, plan.repaired_name, version=VERSION,
                               overwrite=True, repair_summary=repaired.report, progress=plan.progress,
                               variant=linked, device=parity_device, **_direction(plan, repaired.model(), paths)),
          str(repaired_dir))

    opts = _repair_options(plan, repair_options)
    ttr, ttr_report = ttr_steps.find_or_reuse(plan, _step, loaded, paths, opts)
    ttr_dir = ttr_steps.export_or_reuse(plan, _step, ttr, ttr_report, VERSION)
    comparison = ttr_steps.compare_or_reuse(plan, _step, loaded, repaired, ttr, ttr_report,
                                            ttr_steps.split(paths, opts)[1])

    dirs = {plan.name: original_dir, plan.repaired_name: repaired_dir, ttr_dir.parent.name: ttr_dir}
    summary = {
        "synthetic": loaded.synthetic,
        "models": {name: str(d) for name, d in dirs.items()},
        "comparison": str(comparison),
        "complete": all(is_complete(d) for d in dirs.values()),
        "steps": plan.steps,
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(plan.reports / "build.json", summary)
    _say(plan, f"model repository {plan.model_repo} ready in {summary['seconds']:.1f}s "
               f"({sum(s['status'] == 'reused' for s in plan.steps)} of {len(plan.steps)} steps reused)")
    return summary


class _Repaired:
    """The repaired model, loaded from its checkpoint only if a step needs it."""

    def __init__(self, plan: BuildPlan, original: LoadedModel, loaded: LoadedModel | None, report: dict):
        self.plan, self.original, self._loaded, self.report = plan, original, loaded, report
        self.sha256 = (loaded.sha256 if loaded is not None else report.get("output", {}).get("sha256"))

    def model(self) -> LoadedModel:
        if self._loaded is None:
            from .checkpoints import load_model

            arch = self.original.arch
            self._loaded = load_model(self.plan.checkpoint, arch=arch.name, interpolation=arch.interpolation)
            self._loaded.synthetic = self.original.synthetic
        return self._loaded


def _direction(plan: BuildPlan, loaded: LoadedModel, paths: list[Path]) -> dict:
    """``export_model``'s direction arguments under ``plan.direction``, observed on the build's images."""
    from .export.api import choose_direction

    direction, record = choose_direction(loaded, plan.direction, paths, plan.resolution)
    for warning in record["warnings"]:
        _say(plan, f"warning: {warning}")
    return {"direction": direction, "direction_record": record}


def _repair_or_reuse(plan: BuildPlan, loaded: LoadedModel, paths: list[Path], options) -> _Repaired:
    have = plan.checkpoint.is_file() and plan.repair_report.is_file()
    if have and not plan.force:
        report = json.loads(plan.repair_report.read_text())
        if report.get("model", {}).get("sha256") not in (None, loaded.sha256):
            raise SinderError(f"{plan.repair_report} is the repair of another model; pass --force to redo it")

    def repair():
        from .build_registers import split
        from .repair import run_repair

        opts = _repair_options(plan, options)
        train, held = split(paths, opts)
        if plan.force:
            shutil.rmtree(plan.repair_dir, ignore_errors=True)
        plan.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        from .repair.data import default_workers

        return run_repair(loaded, train, held, plan.checkpoint, options=opts, progress=plan.progress,
                          compute=plan.compute("repair"), workers=default_workers())

    result = _step(plan, f"repair {plan.name} (SINDER)", have, repair, str(plan.checkpoint))
    if result is not None:
        repaired, report = result
        return _Repaired(plan, loaded, repaired, report)
    return _Repaired(plan, loaded, None, json.loads(plan.repair_report.read_text()))


def _repair_options(plan: BuildPlan, options):
    from .repair import RepairOptions

    return options or RepairOptions(resolution=plan.resolution, direction=plan.direction)


def build_demo(model_repo: Path, force: bool = False, seed: int = 0, progress: bool = True,
               kind: str = "planted", device: str | None = None, precision: str = "auto",
               direction: str = "auto") -> dict:
    """Build the demo model of ``kind`` as ``DEMO_NAMES[kind]`` and its repair."""
    from . import demo

    if kind not in DEMO_NAMES:
        raise SinderError(f"demo kind must be one of {', '.join(DEMO_NAMES)}, got {kind!r}")
    name = DEMO_NAMES[kind]
    plan = BuildPlan(Path(model_repo), name, force=force, progress=progress, device=device, precision=precision,
                     direction=direction)
    plan.compute("analyze"), plan.compute("repair")  # bad --device/--precision: fail before building the demo
    loaded = demo.load_demo(seed=seed) if kind == "planted" else demo.load_demo_kind(kind, seed=seed)
    if not force and _demo_complete(plan):
        try:
            found = read_manifest(plan.version_dir(plan.name) / layout.MANIFEST_FILE).provenance.sha256
        except ManifestError:
            found = None
        if found != loaded.sha256:
            # the demo weights come from code: a newer tool (or another --seed) makes other weights
            _say(plan, f"the demo model differs from the one in {plan.model_repo} (sha256 {str(found)[:12]}... vs "
                       f"{loaded.sha256[:12]}...); rebuilding everything")
            plan.force = True
        else:
            _say(plan, f"{name} and its variants v{VERSION} are complete in {plan.model_repo}; "
                       "checking them (use --force to rebuild)")
    return build(plan, loaded)


def _demo_complete(plan: BuildPlan) -> bool:
    from .export import is_complete

    from .build_registers import SUFFIX

    names = (plan.name, plan.repaired_name, plan.name + SUFFIX)
    return all(is_complete(plan.version_dir(n)) for n in names)


def build_checkpoint(checkpoint: Path, name: str, model_repo: Path, arch: str | None = None,
                     interpolation: str | None = None, images: Path | None = None, resolution: int | None = None,
                     force: bool = False, progress: bool = True, device: str | None = None,
                     precision: str = "auto", direction: str = "auto") -> dict:
    from .checkpoints import load_model
    from .repair import RepairOptions

    opts = RepairOptions(resolution=resolution, direction=direction) if resolution else RepairOptions(
        direction=direction)
    plan = BuildPlan(Path(model_repo), name, force=force, progress=progress, images=images,
                     resolution=opts.resolution, device=device, precision=precision, direction=direction)
    plan.compute("analyze"), plan.compute("repair")  # bad --device/--precision: fail before loading
    loaded = load_model(checkpoint, arch=arch, interpolation=interpolation)
    return build(plan, loaded, repair_options=opts)
