"""The exportable position-embedding interpolation against eager ``F.interpolate``."""

import pytest
import torch
import torch.nn.functional as F

from sinder.model.pos_embed import MODES, interpolate_patch_pos_embed

M = 37  # the native grid of every DINOv2 checkpoint
SIZES = [(16, 16), (16, 22), (22, 16), (14, 23), (1, 1), (2, 5), (36, 38), (40, 37), (37, 40), (74, 50), (100, 3)]


def eager(table: torch.Tensor, h: int, w: int, mode: str) -> torch.Tensor:
    """What the reference code of each mode calls (see pos_embed.MODES)."""
    offset, antialias = MODES[mode]
    dim = table.shape[-1]
    grid = table.reshape(1, M, M, dim).permute(0, 3, 1, 2)
    if offset:
        if (h, w) == (M, M):
            return table
        out = F.interpolate(grid, scale_factor=((h + offset) / M, (w + offset) / M), mode="bicubic",
                            antialias=antialias)
    else:
        out = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=antialias)
    return out.permute(0, 2, 3, 1).reshape(1, h * w, dim)


@pytest.fixture(scope="module")
def table() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    # smooth structure plus noise, at the scale of trained DINOv2 tables (|x| mostly below 0.5)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, M), torch.linspace(-1, 1, M), indexing="ij")
    freq = torch.randn(2, 16, generator=g)
    smooth = torch.sin(3 * (yy[..., None] * freq[0] + xx[..., None] * freq[1]))
    noisy = 0.1 * torch.randn(M, M, 16, generator=g)
    return (0.2 * smooth + noisy).reshape(1, M * M, 16)


@pytest.mark.parametrize("mode", ["official", "official_antialias"])
def test_offset_modes_leave_the_native_grid_untouched(table, mode):
    assert torch.equal(interpolate_patch_pos_embed(table, M, M, mode), table)


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("h,w", SIZES)
def test_matches_eager_interpolate(table, mode, h, w):
    ours = interpolate_patch_pos_embed(table, h, w, mode)
    ref = eager(table, h, w, mode)
    assert ours.shape == ref.shape == (1, h * w, table.shape[-1])
    assert (ours - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("mode", sorted(MODES))
def test_as_accurate_as_eager_on_unit_variance_tables(mode):
    # On N(0, 1) tables eager float32 itself is ~1e-5 away from exact; ours must be no worse.
    table = torch.randn(1, M * M, 8, generator=torch.Generator().manual_seed(1))
    for h, w in [(16, 22), (36, 38), (74, 50)]:
        exact = eager(table.double(), h, w, mode)
        ours = (interpolate_patch_pos_embed(table, h, w, mode).double() - exact).abs().max().item()
        theirs = (eager(table, h, w, mode).double() - exact).abs().max().item()
        assert ours <= 2 * theirs + 1e-6, (h, w, ours, theirs)


def test_modes_differ_off_the_native_grid(table):
    # Guards the tests above against comparing a mode with itself.
    outs = {m: interpolate_patch_pos_embed(table, 16, 22, m) for m in MODES}
    names = sorted(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert (outs[a] - outs[b]).abs().max().item() > 1e-3, (a, b)


def test_unknown_mode_is_refused(table):
    with pytest.raises(ValueError, match="unknown interpolation mode 'bilinear'"):
        interpolate_patch_pos_embed(table, 16, 16, "bilinear")
