"""`sinder repair`: SINDER singular-value fine-tuning of a DINOv2 checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..direction_modes import add_direction_arg
from ..errors import SinderError
from ..device import add_device_args
from .common import add_model_args, load_from_args

DEMO_RESOLUTION = 224  # the demo model is made for a CPU: 256 tokens instead of the reference's 1369


def _defaults():
    from ..repair.options import RepairOptions  # torch-free: the parser stays fast to build

    return RepairOptions()


def _add_training_args(parser: argparse.ArgumentParser, d) -> None:
    # defaults from RepairOptions: one home for the reference code's values
    g = parser.add_argument_group("training (defaults: the SINDER reference code)")
    D = " (default: %(default)s)"
    g.add_argument("--lr", type=float, default=d.lr, help="SGD learning rate" + D)
    g.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum" + D)
    g.add_argument("--mask-threshold", type=float, default=d.mask_threshold,
                   help="a token is defective when its |cos| to the defect direction exceeds mean + this * std"
                        + D)
    g.add_argument("--kernel", type=int, choices=(3, 5), default=d.kernel, help="neighbourhood of the loss" + D)
    g.add_argument("--temperature", type=float, default=d.temperature,
                   help="how strongly the loss ignores defect-aligned neighbours" + D)
    g.add_argument("--limit-layers", type=int, default=d.limit_layers,
                   help="blocks, ending at the loss layer, that receive gradients" + D)
    g.add_argument("--skip-less-than", type=int, default=d.skip_less_than,
                   help="a layer needs at least this many defective tokens to carry the loss" + D)
    g.add_argument("--stop-fraction", type=float, default=d.stop_fraction,
                   help="stop once this share of the recent window of images had no defect" + D)
    g.add_argument("--window", type=int, default=d.window, help="length of that window, in iterations" + D)
    g.add_argument("--resolution", type=int, default=None,
                   help=f"training crop size in pixels, square (default: {d.resolution} as the reference code; "
                        f"{DEMO_RESOLUTION} with --demo, which is made for a CPU)")
    g.add_argument("--max-iterations", type=int, default=d.max_iterations, help="upper bound on iterations" + D)
    g.add_argument("--max-epochs", type=int, default=d.max_epochs, help="upper bound on passes over the images" + D)
    g.add_argument("--train-seed", type=int, default=d.seed,
                   help="seed of the image order and the held-out split" + D)
    g.add_argument("--held-out-fraction", type=float, default=d.held_out_fraction,
                   help="share of the images kept out of training to measure the result" + D)
    g.add_argument("--measure-resolution", type=int, default=d.measure_resolution,
                   help="resolution of the held-out measurement (default: --resolution)")
    g.add_argument("--save-every", type=int, default=d.save_every, help="iterations between resume-file writes" + D)


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    """Resuming and compute: how the run goes, not what it trains."""
    r = parser.add_mutually_exclusive_group()
    r.add_argument("--resume", dest="resume", action="store_const", const="require", default="auto",
                   help="continue the interrupted run (error when there is none); by default a matching one "
                        "is continued automatically")
    r.add_argument("--fresh", dest="resume", action="store_const", const="never",
                   help="ignore any resume file and start over")
    c = parser.add_argument_group("compute")
    add_device_args(c)
    c.add_argument("--workers", type=int, default=None,
                   help="image-decoding processes beside the training loop (default: all cores but one, at most 8)")
    c.add_argument("--strict", action="store_true",
                   help="fail at the first unreadable image (default: skip it with a warning and count it)")
    c.add_argument("--dry-run", action="store_true",
                   help="print the architecture, resolution, trainable epsilon count and the estimated peak memory "
                        "and FLOPs per iteration for --device/--precision, then stop (reads only shapes)")


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "repair",
        help="repair singular defects (SINDER) and write the repaired checkpoint",
        description=(
            "Fine-tune only the singular values of every Linear (SINDER, Wang et al. ECCV 2024) with the "
            "neighbour loss at the first defective layer, fold them back into plain weights and write a "
            "checkpoint in the official DINOv2 layout plus repair_report.json beside it. Part of the images "
            "is held out (never trained on) to measure defects and fidelity before and after. An interrupted "
            "run continues where it stopped when the same command is run again. Defaults follow the "
            "paper's reference code."
        ),
    )
    add_model_args(parser)
    parser.add_argument("--images", type=Path, metavar="DIR|LIST",
                        help="training images: a folder (searched recursively, every format Pillow reads) or a "
                             "text file with one path per line (with --demo: default the photos bundled with "
                             "scikit-image)")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE",
                        help="repaired checkpoint to write (.pth); repair_report.json goes in the same folder")
    _add_training_args(parser, _defaults())
    _add_run_args(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_direction_arg(parser)
    parser.set_defaults(func=run)
    return parser


def options_from_args(args: argparse.Namespace):
    from ..repair.options import RepairOptions

    return RepairOptions(
        lr=args.lr, momentum=args.momentum, mask_threshold=args.mask_threshold, kernel=args.kernel,
        temperature=args.temperature, limit_layers=args.limit_layers, skip_less_than=args.skip_less_than,
        stop_fraction=args.stop_fraction, window=args.window, resolution=_resolution(args),
        max_iterations=args.max_iterations, max_epochs=args.max_epochs, seed=args.train_seed,
        held_out_fraction=args.held_out_fraction, measure_resolution=args.measure_resolution,
        save_every=args.save_every, direction=args.direction,
    )


def _resolution(args: argparse.Namespace) -> int:
    if args.resolution is not None:
        return args.resolution
    return DEMO_RESOLUTION if args.demo else _defaults().resolution


def _image_folder(args: argparse.Namespace) -> Path:
    if args.images is not None:
        return args.images
    if args.demo:
        from ..images import demo_images_dir

        return demo_images_dir()
    raise SinderError("--images DIR is required with --checkpoint")


def run(args: argparse.Namespace) -> int:
    from .. import device
    from ..images import split_images
    from ..repair import REPORT_NAME, run_repair
    from ..repair.data import collect_images, default_workers

    options = options_from_args(args)  # bad option values fail before anything slow happens
    compute = device.from_args(args, "repair")  # so does a device or precision that is not there
    if args.workers is not None and args.workers < 0:
        raise SinderError(f"--workers must be >= 0, got {args.workers}")
    if args.dry_run:
        from ..repair.estimate import dry_run

        print(dry_run(args, options, compute))
        return 0
    paths = collect_images(_image_folder(args))
    if len(paths) < 2:
        raise SinderError(f"need at least 2 images (some to train on, some held out), found {len(paths)}")
    train, held_out = split_images(paths, options.held_out_fraction, seed=options.seed)
    loaded = load_from_args(args)
    workers = default_workers() if args.workers is None else args.workers
    _, report = run_repair(loaded, train, held_out, args.out, options, progress=not args.no_progress,
                           resume=args.resume, compute=compute, workers=workers, strict=args.strict)
    before, after, fid = report["before"], report["after"], report["fidelity"]
    patch_cos = "n/a" if fid["patch_cosine"] is None else f"{fid['patch_cosine']:.4f}"
    tag = " [SYNTHETIC demo model]" if report["synthetic"] else ""
    print(f"repaired{tag}: {report['iterations']} iterations in {report['seconds']:.0f} s; held-out last layer: "
          f"defect fraction {before['defect_fraction']:.4f} -> {after['defect_fraction']:.4f}, "
          f"high-norm fraction {before['high_norm_fraction']:.4f} -> {after['high_norm_fraction']:.4f}; "
          f"patch cosine {patch_cos}, CLS cosine {fid['cls_cosine']:.4f}; "
          f"{report['runtime']['device']} {report['runtime']['precision']}, "
          f"{report['throughput']['images_per_s'] or 0:.2f} images/s")
    print(f"wrote {args.out} and {Path(args.out).parent / REPORT_NAME}", file=sys.stderr)
    return 0
