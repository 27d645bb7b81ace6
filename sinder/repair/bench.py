"""How much one repair iteration costs next to a plain forward+backward of the same model.

The headline is ``ratio_same_blocks``: the iteration against a plain forward and backward of
the blocks it runs. Where the extra goes (measured on the demo, ViT-S/14 at 224 px, loss at
block 5): about a fifth of an iteration rebuilds ``W0 + U·diag(ε)·Vᵀ`` for every Linear of the
window after each optimiser step (``r·out·in`` multiply-adds per Linear, whatever the token
count: inherent to keeping W cached between steps, and with momentum every ε of the window
changes every step); a few percent is the defect check at every block on the way (inherent:
the loss layer is the first defective one); the ε gradient's projections cost about what the
plain weight gradient costs. The rebuild's share falls as the token count grows: at the
reference's 518 px (1369 tokens) it is about a quarter of what it is at 224 px.

A repair iteration runs the blocks up to the first defective layer, checks every layer's
tokens on the way, and back-propagates into at most ``limit_layers`` blocks through the
singular-value parametrisation. Two baselines on the same image:

- ``full``: the plain model, every weight trainable, forward through all blocks and backward
  (what one step of ordinary fine-tuning costs);
- ``same_blocks``: the plain model, every weight trainable, forward up to the loss layer and
  backward through the same window of blocks (isolates the parametrisation's overhead).
"""

from __future__ import annotations

import copy
import statistics
import time

import torch

from .options import RepairOptions
from .svd import apply_svd
from .train import RepairTrainer


def _candidate_images(resolution: int, patch: int) -> list[torch.Tensor]:
    try:
        from ..images import demo_images_dir, list_images
        from .train import load_train_image

        return [load_train_image(p, resolution) for p in list_images(demo_images_dir())]
    except Exception:  # noqa: BLE001 - without the bundled photos, seeded noise is as good for timing
        side = resolution // patch * patch
        return [torch.randn(3, side, side, generator=torch.Generator().manual_seed(0))]


