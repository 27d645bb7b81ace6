"""The SINDER training loop: one image per iteration, SGD on the singular-value shifts ε.

Per iteration (haoqiwang/sinder ``main.py``): run the blocks one by one and stop at the
first whose patch tokens hold at least ``skip_less_than`` defective tokens (from block
``first_loss_layer`` on: 0, as in the reference, unless the blocks before it have no defect
direction of their own, see ``DirectionChoice.first_own_layer``); take the neighbour loss
there; back-propagate into that block and the ``limit_layers - 1`` blocks before it only;
one SGD step. An image with no defective layer is a "clean" iteration.
Training stops once ``stop_fraction`` of the last ``window`` iterations were clean, the
window starting full of "defective" entries as in the reference (so at least
``stop_fraction · window`` iterations run).

Gradients are carried block by block (each block runs on a detached copy of its input),
so the backward pass ends exactly at the first block of the window instead of
computing gradients for earlier blocks and throwing them away.

Images stream in through ``sinder.repair.data`` (worker processes decode them); an
unreadable one is skipped with a warning, counted, and does not count as an iteration.
The forward and backward passes run under the ``Compute``'s autocast; the loss, ε and its
gradient stay float32.

The loop is resumable (``sinder.repair.resume``): every ``save_every`` iterations, on
Ctrl-C and at the end it writes ε, the optimiser state, the stream position and the
clean/defective history to a resume file. The image order is a pure function of the seed
and the epoch, so the stream position fixes where the run continues.
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

from ..errors import ImageError, SinderError
from . import memory, resume
from .data import TrainImages, epoch_order, load_train_image, stream  # noqa: F401 - epoch_order re-exported
from .loss import neighbour_loss
from .options import RepairOptions
from .resume import read_resume, resume_path_for  # noqa: F401 - the trainer's public names
from .svd import block_epsilons, named_epsilons


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
    images_per_s: float | None = None  # iterations of this run / its seconds
    memory: dict = field(default_factory=dict)  # peaks (memory.peaks)
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> why, for the images skipped


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


def _ignore_sigint(_worker_id: int) -> None:
    # A terminal's Ctrl-C reaches the decoding workers too: the main process decides what happens.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class RepairTrainer:
    """Trains the ε of a model already rewritten by :func:`sinder.repair.svd.apply_svd`.

    ``fingerprint`` identifies the run (model hash, training options, images); a resume
    file is only continued when its fingerprint is equal. ``compute`` (``sinder.device``):
    device and autocast precision, default the device the model is on, fp32. ``workers``:
    decoding processes (0: in this process). ``strict``: the first unreadable image fails the run.
    ``first_loss_layer``: the first block whose output may hold the loss.
    """

    def __init__(self, model: torch.nn.Module, directions: torch.Tensor, images: Sequence[Path],
                 options: RepairOptions, resume_file: Path | None = None, fingerprint: dict | None = None,
                 progress: bool = True, image_loader: Callable[[Path, int], torch.Tensor] = load_train_image,
                 compute=None, workers: int = 0, strict: bool = False, first_loss_layer: int = 0) -> None:
        from ..device import Compute

        if not images:
            raise SinderError("no training images")
        depth = len(model.blocks)
        if directions.shape[0] != depth:
            raise ValueError(f"{directions.shape[0]} defect directions for a model of depth {depth}")
        if not 0 <= first_loss_layer < depth:
            raise ValueError(f"first loss layer {first_loss_layer} outside the model's {depth} blocks")
        self.first_loss_layer = first_loss_layer
        self.model = model
        ref = next(model.parameters())
        self.compute = compute or Compute(ref.device, "fp32")
        self.device, self.dtype = self.compute.device, ref.dtype
        self.model.to(self.device)
        self.directions = directions.detach().to(self.device, torch.float32)
        self.images = list(images)
        self.options = options
        self.resume_file = resume_file
        self.fingerprint = dict(fingerprint or {})
        self.progress = progress
        self.dataset = TrainImages(self.images, options.resolution, image_loader)
        self.workers, self.strict = workers, strict
        self.block_eps = block_epsilons(model)
        self.eps = named_epsilons(model)
        self.optimizer = torch.optim.SGD(list(self.eps.values()), lr=options.lr, momentum=options.momentum)
        self.iteration = 0  # images trained on
        self.position = 0  # images drawn from the stream, readable or not
        self.steps = 0
        self.history: deque[bool] = deque([False] * options.window, maxlen=options.window)
        self.loss_layers: dict[int, int] = {}
        self.unreadable: dict[int, str] = {}  # image index -> why

    # ---- one iteration ------------------------------------------------------------------
    def step(self, image: torch.Tensor) -> StepResult:
        """Forward ``image`` ``[3, H, W]`` up to its first defective layer and take one SGD step there."""
        opts, model = self.options, self.model
        patch = model.patch_size
        gh, gw = image.shape[-2] // patch, image.shape[-1] // patch
        autocast = self.compute.autocast
        with torch.no_grad(), autocast():
            x = model.prepare_tokens(image[None].to(self.device, self.dtype, non_blocking=True))
        ins: list[torch.Tensor | None] = []
        outs: list[torch.Tensor | None] = []
        found = None
        with torch.enable_grad():
            for i, blk in enumerate(model.blocks):
                xi = x.detach().requires_grad_(i > 0)
                with autocast():
                    out = blk(xi)
                ins.append(xi)
                outs.append(out)
                # A block this far back cannot fall in the window of any later loss layer.
                drop = i - opts.limit_layers
                if drop >= 0:
                    ins[drop] = outs[drop] = None
                if i < self.first_loss_layer:
                    x = out
                    continue
                # the loss and its reference quantities in float32, whatever the autocast
                tokens = model.split(out)["patch"][0].float().reshape(gh, gw, -1)
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
        return self.options.max_iterations

    def _stream_end(self) -> int:
        if self.options.max_epochs is not None:
            return self.options.max_epochs * len(self.images)
        return sys.maxsize

    def _done(self, limit: int) -> bool:
        return self.iteration >= limit or self.clean_fraction() >= self.options.stop_fraction

    def _skip(self, index: int, why: str) -> None:
        if self.strict:
            raise ImageError(f"{why} (--strict: the first unreadable training image stops the run)")
        if index not in self.unreadable:
            print(f"warning: skipping unreadable training image: {why}", file=sys.stderr)
            self.unreadable[index] = why
        if len(self.unreadable) == len(self.images):
            raise ImageError(f"none of the {len(self.images)} training images is readable (the last: {why})")

    def _stream(self):
        return stream(self.dataset, self.options.seed, self.position, self._stream_end(), self.workers,
                      pin_memory=self.compute.is_cuda, worker_init_fn=_ignore_sigint)

    def run(self) -> TrainResult:
        limit = self._limit()
        start, first_iteration = time.perf_counter(), self.iteration
        self.model.train()
        memory.reset_peak(self.device)
        guard = _DeferredInterrupt()
        bar = tqdm(total=self._projected_total(limit), initial=self.iteration, desc="repair", unit="img",
                   file=sys.stderr, disable=not self.progress, dynamic_ncols=True, leave=False)
        try:
            with guard.installed():
                for index, image, why in ([] if self._done(limit) else self._stream()):
                    self.position += 1
                    if image is None:
                        self._skip(index, why)
                        continue
                    self._iterate(image, bar, limit)
                    if guard.requested:
                        raise KeyboardInterrupt
                    if self.resume_file is not None and self.iteration % self.options.save_every == 0:
                        self.save()
                    if self._done(limit):
                        break
        except SinderError:
            # nothing readable left: keep what was learnt so far
            if self.resume_file is not None and self.iteration:
                self.save()
            raise
        except KeyboardInterrupt:
            if self.resume_file is not None:
                self.save()
                print(f"repair interrupted at iteration {self.iteration}; state saved to {self.resume_file}, "
                      "run the same command again to continue", file=sys.stderr)
            raise
        except Exception as exc:
            if memory.is_out_of_memory(exc):  # the resume file of the last save is left as it was
                raise memory.out_of_memory_error(exc, self.device, self.iteration, self.resume_file) from None
            raise
        finally:
            bar.close()
            self.model.eval()
        if self.resume_file is not None:
            self.save()
        seconds = time.perf_counter() - start
        done = self.iteration - first_iteration
        return TrainResult(iterations=self.iteration, stopped_early=self.clean_fraction() >= self.options.stop_fraction,
                           clean_fraction=self.clean_fraction(), steps=self.steps, seconds=seconds,
                           loss_layers=dict(self.loss_layers), images_per_s=done / seconds if done and seconds else None,
                           memory=memory.peaks(self.device),
                           unreadable={str(self.images[i]): why for i, why in sorted(self.unreadable.items())})

    def _iterate(self, image: torch.Tensor, bar, limit: int) -> None:
        result = self.step(image)
        self.history.append(result.layer is None)
        if result.layer is not None:
            self.loss_layers[result.layer] = self.loss_layers.get(result.layer, 0) + 1
        self.steps += int(result.stepped)
        self.iteration += 1
        bar.total = self._projected_total(limit)
        bar.update(1)
        if bar.disable:
            return
        peak = memory.peaks(self.device)
        bar.set_postfix(clean=f"{self.clean_fraction():.2f}/{self.options.stop_fraction:.2f}", layer=result.layer,
                        loss=None if result.loss is None else f"{result.loss:.3f}", refresh=False,
                        mem=memory.gib(peak.get("cuda_max_allocated_bytes", peak["cpu_peak_rss_bytes"])))

    # ---- resume (sinder.repair.resume) ----------------------------------------------------
    def state_dict(self) -> dict:
        return resume.state_of(self)

    def save(self) -> None:
        resume.save(self)

    def load_state_dict(self, state: dict) -> None:
        resume.load_into(self, state)

    def try_resume(self, mode: str = "auto") -> bool:
        return resume.try_resume(self, mode)
