"""The DINOv2 vision transformer, with the official state-dict layout."""

from __future__ import annotations

import torch
from torch import nn

from .archs import ArchConfig
from .layers import LN_EPS, Block, PatchEmbed
from .pos_embed import interpolate_patch_pos_embed


class DinoVisionTransformer(nn.Module):
    """Takes normalised images ``[B, 3, H, W]`` (H, W multiples of the patch size).

    ``forward`` returns the official output dict: ``x_norm_clstoken`` ``[B, C]``,
    ``x_norm_regtokens`` ``[B, R, C]``, ``x_norm_patchtokens`` ``[B, h*w, C]`` and
    ``x_prenorm`` ``[B, 1+R+h*w, C]``.
    """

    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.num_register_tokens = cfg.num_register_tokens
        self.interpolation = cfg.interpolation
        self.patch_embed = PatchEmbed(cfg.patch_size, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.grid * cfg.grid, d))
        if cfg.num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, d))
        # Unused at inference; kept so official checkpoints load with strict key checks.
        self.mask_token = nn.Parameter(torch.zeros(1, d))
        self.blocks = nn.ModuleList(
            Block(d, cfg.num_heads, cfg.ffn_hidden, cfg.ffn, cfg.layerscale_init) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(d, eps=LN_EPS)

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.num_register_tokens

    def prepare_tokens(self, images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        h0, w0 = h // self.patch_size, w // self.patch_size
        x = self.patch_embed(images)
        pos_patch = interpolate_patch_pos_embed(self.pos_embed[:, 1:], h0, w0, self.interpolation)
        x = torch.cat([self.cls_token.expand(b, -1, -1) + self.pos_embed[:, :1], x + pos_patch.to(x.dtype)], dim=1)
        if self.num_register_tokens:
            x = torch.cat([x[:, :1], self.register_tokens.expand(b, -1, -1), x[:, 1:]], dim=1)
        return x

    def block_outputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output tokens ``[B, 1+R+h*w, C]`` (before the final norm)."""
        x = self.prepare_tokens(images)
        outs = []
        for blk in self.blocks:
            x = blk(x)
            outs.append(x)
        return outs

    def split(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        r = self.num_register_tokens
        return {"cls": tokens[:, 0], "reg": tokens[:, 1 : 1 + r], "patch": tokens[:, 1 + r :]}

    def forward_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.prepare_tokens(images)
        for blk in self.blocks:
            x = blk(x)
        normed = self.split(self.norm(x))
        return {
            "x_norm_clstoken": normed["cls"],
            "x_norm_regtokens": normed["reg"],
            "x_norm_patchtokens": normed["patch"],
            "x_prenorm": x,
        }

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_features(images)


def build_model(cfg: ArchConfig) -> DinoVisionTransformer:
    return DinoVisionTransformer(cfg).eval()
