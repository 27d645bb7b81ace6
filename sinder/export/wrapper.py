"""The module that becomes the ONNX graph: uint8 NHWC pixels in, features and defect diagnostics out.

Normalisation lives in the graph so that every client and every server that loads the
folder preprocesses the same way, and a GPU receives uint8 (a quarter of the bytes).

The blocks are re-expressed for inference rather than traced as they are:
- tokens are kept as a 2-D ``[B*N, C]`` matrix so that every Linear exports as one Gemm
  (bias fused) instead of MatMul + Add;
- LayerScale is folded into the weights of the layer before it (one elementwise pass less
  per branch);
- in float32 the QKV projection, its bias and multi-head attention are one fused node
  (``fused_ops.py``) instead of a dozen (bias, head split, batched matmuls, softmax,
  transposes);
- for fp16 the residual stream, every LayerNorm and the softmax stay in float32, only the
  matrix products run in float16 (the recipe of mixed-precision inference).
The export checks the result against the untouched PyTorch model (see ``parity.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..defects.rule import THRESHOLD_STD
from ..defects.rule import diagnostics as defect_diagnostics
from ..model import IMAGENET_MEAN, IMAGENET_STD, DinoVisionTransformer
from ..model.layers import Block
from .fused_ops import qkv_attention

class _InferenceBlock(nn.Module):
    """One transformer block on ``[B*N, C]`` tokens, LayerScale folded in."""

    def __init__(self, blk: Block, num_heads: int, dtype: torch.dtype):
        super().__init__()
        self.num_heads = num_heads
        self.dtype = dtype
        self.norm1 = _copy_norm(blk.norm1)
        self.norm2 = _copy_norm(blk.norm2)
        g1, g2 = blk.ls1.gamma.detach().float(), blk.ls2.gamma.detach().float()
        if dtype == torch.float32:
            self.qkv = _InputMajor(blk.attn.qkv.weight, blk.attn.qkv.bias)
        else:
            self.qkv = _linear(blk.attn.qkv.weight, blk.attn.qkv.bias, dtype)
        self.proj = _linear(blk.attn.proj.weight * g1[:, None], blk.attn.proj.bias * g1, dtype)
        mlp = blk.mlp
        self.swiglu = hasattr(mlp, "w12")
        if self.swiglu:
            self.fc1 = _linear(mlp.w12.weight, mlp.w12.bias, dtype)
            self.fc2 = _linear(mlp.w3.weight * g2[:, None], mlp.w3.bias * g2, dtype)
        else:
            self.fc1 = _linear(mlp.fc1.weight, mlp.fc1.bias, dtype)
            self.fc2 = _linear(mlp.fc2.weight * g2[:, None], mlp.fc2.bias * g2, dtype)

    def attention(self, h: torch.Tensor, b) -> torch.Tensor:
        c = h.shape[-1]
        heads = self.num_heads
        if self.dtype == torch.float32:
            out = qkv_attention(h.reshape(b, -1, c), self.qkv.weight, self.qkv.bias, heads)
            return self.proj(out.reshape(-1, c))
        qkv = self.qkv(h).reshape(b, -1, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        # logits in the matmul's precision, softmax accumulated in float32
        logits = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)
        out = torch.softmax(logits.float(), dim=-1).to(self.dtype) @ v
        return self.proj(out.transpose(1, 2).reshape(-1, c))

    def ffn_hidden(self, h: torch.Tensor) -> torch.Tensor:
        """The FFN's activation after its non-linearity (test-time registers edit it here)."""
        h = self.fc1(h)
        if self.swiglu:
            x1, x2 = h.chunk(2, dim=-1)
            return F.silu(x1) * x2
        return F.gelu(h)

    def ffn(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.ffn_hidden(h))

    def forward(self, x: torch.Tensor, b) -> torch.Tensor:
        x = x + self.attention(self.norm1(x).to(self.dtype), b).float()
        return x + self.ffn(self.norm2(x).to(self.dtype)).float()


