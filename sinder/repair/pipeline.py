"""SINDER repair end to end: train the singular-value shifts, fold them, write the checkpoint and report."""

from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from ..atomic import write_json
from ..checkpoints import save_official, sha256_file
from ..errors import ImageError, SinderError
from ..model import LoadedModel
from .evaluate import compare_models
from .options import RepairOptions
from .svd import apply_svd, fold_svd
from .data import training_preprocessing
from .train import RepairTrainer, resume_path_for

REPORT_NAME = "repair_report.json"
RESUME_MODES = ("auto", "require", "never")


def _check_images(train_paths: Sequence[Path], heldout_paths: Sequence[Path], strict: bool) -> list[Path]:
    if not train_paths:
        raise ImageError("no training images for the repair")
    if not heldout_paths:
        raise ImageError("no held-out images to measure the repair on (need at least 2 images in all)")
    overlap = {str(Path(p).resolve()) for p in train_paths} & {str(Path(p).resolve()) for p in heldout_paths}
    if overlap:
        raise ImageError(f"held-out images are also training images: {', '.join(sorted(overlap)[:3])}")
    # Decode the held-out images now, not after a long training run: an unreadable one is left out
    # with a warning (with strict, it fails), and none readable is an error.
    from ..images import check_readable

    readable, why = [], ""
    for p in heldout_paths:
        try:
            check_readable(p)
        except ImageError as exc:
            if strict:
                raise
            why = str(exc)
            print(f"warning: leaving out unreadable held-out image: {why}", file=sys.stderr)
            continue
        readable.append(p)
    if not readable:
        raise ImageError(f"none of the {len(heldout_paths)} held-out images is readable (the last: {why})")
    return readable


_OBSERVE_IMAGES = 64  # training images the observed direction is measured on (at most)


def _choose_directions(loaded: LoadedModel, predicted, train_paths: Sequence[Path], options: RepairOptions, compute):
    """The directions the repair uses (``options.direction``), observed on the training images."""
    from ..defects.measure import measure_layers
    from ..defects.observed import choose_directions
    from ..images import load_image

    if options.direction == "predicted":
        return choose_directions(predicted, None, "predicted")
    images = []
    for p in train_paths[:_OBSERVE_IMAGES]:
        try:
            images.append(load_image(p, options.resolution))
        except ImageError:
            continue  # the training loop reports unreadable images
    if not images:
        if options.direction == "observed":
            raise ImageError("no readable training image to observe the defect direction on")
        return choose_directions(predicted, None, options.direction)  # the training loop reports the images
    with compute.autocast():
        observations = measure_layers(loaded.model, images, predicted)["observations"]
    return choose_directions(predicted, observations, options.direction)


def _where(original, repaired, directions, heldout_paths: Sequence[Path], resolution: int,
           loss_layers: dict[int, int]) -> dict:
    """Held-out before/after at the last layer, the loss layer, the peak and the first defect layer."""
    from ..defects.measure import measure_layers
    from ..defects.where import compare_at_layers, layers_of_interest
    from ..images import load_image

    images = [load_image(p, resolution) for p in heldout_paths]
    rows = measure_layers(original, images, directions)
    loss = max(loss_layers, key=loss_layers.get) if loss_layers else None
    layers = layers_of_interest(rows["layers"], rows["first_defect_layer"], loss)
    return compare_at_layers(original, repaired, directions, images, layers)


def _make_output_folder(out: Path) -> None:
    # Checked before training, so an unwritable destination fails in seconds, not after the run.
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinderError(f"cannot create the output folder {out.parent}: {exc.strerror or exc}") from None
    if not os.access(out.parent, os.W_OK):
        raise SinderError(f"output folder {out.parent} is not writable")


def _check_inputs(out, train_paths, heldout_paths, resume: str, strict: bool):
    """The output path, both image lists as paths (the held-out one without unreadable images) and
    the number of held-out images asked for; every check runs before the long training run."""
    if resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {RESUME_MODES}, got {resume!r}")
    out = Path(out)
    if out.is_dir():
        raise SinderError(f"output {out} is a folder; give a file name such as {out / 'model_sinder.pth'}")
    train_paths, heldout_paths = [Path(p) for p in train_paths], [Path(p) for p in heldout_paths]
    planned_held_out = len(heldout_paths)
    heldout_paths = _check_images(train_paths, heldout_paths, strict)
    _make_output_folder(out)
    return out, train_paths, heldout_paths, planned_held_out


def _train_and_fold(loaded: LoadedModel, original, choice, train_paths: Sequence[Path], out: Path,
                    options: RepairOptions, progress: bool, resume: str, compute, workers: int, strict: bool):
    """A repaired copy of ``original``, trained and folded back; also the trainer, its result and
    the iteration resumed from (or ``None``)."""
    model = copy.deepcopy(original)
    apply_svd(model)
    # The precision is not part of the run's identity: after running out of memory, the same
    # command with --precision bf16 continues the run.
    fingerprint = {
        "model_sha256": loaded.sha256,
        "arch": loaded.arch.name,
        "options": options.training_dict(),
        "images": [str(p.resolve()) for p in train_paths],
        "first_loss_layer": choice.first_own_layer,
    }
    trainer = RepairTrainer(model, choice.directions, train_paths, options, resume_path_for(out), fingerprint,
                            progress, compute=compute, workers=workers, strict=strict,
                            first_loss_layer=choice.first_own_layer)
    resumed_from = trainer.iteration if trainer.try_resume(resume) else None
    result = trainer.run()

    fold_svd(model)
    model.eval()
    expected = set(original.state_dict())
    if set(model.state_dict()) != expected:  # a bug, not a user error: the fold must restore the layout
        raise RuntimeError(f"repaired keys differ from the model's: {sorted(set(model.state_dict()) ^ expected)[:5]}")
    return model, trainer, result, resumed_from


