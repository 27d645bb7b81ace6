"""The "planted" synthetic DINOv2 ViT-S/14 (``--demo``): a defect built around the method.

Real weights cannot be downloaded here or in CI, so the demo models are generated from a seed.
They are *not* trained networks: their numbers are labelled synthetic wherever they appear.
This one is fast and easy for SINDER by construction: its defect lives in private residual
channels that no other weight reads, fires on fixed position-embedding blobs rather than on image
content, and its weights are shaped so that the paper's linearisation sees exactly the defect.
So removing the defect changes nothing else, and the repair's fidelity holds by construction.
``sinder.demo_entangled`` (``--demo entangled``) is the one whose defect arises from image
content, along a dense direction, and is read by later blocks.

How the defect is planted (each choice is there for a reason found by trial):

- Three residual channels are private: ``detector``, ``flag`` and ``defect``. No ordinary
  weight reads from or writes to them. (When later blocks read the defect channel, defect
  tokens turn into attention sinks, and removing them then moves every other token too, so a
  repair could not stay faithful.)
- The position embedding puts about +1 into ``detector`` on a few smooth blobs (about 4% of
  the grid) and -1 elsewhere. After LayerNorm that value is large exactly for tokens whose
  other channels are small: low-texture background patches. The blobs keep any one image
  from having more than a few percent of defect tokens, however much flat background it shows.
- Block 0's FFN has a saturating switch from ``detector`` to ``flag`` (units whose bias lies
  far below -1.5 times their weight norm, where the paper's linearisation does not see them).
  The flag (45) dominates its token's LayerNorm scale, so the next reader sees nearly the same
  value on every flagged token.
- The defect block (about half depth) has two FFN units that read only ``flag`` and write only
  ``defect``: the high-norm tokens. Their biases sit at -0.15 times their weight norm, inside
  the -0.15..-1.5 range that the paper's least-squares linearisation (standard-normal inputs)
  sees, yet about -200 in absolute terms, so tokens below threshold give exactly zero.
- Switching off is one-sided (a unit below threshold stays silent whatever the weights do, the
  output never flips sign), so SINDER's SGD on singular values does not oscillate around zero;
  the flag writer has a small singular value, which SGD on epsilon moves fast.
- Every token carries a small bounded value on ``defect`` (as real tokens have some component
  along any direction): otherwise the paper's scale-free mask would flag a 1e-20 trace of
  defect left after a repair.
- LayerScale gammas are 0.1-0.5 (not DINOv2's 1e-5 init) so that attention really mixes tokens;
  the blocks before the defect block write 3x more and those after it 6x, so that natural
  token norms stay within a few times their median and only the defect stands out.
- Weights that read LayerNorm outputs are orthogonal to the all-ones direction: LayerNorm
  centres its output so this changes nothing in the forward pass, but the linearisation's
  centering would otherwise leak the defect direction into ordinary ones block after block.

Everything is drawn on the CPU from a ``torch.Generator`` in float64, rounded to a 2^-20 grid
and cast to float32, so the weights (and their sha256) are the same on every machine.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .demo_kinds import DEMO_KINDS
from .model import ARCHS, ArchConfig, LoadedModel, build_model

DEMO_ARCH: ArchConfig = ARCHS["vits14"]  # official shape and interpolation; weights say the rest
DEFECT_BLOCK = 5  # 0-based: the 6th of 12 blocks
DEMO_NOTE = (
    "synthetic planted demo weights generated from a seed: a defect in private channels that nothing else "
    "reads, built around the method; not a trained DINOv2 and not comparable with real-model figures"
)

_GRID = 2.0**-20
# Tunables of the planted defect (see the module docstring).
_BLOB_AREA = 0.04  # fraction of the native position grid where the detector channel is positive
_BLOB_LEVEL = 1.0  # detector value inside a blob (before LayerNorm); minus it outside
_TEXTURE = 1.0  # patch-embedding gain of the zero-mean (texture) filters
_COLOUR = 0.015  # and of the colour (DC) part of a quarter of the channels
_POS = 0.5  # amplitude of the smooth position-embedding fields: a floor under every token's scale
# Every token carries a small, smooth, bounded value in the defect channel, as real tokens have some
# component along any direction. Without it the paper's scale-free mask would flag any token with a
# trace (1e-20) of defect after a repair, since all other tokens would sit at exactly zero.
_D_OFFSET = 1.0
_D_WAVE = 0.3
_EARLY_GAIN = 3.0  # output weights of blocks 1 .. DEFECT_BLOCK - 1, relative to block 0
_LATE_GAIN = 6.0  # output weights of the blocks after the defect block, relative to the earlier ones


@dataclass(frozen=True)
class _Switch:
    """FFN units that read one private channel and write another."""

    u_on: float  # LayerNorm-ed value of the source channel (before the affine) where the units start firing
    threshold: float  # each unit's bias in units of its weight norm (what the linearisation sees)
    gain: float  # fc1 weight of each unit
    out: float  # fc2 weight of each unit
    ln_weight: float = 1.0  # LayerNorm weight on the source channel
    units: int = 2
    saturate_at: float | None = None  # a paired negative unit with this threshold caps the output


# Block 0 flags flat blob tokens in a private channel with a saturating switch. Its biases lie far
# below -1.5 |w|, where the paper's linearisation does not see units. The flag is large enough to
# dominate its token's LayerNorm scale, so the defect block sees nearly the same value (close to
# sqrt(C)) on every flagged token.
_FLAG = _Switch(u_on=0.9, threshold=4.0, gain=40.0, out=1.125, ln_weight=4.0, saturate_at=4.5)
# The defect block turns flagged tokens into high-norm tokens along the defect channel. Flagged tokens
# read about 19 (their flag dominates the LayerNorm scale), the others about 0; the units fire above
# 17.8. Their bias is -0.15 |w| (inside the -0.15..-1.5 range the linearisation sees) but about -200
# in absolute terms, so tokens below threshold give exactly zero, whatever happens to the weights.
# fc1's singular value is large (a slow lever for SGD on epsilon), the flag's small (a fast one): repair
# switches the defect off by lowering the flag, which is one-sided (a token that is off stays off;
# its output never flips sign, so SGD with momentum does not oscillate around zero).
_DEFECT = _Switch(u_on=17.2, threshold=0.15, gain=1345.0, out=11.8, ln_weight=0.15 / 17.2)


def _quantize(x: torch.Tensor) -> torch.Tensor:
    return (torch.round(x.double() / _GRID) * _GRID).float()


class _Draw:
    """Seeded float64 draws on the CPU."""

    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(int(seed))

    def normal(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.g, dtype=torch.float64)

    def uniform(self, lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=self.g, dtype=torch.float64)

    def perm(self, n: int) -> torch.Tensor:
        return torch.randperm(n, generator=self.g)


def _smooth_fields(draw: _Draw, n_fields: int, size: int, waves: int, max_freq: float) -> torch.Tensor:
    """``[n_fields, size, size]`` random smooth fields (sums of plane waves), unit variance."""
    coords = torch.arange(size, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    fx = draw.uniform(-max_freq, max_freq, n_fields, waves, 1, 1)
    fy = draw.uniform(-max_freq, max_freq, n_fields, waves, 1, 1)
    phase = draw.uniform(0, 2 * math.pi, n_fields, waves, 1, 1)
    amp = draw.normal(n_fields, waves, 1, 1)
    f = (amp * torch.cos(2 * math.pi * (fx * xx + fy * yy) / size + phase)).sum(dim=1)
    f = f - f.mean(dim=(1, 2), keepdim=True)
    return f / f.flatten(1).std(dim=1).clamp_min(1e-12)[:, None, None]


def _patch_filters(draw: _Draw, c: int, patch: int) -> torch.Tensor:
    """``[c, 3, patch, patch]``: mostly zero-mean texture filters, a quarter with a colour (DC) response."""
    fields = _smooth_fields(draw, 3 * c, patch, waves=4, max_freq=3.0).reshape(c, 3, patch, patch)
    colour_mix = draw.normal(c, 3, 1, 1)
    w = fields * colour_mix
    w = w - w.mean(dim=(2, 3), keepdim=True)
    w = w / w.flatten(1).norm(dim=1)[:, None, None, None]
    dc = draw.normal(c, 3, 1, 1) / patch
    has_dc = (draw.uniform(0, 1, c) < 0.25).double()[:, None, None, None]
    return _TEXTURE * w + _COLOUR * has_dc * dc.expand_as(w)


def _plane_wave(draw: _Draw, grid: int) -> torch.Tensor:
    """One smooth plane wave on the grid, in [-1, 1]."""
    coords = torch.arange(grid, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    fx, fy = draw.uniform(-1.5, 1.5, 2)
    phase = draw.uniform(0, 2 * math.pi, 1)
    return torch.cos(2 * math.pi * (fx * xx + fy * yy) / grid + phase)


def _blob_field(draw: _Draw, grid: int) -> torch.Tensor:
    """Detector values on the native grid: about +1 on a few smooth blobs, -1 elsewhere."""
    g = _smooth_fields(draw, 1, grid, waves=12, max_freq=2.5)[0]
    cut = torch.quantile(g.flatten(), 1 - _BLOB_AREA)
    return _BLOB_LEVEL * torch.tanh(6.0 * (g - cut))


def _block_state(draw: _Draw, arch: ArchConfig, private: torch.Tensor, out_gain: float = 1.0) -> dict[str, torch.Tensor]:
    c, h = arch.embed_dim, arch.ffn_hidden
    ordinary = torch.ones(c, dtype=torch.float64)
    ordinary[private] = 0.0
    s = {}
    s["norm1.weight"] = 1 + 0.1 * draw.normal(c)
    s["norm1.bias"] = 0.02 * draw.normal(c)
    qk = 0.06 * draw.normal(2 * c, c)
    v = 0.03 * draw.normal(c, c)
    s["attn.qkv.weight"] = torch.cat([qk, v]) * ordinary[None, :]
    s["attn.qkv.bias"] = torch.cat([0.02 * draw.normal(2 * c), 0.02 * draw.normal(c)])
    s["attn.proj.weight"] = 0.03 * out_gain * draw.normal(c, c) * ordinary[:, None]
    s["attn.proj.bias"] = 0.01 * draw.normal(c) * ordinary
    s["ls1.gamma"] = draw.uniform(0.1, 0.5, c)
    s["norm2.weight"] = 1 + 0.1 * draw.normal(c)
    s["norm2.bias"] = 0.02 * draw.normal(c)
    s["mlp.fc1.weight"] = 0.03 * draw.normal(h, c) * ordinary[None, :]
    s["mlp.fc1.bias"] = 0.1 * draw.normal(h) - 0.1
    s["mlp.fc2.weight"] = 0.02 * out_gain * draw.normal(c, h) * ordinary[:, None]
    s["mlp.fc2.bias"] = 0.01 * draw.normal(c) * ordinary
    s["ls2.gamma"] = draw.uniform(0.1, 0.5, c)
    # LayerNorm outputs are centred, so a reading weight's response to the all-ones vector
    # never matters in the forward pass; the paper's linearisation does see it (through the
    # centering), where it would leak the defect channel into ordinary ones block after block.
    s["attn.qkv.weight"][2 * c :] = _orthogonal_to(s["attn.qkv.weight"][2 * c :], s["norm1.weight"] * ordinary)
    s["mlp.fc1.weight"] = _orthogonal_to(s["mlp.fc1.weight"], s["norm2.weight"] * ordinary)
    return s


def _orthogonal_to(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rows of ``w`` with their component along ``v`` removed (so ``w @ v == 0``)."""
    return w - torch.outer(w @ v, v) / (v @ v)


