from .archs import ARCHS, IMAGENET_MEAN, IMAGENET_STD, PATCH_SIZE, ArchConfig, arch_from_dict, get_arch
from .vit import DinoVisionTransformer, build_model
from .loaded import LoadedModel

__all__ = [
    "ARCHS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PATCH_SIZE",
    "ArchConfig",
    "DinoVisionTransformer",
    "LoadedModel",
    "arch_from_dict",
    "build_model",
    "get_arch",
]
