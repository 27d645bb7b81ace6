"""Test-time registers (Jiang, Dravid, Efros, Gandelsman, "Vision Transformers Don't Need Trained
Registers", arXiv 2506.08010) as a model wrapper.

One zero token (no position embedding) is appended after the patch tokens. In each layer
that holds *register neurons*, the FFN activation (after the non-linearity: GELU, or
silu(x1)·x2 for SwiGLU) of those neurons is edited before the output projection:

- the extra token gets, per neuron, the signed value of largest magnitude over all of the
  image's tokens (CLS, registers, patches and the extra token);
- the patch tokens get zero (CLS and trained register tokens keep theirs);

so the high-norm activations move off the image onto the extra token, which is dropped
from every output. The edit is per image: every image of a batch is edited with its own
maxima (the reference code's hook edits only the first image of a batch).

Deviation from the reference code, on purpose: its ``sign_max`` takes one scalar over all
tokens *and all selected neurons* of a layer and writes it to every selected neuron of the
extra token; here each neuron gets its own maximum, which is what "moving the neuron's
activation onto the register" describes and keeps a weakly firing neuron from receiving
another neuron's value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model import DinoVisionTransformer


def ffn_hidden(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The FFN's activation after its non-linearity: GELU(fc1 x), or silu(x1)·x2 for SwiGLU."""
    if hasattr(mlp, "w12"):
        x1, x2 = mlp.w12(x).chunk(2, dim=-1)
        return F.silu(x1) * x2
    return mlp.act(mlp.fc1(x))


