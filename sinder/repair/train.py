"""The SINDER training loop: one image per iteration, SGD on the singular-value shifts ε.

Per iteration (haoqiwang/sinder ``main.py``): run the blocks one by one and stop at the
first whose patch tokens hold at least ``skip_less_than`` defective tokens; take the
neighbour loss there; back-propagate into that block and the ``limit_layers - 1`` blocks
before it only; one SGD step. An image with no defective layer is a "clean" iteration.
Training stops once ``stop_fraction`` of the last ``window`` iterations were clean, the
window starting full of "defective" entries as in the reference (so at least
``stop_fraction · window`` iterations run).

Gradients are carried block by block (each block runs on a detached copy of its input),
so the backward pass ends exactly at the first block of the window instead of
computing gradients for earlier blocks and throwing them away.

The loop is resumable: every ``save_every`` iterations, on Ctrl-C and at the end it
writes ε, the optimiser state, the iteration and the clean/defective history to a resume
file (plain tensors and dicts, atomically). The image order is a pure function of the
seed and the epoch, so the iteration number fixes where the run continues.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from tqdm import tqdm

from ..atomic import write_with
from ..errors import SinderError
from .loss import neighbour_loss
from .options import RepairOptions
from .svd import block_epsilons, named_epsilons

RESUME_FORMAT = "sinder-repair-resume"
RESUME_VERSION = 1
MAX_CACHED_BYTES = 512 * 2**20  # keep decoded training images in memory up to this size


def resume_path_for(out: Path) -> Path:
    """Where the resume state of a repair writing ``out`` lives: beside it."""
    out = Path(out)
    return out.with_name(out.name + ".resume.pt")


TRAINING_POLICY = "center_square"  # the reference's training crop (contract/preprocess.py)


def load_train_image(path: Path, resolution: int) -> torch.Tensor:
    """The reference's training crop: the centre square, its side to ``resolution``, normalised."""
    from ..images import load_image

    return load_image(path, resolution, policy=TRAINING_POLICY)


def training_preprocessing(resolution: int) -> dict:
    """How the training images were prepared, for the report and the repaired model's manifest."""
    from ..images import image_rule

    return image_rule(resolution).model_copy(update={"policy": TRAINING_POLICY}).model_dump()


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order of the ``n`` training images in ``epoch``: a permutation fixed by (seed, epoch)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).tolist()


@dataclass
class StepResult:
    layer: int | None  # the loss layer; None for a clean image
    loss: float | None = None
    defective: int = 0  # defective tokens at the loss layer
    stepped: bool = False  # False when the image was clean or the loss/gradient was not finite


@dataclass
class TrainResult:
    iterations: int
    stopped_early: bool  # the stopping rule fired (as opposed to max iterations/epochs)
    clean_fraction: float
    steps: int  # optimiser steps taken
    seconds: float
    loss_layers: dict[int, int] = field(default_factory=dict)  # layer -> how many iterations had their loss there


