"""Peak memory as a repair reports it (CPU resident set, CUDA max allocated), and out-of-memory errors
turned into advice."""

from __future__ import annotations

import re
import resource
import sys

import torch

from ..errors import SinderError


def peak_rss_bytes() -> int:
    """The process's peak resident set since it started (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return None


def reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peaks(device) -> dict:
    out = {"cpu_peak_rss_bytes": peak_rss_bytes()}
    if device.type == "cuda":
        out["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
        out["cuda_max_reserved_bytes"] = int(torch.cuda.max_memory_reserved(device))
    return out


def gib(n: int | float | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


_ASKED = (re.compile(r"Tried to allocate ([\d.]+ [KMGT]i?B)"), re.compile(r"allocate (\d+) bytes"))


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())


def out_of_memory_error(exc: BaseException, device, iteration: int, resume_file) -> SinderError:
    """A one-line error naming the memory asked for, with what to change."""
    text = str(exc)
    asked = None
    for pattern in _ASKED:
        found = pattern.search(text)
        if found:
            asked = found.group(1)
            asked = gib(int(asked)) if asked.isdigit() else asked
            break
    kept = f"; the resume file {resume_file} holds the run up to its last save" if resume_file else ""
    return SinderError(
        f"out of memory on {device} at repair iteration {iteration} (asked for {asked or 'an unknown amount'}; "
        f"peak so far {gib(peaks(device).get('cuda_max_allocated_bytes', peak_rss_bytes()))}): "
        f"try --precision bf16 or a smaller --resolution (or --limit-layers){kept}")
