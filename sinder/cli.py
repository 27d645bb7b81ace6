"""`sinder`: the command-line entry point. Each subcommand lives in `sinder/commands/<name>.py`
and exposes ``register(subparsers)``, which adds its parser and sets ``func`` to its runner."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import SinderError

COMMANDS = ("directions", "analyze", "repair", "registers", "export", "build")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sinder",
        description="Find and repair the singular defects of DINOv2, and export models for serving.",
    )
    parser.add_argument("--version", action="version", version=f"sinder {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"sinder.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (SinderError, FileExistsError, FileNotFoundError) as exc:
        print(f"sinder {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sinder {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
