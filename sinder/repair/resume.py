"""The resume file of a repair: ε, the optimiser state, where the image stream stands and the
clean/defective history, as plain tensors and dicts (read back with ``weights_only=True``)."""

from __future__ import annotations

import sys
from collections import deque
from pathlib import Path

import torch

from ..atomic import write_with
from ..errors import SinderError

RESUME_FORMAT = "sinder-repair-resume"
RESUME_VERSION = 2  # 2: the stream position and the unreadable images beside the iteration


def resume_path_for(out: Path) -> Path:
    """Where the resume state of a repair writing ``out`` lives: beside it."""
    out = Path(out)
    return out.with_name(out.name + ".resume.pt")


def state_of(trainer) -> dict:
    return {
        "format": RESUME_FORMAT,
        "version": RESUME_VERSION,
        "fingerprint": trainer.fingerprint,
        "iteration": trainer.iteration,
        "position": trainer.position,
        "steps": trainer.steps,
        "history": torch.tensor(list(trainer.history), dtype=torch.bool),
        "loss_layers": {str(k): v for k, v in trainer.loss_layers.items()},
        "unreadable": {str(k): v for k, v in trainer.unreadable.items()},
        "epsilon": {name: p.detach().cpu().clone() for name, p in trainer.eps.items()},
        "optimizer": trainer.optimizer.state_dict(),
    }


def save(trainer) -> None:
    state = state_of(trainer)
    write_with(trainer.resume_file, lambda tmp: torch.save(state, tmp))


def load_into(trainer, state: dict) -> None:
    if set(state["epsilon"]) != set(trainer.eps):
        raise SinderError("resume state does not match the model's layers")
    with torch.no_grad():
        for name, p in trainer.eps.items():
            value = state["epsilon"][name]
            if value.shape != p.shape:
                raise SinderError(f"resume state: {name} has shape {tuple(value.shape)}, expected {tuple(p.shape)}")
            p.copy_(value)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.iteration = int(state["iteration"])
    trainer.position = int(state["position"])
    trainer.steps = int(state["steps"])
    history = state["history"].tolist()
    window = trainer.options.window
    if len(history) != window:
        raise SinderError(f"resume state has a window of {len(history)}, expected {window}")
    trainer.history = deque((bool(h) for h in history), maxlen=window)
    trainer.loss_layers = {int(k): int(v) for k, v in state.get("loss_layers", {}).items()}
    trainer.unreadable = {int(k): str(v) for k, v in state.get("unreadable", {}).items()}


def try_resume(trainer, mode: str = "auto") -> bool:
    """Continue from the trainer's resume file. ``mode``: ``"auto"`` (when it exists and matches),
    ``"require"`` (error unless it does) or ``"never"``. Returns whether it resumed."""
    path = trainer.resume_file
    if mode == "never" or path is None:
        return False
    if not path.is_file():
        if mode == "require":
            raise SinderError(f"no resume file at {path}")
        return False
    state = read_resume(path)
    if state is None or state.get("fingerprint") != trainer.fingerprint:
        if mode == "require":
            why = "unreadable" if state is None else "from a different model, image set or options"
            raise SinderError(f"resume file {path} is {why}; rerun without --resume to start over")
        print(f"ignoring resume file {path}: it is from a different model, image set or options", file=sys.stderr)
        return False
    load_into(trainer, state)
    print(f"resuming repair at iteration {trainer.iteration} from {path}", file=sys.stderr)
    return True


def read_resume(path: Path) -> dict | None:
    """The resume state at ``path``, or None when it is not one (never unpickles objects)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unreadable file means "nothing to resume"
        return None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT or state.get("version") != RESUME_VERSION:
        return None
    return state