def _report(loaded: LoadedModel, out: Path, sha: str, train_paths, heldout_paths, planned_held_out: int,
            result, options: RepairOptions, measure_res: int, compute, workers: int, resumed_from, choice,
            where: dict, evaluation: dict, started: float, cpu_started: float) -> dict:
    seconds = time.perf_counter() - started
    return {
        "synthetic": loaded.synthetic,
        **({"note": "SYNTHETIC demo model generated from a seed: these figures are not those of a real DINOv2"}
           if loaded.synthetic else {}),
        "model": loaded.describe(),
        "output": {"path": str(out), "sha256": sha, "layout": "official DINOv2 state dict (SINDER repaired)"},
        "images": {"train": len(train_paths), "held_out": len(heldout_paths),
                   "held_out_names": [p.name for p in heldout_paths],
                   "unreadable": len(result.unreadable) + planned_held_out - len(heldout_paths),
                   "unreadable_train": result.unreadable},
        "runtime": {**compute.describe(), "workers": workers},
        "throughput": {"images_per_s": result.images_per_s,
                       "note": "training iterations of this run (one image each) per second of training"},
        "memory": result.memory,
        "options": {**options.to_dict(), "measure_resolution": measure_res},
        "training_preprocessing": training_preprocessing(options.resolution),
        "iterations": result.iterations,
        "optimizer_steps": result.steps,
        "stopped_by_rule": result.stopped_early,
        "clean_fraction": result.clean_fraction,
        "loss_layers": {str(k): v for k, v in sorted(result.loss_layers.items())},
        "loss_search_from": choice.first_own_layer,  # blocks before it have no defect direction of their own
        "resumed_from_iteration": resumed_from,
        "direction": choice.record(),
        "warnings": choice.warnings,
        "where": where,
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu_started,  # every thread of this process (this run only)
        "train_seconds": result.seconds,
        **evaluation,
    }


def run_repair(
    loaded: LoadedModel,
    train_paths: list[Path],
    heldout_paths: list[Path],
    out: Path,
    options: RepairOptions | None = None,
    progress: bool = True,
    resume: str = "auto",
    compute=None,
    workers: int = 0,
    strict: bool = False,
) -> tuple[LoadedModel, dict]:
    """Repair ``loaded`` on ``train_paths``, measure it on ``heldout_paths``, write ``out`` and the report.

    ``out`` receives the repaired state dict (official key layout, plain tensors, atomically)
    and ``out.parent / "repair_report.json"`` the figures. ``resume``: ``"auto"`` continues a
    matching interrupted run, ``"require"`` insists on one, ``"never"`` starts over. The input
    model's weights are left untouched (it is moved to ``compute.device``). ``compute``
    (``sinder.device.Compute``, default CPU fp32): device and autocast precision of training;
    ``workers``: image-decoding processes; ``strict``: the first unreadable image fails the run.
    Returns the repaired model and the report.
    """
    from ..device import resolve

    compute = compute or resolve("cpu", "fp32")
    options = options or RepairOptions()
    out, train_paths, heldout_paths, planned_held_out = _check_inputs(out, train_paths, heldout_paths,
                                                                      resume, strict)
    started, cpu_started = time.perf_counter(), time.process_time()

    from ..defects.directions import directions_of, predict_directions

    original = loaded.model.eval().to(compute.device)
    choice = _choose_directions(loaded, directions_of(loaded).vectors, train_paths, options, compute)
    directions = choice.directions
    for warning in choice.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    model, trainer, result, resumed_from = _train_and_fold(
        loaded, original, choice, train_paths, out, options, progress, resume, compute, workers, strict)

    measure_res = options.measure_resolution or options.resolution
    repaired_directions = predict_directions(model)
    evaluation = compare_models(original, model, directions[-1], heldout_paths, measure_res,
                                repaired_direction=repaired_directions.last, progress=progress)
    with compute.autocast():
        where = _where(original, model, directions, heldout_paths, measure_res, result.loss_layers)

    save_official(model, out)  # plain tensors, official keys, written atomically
    sha = sha256_file(out)
    report = _report(loaded, out, sha, train_paths, heldout_paths, planned_held_out, result, options,
                     measure_res, compute, workers, resumed_from, choice, where, evaluation,
                     started, cpu_started)
    write_json(out.parent / REPORT_NAME, report)
    trainer.resume_file.unlink(missing_ok=True)  # the run is complete; nothing left to continue

    # "official": the layout of the file written, as loading it back detects (a build that reuses
    # the checkpoint then records the same provenance as one that has just repaired it)
    repaired = LoadedModel(model=model, arch=loaded.arch, source=str(out), source_format="official",
                           sha256=sha, synthetic=loaded.synthetic, directions=repaired_directions)
    return repaired, report
