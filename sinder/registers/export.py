"""The ONNX graph of a model with test-time registers: the export wrapper, with the extra token
concatenated in the graph and the neuron edit between each selected layer's activation and its
FFN output projection, per image (see ``model.move_to_register``)."""

from __future__ import annotations

import torch

from ..export.wrapper import THRESHOLD_STD, ExportWrapper
from .model import TestTimeRegisters, ffn_width, move_to_register, neuron_tables


class RegisterExportWrapper(ExportWrapper):
    """``ExportWrapper`` of ``ttr.vit`` whose blocks carry one extra zero token and edit the register
    neurons; the outputs (names, shapes, diagnostics) are the plain model's."""

    def __init__(self, ttr: TestTimeRegisters, direction: torch.Tensor, precision: str = "fp32",
                 threshold_std: float = THRESHOLD_STD, **kwargs):
        super().__init__(ttr.vit, direction, precision=precision, threshold_std=threshold_std, **kwargs)
        self.num_prefix = ttr.num_prefix_tokens
        tables = neuron_tables(ttr.neurons, len(self.blocks), ffn_width(ttr.vit))
        self.edited = sorted(tables)
        for layer, (cols, sel) in tables.items():
            self.register_buffer(f"columns_{layer}", cols, persistent=False)
            self.register_buffer(f"selector_{layer}", sel.to(self.dtype), persistent=False)

    def _edited_block(self, i: int, x: torch.Tensor, b) -> torch.Tensor:
        blk = self.blocks[i]
        x = x + blk.attention(blk.norm1(x).to(blk.dtype), b).float()
        hidden = blk.ffn_hidden(blk.norm2(x).to(blk.dtype))
        hidden = hidden.reshape(b, -1, hidden.shape[-1])  # per image: the maxima are each image's own
        hidden = move_to_register(hidden, getattr(self, f"columns_{i}"), getattr(self, f"selector_{i}"),
                                  self.num_prefix)
        return x + blk.fc2(hidden.reshape(-1, hidden.shape[-1])).float()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        b = images.shape[0]
        x = self.model.prepare_tokens(self.normalise(images)).float()
        c = x.shape[-1]
        x = torch.cat([x, x.new_zeros(b, 1, c)], dim=1).reshape(-1, c)  # the register: zero, no position
        for i, blk in enumerate(self.blocks):
            x = self._edited_block(i, x, b) if i in self.edited else blk(x, b)
        return x.reshape(b, -1, c)[:, :-1]
