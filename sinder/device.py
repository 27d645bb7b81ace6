"""Where the tool computes and in what precision: ``--device`` and ``--precision``, in one place.

``--device``: ``cpu``, ``cuda`` or ``cuda:N``; by default the first CUDA device when torch
sees one, else the CPU. ``--precision`` sets the autocast dtype of the forward and backward
passes (``fp32``: no autocast). Whatever it is, the parts whose rounding decides the result
stay in float32: the SVD of every weight, the ε, the neighbour loss and its reference
quantities, the defect statistics and the folding of ε back into the weights.

The defaults, from measurement (README "Devices and precision", bench "Offline tool"):
``analyze`` measures in fp32 everywhere (the figures it reports should not depend on
rounding, and it is a forward pass per image); ``repair`` uses bf16 on a CUDA device that
has it, because the demo repair in bf16 meets the same held-out defect and fidelity bars
as fp32 and bf16's range (float32's exponent) needs no loss scaling; fp32 on the CPU: there
the demo repair in bf16 met the same bars in 0.64x the wall time on this project's 2-core
machine (758 iterations each), but CPU bf16 speed hangs on the CPU's bf16 instructions (without
them autocast only adds casts), so bf16 on a CPU is asked for with ``--precision bf16``.

Every check fails with a :class:`SinderError` naming the option and what is available,
before anything is loaded or written. This module imports torch only inside its functions,
so that the CLI parser stays torch-free.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
from dataclasses import dataclass

from .errors import SinderError

PRECISIONS = ("fp32", "bf16", "fp16")
AUTO = "auto"


@dataclass(frozen=True)
class Compute:
    """A resolved ``--device`` and ``--precision``."""

    device: "object"  # torch.device
    precision: str  # one of PRECISIONS

    @property
    def dtype(self):
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        """The autocast context of the forward (and, entered again by custom backward functions, the backward)."""
        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def describe(self) -> dict:
        return runtime_info(self)


def add_device_args(parser: argparse.ArgumentParser, precision: bool = True, precision_default: str = AUTO) -> None:
    parser.add_argument("--device", default=None, metavar="DEVICE",
                        help="cpu, cuda or cuda:N (default: the first CUDA device when torch sees one, else cpu)")
    if precision:
        parser.add_argument("--precision", dest="compute_precision", choices=(AUTO, *PRECISIONS),
                            default=precision_default,
                            help="autocast dtype of the forward and backward passes; SVD, epsilon, loss and "
                                 "statistics stay float32 (auto: see README 'Devices and precision')")


def available_devices() -> list[str]:
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return names


def resolve_device(spec: str | None):
    """``--device`` as a ``torch.device``; a device that is not there is a SinderError naming what is."""
    import torch

    available = ", ".join(available_devices())
    if spec is None:
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    text = spec.strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        index = 0
        if text != "cuda":
            try:
                index = int(text[5:])
            except ValueError:
                raise SinderError(f"--device {spec}: not a device; expected cpu, cuda or cuda:N") from None
            if index < 0:
                raise SinderError(f"--device {spec}: a CUDA index is >= 0; available: {available}")
        if not torch.cuda.is_available():
            why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA device is visible"
            raise SinderError(f"--device {spec}: CUDA is not available ({why}, torch {torch.__version__}); "
                              f"available: {available}")
        count = torch.cuda.device_count()
        if index >= count:
            raise SinderError(f"--device {spec}: there {'is' if count == 1 else 'are'} {count} CUDA "
                              f"device{'s' if count != 1 else ''}; available: {available}")
        return torch.device("cuda", index)
    raise SinderError(f"--device {spec}: not a device; expected cpu, cuda or cuda:N (available: {available})")


def supported_precisions(device) -> list[str]:
    import torch

    if device.type == "cpu":
        return ["fp32", "bf16"]  # CPU autocast to float16 is not offered: it is slower and loses range
    try:  # native bf16 only (Ampere and later): emulated bf16 is slower than fp32
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:
        bf16 = torch.cuda.is_bf16_supported()
    return ["fp32", "bf16", "fp16"] if bf16 else ["fp32", "fp16"]


def default_precision(device, job: str) -> str:
    """The measured default (module docstring): bf16 for a repair on a CUDA device with it, else fp32."""
    if job == "repair" and device.type == "cuda" and "bf16" in supported_precisions(device):
        return "bf16"
    return "fp32"


def resolve(device: str | None, precision: str | None = "fp32", job: str = "analyze") -> Compute:
    """``--device`` and ``--precision`` checked together; ``precision`` None or "auto" takes the default."""
    dev = resolve_device(device)
    if precision in (None, AUTO):
        precision = default_precision(dev, job)
    if precision not in PRECISIONS:
        raise SinderError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    ok = supported_precisions(dev)
    if precision not in ok:
        where = "the CPU" if dev.type == "cpu" else f"{dev} ({_cuda_name(dev)})"
        raise SinderError(f"--precision {precision}: {where} cannot run it; available on {dev}: {', '.join(ok)}")
    return Compute(dev, precision)


def from_args(args: argparse.Namespace, job: str) -> Compute:
    return resolve(getattr(args, "device", None), getattr(args, "compute_precision", "fp32"), job)


def _cuda_name(device) -> str:
    import torch

    try:
        return torch.cuda.get_device_name(device)
    except Exception:  # noqa: BLE001 - a name is for the message only
        return "unknown GPU"


def runtime_info(compute: Compute) -> dict:
    """What every report records about where it was computed."""
    import torch

    info = {
        "device": str(compute.device),
        "precision": compute.precision,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }
    if compute.is_cuda:
        props = torch.cuda.get_device_properties(compute.device)
        info.update({"device_name": props.name, "device_memory_bytes": int(props.total_memory),
                     "cudnn": torch.backends.cudnn.version()})
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info