class _DeferredInterrupt:
    """Turn the first Ctrl-C into a flag checked between iterations, so a resume file is never
    written from a half-applied optimiser step; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def installed(self) -> Iterator["_DeferredInterrupt"]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self._previous = signal.signal(signal.SIGINT, self._handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, self._previous)


class RepairTrainer:
    """Trains the ε of a model already rewritten by :func:`sinder.repair.svd.apply_svd`.

    ``fingerprint`` identifies the run (model hash, training options, images); a resume
    file is only continued when its fingerprint is equal.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        directions: torch.Tensor,
        images: Sequence[Path],
        options: RepairOptions,
        resume_file: Path | None = None,
        fingerprint: dict | None = None,
        progress: bool = True,
        image_loader: Callable[[Path, int], torch.Tensor] = load_train_image,
    ) -> None:
        if not images:
            raise SinderError("no training images")
        depth = len(model.blocks)
        if directions.shape[0] != depth:
            raise ValueError(f"{directions.shape[0]} defect directions for a model of depth {depth}")
        self.model = model
        ref = next(model.parameters())
        self.device, self.dtype = ref.device, ref.dtype
        self.directions = directions.detach().to(self.device, self.dtype)
        self.images = list(images)
        self.options = options
        self.resume_file = resume_file
        self.fingerprint = dict(fingerprint or {})
        self.progress = progress
        self.image_loader = image_loader
        self.block_eps = block_epsilons(model)
        self.eps = named_epsilons(model)
        self.optimizer = torch.optim.SGD(list(self.eps.values()), lr=options.lr, momentum=options.momentum)
        self.iteration = 0
        self.steps = 0
        self.history: deque[bool] = deque([False] * options.window, maxlen=options.window)
        self.loss_layers: dict[int, int] = {}
        self._order: tuple[int, list[int]] | None = None
        self._cache: dict[int, torch.Tensor] = {}
        self._cache_ok = True

    # ---- image order -------------------------------------------------------------------
    def image_index(self, iteration: int) -> int:
        n = len(self.images)
        epoch = iteration // n
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_order(n, self.options.seed, epoch))
        return self._order[1][iteration % n]

    def _image(self, index: int) -> torch.Tensor:
        if index in self._cache:
            return self._cache[index]
        img = self.image_loader(self.images[index], self.options.resolution)
        if self._cache_ok:
            if (len(self._cache) + 1) * img.numel() * img.element_size() <= MAX_CACHED_BYTES:
                self._cache[index] = img
            else:
                self._cache_ok = False
                self._cache.clear()
        return img

    def preload(self) -> None:
        """Decode every training image now when they all fit in the cache: a bad file fails at once."""
        if not self._cache_ok or self.iteration >= self._limit():
            return
        side = self.options.resolution // self.model.patch_size * self.model.patch_size
        if len(self.images) * 3 * side * side * 4 > MAX_CACHED_BYTES:
            return
        for index in tqdm(range(len(self.images)), desc="loading images", unit="image", file=sys.stderr,
                          disable=not self.progress or len(self.images) < 50, leave=False):
            self._image(index)

    # ---- one iteration ------------------------------------------------------------------
    def step(self, image: torch.Tensor) -> StepResult:
        """Forward ``image`` ``[3, H, W]`` up to its first defective layer and take one SGD step there."""
        opts, model = self.options, self.model
        patch = model.patch_size
        gh, gw = image.shape[-2] // patch, image.shape[-1] // patch
        with torch.no_grad():
            x = model.prepare_tokens(image[None].to(self.device, self.dtype))
        ins: list[torch.Tensor | None] = []
        outs: list[torch.Tensor | None] = []
        found = None
        with torch.enable_grad():
            for i, blk in enumerate(model.blocks):
                xi = x.detach().requires_grad_(i > 0)
                out = blk(xi)
                ins.append(xi)
                outs.append(out)
                # A block this far back cannot fall in the window of any later loss layer.
                drop = i - opts.limit_layers
                if drop >= 0:
                    ins[drop] = outs[drop] = None
                tokens = model.split(out)["patch"][0].reshape(gh, gw, -1)
                res = neighbour_loss(tokens, self.directions[i], opts.mask_threshold, opts.kernel, opts.temperature)
                if res is not None and res.count >= opts.skip_less_than:
                    found = (i, res)
                    break
                x = out
        if found is None:
            return StepResult(layer=None)
        layer, res = found
        if not torch.isfinite(res.loss):
            return StepResult(layer=layer, loss=float(res.loss.detach()), defective=res.count)
        self._backward(layer, res.loss, ins, outs)
        grads_ok = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in self.eps.values())
        if grads_ok:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(layer=layer, loss=float(res.loss.detach()), defective=res.count, stepped=grads_ok)

    def _backward(self, layer: int, loss: torch.Tensor, ins: list, outs: list) -> None:
        first = max(0, layer - self.options.limit_layers + 1)
        upstream = None
        for j in range(layer, first - 1, -1):
            params = self.block_eps[j]
            need_input = j > first
            inputs = params + ([ins[j]] if need_input else [])
            output, grad_output = (loss, None) if j == layer else (outs[j], upstream)
            grads = torch.autograd.grad(output, inputs, grad_output, allow_unused=True)
            for p, g in zip(params, grads):
                if g is not None:
                    p.grad = g if p.grad is None else p.grad + g
            upstream = grads[-1] if need_input else None
            outs[j] = None  # free the block's graph as soon as it is used

    # ---- the loop -----------------------------------------------------------------------
    def clean_fraction(self) -> float:
        return sum(self.history) / len(self.history)

    def _projected_total(self, limit: int) -> int:
        """Where the run ends if every further image is clean (the bar's total; it grows while defects remain)."""
        missing = math.ceil(self.options.stop_fraction * len(self.history) - 1e-9) - sum(self.history)
        return min(limit, self.iteration + max(0, missing))

    def _limit(self) -> int:
        limit = self.options.max_iterations
        if self.options.max_epochs is not None:
            limit = min(limit, self.options.max_epochs * len(self.images))
        return limit

    def run(self) -> TrainResult:
        limit = self._limit()
        start = time.perf_counter()
        stopped = False
        self.model.train()
        guard = _DeferredInterrupt()
        self.preload()
        bar = tqdm(total=self._projected_total(limit), initial=self.iteration, desc="repair", unit="it",
                   file=sys.stderr, disable=not self.progress, dynamic_ncols=True, leave=False)
        try:
            with guard.installed():
                while self.iteration < limit:
                    if self.clean_fraction() >= self.options.stop_fraction:
                        stopped = True
                        break
                    result = self.step(self._image(self.image_index(self.iteration)))
                    self.history.append(result.layer is None)
                    if result.layer is not None:
                        self.loss_layers[result.layer] = self.loss_layers.get(result.layer, 0) + 1
                    self.steps += int(result.stepped)
                    self.iteration += 1
                    bar.total = self._projected_total(limit)
                    bar.update(1)
                    bar.set_postfix(clean=f"{self.clean_fraction():.2f}/{self.options.stop_fraction:.2f}",
                                    layer=result.layer, refresh=False,
                                    loss=None if result.loss is None else f"{result.loss:.3f}")
                    if guard.requested:
                        raise KeyboardInterrupt
                    if self.resume_file is not None and self.iteration % self.options.save_every == 0:
                        self.save()
                else:
                    stopped = self.clean_fraction() >= self.options.stop_fraction
        except SinderError:
            # an unreadable training image: keep what was learnt so far
            if self.resume_file is not None and self.iteration:
                self.save()
            raise
        except KeyboardInterrupt:
            if self.resume_file is not None:
                self.save()
                print(f"repair interrupted at iteration {self.iteration}; state saved to {self.resume_file}, "
                      "run the same command again to continue", file=sys.stderr)
            raise
        finally:
            bar.close()
            self.model.eval()
        if self.resume_file is not None:
            self.save()
        return TrainResult(iterations=self.iteration, stopped_early=stopped, clean_fraction=self.clean_fraction(),
                           steps=self.steps, seconds=time.perf_counter() - start, loss_layers=dict(self.loss_layers))

    # ---- resume -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": RESUME_FORMAT,
            "version": RESUME_VERSION,
            "fingerprint": self.fingerprint,
            "iteration": self.iteration,
            "steps": self.steps,
            "history": torch.tensor(list(self.history), dtype=torch.bool),
            "loss_layers": {str(k): v for k, v in self.loss_layers.items()},
            "epsilon": {name: p.detach().clone() for name, p in self.eps.items()},
            "optimizer": self.optimizer.state_dict(),
        }

    def save(self) -> None:
        state = self.state_dict()
        write_with(self.resume_file, lambda tmp: torch.save(state, tmp))

    def load_state_dict(self, state: dict) -> None:
        names = set(self.eps)
        if set(state["epsilon"]) != names:
            raise SinderError("resume state does not match the model's layers")
        with torch.no_grad():
            for name, p in self.eps.items():
                value = state["epsilon"][name]
                if value.shape != p.shape:
                    raise SinderError(f"resume state: {name} has shape {tuple(value.shape)}, expected {tuple(p.shape)}")
                p.copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state["iteration"])
        self.steps = int(state["steps"])
        history = state["history"].tolist()
        if len(history) != self.options.window:
            raise SinderError(f"resume state has a window of {len(history)}, expected {self.options.window}")
        self.history = deque((bool(h) for h in history), maxlen=self.options.window)
        self.loss_layers = {int(k): int(v) for k, v in state.get("loss_layers", {}).items()}

    def try_resume(self, mode: str = "auto") -> bool:
        """Continue from the resume file. ``mode``: ``"auto"`` (when it exists and matches),
        ``"require"`` (error unless it does) or ``"never"``. Returns whether it resumed."""
        if mode == "never" or self.resume_file is None:
            return False
        path = self.resume_file
        if not path.is_file():
            if mode == "require":
                raise SinderError(f"no resume file at {path}")
            return False
        state = read_resume(path)
        if state is None or state.get("fingerprint") != self.fingerprint:
            if mode == "require":
                why = "unreadable" if state is None else "from a different model, image set or options"
                raise SinderError(f"resume file {path} is {why}; rerun without --resume to start over")
            print(f"ignoring resume file {path}: it is from a different model, image set or options",
                  file=sys.stderr)
            return False
        self.load_state_dict(state)
        print(f"resuming repair at iteration {self.iteration} from {path}", file=sys.stderr)
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
