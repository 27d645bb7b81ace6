"""``export_model``: a model in, a complete Triton model folder version out."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from contract import layout
from contract.defects import THRESHOLD_STD
from contract.errors import ContractError
from contract.manifest import ORIGINAL, SINDER, TTR, Variant, tensor_specs
from contract.triton_config import config_pbtxt

from ..atomic import atomic_dir, write_bytes
from ..errors import SinderError
from ..model import LoadedModel
from . import graph, parity, quantize
from .manifest import Resolution, build_manifest, check_resolution, repair_summary_of
from .wrapper import ExportWrapper

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_MAX_BATCH = 32


def _log(msg: str, progress: bool) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def default_direction(loaded: LoadedModel) -> torch.Tensor:
    """The predicted singular defect direction of the last block (SINDER's linearisation)."""
    from ..defects.directions import directions_of

    return directions_of(loaded).last


def default_variant(name: str, kind: str) -> Variant:
    """``kind`` of the model ``name`` names without its ``_<kind>`` suffix (``x_ttr`` is the ttr of ``x``)."""
    if kind == ORIGINAL:
        return Variant()
    suffix = f"_{kind}"
    if not name.endswith(suffix) or name == suffix:
        raise SinderError(f"{name!r} is a {kind} variant: name it <original>{suffix}, or give the original's name "
                          "(sinder export --variant-of NAME)")
    return Variant(kind=kind, of=name[: -len(suffix)])


def choose_direction(loaded: LoadedModel, mode: str = "auto", image_paths=None,
                     resolution: int = 224) -> tuple[torch.Tensor, dict]:
    """(the last block's defect direction under ``--direction mode``, the record of the choice).

    ``observed`` and ``auto`` measure the high-norm tokens on ``image_paths``; without images
    ``auto`` keeps the prediction (recorded as unchecked) and ``observed`` is an error.
    """
    from ..defects.directions import directions_of
    from ..defects.measure import measure_layers
    from ..defects.observed import choose_directions
    from ..images import load_image

    predicted = directions_of(loaded).vectors
    observations = None
    if mode != "predicted" and image_paths:
        images = [load_image(p, resolution) for p in image_paths]
        observations = measure_layers(loaded.model, images, predicted)["observations"]
    try:
        choice = choose_directions(predicted, observations, mode)
    except ValueError as exc:
        raise SinderError(f"--direction {mode}: {exc} (pass --images)") from None
    return choice.directions[-1], choice.record()


def _check_options(name: str, precision: str, max_batch_size: int, version: int | None,
                   resolution: Resolution, patch_size: int) -> Resolution:
    """Refuse bad export options before any work; returns the checked resolution."""
    if precision not in PRECISIONS:
        raise SinderError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if max_batch_size < 1:
        raise SinderError(f"max batch size must be at least 1, not {max_batch_size}")
    if version is not None and version < 1:
        raise SinderError(f"version must be a positive integer, not {version}")
    try:
        layout.check_model_name(name)
        return check_resolution(resolution, patch_size)
    except (ContractError, ValueError) as exc:
        raise SinderError(str(exc)) from None


def _unit_direction(direction: torch.Tensor | None, loaded: LoadedModel, name: str, progress: bool) -> torch.Tensor:
    """The diagnostics' direction as a unit float32 vector (default: the last block's prediction)."""
    arch = loaded.arch
    if direction is None:
        _log(f"[export {name}] computing the defect direction of the last block", progress)
        direction = default_direction(loaded)
    direction = direction.detach().float().reshape(-1)
    if direction.numel() != arch.embed_dim:
        raise SinderError(f"defect direction has {direction.numel()} values; {arch.name} has width {arch.embed_dim}")
    if not torch.isfinite(direction).all() or float(direction.norm()) == 0.0:
        raise SinderError("defect direction must be a finite, non-zero vector")
    return direction / direction.norm()


def _write_graph(wrapper, tmp: Path, precision: str, resolution: Resolution, max_batch_size: int, opset: int,
                 log) -> Path:
    """Trace ``wrapper`` into ``tmp/model.onnx``; int8 traces float32 first, then quantizes it."""
    onnx_path = tmp / layout.MODEL_FILE
    if precision != "int8":
        graph.export_graph(wrapper, onnx_path, resolution.min_side, resolution.max_side, max_batch_size, opset)
        return onnx_path
    fp32_path = tmp / ".fp32.onnx"
    graph.export_graph(wrapper, fp32_path, resolution.min_side, resolution.max_side, max_batch_size, opset)
    log("quantizing Linear weights to int8")
    quantize.quantize_int8(fp32_path, onnx_path)
    for p in tmp.glob(".fp32.onnx*"):
        p.unlink()
    return onnx_path


def _wrapper(model, direction: torch.Tensor, graph_precision: str, threshold_std: float):
    # a model that computes more than the plain ViT (test-time registers) brings its own graph
    make_wrapper = getattr(model, "export_wrapper", None)
    if make_wrapper is not None:
        return make_wrapper(direction, precision=graph_precision, threshold_std=threshold_std)
    return ExportWrapper(model, direction, precision=graph_precision, threshold_std=threshold_std)


def _write_config(model_dir: Path, name: str, arch, precision: str, max_batch_size: int, instance_kind: str | None) -> None:
    kind = instance_kind or ("KIND_CPU" if precision == "int8" else "KIND_GPU")
    inputs, outputs = tensor_specs(arch.embed_dim, arch.num_register_tokens, precision)
    write_bytes(model_dir / layout.CONFIG_FILE,
                config_pbtxt(name, inputs, outputs, max_batch_size, instance_kind=kind).encode())


def export_model(
    loaded: LoadedModel,
    model_repo: Path,
    name: str,
    version: int | None = None,
    precision: str = "fp32",
    direction: torch.Tensor | None = None,
    repair_summary: dict | None = None,
    overwrite: bool = False,
    max_batch_size: int = DEFAULT_MAX_BATCH,
    resolution: Resolution = Resolution(),
    threshold_std: float = THRESHOLD_STD,
    opset: int = graph.DEFAULT_OPSET,
    instance_kind: str | None = None,
    parity_cases: list[tuple[int, int, int]] | None = None,
    progress: bool = True,
    variant: Variant | None = None,
    registers_summary: dict | None = None,
    device: torch.device | None = None,
    direction_record: dict | None = None,
) -> Path:
    """Export ``loaded`` to ``model_repo/name/<version>/`` (model.onnx, manifest.json) and
    write ``model_repo/name/config.pbtxt``. Returns the version folder.

    ``version`` defaults to the highest existing one + 1; an existing version is refused
    unless ``overwrite``. ``precision`` "int8" is a CPU variant: fp32 graph with dynamically
    quantized Linear weights. The version folder is built under a temporary name and renamed
    into place only once the checker and the parity checks pass. ``variant`` links the
    model to its original (default: ``sinder`` with a repair summary, ``ttr`` with a
    registers summary, of the model ``name`` names without its ``_sinder``/``_ttr`` suffix;
    else ``original``). ``registers_summary`` is the manifest's ``registers`` block. The
    graph is traced on the CPU; ``device`` is where the parity step runs (PyTorch reference
    and, with onnxruntime's CUDA provider, the session).
    """
    arch = loaded.arch
    resolution = _check_options(name, precision, max_batch_size, version, resolution, arch.patch_size)
    if variant is None:
        variant = default_variant(name, SINDER if repair_summary else (TTR if registers_summary else ORIGINAL))
    model = loaded.model.eval().cpu()  # traced on the CPU (the example input lives there)
    model_dir = Path(model_repo) / name
    version = version if version is not None else layout.next_version(model_dir)
    version_dir = model_dir / str(version)
    if version_dir.exists() and not overwrite:
        raise SinderError(f"{version_dir} already exists; pass --overwrite to replace it, or another --version")

    direction = _unit_direction(direction, loaded, name, progress)

    cases = parity_cases or parity.default_cases(arch.patch_size, resolution.min_side, resolution.max_side,
                                                 resolution.short_side)
    graph_precision = "fp16" if precision == "fp16" else "fp32"
    wrapper = _wrapper(model, direction, graph_precision, threshold_std)
    started = time.perf_counter()
    with atomic_dir(version_dir, overwrite=overwrite) as tmp:
        _log(f"[export {name}] 1/3 tracing {arch.name} to ONNX ({graph_precision}, opset {opset})", progress)
        onnx_path = _write_graph(wrapper, tmp, precision, resolution, max_batch_size, opset,
                                 lambda msg: _log(f"[export {name}]     {msg}", progress))
        external = any(p.name != layout.MODEL_FILE for p in tmp.iterdir() if not p.name.startswith("."))
        _log(f"[export {name}] 2/3 onnx.checker (full_check)", progress)
        _check(onnx_path)
        _log(f"[export {name}] 3/3 parity with PyTorch at {len(cases)} batch/resolution cases", progress)
        figures = parity.measure_parity(model, onnx_path, direction, precision, cases, threshold_std, device=device)
        model.cpu()
        manifest = build_manifest(
            loaded=loaded, name=name, version=version, precision=precision, max_batch_size=max_batch_size,
            resolution=resolution, direction=direction, direction_layer=arch.depth - 1,
            threshold_std=threshold_std, parity=figures, variant=variant,
            repair=repair_summary_of(repair_summary), opset=opset, external_data=external,
            export_seconds=round(time.perf_counter() - started, 2), opset_imports=_opset_imports(onnx_path),
            registers=registers_summary,
            direction_record=direction_record,
        )
        write_bytes(tmp / layout.MANIFEST_FILE, manifest.to_json().encode())
    _write_config(model_dir, name, arch, precision, max_batch_size, instance_kind)
    _log(f"[export {name}] wrote {version_dir} in {time.perf_counter() - started:.1f}s", progress)
    return version_dir


def _opset_imports(path: Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {o.domain: int(o.version) for o in model.opset_import}


def _check(path: Path) -> None:
    import onnx

    try:
        # by path: works past the 2 GB limit, where the model keeps its weights in external data
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise SinderError(f"onnx.checker rejected {path.name}: {exc}") from exc
