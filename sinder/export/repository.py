"""The layout of a Triton model repository: model folders, numbered version folders."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import SinderError

_VERSION = re.compile(r"^[1-9][0-9]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.pbtxt"
REPORTS_DIR = "reports"  # beside the models; has no config.pbtxt so Triton and the service skip it


def check_name(name: str) -> str:
    if not _NAME.match(name or "") or name == REPORTS_DIR:
        raise SinderError(f"model name {name!r} is not usable as a folder name: use letters, digits, '_', '-', '.'"
                          + (f" (and not {REPORTS_DIR!r}, which holds the reports)" if name == REPORTS_DIR else ""))
    return name


def versions(model_dir: Path) -> list[int]:
    """The numeric version folders of ``model_dir`` (temporary and hidden folders are not versions)."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and _VERSION.match(p.name))


def next_version(model_dir: Path) -> int:
    found = versions(model_dir)
    return found[-1] + 1 if found else 1


def is_complete(version_dir: Path) -> bool:
    """A version folder is renamed into place whole, so one with both files is complete."""
    return (version_dir / MODEL_FILE).is_file() and (version_dir / MANIFEST_FILE).is_file()


def read_manifest(version_dir: Path) -> dict:
    path = version_dir / MANIFEST_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SinderError(f"cannot read {path}: {exc}") from exc