def _plant_switch(draw: _Draw, s: dict[str, torch.Tensor], src: int, dst: int, sw: _Switch) -> list[int]:
    """Turn a few hidden units of a block's FFN into a switch from channel ``src`` to ``dst``.

    A unit computes ``out * gelu(gain * (v - threshold))`` of the LayerNorm-ed ``v = w u + b`` of
    ``src``, where ``b`` puts the firing point at ``u = u_on``; with ``saturate_at`` a paired unit
    subtracts the same with a higher threshold, so that the output levels off.
    """
    h = s["mlp.fc1.weight"].shape[0]
    per_unit = 2 if sw.saturate_at is not None else 1
    units = draw.perm(h)[: per_unit * sw.units].tolist()
    s["norm2.weight"][src] = sw.ln_weight
    s["norm2.bias"][src] = sw.threshold - sw.ln_weight * sw.u_on
    s["ls2.gamma"][dst] = 1.0
    for k in range(sw.units):
        spread = 1 + 0.25 * k  # units differ, their products gain * out do not
        parts = [(units[per_unit * k], sw.threshold, 1.0)]
        if sw.saturate_at is not None:
            parts.append((units[per_unit * k + 1], sw.saturate_at, -1.0))
        for unit, thresh, sign in parts:
            s["mlp.fc1.weight"][unit] = 0.0
            s["mlp.fc1.weight"][unit, src] = sw.gain * spread
            s["mlp.fc1.bias"][unit] = -thresh * sw.gain * spread
            s["mlp.fc2.weight"][:, unit] = 0.0
            s["mlp.fc2.weight"][dst, unit] = sign * sw.out / spread
    return units


