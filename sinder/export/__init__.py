"""ONNX export into a Triton-compatible model repository, with defect diagnostics in the graph.

The repository's layout, ``config.pbtxt`` and ``manifest.json`` are the contract's
(``contract/``); this package builds the graph and fills them in.
"""

from contract.layout import is_complete, next_version, versions
from contract.manifest import read_manifest
from contract.triton_config import config_pbtxt

from .api import PRECISIONS, default_direction, export_model
from .manifest import Resolution, build_manifest, repair_summary_of
from .parity import measure_parity
from .wrapper import ExportWrapper, defect_diagnostics

__all__ = [
    "PRECISIONS",
    "ExportWrapper",
    "Resolution",
    "build_manifest",
    "config_pbtxt",
    "default_direction",
    "defect_diagnostics",
    "export_model",
    "is_complete",
    "measure_parity",
    "next_version",
    "read_manifest",
    "repair_summary_of",
    "versions",
]
