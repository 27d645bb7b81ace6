"""DINOv2 checkpoints: safe reading, layout detection and conversion, architecture detection.

Conversions are pure functions, state dict in and state dict out (as timm's
``checkpoint_filter_fn``); :func:`load_model` strings them together.
"""

from .arch import check_fits, detect_arch, guess_num_heads
from .convert import default_interpolation, to_official
from .formats import FORMATS, detect_format
from .hf import hf_config, official_to_hf
from .loading import load_model, sha256_file
from .reading import read_state_dict
from .saving import save_official

__all__ = [
    "FORMATS",
    "check_fits",
    "default_interpolation",
    "detect_arch",
    "detect_format",
    "guess_num_heads",
    "hf_config",
    "load_model",
    "official_to_hf",
    "read_state_dict",
    "save_official",
    "sha256_file",
    "to_official",
]