def generate_state_dict(seed: int = 0, arch: ArchConfig = DEMO_ARCH) -> dict[str, torch.Tensor]:
    """The demo checkpoint in the official DINOv2 key layout (float32, deterministic in ``seed``)."""
    if arch.ffn != "mlp" or arch.depth <= DEFECT_BLOCK:
        raise ValueError(f"the demo needs a GELU-FFN architecture deeper than {DEFECT_BLOCK} blocks, got {arch.name}")
    draw = _Draw(seed)
    c, patch, grid = arch.embed_dim, arch.patch_size, arch.grid
    private = draw.perm(c)[:3]
    p, f, d = (int(i) for i in private)
    state: dict[str, torch.Tensor] = {}
    state["cls_token"] = (0.3 * draw.normal(1, 1, c))
    state["cls_token"][0, 0, private] = 0.0
    state["cls_token"][0, 0, p] = -_BLOB_LEVEL
    pos = _POS * _smooth_fields(draw, c, grid, waves=6, max_freq=2.0).permute(1, 2, 0).reshape(1, grid * grid, c)
    pos[..., private] = 0.0
    pos[0, :, p] = _blob_field(draw, grid).flatten()
    pos[0, :, d] = _D_WAVE * _plane_wave(draw, grid).flatten()
    state["pos_embed"] = torch.cat([torch.zeros(1, 1, c, dtype=torch.float64), pos], dim=1)
    state["mask_token"] = torch.zeros(1, c, dtype=torch.float64)
    w = _patch_filters(draw, c, patch)
    w[private] = 0.0
    state["patch_embed.proj.weight"] = w
    state["patch_embed.proj.bias"] = 0.05 * draw.normal(c)
    state["patch_embed.proj.bias"][private] = 0.0
    state["patch_embed.proj.bias"][d] = _D_OFFSET
    for i in range(arch.depth):
        gain = _LATE_GAIN if i > DEFECT_BLOCK else (_EARLY_GAIN if 0 < i < DEFECT_BLOCK else 1.0)
        blk = _block_state(draw, arch, private, gain)
        if i == 0:
            _plant_switch(draw, blk, p, f, _FLAG)
        if i == DEFECT_BLOCK:
            _plant_switch(draw, blk, f, d, _DEFECT)
        for k, v in blk.items():
            state[f"blocks.{i}.{k}"] = v
    state["norm.weight"] = 1 + 0.1 * draw.normal(c)
    state["norm.bias"] = 0.02 * draw.normal(c)
    return {k: _quantize(v).contiguous() for k, v in state.items()}


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """A canonical hash: key, dtype, shape and raw bytes of every tensor, in sorted key order."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


class PrivateChannels(NamedTuple):
    detector: int  # position-embedding blobs, read by block 0
    flag: int  # written by block 0 on flat blob tokens, read by the defect block
    defect: int  # written by the defect block: the planted singular defect direction


def private_channels(seed: int = 0, arch: ArchConfig = DEMO_ARCH) -> PrivateChannels:
    """The private residual channels of the demo model with ``seed`` (for tests and reports)."""
    private = _Draw(seed).perm(arch.embed_dim)[:3]
    return PrivateChannels(*(int(i) for i in private))


def load_demo(seed: int = 0) -> LoadedModel:
    """The synthetic defective DINOv2 ViT-S/14 generated from ``seed`` (CPU, float32, eval mode)."""
    state = generate_state_dict(seed, DEMO_ARCH)
    model = build_model(DEMO_ARCH)
    model.load_state_dict(state, strict=True)
    model.eval()
    return LoadedModel(
        model=model,
        arch=DEMO_ARCH,
        source=f"demo:seed={seed}",
        source_format="demo",
        sha256=state_dict_sha256(state),
        synthetic=True,
    )


def load_demo_kind(kind: str = "planted", seed: int = 0) -> LoadedModel:
    """The demo model of ``kind`` (one of ``DEMO_KINDS``) generated from ``seed``."""
    if kind == "planted":
        return load_demo(seed)
    if kind == "entangled":
        from .demo_entangled import load_entangled_demo

        return load_entangled_demo(seed)
    raise ValueError(f"demo kind must be one of {DEMO_KINDS}, got {kind!r}")


def demo_note(source: str) -> str:
    """What the synthetic model with ``source`` (``LoadedModel.source``) is, for reports."""
    if source.startswith("demo-entangled:"):
        from .demo_entangled import ENTANGLED_NOTE

        return ENTANGLED_NOTE
    return DEMO_NOTE
