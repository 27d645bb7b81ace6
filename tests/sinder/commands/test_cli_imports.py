"""`sinder --help` and every subcommand's `--help` build their parsers without importing torch."""

import json
import os
import subprocess
import sys
from pathlib import Path

from sinder.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[3]

PROBE = """
import json, sys
from sinder.cli import main
for argv in [["--help"]] + [[c, "--help"] for c in sys.argv[1:]]:
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code == 0, (argv, exc.code)
print(json.dumps(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))))
"""


def test_help_never_imports_torch():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", PROBE, *COMMANDS], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert json.loads(last) == [], f"--help imported {json.loads(last)[:5]}"
    assert "usage: sinder" in done.stdout and "repair" in done.stdout
