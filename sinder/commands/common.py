"""Options shared by the subcommands that take a model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SinderError
from ..demo_kinds import DEMO_KINDS
from ..model import ARCHS
from ..model.archs import INTERPOLATIONS

if TYPE_CHECKING:
    from ..model import LoadedModel


def add_model_args(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, metavar="PATH",
                     help="DINOv2 checkpoint: official .pth, Hugging Face Dinov2Model (.safetensors/.bin) or SINDER")
    src.add_argument("--demo", nargs="?", const="planted", choices=DEMO_KINDS, metavar="KIND",
                     help="use a synthetic defective DINOv2 generated from --seed (not real weights): 'planted' "
                          "(the default; a defect in private channels, easy for the method by construction) or "
                          "'entangled' (a content-triggered defect along a dense direction that later blocks read)")
    parser.add_argument("--arch", choices=sorted(ARCHS), help="override the architecture detected from the checkpoint")
    parser.add_argument("--interpolation", choices=INTERPOLATIONS,
                        help="position-embedding interpolation (default: the checkpoint's origin)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo model")


def load_from_args(args: argparse.Namespace) -> LoadedModel:
    if args.demo:
        from ..demo import load_demo_kind

        loaded = load_demo_kind(args.demo, seed=args.seed)
        if args.arch and args.arch != loaded.arch.name:
            raise SinderError(f"--arch {args.arch} does not apply to --demo: the demo model is {loaded.arch.name}")
        if args.interpolation:
            loaded.model.interpolation = args.interpolation
            loaded.arch = loaded.arch.with_(interpolation=args.interpolation)
        return loaded
    from ..checkpoints import load_model

    return load_model(args.checkpoint, arch=args.arch, interpolation=args.interpolation)
