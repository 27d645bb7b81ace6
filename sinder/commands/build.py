"""`sinder build`: a model repository with a model before and after SINDER repair, in one command."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..demo_kinds import DEMO_KINDS
from ..device import add_device_args
from ..direction_modes import add_direction_arg
from ..errors import SinderError
from ..model import ARCHS
from ..model.archs import INTERPOLATIONS


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "build",
        help="fill a model repository with a model before and after repair (idempotent)",
        description=(
            "Export the model as NAME, analyse it, repair it with SINDER, analyse before/after and export the "
            "repaired model as NAME_sinder, find its test-time registers and export them as NAME_ttr (version 1 "
            "each), with the comparison of the three; reports in MODEL_REPO/NAME/reports/ "
            "(not a version, so Triton ignores it). Steps whose "
            "output is already complete are reused; --force redoes them. --demo builds the synthetic planted demo "
            "model as dinov2_demo (and _sinder, _ttr), --demo entangled the entangled one as "
            "dinov2_demo_entangled (and _sinder, _ttr)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--demo", nargs="?", const="planted", choices=DEMO_KINDS, metavar="KIND",
                     help="a synthetic defective demo model (not real weights): 'planted' (default) or 'entangled'")
    src.add_argument("--checkpoint", type=Path, metavar="PATH", help="a DINOv2 checkpoint (needs --name)")
    parser.add_argument("--name", help="model name for --checkpoint (the repaired one is NAME_sinder)")
    parser.add_argument("--arch", choices=sorted(ARCHS), help="override the detected architecture")
    parser.add_argument("--interpolation", choices=INTERPOLATIONS, help="position-embedding interpolation")
    parser.add_argument("--images", type=Path, metavar="DIR",
                        help="images for analysis and repair (default: the bundled demo photos)")
    parser.add_argument("--resolution", type=int, help="repair/analysis resolution (default: 224 for --demo, "
                                                       "the repair default otherwise)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo model")
    parser.add_argument("--model-repo", type=Path, default=Path("model_repo"), metavar="DIR")
    parser.add_argument("--force", action="store_true", help="redo every step")
    add_device_args(parser)
    add_direction_arg(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from .. import build

    if args.demo:
        if args.name or args.arch or args.interpolation or args.images or args.resolution:
            raise SinderError("--demo builds dinov2_demo with fixed settings; --name/--arch/--interpolation/"
                              "--images/--resolution go with --checkpoint")
        build.build_demo(args.model_repo, force=args.force, seed=args.seed, kind=args.demo, device=args.device,
                         precision=args.compute_precision, direction=args.direction)
    else:
        if not args.name:
            raise SinderError("--checkpoint needs --name (the model's folder name in the repository)")
        build.build_checkpoint(args.checkpoint, args.name, args.model_repo, arch=args.arch,
                               interpolation=args.interpolation, images=args.images, resolution=args.resolution,
                               force=args.force, device=args.device, precision=args.compute_precision,
                               direction=args.direction)
    return 0
