"""The newcomer's path: every command in README.md's code blocks, in order, as a fresh clone's
shell would run it.

The quick ones run for real in a sandbox folder laid out like a clone after `make run`
(``.venv`` -> this interpreter's environment, ``model_repo`` -> a tiny repository whose models
carry the demo's names, ``docs/cat.jpg`` -> the sample photo), against a service started from
the README's own command on a free port: the service and curl commands, the Python client
example, `sinder --help`. The only rewrite is the port (8000 -> the free one). The slow ones
(`make run`, a repair, docker, kubectl) are checked for staleness instead: the make target, the
subcommand and every flag, the compose file, profile and service, the kustomization exist. A
command no rule covers fails the test, so a new README command needs a rule here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
sys.path.insert(0, str(ROOT / "tests" / "service"))
sys.path.insert(0, str(ROOT))

from bench.server import free_port  # noqa: E402
from tiny_repo import write_model  # noqa: E402


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in order."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)]


def shell_commands(body: str) -> list[str]:
    """One entry per command: comment lines dropped, backslash continuations joined."""
    out, buf = [], ""
    for line in body.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        out.append((buf + line).strip())
        buf = ""
    return out


def _words(cmd: str) -> list[str]:
    return shlex.split(cmd, comments=True)


@pytest.fixture(scope="module")
def blocks() -> list[tuple[str, str]]:
    return code_blocks(README.read_text())


def test_readme_starts_with_exactly_the_two_setup_commands(blocks):
    lang, body = blocks[0]
    assert [_words(c) for c in shell_commands(body)] == [["make", "run"], ["make", "test"]]
    for cmd in shell_commands(body):
        check_static(cmd, {})
    before = README.read_text().split("```")[0]
    assert before.count("\n") <= 2, "nothing but the title may come before the set-up commands"


# --- static checks of the commands that are not run here -----------------------------------------

def _make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


def _sinder_flags() -> dict[str, set[str]]:
    from sinder.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return {name: {o for a in p._actions for o in a.option_strings} for name, p in sub.choices.items()}


def _extras() -> set[str]:
    import tomllib

    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def check_static(cmd: str, flags: dict[str, set[str]]) -> None:
    if "&&" in cmd:
        for part in cmd.split("&&"):
            check_static(part.strip(), flags)
        return
    words = [w.strip("[]") for w in _words(cmd)]
    if words[:3] == ["python", "-m", "venv"]:
        assert len(words) == 4, f"{cmd!r}: one virtual environment folder"
    elif Path(words[0]).name == "pip" and words[1] == "install":
        raw = _words(cmd)  # without the strip: ".[tool]" keeps its brackets
        for i, w in enumerate(raw):
            if w in ("-c", "-r"):
                assert (ROOT / raw[i + 1]).is_file(), f"{cmd!r}: no file {raw[i + 1]}"
            extras = re.fullmatch(r"\.\[([\w,-]+)\]", w)
            if extras:
                missing = set(extras.group(1).split(",")) - _extras()
                assert not missing, f"{cmd!r}: pyproject.toml has no extra {missing}"
    elif words[0] == "make":
        missing = set(words[1:]) - _make_targets()
        assert not missing, f"{cmd!r}: no make target {missing}"
    elif Path(words[0]).name == "sinder":
        sub = words[1]
        assert sub in flags, f"{cmd!r}: sinder has no subcommand {sub!r}"
        unknown = [w for w in words[2:] if w.startswith("--") and w not in flags[sub]]
        assert not unknown, f"{cmd!r}: sinder {sub} has no option {unknown}"
    elif words[:2] == ["docker", "compose"]:
        compose_file = ROOT / words[words.index("-f") + 1]
        compose = yaml.safe_load(compose_file.read_text())
        profiles = {p for s in compose["services"].values() for p in s.get("profiles", [])}
        for i, w in enumerate(words):
            if w == "--profile":
                assert words[i + 1] in profiles, f"{cmd!r}: no profile {words[i + 1]}"
            if w == "--scale":
                name = words[i + 1].split("=")[0]
                assert name in compose["services"], f"{cmd!r}: no service {name}"
                assert any(p in compose["services"][name].get("profiles", [p]) for p in profiles)
    elif words[:2] == ["kubectl", "apply"]:
        assert (ROOT / words[words.index("-k") + 1] / "kustomization.yaml").is_file(), cmd
    else:
        raise AssertionError(f"README command {cmd!r} is neither run nor checked by this test: add a rule")


# --- the sandbox clone and the service ------------------------------------------------------------

def _sandbox(tmp: Path, photo: Path) -> Path:
    box = tmp / "clone"
    (box / "docs").mkdir(parents=True)
    (box / ".venv").symlink_to(Path(sys.prefix))
    (box / "docs" / "cat.jpg").write_bytes(photo.read_bytes())
    repo = box / "model_repo"
    write_model(repo, "dinov2_demo", 1, max_side=518)
    write_model(repo, "dinov2_demo_sinder", 1, seed=1, max_side=518,
                repair={"before": {"defect_fraction": 0.02}, "after": {"defect_fraction": 0.0}})
    return box


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SINDER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _port(cmd: str, port: int) -> str:
    return cmd.replace("localhost:8000", f"localhost:{port}").replace("--port 8000", f"--port {port}")


def _start(cmd: str, box: Path, port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(["bash", "-c", "exec " + _port(cmd, port)], cwd=box, env=_env(),
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{cmd!r} exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"{cmd!r} not ready after 90 s:\n{log.read_text()[-3000:]}")


def _check_output(cmd: str, out: subprocess.CompletedProcess, box: Path) -> None:
    assert out.returncode == 0, f"{cmd!r} exited {out.returncode}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    words = _words(cmd)
    if words[0] != "curl":
        return
    if "-o" in words:
        written = (box / words[words.index("-o") + 1]).read_bytes()
        assert written.startswith(b"\x89PNG"), f"{cmd!r} wrote no PNG: {written[:300]!r}"
        return
    body = json.loads(out.stdout)
    assert "error" not in body, f"{cmd!r} answered {body}"
    if "/features" in cmd:
        assert body["results"] and body["model"].startswith("dinov2_demo"), body


def _run_readme(blocks, box: Path, tmp: Path) -> list[str]:
    """Every block in order; returns the commands that ran for real."""
    flags = _sinder_flags()
    port, server, ran = free_port(), None, []
    activated = False  # one shell for the whole README: `source` lasts
    try:
        for lang, body in blocks[1:]:
            if lang == "python":
                script = tmp / "readme_example.py"
                script.write_text(_port(body, port))
                out = subprocess.run([str(box / ".venv" / "bin" / "python"), str(script)], cwd=box, env=_env(),
                                     capture_output=True, text=True, timeout=120)
                _check_output("python README example", out, box)
                ran.append("python example")
                continue
            for cmd in shell_commands(body):
                words = _words(cmd)
                if words[:2] == [".venv/bin/python", "-m"] and words[2] == "service":
                    assert server is None, "the README starts the service twice"
                    server = _start(cmd, box, port, tmp / "service.log")
                    ran.append(cmd)
                elif words[:2] == ["source", ".venv/bin/activate"]:
                    activated = True
                    ran.append(cmd)
                elif words[0] in ("curl", "{"):
                    assert server is not None, f"{cmd!r} comes before the README starts the service"
                    prefix = "source .venv/bin/activate && " if activated else ""
                    out = subprocess.run(["bash", "-c", prefix + _port(cmd, port)], cwd=box, env=_env(),
                                         capture_output=True, text=True, timeout=60)
                    _check_output(cmd, out, box)
                    ran.append(cmd)
                elif words in (["sinder", "--help"], [".venv/bin/sinder", "--help"]):
                    assert activated or words[0].startswith(".venv/"), f"{cmd!r}: `sinder` is not on PATH here"
                    prefix = "source .venv/bin/activate && " if activated else ""
                    out = subprocess.run(["bash", "-c", prefix + cmd], cwd=box, env=_env(),
                                         capture_output=True, text=True, timeout=120)
                    _check_output(cmd, out, box)
                    assert "directions" in out.stdout and "analyze" in out.stdout
                    ran.append(cmd)
                else:
                    if Path(words[0]).name == "sinder" and not words[0].startswith(".venv/"):
                        assert activated, f"{cmd!r}: `sinder` is only on PATH after `source .venv/bin/activate`"
                    check_static(cmd, flags)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    return ran


def test_every_readme_command_runs_or_is_current(blocks, tmp_path):
    box = _sandbox(tmp_path, ROOT / "docs" / "cat.jpg")
    ran = _run_readme(blocks, box, tmp_path)
    assert any(c.startswith("curl") and "--data-binary" in c for c in ran), "the JSON example did not run"
    assert "python example" in ran and any("/visualize" in c for c in ran)


def test_the_json_example_takes_a_photo_over_the_command_line_limit(blocks, tmp_path):
    """`-d "$(base64 ...)"` failed with `Argument list too long` on photos over ~96 KB."""
    big = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(big, quality=95)
    assert big.stat().st_size > 200_000
    box = _sandbox(tmp_path, big)
    service_blocks = [b for b in blocks if "curl" in b[1] or "-m service" in b[1]]
    ran = _run_readme([blocks[0]] + service_blocks, box, tmp_path)
    assert any("--data-binary" in c for c in ran)


def test_sample_photo_is_small_and_a_photo():
    photo = ROOT / "docs" / "cat.jpg"
    assert photo.stat().st_size < 64_000
    with Image.open(photo) as im:
        assert im.format == "JPEG" and min(im.size) >= 224
