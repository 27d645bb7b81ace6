"""Peak memory as a repair reports it (CPU resident set, CUDA max allocated), and out-of-memory errors
turned into advice."""

from __future__ import annotations

import re
import resource
import sys
import threading

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
    """What a repair report records: the process's peak resident set, and CUDA's peaks on a GPU."""
    out = {"cpu_peak_rss_bytes": peak_rss_bytes()}
    if device.type == "cuda":
        out["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
        out["cuda_max_reserved_bytes"] = int(torch.cuda.max_memory_reserved(device))
    return out


def anonymous_rss_bytes() -> int | None:
    """The resident set less file-backed pages (shared libraries): what tensors and the heap hold."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class PeakSampler:
    """The peak of :func:`anonymous_rss_bytes` while the block runs, sampled every ``interval`` s
    from a thread (the kernel keeps no peak of the anonymous part alone)."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, anonymous_rss_bytes() or 0)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakSampler":
        self.start = anonymous_rss_bytes() or 0
        self.peak = self.start
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, anonymous_rss_bytes() or 0)


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
