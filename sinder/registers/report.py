"""``sinder registers``: find a model's register neurons on training images, measure the
intervention on held-out ones, and write the report (neurons, scores, chosen k and threshold,
held-out before/after, figures).

The report is also the input of the export: ``neurons_of`` reads its ``neurons`` back.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from .. import __version__
from ..atomic import atomic_dir, write_json
from ..errors import SinderError
from ..model import LoadedModel
from .model import TestTimeRegisters
from .neurons import NeuronSearch, find_register_neurons

METHOD = ("test-time registers (Jiang, Dravid, Efros, Gandelsman, arXiv 2506.08010): register neurons found on "
          "the training images; at inference one zero token without position embedding is appended, each selected "
          "neuron's activation is moved from the patch tokens to it (per image), and it is dropped from the outputs")
SUFFIX = "_ttr"


def registers_model(loaded: LoadedModel, neurons: dict[int, list[int]]) -> LoadedModel:
    """``loaded`` with test-time registers on ``neurons`` (weights, provenance and the predicted
    directions shared: the directions are the weights', which the register does not change)."""
    from ..defects.directions import directions_of

    try:
        model = TestTimeRegisters(loaded.model, neurons)
    except ValueError as exc:
        raise SinderError(f"register neurons do not fit {loaded.arch.name}: {exc}") from None
    return LoadedModel(model=model, arch=loaded.arch, source=loaded.source, source_format=loaded.source_format,
                       sha256=loaded.sha256, synthetic=loaded.synthetic, directions=directions_of(loaded))


def read_report(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SinderError(f"cannot read registers report {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise SinderError(f"registers report {path} is not a JSON object")
    return data


def neurons_of(report: dict, path: Path | str = "the report") -> dict[int, list[int]]:
    """The ``neurons`` of a ``sinder registers`` report (``{"layer": [neuron, ...]}`` in JSON)."""
    try:
        return {int(layer): [int(n) for n in cols] for layer, cols in report["neurons"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SinderError(f"{path} has no usable \"neurons\" ({{layer: [neuron, ...]}}): "
                          f"{type(exc).__name__}: {exc}") from exc


def summary_of(report: dict) -> dict:
    """The manifest's ``registers`` block: what the served graph edits and how it did when measured."""
    keys = ("method", "neurons", "neuron_count", "k", "detect_layer", "highest_layer", "threshold", "verdict",
            "before", "after", "fidelity", "seconds", "cpu_seconds")
    return {k: report[k] for k in keys if k in report}


def verdict(before: dict, after: dict, nothing: str = "no defect to remove") -> str:
    """"removed" (no defect or high-norm token left), "reduced", or "not removed", from held-out counts;
    ``nothing`` when there was none before."""
    b = before["defect_tokens"] + before["high_norm_tokens"]
    a = after["defect_tokens"] + after["high_norm_tokens"]
    if b == 0:
        return nothing
    if a == 0:
        return "removed"
    return "reduced" if a < b else "not removed"


def _measure(loaded: LoadedModel, ttr: LoadedModel, held_out: list[Path], resolution: int, progress: bool) -> dict:
    from ..defects.directions import directions_of
    from ..repair.evaluate import compare_models

    if not held_out:
        raise SinderError("no held-out images to measure the intervention on")
    direction = directions_of(loaded).last
    return compare_models(loaded.model, ttr.model, direction, held_out, resolution, progress=progress)


def run_registers(loaded: LoadedModel, train: list[Path], held_out: list[Path], out: Path,
                  search: NeuronSearch = NeuronSearch(), resolution: int = 224, figures_dir: Path | None = None,
                  progress: bool = True) -> tuple[LoadedModel, dict]:
    """Find ``loaded``'s register neurons on ``train``, measure on ``held_out``, write ``out`` (JSON) and,
    with ``figures_dir``, the before/after analysis there. Returns the model and the report."""
    from ..images import load_image

    out = Path(out)
    if out.suffix.lower() != ".json":
        raise SinderError(f"--out must name a .json file, got {out}")
    if not train:
        raise SinderError("no training images to find register neurons on")
    started, cpu_started = time.perf_counter(), time.process_time()
    images = [load_image(p, resolution) for p in train]
    try:
        found = find_register_neurons(loaded.model, images, search, progress=progress)
    except ValueError as exc:
        raise SinderError(str(exc)) from None
    ttr = registers_model(loaded, found["neurons"])
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    measured = _measure(loaded, ttr, held_out, resolution, progress)
    report = {
        "tool": {"name": "sinder", "version": __version__},
        "synthetic": bool(loaded.synthetic),
        "method": METHOD,
        "model": loaded.describe(),
        "neurons": {str(k): v for k, v in found["neurons"].items()},
        "neuron_count": sum(len(v) for v in found["neurons"].values()),
        **{k: found[k] for k in ("k", "k_sweep", "outliers_left", "detect_layer", "highest_layer", "threshold",
                                 "search", "images_with_outliers", "outlier_tokens", "max_median_ratio",
                                 "emerged_fraction", "scores_by_layer", "ranked")},
        "verdict": verdict(measured["before"], measured["after"]),
        "before": measured["before"], "after": measured["after"], "fidelity": measured["fidelity"],
        "measured_on": measured["measured_on"],
        "train_images": [p.name for p in train],
        "resolution": resolution,
        # finding the neurons is all the work there is: no training
        "seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3),
    }
    if loaded.synthetic:
        from ..demo import demo_note

        report["note"] = f"SYNTHETIC: {demo_note(loaded.source)}"
    if figures_dir is not None:
        from ..analyze import run_analysis

        with atomic_dir(figures_dir, overwrite=True) as tmp:
            run_analysis(loaded, held_out, tmp, resolution=resolution, repaired=ttr, progress=progress)
        report["pictures"] = str(figures_dir)
    write_json(out, json.loads(json.dumps(report)))
    if progress:
        print(f"wrote {out}", file=sys.stderr)
    return ttr, report


def analysis_dir(out: Path) -> Path:
    """Where ``sinder registers --out FILE`` puts its figures: ``<FILE stem>_analysis/`` beside it."""
    return Path(out).with_name(Path(out).stem + "_analysis")
