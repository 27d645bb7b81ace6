"""Small random DINOv2-shaped models, with or without a planted defect, for the defect tests."""

import torch

from sinder.model import ArchConfig, build_model

TINY = ArchConfig("tiny", embed_dim=48, depth=4, num_heads=2, layerscale_init=0.3)


def random_model(cfg: ArchConfig = TINY, seed: int = 0, weight_std: float = 0.05):
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.1, 0.5)
            elif p.dim() > 1 and "blocks" in name:
                p.normal_(0, weight_std)
            elif "norm" in name and name.endswith("weight"):
                p.normal_(1, 0.1)
            else:
                p.normal_(0, 0.02)
    return model


def plant(model, block: int, src: int, dst: int, gain: float = 50.0, bias_over_norm: float = -0.5,
          out: float = 2.0, units: int = 2):
    """Make channels src/dst private and add FFN units in ``block`` that read src and write dst."""
    with torch.no_grad():
        for blk in model.blocks:
            for ch in (src, dst):
                blk.attn.qkv.weight[:, ch] = 0
                blk.attn.proj.weight[ch] = 0
                blk.attn.proj.bias[ch] = 0
                blk.mlp.fc1.weight[:, ch] = 0
                blk.mlp.fc2.weight[ch] = 0
                blk.mlp.fc2.bias[ch] = 0
        mlp = model.blocks[block].mlp
        for u in range(units):
            mlp.fc1.weight[u] = 0
            mlp.fc1.weight[u, src] = gain
            mlp.fc1.bias[u] = bias_over_norm * gain
            mlp.fc2.weight[:, u] = 0
            mlp.fc2.weight[dst, u] = out
        model.blocks[block].ls2.gamma[dst] = 1.0
    return model