def ffn_project(mlp: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The FFN's output projection of ``hidden``."""
    return mlp.w3(hidden) if hasattr(mlp, "w12") else mlp.fc2(hidden)


def ffn_width(vit: DinoVisionTransformer) -> int:
    mlp = vit.blocks[0].mlp
    return mlp.w3.in_features if hasattr(mlp, "w12") else mlp.fc1.out_features


def signed_max(values: torch.Tensor, dim: int) -> torch.Tensor:
    """The entry of largest magnitude along ``dim``, with its sign (the reference code's rule:
    the maximum unless the minimum is larger in magnitude)."""
    hi, lo = values.amax(dim=dim), values.amin(dim=dim)
    return torch.where(hi.abs() > lo.abs(), hi, lo)


def move_to_register(hidden: torch.Tensor, columns: torch.Tensor, selector: torch.Tensor,
                     num_prefix: int) -> torch.Tensor:
    """Edit ``hidden`` ``[B, N, H]`` (the last token is the extra one) for the neurons ``columns``.

    ``selector`` is the ``[k, H]`` one-hot matrix of ``columns``. Written with masks and a
    matrix product rather than in-place indexing, so that the same code exports to ONNX with
    a dynamic number of tokens.
    """
    n = hidden.shape[1]
    peak = signed_max(hidden.index_select(-1, columns), dim=1)  # [B, k], per image
    rows = torch.arange(n, device=hidden.device)
    edited_rows = (rows >= num_prefix).to(hidden.dtype)  # patches and the extra token
    is_extra = (rows == n - 1).to(hidden.dtype)
    in_columns = selector.sum(dim=0).to(hidden.dtype)  # [H]
    keep = 1.0 - edited_rows[:, None] * in_columns[None, :]  # [N, H]
    placed = (peak @ selector.to(hidden.dtype))[:, None, :] * is_extra[None, :, None]  # [B, N, H]
    return hidden * keep + placed


def neuron_tables(neurons: dict[int, list[int]], depth: int, width: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """``{layer: (columns, selector)}`` for ``move_to_register``, after checking the indices."""
    tables = {}
    for layer, cols in sorted(neurons.items()):
        if not 0 <= int(layer) < depth:
            raise ValueError(f"register neuron layer {layer} is outside the model's blocks 0..{depth - 1}")
        cols = sorted({int(c) for c in cols})
        if not cols:
            continue
        bad = [c for c in cols if not 0 <= c < width]
        if bad:
            raise ValueError(f"register neurons {bad} of layer {layer} are outside the FFN width {width}")
        index = torch.tensor(cols, dtype=torch.long)
        tables[int(layer)] = (index, F.one_hot(index, width).float())
    return tables


class TestTimeRegisters(nn.Module):
    """A DINOv2 model with one test-time register; the model's own interface, extra token dropped.

    ``forward_features``, ``block_outputs``, ``split`` and ``prepare_tokens`` return what the
    wrapped model's do, so every measurement of the tool runs on it unchanged. The weights are
    the wrapped model's (shared, not copied); ``neurons`` is ``{layer: [neuron, ...]}``.
    """

    __test__ = False  # not a pytest class, despite its name

    def __init__(self, vit: DinoVisionTransformer, neurons: dict[int, list[int]]):
        super().__init__()
        self.vit = vit  # not ``model``: ``getattr(x, "model", x)`` unwraps a LoadedModel elsewhere
        tables = neuron_tables(neurons, len(vit.blocks), ffn_width(vit))
        self.neurons = {layer: [int(c) for c in cols] for layer, (cols, _) in tables.items()}
        for layer, (cols, sel) in tables.items():
            self.register_buffer(f"columns_{layer}", cols, persistent=False)
            self.register_buffer(f"selector_{layer}", sel, persistent=False)

    # the wrapped model's attributes the tool reads
    @property
    def cfg(self):
        return self.vit.cfg

    @property
    def blocks(self):
        return self.vit.blocks

    @property
    def norm(self):
        return self.vit.norm

    @property
    def patch_size(self) -> int:
        return self.vit.patch_size

    @property
    def num_register_tokens(self) -> int:
        return self.vit.num_register_tokens

    @property
    def num_prefix_tokens(self) -> int:
        return self.vit.num_prefix_tokens

    @property
    def interpolation(self) -> str:
        return self.vit.interpolation

    @property
    def neuron_count(self) -> int:
        return sum(len(c) for c in self.neurons.values())

    def split(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.vit.split(tokens)

    def prepare_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The model's tokens (no extra token: that is added inside ``run``)."""
        return self.vit.prepare_tokens(images)

    def edit(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        if layer not in self.neurons:
            return hidden
        # the wrapped model may have been moved without this wrapper (a job moves the model it was handed)
        columns = getattr(self, f"columns_{layer}").to(hidden.device)
        selector = getattr(self, f"selector_{layer}").to(hidden.device)
        return move_to_register(hidden, columns, selector, self.vit.num_prefix_tokens)

    def run(self, images: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Every block's output ``[B, 1+R+h*w+1, C]``, the extra token last (blocks 0..``upto`` only, if given)."""
        x = self.vit.prepare_tokens(images)
        x = torch.cat([x, x.new_zeros(x.shape[0], 1, x.shape[2])], dim=1)
        outs = []
        blocks = self.vit.blocks if upto is None else self.vit.blocks[: upto + 1]
        for i, blk in enumerate(blocks):
            x = x + blk.ls1(blk.attn(blk.norm1(x)))
            hidden = self.edit(i, ffn_hidden(blk.mlp, blk.norm2(x)))
            x = x + blk.ls2(ffn_project(blk.mlp, hidden))
            outs.append(x)
        return outs

    def block_outputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output tokens ``[B, 1+R+h*w, C]`` (before the final norm), extra token dropped."""
        return [x[:, :-1] for x in self.run(images)]

    def forward_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.run(images)[-1][:, :-1]
        normed = self.vit.split(self.vit.norm(x))
        return {
            "x_norm_clstoken": normed["cls"],
            "x_norm_regtokens": normed["reg"],
            "x_norm_patchtokens": normed["patch"],
            "x_prenorm": x,
        }

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_features(images)

    def export_wrapper(self, direction: torch.Tensor, precision: str = "fp32", threshold_std: float | None = None):
        """The module ``sinder.export`` traces for this model (see ``export.py``)."""
        from .export import RegisterExportWrapper

        kwargs = {} if threshold_std is None else {"threshold_std": threshold_std}
        return RegisterExportWrapper(self, direction, precision=precision, **kwargs)

    def register_token(self, images: torch.Tensor) -> torch.Tensor:
        """The extra token after the last block ``[B, C]`` (before the final norm), for reports."""
        return self.run(images)[-1][:, -1]
