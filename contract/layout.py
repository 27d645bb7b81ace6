"""The model repository's layout (model_repo/README.md), Triton-compatible:

    <repo>/<name>/config.pbtxt                      one per model folder
    <repo>/<name>/<version>/model.onnx, manifest.json   1, 2, ... (numeric, no leading 0)
    <repo>/<name>/reports/                          what ``sinder build`` wrote about the model

Triton treats every top-level folder as a model and ignores the sub-folders of a model
whose names are not version numbers; so reports live inside their model's folder, and
hidden or temporary folders (a version being written) are never versions.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import LayoutError
from .triton_config import read_config

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.pbtxt"
REPORTS_DIR = "reports"

_VERSION = re.compile(r"^[1-9][0-9]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def is_version_name(name: str) -> bool:
    return bool(_VERSION.match(name))


def check_model_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise LayoutError(f"model name {name!r} is not usable as a folder name: use letters, digits, '_', '-', '.'")
    return name


def versions(model_dir: Path) -> list[int]:
    """The numeric version folders of ``model_dir``, ascending."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and is_version_name(p.name))


def next_version(model_dir: Path) -> int:
    found = versions(model_dir)
    return found[-1] + 1 if found else 1


def version_dir(repo: Path, name: str, version: int) -> Path:
    return Path(repo) / name / str(version)


def reports_dir(repo: Path, name: str) -> Path:
    """Where ``sinder build`` keeps the reports of model ``name`` (inside its folder; not a version)."""
    return Path(repo) / name / REPORTS_DIR


def is_complete(version_path: Path) -> bool:
    """A version folder is renamed into place whole, so one with both files is complete."""
    return (version_path / MODEL_FILE).is_file() and (version_path / MANIFEST_FILE).is_file()


def is_model_folder(folder: Path) -> bool:
    """A folder with a config.pbtxt, or with a version folder holding a model or manifest."""
    if (folder / CONFIG_FILE).is_file():
        return True
    return any((folder / str(v) / MODEL_FILE).exists() or (folder / str(v) / MANIFEST_FILE).exists()
               for v in versions(folder))


def model_folders(repo: Path) -> list[Path]:
    """The model folders of ``repo``, sorted by name (hidden folders and others skipped)."""
    return [p for p in sorted(Path(repo).iterdir())
            if p.is_dir() and not p.name.startswith(".") and is_model_folder(p)]


def triton_problems(repo: Path) -> list[str]:
    """What breaks Triton's documented repository rules; empty when it can serve ``repo`` as it is.

    Every top-level folder is a model: it has a ``config.pbtxt`` whose ``name`` is the
    folder's, at least one numeric version folder, and in each version the file named by
    ``default_model_filename``.
    """
    problems = []
    for folder in sorted(p for p in Path(repo).iterdir() if p.is_dir()):
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            problems.append(f"{folder.name}: no {CONFIG_FILE} (Triton takes every top-level folder for a model)")
            continue
        try:
            config = read_config(config_path)
        except LayoutError as exc:
            problems.append(f"{folder.name}: {exc}")
            continue
        if config.name != folder.name:
            problems.append(f"{folder.name}: {CONFIG_FILE} names the model {config.name!r}, not the folder's name")
        found = versions(folder)
        if not found:
            problems.append(f"{folder.name}: no numeric version folder")
        for v in found:
            if not (folder / str(v) / config.default_model_filename).is_file():
                problems.append(f"{folder.name}/{v}: no {config.default_model_filename} (default_model_filename)")
    return problems
