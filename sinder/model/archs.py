"""The DINOv2 architectures, as the official hub code builds them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from contract.preprocess import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (re-exported: the contract's)

PATCH_SIZE = 14
NATIVE_IMG_SIZE = 518  # 37 x 37 patches: the grid the position embedding was trained on
INTERPOLATIONS = ("official", "hf", "antialias", "official_antialias")  # see pos_embed.MODES


@dataclass(frozen=True)
class ArchConfig:
    name: str
    embed_dim: int
    depth: int
    num_heads: int
    ffn: str = "mlp"  # "mlp" (fc1/GELU/fc2) or "swiglu" (w12/SiLU-gate/w3, ViT-g)
    mlp_ratio: float = 4.0
    num_register_tokens: int = 0
    patch_size: int = PATCH_SIZE
    img_size: int = NATIVE_IMG_SIZE
    # "official": bicubic with scale_factor carrying a 0.1 offset (facebookresearch/dinov2 ViT-S/B/L/g);
    # "hf": bicubic with size= (transformers Dinov2Model);
    # "antialias": bicubic with size= and antialias (official *_reg models, transformers Dinov2WithRegistersModel);
    # "official_antialias": the 0.1 offset with antialias (what the SINDER reference code runs). See pos_embed.py.
    interpolation: str = "official"
    layerscale_init: float = 1e-5

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def ffn_hidden(self) -> int:
        hidden = int(self.embed_dim * self.mlp_ratio)
        if self.ffn == "swiglu":
            # dinov2/layers/swiglu_ffn.py: SwiGLUFFNFused rounds 2/3 of the width up to a multiple of 8
            hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        return hidden

    def with_(self, **changes) -> "ArchConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


_BASE = {
    "vits14": ArchConfig("vits14", 384, 12, 6),
    "vitb14": ArchConfig("vitb14", 768, 12, 12),
    "vitl14": ArchConfig("vitl14", 1024, 24, 16),
    "vitg14": ArchConfig("vitg14", 1536, 40, 24, ffn="swiglu"),
}

ARCHS: dict[str, ArchConfig] = dict(_BASE)
for _name, _cfg in _BASE.items():
    ARCHS[f"{_name}_reg"] = _cfg.with_(name=f"{_name}_reg", num_register_tokens=4)


def get_arch(name: str) -> ArchConfig:
    try:
        return ARCHS[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHS)}") from None

