"""`--demo [KIND]` on every command that takes a model: bare `--demo` is the planted demo."""

import pytest

from sinder.cli import build_parser


@pytest.mark.parametrize("command", ["directions", "analyze", "repair", "export", "build"])
def test_demo_kind_parses(command):
    extra = {"analyze": ["--out", "o"], "repair": ["--out", "o.pth"], "export": ["--name", "n"]}.get(command, [])
    parser = build_parser()
    assert parser.parse_args([command, "--demo", *extra]).demo == "planted"
    assert parser.parse_args([command, "--demo", "entangled", *extra]).demo == "entangled"
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--demo", "nonsense", *extra])
