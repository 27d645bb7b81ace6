"""DINOv2 in plain PyTorch. The architecture table (``archs``) is torch-free and imported at once;
the torch modules are imported on first use, so that building the CLI parser (``sinder --help``)
never imports torch (tests/sinder/commands/test_cli_imports.py checks it)."""

import importlib

from .archs import ARCHS, IMAGENET_MEAN, IMAGENET_STD, PATCH_SIZE, ArchConfig, get_arch

_LAZY = {"DinoVisionTransformer": "vit", "build_model": "vit", "LoadedModel": "loaded"}

__all__ = ["ARCHS", "IMAGENET_MEAN", "IMAGENET_STD", "PATCH_SIZE", "ArchConfig", "get_arch", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
