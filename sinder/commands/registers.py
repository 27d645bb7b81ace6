"""`sinder registers`: test-time registers, the training-free repair (Jiang et al., arXiv 2506.08010)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import SinderError
from .common import add_model_args, load_from_args


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "registers",
        help="find register neurons and measure test-time registers (no training)",
        description=(
            "Find the FFN neurons that write a model's high-norm tokens (register neurons) on the training share of "
            "the images, and measure, on the held-out share, the model with one test-time register: an extra zero "
            "token onto which those neurons' activations are moved at inference. Writes OUT (JSON: neurons, scores, "
            "chosen k and threshold, held-out before/after, fidelity, seconds) and OUT_STEM_analysis/ (figures). "
            "`sinder export --registers OUT` exports the model with the register. Settings left out are chosen "
            "from the images (see sinder/registers/neurons.py) and recorded in the report."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_args(parser)
    parser.add_argument("--images", type=Path, metavar="DIR",
                        help="folder of images (with --demo: default the photos bundled with scikit-image)")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="report to write (.json)")
    parser.add_argument("--resolution", type=int, default=224, help="shorter image side in pixels")
    parser.add_argument("--held-out-fraction", type=float, default=0.25,
                        help="share of the images kept to measure the result (the same split as `sinder repair`)")
    parser.add_argument("--train-seed", type=int, default=0, help="seed of the held-out split")
    g = parser.add_argument_group("finding register neurons (unset: chosen from the images)")
    g.add_argument("--norm-factor", type=float, default=4.0,
                   help="an outlier token's norm is at least this many times its image's median")
    g.add_argument("--norm-threshold", type=float, help="absolute outlier norm instead (the paper: 150 for ViT-L)")
    g.add_argument("--detect-layer", type=int, help="block whose norms mark the outliers (default: peak max/median)")
    g.add_argument("--highest-layer", type=int, help="last block searched (default: where the high norm appears)")
    g.add_argument("--top-k", type=int, help="neurons kept (default: the fewest that remove the outliers)")
    g.add_argument("--max-k", type=int, default=64, help="largest k the automatic choice tries")
    g.add_argument("--no-sparsity-filter", action="store_true",
                   help="score every neuron, not only those below 0.5 on at least half of the tokens")
    parser.add_argument("--no-figures", action="store_true", help="skip the before/after analysis figures")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)
    return parser


def search_from_args(args: argparse.Namespace):
    from ..registers import NeuronSearch

    try:
        return NeuronSearch(norm_factor=args.norm_factor, norm_threshold=args.norm_threshold,
                            detect_layer=args.detect_layer, highest_layer=args.highest_layer, top_k=args.top_k,
                            max_k=args.max_k, sparsity_filter=not args.no_sparsity_filter)
    except ValueError as exc:
        raise SinderError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from ..images import demo_images_dir, list_images, split_images
    from ..registers.report import analysis_dir, run_registers

    search = search_from_args(args)  # bad values fail before anything slow
    if args.out.suffix.lower() != ".json":
        raise SinderError(f"--out must name a .json file, got {args.out}")
    if args.resolution < 14:
        raise SinderError(f"--resolution must be at least the patch size (14), got {args.resolution}")
    if args.images is None and not args.demo:
        raise SinderError("--images DIR is required with --checkpoint")
    paths = list_images(args.images if args.images is not None else demo_images_dir())
    if len(paths) < 2:
        raise SinderError(f"need at least 2 images (some to search, some held out), found {len(paths)}")
    train, held = split_images(paths, args.held_out_fraction, seed=args.train_seed)
    loaded = load_from_args(args)
    _, report = run_registers(loaded, train, held, args.out, search, resolution=args.resolution,
                              figures_dir=None if args.no_figures else analysis_dir(args.out),
                              progress=not args.no_progress)
    before, after, fid = report["before"], report["after"], report["fidelity"]
    tag = " [SYNTHETIC demo model]" if report["synthetic"] else ""
    layers = ", ".join(f"{layer}: {len(v)}" for layer, v in report["neurons"].items()) or "none"
    patch_cos = "n/a" if fid["patch_cosine"] is None else f"{fid['patch_cosine']:.4f}"
    print(f"test-time registers{tag}: {report['neuron_count']} neurons (per layer {layers}) in "
          f"{report['seconds']:.1f} s; held-out last layer: defect tokens {before['defect_tokens']} -> "
          f"{after['defect_tokens']}, high-norm tokens {before['high_norm_tokens']} -> {after['high_norm_tokens']} "
          f"({report['verdict']}); patch cosine {patch_cos}, CLS cosine {fid['cls_cosine']:.4f}")
    return 0
