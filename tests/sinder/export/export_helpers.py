"""A tiny random DINOv2 (depth 2, width 64) and a random unit direction, for export tests."""

import torch

from sinder.model import LoadedModel, build_model, get_arch


def tiny_loaded(registers: int = 0, seed: int = 0) -> LoadedModel:
    arch = get_arch("vits14").with_(name="tiny", embed_dim=64, depth=2, num_heads=2, img_size=112,
                                    num_register_tokens=registers, layerscale_init=0.3)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(arch)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gamma" in name:
                p.uniform_(0.1, 0.5, generator=gen)
            elif name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                p.normal_(1.0, 0.2, generator=gen)
            else:
                p.normal_(0.0, 0.1 if p.dim() > 1 else 0.05, generator=gen)
    return LoadedModel(model=model.eval(), arch=arch, source=f"random:seed={seed}", source_format="official",
                       sha256=f"{seed:064x}", synthetic=True)


def unit_direction(dim: int, seed: int = 1) -> torch.Tensor:
    d = torch.randn(dim, generator=torch.Generator().manual_seed(seed))
    return d / d.norm()


SMALL_CASES = [(1, 56, 56), (2, 56, 84)]
