"""A second synthetic DINOv2 ViT-S/14 whose defect arises the way it does in real ViTs, as far as is known.

Where the first demo (``sinder.demo``) plants its defect in private channels that nothing else
reads, this one keeps every weight dense and lets the defect come from the image:

- Every block is drawn at random (dense weights over all 384 channels; LayerNorm affine,
  LayerScale and biases all random). In the blocks before the defect block, half the heads
  compare tokens with themselves (``W_k = W_q``): similarity attention, as early layers of
  trained ViTs do, so a token in a uniform region ends up like its neighbours.
- The defect block (half depth) has a few strongly firing FFN neurons. They read a *dense*
  direction ``m``: the difference between the mean state of patches that are flat and have
  flat neighbours and the mean state of all other patches, measured on synthetic calibration
  images generated from the seed (never the bundled photos). They fire on the calibration
  patches whose score along ``m`` is in the top ``_PREVALENCE`` share, wherever they are.
- They write along a random dense unit direction ``d`` of the ordinary residual channels.
- The later blocks read it: in half the heads of the last ``_SINK_BLOCKS`` blocks, the keys of
  tokens along ``d`` are raised so that they act as attention sinks (Darcet et al., "Vision
  Transformers Need Registers"): the CLS token and the patch tokens give them a large share of
  their attention, and take the sinks' values into their own state.

Nothing is tuned until the repair looks good; the hand-set quantities and why each has its value:

====================  ===========  ====================================================================
``_PREVALENCE``       0.02         share of calibration patches the neurons fire on (real DINOv2: about
                                   2% of patches)
``_DEFECT_RATIO``     8            norm of the median firing token over the median token norm (ViT-g:
                                   434 / 57.6 = 7.5)
``_UNITS``            4            "a few" neurons, each with its own gain
``_KNEE``             0.1          GELU knee width over the score's spread: a sharp switch (near zero for
                                   most tokens, very large on a few, as register neurons behave)
``_SINK_MARGIN``      4            extra attention logit of a sink for the CLS token's mean query
``_SINK_BLOCKS``      4            the last blocks, where real high-norm tokens are attention sinks
``DEFECT_BLOCK``      6            about half depth (0-based: the 7th of 12 blocks)
``_TEXTURE``          0.35         patch-embedding gain, so that natural token norms stay within a few
                                   times their median and only the defect stands out
threshold location    norm2.bias   see below
====================  ===========  ====================================================================

One choice decides whether the paper's linearisation can see the defect, and the function does not
depend on it: where the trigger's threshold lives. A unit ``gelu(w . LN(x) + b)`` with
``LN(x) = gamma * xhat + beta`` computes the same whether its threshold is in its fc1 bias ``b`` or in
``w . beta``, but the linearisation fits ``gelu(w . z + b)`` on standard-normal ``z`` and never sees
``beta``: with the threshold in ``b`` (here ``b / |w|`` would sit several units below zero) the fit gives
these units a slope of practically zero and the predicted direction misses the defect. Here the threshold is
carried by ``norm2.bias`` along the units' input direction (the other units' fc1 biases take back what
that does to them, so they compute what they did) and the trigger units have ordinary fc1 biases. The
reason is what is known of real checkpoints: the paper reports that its prediction matches the
high-norm tokens of the DINOv2 models it studies, which it could not do if their defect neurons sat
at ``b / |w|`` far below zero. The same model with the threshold moved into fc1 (functionally identical) is checked
in ``tests/sinder/test_demo_entangled.py``: its prediction misses the defect, which is what
``--direction auto`` (the observed direction) is for.

Weights are drawn on the CPU in float64 from a ``torch.Generator`` and the calibration runs in
float64; everything is rounded to a 2^-20 grid and cast to float32, so the weights are the same on
every run (the calibration's float64 arithmetic could in principle round differently elsewhere).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from .demo import _Draw, _patch_filters, _quantize, _smooth_fields, state_dict_sha256
from .model import ARCHS, IMAGENET_MEAN, IMAGENET_STD, ArchConfig, LoadedModel, build_model

ENTANGLED_ARCH: ArchConfig = ARCHS["vits14"]
DEFECT_BLOCK = 6
ENTANGLED_NOTE = (
    "synthetic entangled demo weights generated from a seed: random dense weights with a content-triggered "
    "defect that later blocks read; not a trained DINOv2 and not comparable with real-model figures"
)

_PREVALENCE = 0.02
_DEFECT_RATIO = 8.0
_UNITS = 4
_KNEE = 0.1
_SINK_MARGIN = 4.0
_SINK_BLOCKS = 4
_CALIBRATION_IMAGES = 14
_LEAVES = 250  # discs per dead-leaves calibration image
_FLAT_NOISE = 0.02  # pixel noise below which a calibration patch counts as flat
_UNIFORM_IMAGES = 6  # of them: flat colours, to tell flatness from position and colour
_NUISANCE_DIRECTIONS = 24  # leading directions of uniform images' variation the trigger ignores
_CALIBRATION_SIZE = 224
_TEXTURE = 0.35  # patch-embedding gain: natural token norms stay within a few times their median
_POS = 0.2  # amplitude of the smooth position-embedding fields


def _dead_leaves(draw: _Draw, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One dead-leaves image (occluding discs with power-law radii, the classic model of natural image
    statistics) ``[3, size, size]`` in [0, 1], and ``[size, size]`` the texture strength at each pixel.

    Each leaf has a flat colour plus pixel noise of its own strength, from barely any to strong texture.
    """
    coords = torch.arange(size, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    img = draw.uniform(0, 1, 3, 1, 1).expand(3, size, size).clone()
    strength = torch.full((size, size), 0.01, dtype=torch.float64)
    r_min, r_max = 4.0, size / 2
    u = draw.uniform(0, 1, _LEAVES)
    radii = (r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5  # density ~ r^-3
    centres = draw.uniform(-0.1 * size, 1.1 * size, _LEAVES, 2)
    colours = draw.uniform(0, 1, _LEAVES, 3)
    noise = torch.exp(draw.uniform(math.log(0.002), math.log(0.3), _LEAVES))
    for k in range(_LEAVES):
        inside = (yy - centres[k, 0]) ** 2 + (xx - centres[k, 1]) ** 2 < radii[k] ** 2
        img[:, inside] = colours[k][:, None]
        strength[inside] = noise[k]
    img = img + strength * draw.normal(3, size, size)
    return img.clamp(0, 1), strength


def _calibration_images(draw: _Draw, n: int, size: int, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n, 3, size, size]`` normalised synthetic images and ``[n, g*g]`` bool: patch is flat, as are its neighbours.

    The first images are dead-leaves images; the last ``_UNIFORM_IMAGES`` are one flat colour each.
    A patch is flat when its pixels' noise is below ``_FLAT_NOISE``.
    """
    imgs, flats = [], []
    for i in range(n):
        if i < n - _UNIFORM_IMAGES:
            img, strength = _dead_leaves(draw, size)
        else:
            img = draw.uniform(0, 1, 3, 1, 1).expand(3, size, size).clone()
            strength = torch.zeros(size, size, dtype=torch.float64)
        texture = F.max_pool2d(strength[None, None], patch)[0, 0] >= _FLAT_NOISE  # [g, g]
        around = F.max_pool2d(texture.double()[None, None], 3, 1, 1)[0, 0] > 0
        imgs.append(img)
        flats.append(~around.flatten())
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    return (torch.stack(imgs) - mean) / std, torch.stack(flats)


def _random_block(draw: _Draw, c: int, h: int, similarity_heads: list[int], head_dim: int) -> dict[str, torch.Tensor]:
    s = {}
    s["norm1.weight"] = 1 + 0.1 * draw.normal(c)
    s["norm1.bias"] = 0.1 * draw.normal(c)
    q, k, v = 0.06 * draw.normal(c, c), 0.06 * draw.normal(c, c), 0.03 * draw.normal(c, c)
    for hd in similarity_heads:
        rows = slice(hd * head_dim, (hd + 1) * head_dim)
        k[rows] = q[rows]
    s["attn.qkv.weight"] = torch.cat([q, k, v])
    s["attn.qkv.bias"] = 0.02 * draw.normal(3 * c)
    s["attn.proj.weight"] = 0.03 * draw.normal(c, c)
    s["attn.proj.bias"] = 0.01 * draw.normal(c)
    s["ls1.gamma"] = draw.uniform(0.1, 0.5, c)
    s["norm2.weight"] = 1 + 0.1 * draw.normal(c)
    s["norm2.bias"] = 0.1 * draw.normal(c)
    s["mlp.fc1.weight"] = 0.03 * draw.normal(h, c)
    s["mlp.fc1.bias"] = 0.1 * draw.normal(h) - 0.1
    s["mlp.fc2.weight"] = 0.02 * draw.normal(c, h)
    s["mlp.fc2.bias"] = 0.01 * draw.normal(c)
    s["ls2.gamma"] = draw.uniform(0.1, 0.5, c)
    return s


def _load_block(blk, state: dict[str, torch.Tensor]) -> None:
    blk.load_state_dict({k: v.clone() for k, v in state.items()}, strict=True)


def _plant_trigger(draw: _Draw, s: dict, blk, x: torch.Tensor, flat: torch.Tensor, ratio_ref: float) -> dict:
    """Make ``_UNITS`` hidden units of ``blk``'s FFN fire on the flattest calibration patches and write ``d``.

    ``x`` ``[n, 1+N, C]`` is the calibration state entering the block and ``flat`` ``[n, N]`` the
    flat-with-flat-neighbours label; ``ratio_ref`` the median patch-token norm at the block's input.
    """
    c, h = s["mlp.fc1.weight"].shape[1], s["mlp.fc1.weight"].shape[0]
    with torch.no_grad():
        hidden = x + blk.ls1(blk.attn(blk.norm1(x)))
        y = blk.norm2(hidden)[:, 1:]  # what fc1 reads, patch tokens only
    # Flat patches against the others, by content: the difference of their mean states with the
    # directions along which uniform images (the last ones, flat in every patch) vary removed, so that
    # what depends only on position and colour does not decide where the neurons fire.
    natural, uniform = y[:-_UNIFORM_IMAGES], y[-_UNIFORM_IMAGES:]
    nat_flat = flat[:-_UNIFORM_IMAGES]
    m = natural[nat_flat].mean(dim=0) - natural[~nat_flat].mean(dim=0)
    centred = uniform.reshape(-1, c) - uniform.reshape(-1, c).mean(dim=0)
    nuisance = torch.linalg.svd(centred, full_matrices=False)[2][:_NUISANCE_DIRECTIONS]
    m = m - nuisance.T @ (nuisance @ m)
    m = m / m.norm()
    score = y[:-_UNIFORM_IMAGES].reshape(-1, c) @ m  # the uniform images are all flat: not a share
    t = float(torch.quantile(score, 1 - _PREVALENCE))
    spread = float(score.std())
    d = F.normalize(draw.normal(c), dim=0)
    units = draw.perm(h)[:_UNITS].tolist()
    gains = (1 + 0.5 * draw.uniform(0, 1, _UNITS)) / (_KNEE * spread)
    # The threshold is carried by norm2.bias along m (every token gets the same shift), and the other
    # units' fc1 biases take back what that shift does to them, so that they compute what they did.
    shift = -t * m
    s["mlp.fc1.bias"] -= s["mlp.fc1.weight"] @ shift
    s["norm2.bias"] += shift
    for unit, gain in zip(units, gains.tolist()):
        s["mlp.fc1.weight"][unit] = gain * m
        s["mlp.fc1.bias"][unit] = 0.1 * float(draw.normal(1)) - 0.1  # an ordinary bias, as every unit's
    # Each unit contributes alike (output weight inversely proportional to its gain); the median firing
    # calibration patch ends about _DEFECT_RATIO times the median norm.
    margin = float((score[score > t] - t).median())
    k = _DEFECT_RATIO * ratio_ref / (_UNITS * margin * float((s["ls2.gamma"] * d).norm()))
    s["mlp.fc2.weight"][:, units] = 0.0
    for unit, gain in zip(units, gains.tolist()):
        s["mlp.fc2.weight"][:, unit] = d * (k / gain)
    return {"units": units, "direction": d, "reads": m, "threshold": t, "spread": spread}


def _plant_sinks(draw: _Draw, s: dict, blk, x: torch.Tensor, sink: torch.Tensor, num_heads: int) -> list[int]:
    """Raise the keys of the ``sink`` tokens (``[n, 1+N]`` bool) in half of ``blk``'s heads."""
    c = x.shape[-1]
    head_dim = c // num_heads
    with torch.no_grad():
        y = blk.norm1(x)
    w, b = s["attn.qkv.weight"], s["attn.qkv.bias"]
    queries = y @ w[:c].T + b[:c]
    r = y[sink].mean(dim=0) - y[~sink].mean(dim=0)  # what sets a sink apart in what the keys read
    heads = sorted(draw.perm(num_heads)[: num_heads // 2].tolist())
    for hd in heads:
        rows = slice(hd * head_dim, (hd + 1) * head_dim)
        # the CLS token's mean query (patch queries get a share by their overlap with it)
        q_mean = queries[:, 0, rows].mean(dim=0)
        # logit of a query q on a key k is q.k / sqrt(head_dim); add u r^T to W_k with u along q_mean
        gap = float((y[sink] @ r).mean() - (y[~sink] @ r).mean())
        u = q_mean / q_mean.norm() ** 2 * _SINK_MARGIN * math.sqrt(head_dim) / gap
        w[c + rows.start : c + rows.stop] += torch.outer(u, r)
    return heads


def generate_entangled_state_dict(seed: int = 0, arch: ArchConfig = ENTANGLED_ARCH) -> dict[str, torch.Tensor]:
    """The entangled demo checkpoint in the official DINOv2 key layout (float32, deterministic in ``seed``)."""
    state, _ = generate_with_info(seed, arch)
    return {k: v.clone() for k, v in state.items()}


def generate_with_info(seed: int = 0, arch: ArchConfig = ENTANGLED_ARCH) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, what was planted: the trigger's units, read and written directions, the sink heads).

    Cached (generation calibrates on synthetic images for a few seconds); treat the result as read-only.
    """
    return _cached(int(seed), arch)


@functools.lru_cache(maxsize=2)
def _cached(seed: int, arch: ArchConfig) -> tuple[dict[str, torch.Tensor], dict]:
    return _generate(seed, arch)


def _generate(seed: int, arch: ArchConfig) -> tuple[dict[str, torch.Tensor], dict]:
    if arch.ffn != "mlp" or arch.depth <= DEFECT_BLOCK + 1:
        raise ValueError(f"the entangled demo needs a GELU-FFN architecture deeper than {DEFECT_BLOCK + 1} blocks, "
                         f"got {arch.name}")
    draw = _Draw(seed)
    c, patch, grid, h = arch.embed_dim, arch.patch_size, arch.grid, arch.ffn_hidden
    head_dim = c // arch.num_heads
    state: dict[str, torch.Tensor] = {}
    state["cls_token"] = 0.3 * draw.normal(1, 1, c)
    pos = _POS * _smooth_fields(draw, c, grid, waves=6, max_freq=2.0).permute(1, 2, 0).reshape(1, grid * grid, c)
    state["pos_embed"] = torch.cat([torch.zeros(1, 1, c, dtype=torch.float64), pos], dim=1)
    state["mask_token"] = torch.zeros(1, c, dtype=torch.float64)
    state["patch_embed.proj.weight"] = _TEXTURE * _patch_filters(draw, c, patch)
    state["patch_embed.proj.bias"] = 0.3 * draw.normal(c)

    model = build_model(arch.with_(interpolation=arch.interpolation)).double()
    stem = {k: v for k, v in state.items()}
    model.load_state_dict({**model.state_dict(), **stem}, strict=True)
    images, flat = _calibration_images(draw, _CALIBRATION_IMAGES, _CALIBRATION_SIZE, patch)
    with torch.no_grad():
        x = model.prepare_tokens(images)
    info: dict = {}
    sink = None
    for i, blk in enumerate(model.blocks):
        similarity = sorted(draw.perm(arch.num_heads)[: arch.num_heads // 2].tolist()) if i < DEFECT_BLOCK else []
        s = _random_block(draw, c, h, similarity, head_dim)
        _load_block(blk, s)
        if i == DEFECT_BLOCK:
            ref = float(x[:, 1:].norm(dim=-1).median())
            info["trigger"] = _plant_trigger(draw, s, blk, x, flat, ref)
            _load_block(blk, s)
        if i >= arch.depth - _SINK_BLOCKS and sink is not None:
            info.setdefault("sink_heads", {})[i] = _plant_sinks(draw, s, blk, x, sink, arch.num_heads)
            _load_block(blk, s)
        with torch.no_grad():
            x = blk(x)
        if i == DEFECT_BLOCK:
            norms = x.norm(dim=-1)
            sink = norms >= 4 * norms[:, 1:].median()
            sink[:, 0] = False
            info["calibration_high_norm_fraction"] = float(sink[:, 1:].double().mean())
        for k, v in s.items():
            state[f"blocks.{i}.{k}"] = v
    state["norm.weight"] = 1 + 0.1 * draw.normal(c)
    state["norm.bias"] = 0.02 * draw.normal(c)
    return {k: _quantize(v).contiguous() for k, v in state.items()}, info


def load_entangled_demo(seed: int = 0) -> LoadedModel:
    """The entangled synthetic ViT-S/14 generated from ``seed`` (CPU, float32, eval mode)."""
    state = generate_entangled_state_dict(seed, ENTANGLED_ARCH)
    model = build_model(ENTANGLED_ARCH)
    model.load_state_dict(state, strict=True)
    model.eval()
    return LoadedModel(model=model, arch=ENTANGLED_ARCH, source=f"demo-entangled:seed={seed}",
                       source_format="demo", sha256=state_dict_sha256(state), synthetic=True)
