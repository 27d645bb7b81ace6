"""`sinder analyze`: per-layer singular-defect statistics on real images, a report and pictures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..direction_modes import add_direction_arg
from ..errors import SinderError
from ..device import add_device_args
from .common import add_model_args, load_from_args


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "analyze",
        help="measure singular defects on images; write report.json and pictures",
        description=(
            "Run the model on every image, compare each layer's tokens with its predicted singular defect "
            "direction and write OUT/report.json (per-layer defect and high-norm fractions, norms, alignment, "
            "the CLS token's attention to high-norm tokens, "
            "first defective layer), OUT/layers.png and OUT/images/*.png (image | last-layer token norms | "
            "PCA colours; before and after with --repaired)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_args(parser)
    parser.add_argument("--images", type=Path, metavar="DIR",
                        help="folder of images (with --demo: default the photos bundled with scikit-image)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument("--repaired", type=Path, metavar="PATH",
                        help="a repaired checkpoint of the same model, shown and measured beside it")
    parser.add_argument("--resolution", type=int, default=224,
                        help="shorter image side in pixels (then cropped down to a multiple of the patch size)")
    add_device_args(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_direction_arg(parser)
    parser.set_defaults(func=run)
    return parser


def _attention_line(prefix: str, summary: dict | None) -> str:
    if summary is None:
        return f"{prefix}CLS attention to high-norm tokens after the first defect layer: n/a (none there)"
    first, last = summary["blocks"][0], summary["blocks"][-1]
    return (f"{prefix}CLS attention to high-norm tokens in blocks {first}-{last}: "
            f"{100 * summary['cls_attention_share']:.1f}% of it on {100 * summary['high_norm_token_share']:.1f}% "
            f"of the patch tokens ({summary['ratio']:.2f}x their share)")


def run(args: argparse.Namespace) -> int:
    from ..analyze import run_analysis
    from .. import device
    from ..images import demo_images_dir, list_images

    compute = device.from_args(args, "analyze")  # a device that is not there fails before anything is read
    if args.resolution < 14:
        raise SinderError(f"--resolution must be at least the patch size (14), got {args.resolution}")
    if args.images is None and not args.demo:
        raise SinderError("--images DIR is required with --checkpoint")
    paths = list_images(args.images if args.images is not None else demo_images_dir())
    loaded = load_from_args(args)
    repaired = None
    if args.repaired is not None:
        from ..checkpoints import load_model

        # The repaired weights have the original's shapes; its architecture settings carry over.
        repaired = load_model(args.repaired, arch=args.arch or loaded.arch.name,
                              interpolation=args.interpolation or loaded.arch.interpolation)
        repaired.synthetic = repaired.synthetic or loaded.synthetic
    report = run_analysis(loaded, paths, args.out, resolution=args.resolution, repaired=repaired,
                          progress=not args.no_progress, direction=args.direction, compute=compute)
    last = report["layers"][-1]
    tag = " [SYNTHETIC demo weights]" if report["synthetic"] else ""
    print(f"analysed{tag} {report['images']} images: first defect layer {report['first_defect_layer']}; "
          f"last layer defect fraction {last['defect_fraction']:.4f}, high-norm fraction "
          f"{last['high_norm_fraction']:.4f}, alignment "
          f"{'n/a' if last['alignment'] is None else format(last['alignment'], '.3f')}")
    print(_attention_line("", report["cls_attention"]["after_first_defect"]))
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"direction: {report['direction']['used']} (requested {report['direction']['requested']})")
    if "repaired" in report:
        rl = report["repaired"]["layers"][-1]
        print(f"repaired: last layer defect fraction {rl['defect_fraction']:.4f}, "
              f"high-norm fraction {rl['high_norm_fraction']:.4f}")
        print(_attention_line("repaired: ", report["repaired"]["cls_attention"]["after_first_defect"]))
    print(f"wrote {args.out / 'report.json'}", file=sys.stderr)
    return 0
