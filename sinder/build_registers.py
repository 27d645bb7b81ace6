"""The build's test-time-registers steps: find the register neurons, export ``<name>_ttr``, and
compare the original, SINDER and test-time registers on the held-out images
(``model_repo/<name>/reports/comparison.{json,png}``).

Every method is found or trained on the same training images and measured on the same
held-out ones: the split of the repair options (``held_out_fraction``, ``seed``).
"""

from __future__ import annotations

from pathlib import Path

from contract.errors import ManifestError
from contract.manifest import TTR, Variant, read_manifest

from .errors import SinderError
from .model import LoadedModel

SUFFIX = "_ttr"
STEP_COMPARE = "compare original, SINDER and test-time registers"


def split(paths: list[Path], opts) -> tuple[list[Path], list[Path]]:
    """(training, held-out) under the repair options ``opts``."""
    from .images import split_images

    return split_images(paths, opts.held_out_fraction, seed=opts.seed)


def registers_report(plan) -> Path:
    return plan.reports / "registers" / "registers.json"


def comparison_file(plan) -> Path:
    return plan.reports / "comparison.json"


def find_or_reuse(plan, step, loaded: LoadedModel, paths: list[Path], opts) -> tuple[LoadedModel, dict]:
    """(the model with test-time registers, its registers report): found now, or read back."""
    from .registers.report import neurons_of, read_report, registers_model

    path = registers_report(plan)
    have = path.is_file() and read_report(path).get("model", {}).get("sha256") == loaded.sha256
    if path.is_file() and not have and not plan.force:
        raise SinderError(f"{path} holds the register neurons of another model; pass --force to redo it")

    def find():
        from .registers.report import run_registers

        train, held = split(paths, opts)
        return run_registers(loaded, train, held, path, resolution=plan.resolution,
                             figures_dir=path.parent / "analysis", progress=plan.progress)

    result = step(plan, f"find register neurons of {plan.name} (test-time registers)", have, find, str(path))
    if result is not None:
        return result
    report = read_report(path)
    return registers_model(loaded, neurons_of(report, path)), report


def export_or_reuse(plan, step, ttr: LoadedModel, report: dict, version: int) -> Path:
    from .export import export_model
    from .registers.report import summary_of

    name = plan.name + SUFFIX
    version_dir = plan.model_repo / name / str(version)
    variant = Variant(kind=TTR, of=plan.name)

    def complete() -> bool:
        from contract import layout

        if plan.force or not layout.is_complete(version_dir):
            return False
        try:
            manifest = read_manifest(version_dir / layout.MANIFEST_FILE)
        except ManifestError:
            return False
        # the same weights with other neurons is another model: export it again
        return (manifest.variant == variant and manifest.provenance.sha256 == ttr.sha256
                and (manifest.registers or {}).get("neurons") == report.get("neurons"))

    step(plan, f"export {name} v{version}", complete(),
         lambda: export_model(ttr, plan.model_repo, name, version=version, overwrite=True, variant=variant,
                              registers_summary=summary_of(report), progress=plan.progress,
                              device=plan.compute("analyze").device), str(version_dir))
    return version_dir


def compare_or_reuse(plan, step, loaded: LoadedModel, repaired, ttr: LoadedModel, ttr_report: dict,
                     held_out: list[Path]) -> Path:
    """The comparison, redone whenever a step of this build was (re)built."""
    path = comparison_file(plan)
    rebuilt = any(s["status"] == "built" for s in plan.steps)

    def compare():
        from .compare import compare_variants, write_comparison

        variants = {
            plan.name: {"method": "original", "loaded": loaded, "cpu_seconds": 0.0},
            plan.repaired_name: {"method": "SINDER", "loaded": repaired.model(),
                                 "cpu_seconds": repaired.report.get("cpu_seconds")},
            plan.name + SUFFIX: {"method": "test-time registers", "loaded": ttr,
                                 "cpu_seconds": ttr_report.get("cpu_seconds"),
                                 "neurons_edited": ttr_report.get("neuron_count")},
        }
        report = compare_variants(loaded, variants, held_out, plan.resolution,
                                  loss_layers=repaired.report.get("loss_layers"), progress=plan.progress)
        return write_comparison(report, held_out, path.parent, plan.resolution)

    step(plan, STEP_COMPARE, path.is_file() and not rebuilt, compare, str(path))
    return path
