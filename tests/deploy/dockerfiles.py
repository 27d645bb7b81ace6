"""A small Dockerfile reader for the deployment tests (no Docker engine on these machines)."""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions in order, with backslash continuations joined and comments dropped."""
    out: list[Instruction] = []
    buf, start = "", 0
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by Docker too
        if not buf:
            start = lineno
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        keyword, _, args = buf.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        buf = ""
    if buf:
        raise ValueError(f"{path}: instruction at line {start} ends with a dangling backslash")
    return out


def copy_sources(instr: Instruction) -> list[str]:
    """The source paths of a COPY/ADD (flags and the destination removed; JSON form handled)."""
    args = instr.args
    if args.startswith("["):
        import json

        parts = json.loads(args)
    else:
        parts = shlex.split(args)
    parts = [p for p in parts if not p.startswith("--")]
    return parts[:-1]


def is_copy_from_stage(instr: Instruction) -> bool:
    return "--from=" in instr.args


def final_user(instrs: list[Instruction]) -> str | None:
    """The user the image's last stage runs as (None: root by default)."""
    user = None
    for ins in instrs:
        if ins.keyword == "FROM":
            user = None
        elif ins.keyword == "USER":
            user = ins.args.split(":")[0].strip()
    return user


def pip_install_args(instrs: list[Instruction]) -> list[list[str]]:
    """The arguments of every `pip install` in RUN instructions (one list per command)."""
    found = []
    for ins in instrs:
        if ins.keyword != "RUN":
            continue
        for cmd in re.split(r"&&|;|\|\|", ins.args):
            words = shlex.split(cmd)
            for i in range(len(words) - 1):
                if words[i].endswith("pip") and words[i + 1] == "install":
                    found.append([w for w in words[i + 2 :] if not w.startswith("-")])
                    break
    return found


def dockerignore_patterns(path: Path) -> list[str]:
    if not path.exists():
        return []
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def is_ignored(rel: str, patterns: list[str]) -> bool:
    """Whether a context path is excluded by .dockerignore (last match wins, `!` re-includes)."""
    rel = rel.strip("/").removeprefix("./")
    ignored = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").strip("/")
        parts = rel.split("/")
        # a pattern matches the path itself or any folder above it
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        candidates = [pat, pat.replace("**/", "")] if pat.startswith("**/") else [pat]
        if any(fnmatch.fnmatchcase(p, c) for p in prefixes for c in candidates):
            ignored = not neg
    return ignored
