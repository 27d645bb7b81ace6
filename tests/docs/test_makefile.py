"""`make help` lists exactly the Makefile's targets, each with what it does, and the README names every one."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = (ROOT / "Makefile").read_text()


def _targets() -> set[str]:
    """Every rule a person runs (not file targets such as $(VENV)/.installed)."""
    return set(re.findall(r"^([a-z][a-z-]*):", MAKEFILE, re.M))


def test_every_target_is_phony():
    (phony,) = re.findall(r"^\.PHONY:(.*)$", MAKEFILE, re.M)
    assert set(phony.split()) == _targets()


@pytest.mark.skipif(shutil.which("make") is None, reason="no make here")
def test_make_help_lists_every_target_with_a_description():
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True).stdout
    listed = dict(re.findall(r"^  make (\S+) +(\S.*)$", out, re.M))
    assert set(listed) == _targets(), out
    assert len(out.strip().splitlines()) == len(listed), out  # nothing else printed, nothing run
    assert "$(" not in out, out  # make does not expand the help text: no unexpanded variables


def test_the_readme_names_every_target():
    readme = (ROOT / "README.md").read_text()
    missing = {t for t in _targets() if f"make {t}" not in readme}
    assert not missing, missing