def _interleaved_medians(fns: dict, repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds of each function, timed in turns so that a busy machine slows all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _defective_image(trainer: RepairTrainer, image, resolution: int, patch: int):
    """The image to time and its loss layer: by default the first bundled photo that shows a
    defect, since a clean image costs a forward pass only (else the last candidate, layer None)."""
    candidates = [image] if image is not None else _candidate_images(resolution, patch)
    for image in candidates:
        layer = trainer.step(image).layer
        if layer is not None:
            break
    return image, layer


def _baselines(vit, batch: torch.Tensor, first: int, stop: int):
    """The two plain forward+backward baselines, every weight trainable (module docstring)."""
    plain = copy.deepcopy(vit).train()
    for p in plain.parameters():
        p.requires_grad_(True)

    def full() -> None:
        plain.zero_grad(set_to_none=True)
        plain.forward_features(batch)["x_prenorm"].square().mean().backward()

    def same_blocks() -> None:
        plain.zero_grad(set_to_none=True)
        with torch.no_grad():
            x = plain.prepare_tokens(batch)
            for blk in plain.blocks[:first]:
                x = blk(x)
        for blk in plain.blocks[first : stop + 1]:
            x = blk(x)
        x.square().mean().backward()

    return full, same_blocks


def _multiply_adds(vit, repair_model, image: torch.Tensor, first: int, stop: int) -> tuple[int, int]:
    """Multiply-adds of one step's weight rebuild over the window, and of the forward's Linears."""
    tokens = (image.shape[-2] // vit.patch_size) * (image.shape[-1] // vit.patch_size) + vit.num_prefix_tokens
    linears = [(m.out_features - m.row0, m.in_features) for m in repair_model.blocks[0].modules()
               if hasattr(m, "row0")]
    rebuild = (stop - first + 1) * sum(o * i * min(o, i) for o, i in linears)
    forward = (stop + 1) * sum(2 * tokens * m.in_features * m.out_features
                               for m in repair_model.blocks[0].modules() if hasattr(m, "row0")) // 2
    return rebuild, forward


def iteration_vs_forward_backward(
    model,
    resolution: int,
    image: torch.Tensor | None = None,
    options: RepairOptions | None = None,
    repeats: int = 5,
    warmup: int = 1,
) -> dict:
    """Median seconds of one repair iteration and of the two plain forward+backward baselines.

    ``model`` is a ``DinoVisionTransformer`` or a ``LoadedModel``; it is not modified. Returns
    the times, ``ratio_same_blocks`` (iteration / forward+backward of the same blocks: the
    figure with the 1.3 target), ``ratio`` (against the whole model), the multiply-adds of the
    weight rebuild against those of the forward's Linears, plus the loss layer (None when the image shows no defect, in
    which case the iteration is a forward pass only and the ratios say little).
    """
    from ..defects.directions import defect_directions

    vit = getattr(model, "model", model)
    options = options or RepairOptions(resolution=resolution)
    directions = defect_directions(vit).float()
    repair_model = copy.deepcopy(vit)
    apply_svd(repair_model)
    # a vanishing lr: the step does all its arithmetic, but the defect (hence the loss layer) stays put
    trainer = RepairTrainer(repair_model, directions, ["<bench>"], _zero_lr(options), progress=False)
    image, layer = _defective_image(trainer, image, resolution, vit.patch_size)

    stop = layer if layer is not None else len(vit.blocks) - 1
    first = max(0, stop - options.limit_layers + 1)
    full, same_blocks = _baselines(vit, image[None].float(), first, stop)
    t = _interleaved_medians({"iteration": lambda: trainer.step(image), "full": full, "same": same_blocks},
                             repeats, warmup)
    t_iter, t_full, t_same = t["iteration"], t["full"], t["same"]
    rebuild, forward = _multiply_adds(vit, repair_model, image, first, stop)
    return {
        "resolution": int(image.shape[-1]),
        "tokens": (image.shape[-2] // vit.patch_size) * (image.shape[-1] // vit.patch_size),
        "depth": len(vit.blocks),
        "loss_layer": layer,
        "window_blocks": stop - first + 1,
        "threads": torch.get_num_threads(),
        "repair_iteration_s": t_iter,
        "forward_backward_full_s": t_full,
        "forward_backward_same_blocks_s": t_same,
        "ratio": t_iter / t_full,
        "ratio_same_blocks": t_iter / t_same,
        "target_ratio": 1.3,
        "rebuild_multiply_adds_per_step": rebuild,
        "forward_linear_multiply_adds": forward,
        "rebuild_vs_forward_linears": rebuild / forward,
    }


def _zero_lr(options: RepairOptions) -> RepairOptions:
    from dataclasses import replace

    return replace(options, lr=1e-9)  # far above float32 denormals, which would slow the arithmetic down


def _forced_step(trainer: RepairTrainer, image: torch.Tensor, layer: int) -> None:
    """One iteration whose loss is taken at ``layer`` whatever the tokens (a cost probe: the
    neighbour loss itself is a few token-sized tensors), so that the window is full."""
    model, compute = trainer.model, trainer.compute
    with torch.no_grad(), compute.autocast():
        x = model.prepare_tokens(image[None].to(trainer.device))
    ins, outs = [], []
    with torch.enable_grad():
        for i, blk in enumerate(model.blocks[: layer + 1]):
            xi = x.detach().requires_grad_(i > 0)
            with compute.autocast():
                out = blk(xi)
            ins.append(xi)
            outs.append(out)
            drop = i - trainer.options.limit_layers
            if drop >= 0:
                ins[drop] = outs[drop] = None
            x = out
        loss = model.split(out)["patch"].float().square().mean()
    trainer._backward(layer, loss, ins, outs)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)


def measure_iteration(cfg, resolution: int, limit_layers: int = 10, compute=None, seed: int = 0) -> dict:
    """Seconds and peak memory of repair iterations with a full window, on random weights of ``cfg``,
    beside the ``--dry-run`` estimate of the same.

    Two iterations (the first factorises the window's weights); memory is their peak over what
    was in use before them: CUDA's max allocated bytes, or on the CPU the anonymous resident set
    (sampled; shared-library pages left out), against the estimate's trained layers, autocast
    casts and activations. On the CPU, run it in a fresh process.
    """
    import gc

    from ..device import resolve
    from ..model import build_model
    from . import memory
    from .estimate import estimate

    compute = compute or resolve("cpu", "fp32")
    dev = compute.device
    torch.manual_seed(seed)
    model = build_model(cfg).to(dev)
    apply_svd(model)
    side = resolution // cfg.patch_size * cfg.patch_size
    opts = RepairOptions(resolution=side, limit_layers=limit_layers)
    trainer = RepairTrainer(model, torch.zeros(cfg.depth, cfg.embed_dim), ["<probe>"], opts, progress=False,
                            compute=compute)
    image = torch.randn(3, side, side, generator=torch.Generator().manual_seed(seed))
    layer = min(limit_layers, cfg.depth) - 1
    sync = (lambda: torch.cuda.synchronize(dev)) if compute.is_cuda else (lambda: None)
    gc.collect()
    times = []
    cuda_base = torch.cuda.memory_allocated(dev) if compute.is_cuda else 0
    memory.reset_peak(dev)
    with memory.PeakSampler() as cpu:
        for _ in range(2):
            sync()
            t0 = time.perf_counter()
            _forced_step(trainer, image, layer)
            sync()
            times.append(time.perf_counter() - t0)
    if compute.is_cuda:
        rise = torch.cuda.max_memory_allocated(dev) - cuda_base
    else:
        rise = cpu.peak - cpu.start
    est = estimate(cfg, side, limit_layers, compute.precision, dev.type)
    m = est["memory_bytes"]
    return {
        "arch": cfg.name, "resolution": side, "device": str(dev), "precision": compute.precision,
        "first_iteration_s": times[0], "iteration_s": times[1], "window_blocks": layer + 1,
        "measured_rise_bytes": int(rise),
        "estimated_rise_bytes": int(m["trained_layers"] + m["autocast_casts"] + m["activations"]),
        "estimated_peak_bytes": int(m["peak"]), "flops_per_iteration": est["flops_per_iteration"],
    }