def _copy_norm(norm: nn.LayerNorm) -> nn.LayerNorm:
    out = nn.LayerNorm(norm.normalized_shape, eps=norm.eps)
    out.load_state_dict({k: v.detach().float() for k, v in norm.state_dict().items()})
    return out


class _InputMajor(nn.Module):
    """A projection's weight stored ``[in, out]``, the layout ``com.microsoft.Attention`` takes."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().float().t().contiguous())
        self.bias = nn.Parameter(bias.detach().float().clone())


def _linear(weight: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype) -> nn.Linear:
    out = nn.Linear(weight.shape[1], weight.shape[0], dtype=dtype)
    with torch.no_grad():
        out.weight.copy_(weight.detach())
        out.bias.copy_(bias.detach())
    return out


class ExportWrapper(nn.Module):
    """``images`` uint8 ``[B, H, W, 3]`` → the model repository's outputs (see model_repo/README.md).

    ``precision`` "fp16" runs the matrix products in float16 and returns the features in
    float16; the diagnostics are float32 (and the mask bool) in both precisions.
    """

    def __init__(
        self,
        model: DinoVisionTransformer,
        direction: torch.Tensor,
        precision: str = "fp32",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        threshold_std: float = THRESHOLD_STD,
    ):
        super().__init__()
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be 'fp32' or 'fp16', not {precision!r}")
        if direction.numel() != model.cfg.embed_dim:
            raise ValueError(f"defect direction has {direction.numel()} values; the model's width is {model.cfg.embed_dim}")
        self.precision = precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        # prepare_tokens (patch embedding, position-embedding interpolation) stays float32;
        # the model is used read-only and never modified
        self.model = model
        self.patch_size = model.patch_size
        self.num_register_tokens = model.num_register_tokens
        self.threshold_std = float(threshold_std)
        self.blocks = nn.ModuleList(_InferenceBlock(blk, model.cfg.num_heads, self.dtype) for blk in model.blocks)
        self.norm = _copy_norm(model.norm)
        mean_t = torch.tensor(mean, dtype=torch.float32)
        std_t = torch.tensor(std, dtype=torch.float32)
        # (x / 255 - mean) / std folded into one multiply-add
        self.register_buffer("scale", (1.0 / (255.0 * std_t)).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", (-mean_t / std_t).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("direction", direction.detach().float().reshape(-1).clone(), persistent=False)

    @property
    def output_names(self) -> list[str]:
        names = ["cls_token", "patch_tokens"]
        if self.num_register_tokens:
            names.append("register_tokens")
        return names + ["token_norms", "defect_alignment", "defect_mask"]

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).to(torch.float32)
        return x * self.scale + self.shift

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The last block's tokens ``[B, 1+R+h*w, C]`` (float32, before the final norm)."""
        b = images.shape[0]
        x = self.model.prepare_tokens(self.normalise(images)).float()
        c = x.shape[-1]
        x = x.reshape(-1, c)
        for blk in self.blocks:
            x = blk(x, b)
        return x.reshape(b, -1, c)

    def forward(self, images: torch.Tensor):
        b, h, w = images.shape[0], images.shape[1], images.shape[2]
        gh, gw = h // self.patch_size, w // self.patch_size
        x = self.encode(images)
        c = x.shape[-1]
        r = self.num_register_tokens
        normed = self.norm(x).to(self.dtype)
        outs = [normed[:, 0], normed[:, 1 + r :].reshape(b, gh, gw, c)]
        if r:
            outs.append(normed[:, 1 : 1 + r])
        norms, align, mask = defect_diagnostics(x[:, 1 + r :], self.direction, self.threshold_std)
        outs += [norms.reshape(b, gh, gw), align.reshape(b, gh, gw), mask.reshape(b, gh, gw)]
        return tuple(outs)
