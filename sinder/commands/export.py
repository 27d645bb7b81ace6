"""`sinder export`: a checkpoint (or the demo model) into a Triton-compatible model repository."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import SinderError
from ..device import add_device_args
from ..direction_modes import add_direction_arg
from .common import add_model_args, load_from_args


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export a model to ONNX into a Triton-compatible model repository",
        description=(
            "Write MODEL_REPO/NAME/<version>/model.onnx and manifest.json and MODEL_REPO/NAME/config.pbtxt. "
            "The graph takes uint8 RGB images [B, H, W, 3] (normalised inside), with dynamic batch, height "
            "and width, and returns cls_token, patch_tokens, (register_tokens,) token_norms, "
            "defect_alignment and defect_mask. Parity with PyTorch is measured and written to the manifest; "
            "the export fails if it is out of bounds."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_args(parser)
    parser.add_argument("--name", required=True, help="model name (the folder under --model-repo)")
    parser.add_argument("--model-repo", type=Path, default=Path("model_repo"), metavar="DIR",
                        help="the model repository")
    parser.add_argument("--version", type=int, help="version number (default: highest existing + 1)")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                        help="fp16: float16 matrix products (LayerNorm, softmax, diagnostics in float32)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    parser.add_argument("--int8", action="store_true",
                        help="also export NAME_int8, a CPU variant with dynamically quantized Linear weights")
    parser.add_argument("--max-batch-size", type=int, default=32, help="Triton's max_batch_size")
    parser.add_argument("--opset", type=int, default=None,
                        help="ONNX opset (default 20: attention as the onnxruntime contrib op com.microsoft.Attention; "
                             "23: standard operators only, needs onnxruntime >= 1.22)")
    parser.add_argument("--instance-kind", choices=("KIND_GPU", "KIND_CPU"),
                        help="Triton instance_group kind (default: KIND_GPU, KIND_CPU for int8)")
    parser.add_argument("--registers", type=Path, metavar="JSON",
                        help="a `sinder registers` report: export the model with its test-time register "
                             "(the extra token and the neuron edit in the graph; name it NAME_ttr by convention)")
    parser.add_argument("--variant-of", metavar="NAME",
                        help="the model folder of the original this one derives from (repaired: --repair-report, "
                             "or with test-time registers: --registers), recorded in the manifest's variant link "
                             "({\"kind\": \"sinder\" or \"ttr\", \"of\": NAME}) that /visualize and /models use "
                             "(default: NAME without its _sinder or _ttr suffix)")
    parser.add_argument("--repair-report", type=Path, metavar="JSON",
                        help="repair_report.json of this checkpoint (default: the one beside --checkpoint, if any)")
    add_device_args(parser, precision=False)  # where the parity step runs
    add_direction_arg(parser)
    parser.add_argument("--images", type=Path, metavar="DIR",
                        help="images to observe the defect direction on for --direction observed/auto (with --demo: "
                             "default the bundled photos; without images auto keeps the prediction, unchecked)")
    parser.set_defaults(func=run)
    return parser


def _repair_report(args) -> dict | None:
    path = args.repair_report
    if path is None and args.checkpoint is not None:
        beside = Path(args.checkpoint).parent / "repair_report.json"
        path = beside if beside.is_file() else None
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SinderError(f"cannot read repair report {path}: {exc}") from exc


def _with_registers(loaded, args, common: dict):
    """``loaded``, or with ``--registers`` the model with its test-time register (and its manifest block)."""
    if args.registers is None:
        return loaded
    from ..registers.report import neurons_of, read_report, registers_model, summary_of

    registers = read_report(args.registers)
    common["registers_summary"] = summary_of(registers)
    return registers_model(loaded, neurons_of(registers, args.registers))


def _variant(args, common: dict):
    """The manifest's variant link, the same for NAME and NAME_int8: ``--variant-of``, else NAME's suffix."""
    from contract.manifest import ORIGINAL, SINDER, TTR, Variant

    from ..export.api import default_variant

    kind = TTR if common.get("registers_summary") else (SINDER if common.get("repair_summary") else ORIGINAL)
    if args.variant_of is None:
        return default_variant(args.name, kind)
    if kind == ORIGINAL:
        raise SinderError("--variant-of names the original of a repaired model (give its --repair-report) "
                          "or of one with test-time registers (--registers)")
    return Variant(kind=kind, of=args.variant_of)


def _direction_images(args) -> list[Path] | None:
    from ..images import demo_images_dir, list_images

    if args.images is not None:
        return list_images(args.images)
    return list_images(demo_images_dir()) if args.demo else None


def run(args: argparse.Namespace) -> int:
    from .. import device
    from ..export import export_model
    from ..export.graph import DEFAULT_OPSET

    compute = device.resolve(args.device, "fp32")
    loaded = load_from_args(args)
    report = _repair_report(args)
    common = dict(repair_summary=report, overwrite=args.overwrite, max_batch_size=args.max_batch_size,
                  opset=args.opset or DEFAULT_OPSET, device=compute.device)
    from ..export.api import choose_direction

    model = _with_registers(loaded, args, common)  # checked before the slow direction
    common["variant"] = _variant(args, common)
    # the original model's, computed once for every variant
    direction, common["direction_record"] = choose_direction(loaded, args.direction, _direction_images(args))
    for warning in common["direction_record"]["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    out = export_model(model, args.model_repo, args.name, version=args.version, precision=args.precision,
                       direction=direction, instance_kind=args.instance_kind, **common)
    print(out)
    if args.int8:
        out8 = export_model(model, args.model_repo, f"{args.name}_int8", version=args.version, precision="int8",
                            direction=direction, instance_kind=args.instance_kind or "KIND_CPU", **common)
        print(out8)
    return 0
