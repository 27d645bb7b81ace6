"""`sinder directions`: the predicted singular defect direction after every block, from the weights alone."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..atomic import write_json
from ..device import add_device_args
from .common import add_model_args, load_from_args


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "directions",
        help="predicted singular defect direction per layer (from the weights, no images)",
        description=(
            "Linearise every block as in the SINDER paper (attention value path with LayerNorm weight and "
            "centering, layer scale and residual; FFN by its least-squares linear fit on standard-normal "
            "inputs, plus residual), multiply the block maps from the first block on and report the leading "
            "left singular vector of the product after each block. Prints a per-layer summary as JSON; "
            "--out also writes the full directions."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_args(parser)
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="write the summary with the full direction vectors to this JSON file")
    parser.add_argument("--samples", type=int, default=0, metavar="N",
                        help="fit the FFNs on N sampled standard-normal inputs as the reference code does "
                             "(0: the exact closed-form fit)")
    parser.add_argument("--top-channels", type=int, default=5, metavar="K", help="largest channels listed per layer")
    add_device_args(parser, precision=False)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from .. import device
    from ..defects.directions import directions_summary
    from ..errors import SinderError

    compute = device.resolve(args.device, "fp32")
    if args.samples < 0:
        raise SinderError(f"--samples must be >= 0, got {args.samples}")
    if args.top_channels < 1:
        raise SinderError(f"--top-channels must be >= 1, got {args.top_channels}")
    loaded = load_from_args(args)
    loaded.model.to(compute.device)
    start = time.perf_counter()
    rows = directions_summary(loaded.model, n_samples=args.samples, seed=args.seed, top_channels=args.top_channels)
    seconds = round(time.perf_counter() - start, 3)
    doc = {
        "model": loaded.describe(),
        "synthetic": loaded.synthetic,
        "method": "closed-form least-squares FFN fit" if args.samples == 0
        else f"least-squares FFN fit on {args.samples} standard-normal samples",
        "seconds": seconds,
        "runtime": {**compute.describe(), "precision": "fp64 (the linearised block maps and their SVD)"},
        "layers": rows,
    }
    if loaded.synthetic:
        from ..demo import demo_note

        doc["note"] = f"SYNTHETIC: {demo_note(loaded.source)}"
    if args.out is not None:
        write_json(args.out, doc)
        print(f"wrote {args.out}", file=sys.stderr)
    brief = {**doc, "layers": [{k: v for k, v in r.items() if k != "direction"} for r in rows]}
    print(json.dumps(brief, indent=2))
    return 0
