"""The offline tool refuses a checkpoint that carries a pickle payload, and never runs it.

The file is a real torch.save() zip with a state dict whose extra entry reduces to a call
(`exec` writing a marker file); loading it runs in a separate process so that a failure to
refuse could not touch this one.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # `make stress`; excluded from `make test`

ROOT = Path(__file__).resolve().parents[3]

MAKE = textwrap.dedent("""
    import sys, torch
    marker, out, wrap = sys.argv[1], sys.argv[2], sys.argv[3]

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({marker!r}, 'w').write('payload ran')",))

    sd = {"cls_token": torch.zeros(1, 1, 384), "pos_embed": torch.zeros(1, 1370, 384), "evil": Payload()}
    torch.save({"model": sd} if wrap == "wrapped" else sd, out)
""")

LOAD = textwrap.dedent("""
    import sys
    from sinder.checkpoints import load_model
    from sinder.errors import SinderError
    try:
        load_model(sys.argv[1])
    except SinderError as exc:
        print("REFUSED:", exc)
        sys.exit(3)
    print("LOADED")
""")


@pytest.mark.parametrize("wrap", ["plain", "wrapped"])
def test_pickle_payload_is_refused_not_executed(tmp_path, wrap):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pth"
    env = {"PYTHONPATH": str(ROOT)}
    import os

    env = {**os.environ, **env}
    subprocess.run([sys.executable, "-c", MAKE, str(marker), str(ckpt), wrap], check=True, env=env, timeout=120)
    assert ckpt.exists() and not marker.exists()
    res = subprocess.run([sys.executable, "-c", LOAD, str(ckpt)], capture_output=True, text=True, env=env, timeout=120)
    assert not marker.exists(), "the checkpoint's pickle payload was executed"
    assert res.returncode == 3, f"not refused with a SinderError: rc={res.returncode}\n{res.stdout}\n{res.stderr[-2000:]}"
    message = res.stdout.strip().splitlines()[-1]
    assert str(ckpt) in message and "\n" not in message.removeprefix("REFUSED: ")
    print(f"\n{message}")


def test_cli_refuses_it_with_exit_code_2(tmp_path):
    """Through the command line, as a user would meet it: one line on stderr, exit 2."""
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pth"
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", MAKE, str(marker), str(ckpt), "plain"], check=True, env=env, timeout=120)
    res = subprocess.run([sys.executable, "-m", "sinder", "directions", "--checkpoint", str(ckpt)],
                         capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path)
    assert not marker.exists()
    if "invalid choice" in res.stderr or "required" in res.stderr:
        pytest.fail(f"`sinder directions --checkpoint` is not usable as written here: {res.stderr[-500:]}")
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines and str(ckpt) in lines[-1] and "error" in lines[-1]
