"""Singular-value fine-tuning: every Linear becomes U·diag(S+ε)·Vᵀ + b with only ε trainable.

SINDER (Wang et al., ECCV 2024) repairs a model by shifting the singular values of its
Linear layers, which keeps every weight's singular vectors (what the layer "reads" and
"writes") and so changes the model as little as a fine-tune can. For ``attn.qkv`` only the
value rows get an ε: moving queries or keys would re-route attention everywhere.

The effective weight is stored as ``W0 + U·diag(ε)·Vᵀ``, which equals ``U·diag(S+ε)·Vᵀ``
in exact arithmetic but is bit-identical to the original weight while ε is zero: the
parametrised model starts exactly where the original is, and layers that training never
touched fold back to their original bytes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


class _ShiftedLinear(torch.autograd.Function):
    """``y = x Wᵀ + b`` with ``W = W0 + U·diag(ε)·Vh`` precomputed; gradients for x and ε only.

    Autograd through the reconstruction would rebuild W from U, ε and Vh on every call and
    form dL/dW before projecting it; here W is cached between optimiser steps and dL/dε is
    taken along whichever of two equivalent paths costs fewer multiply-adds for the token count.
    The factors are asked for only here, so a layer that never gets a gradient is never factorised.

    Under autocast the products run in the autocast dtype with W and the factors cast once per
    optimiser step (cached), and dL/dε is summed in float32: ε and its gradient stay float32.
    """

    @staticmethod
    def forward(ctx, x, eps, weight, bias, module):
        dt = _autocast_dtype(x.device.type)
        ctx.module, ctx.x_dtype, ctx.dt = module, x.dtype, dt
        if dt is not None:
            weight, x = module.cast(dt), x.to(dt)
            bias = None if bias is None else bias.to(dt)
        with torch.autocast(x.device.type, enabled=False):
            y = F.linear(x, weight, bias)
        ctx.save_for_backward(x, weight)
        return y

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x = grad_eps = None
        grad_out = grad_out.to(weight.dtype)
        if ctx.needs_input_grad[0]:
            grad_x = (grad_out @ weight).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            u, vh = ctx.module.cast_factors(weight.dtype)
            g = grad_out[..., ctx.module.row0 :].reshape(-1, u.shape[0])
            xs = x.reshape(-1, vh.shape[1])
            n, (out_f, rank), in_f = g.shape[0], u.shape, vh.shape[1]
            # dL/dε_i = u_iᵀ (gᵀx) v_i: either project each token first (n·r·(out+in))
            # or form gᵀx first (n·out·in + r·out·in); same value, pick the cheaper.
            acc = ctx.module.epsilon.dtype  # the sum over tokens in ε's own precision
            if n * rank * (out_f + in_f) <= out_f * in_f * (n + rank):
                grad_eps = ((g @ u).to(acc) * (xs @ vh.T).to(acc)).sum(0)
            else:
                grad_eps = ((u.T @ (g.T @ xs)).to(acc) * vh.to(acc)).sum(1)
        return grad_x, grad_eps, None, None, None


def _thin_svd(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # LAPACK is markedly faster on tall matrices than on wide ones: factorise the tall orientation.
    if w.shape[0] >= w.shape[1]:
        return torch.linalg.svd(w, full_matrices=False)
    u, s, vh = torch.linalg.svd(w.T, full_matrices=False)
    return vh.T.contiguous(), s, u.T.contiguous()


class SVDLinear(nn.Module):
    """A frozen Linear whose rows ``[row0:]`` get trainable singular-value shifts ``epsilon``.

    ``row0`` is 0 for an ordinary Linear and ``2·C`` for ``attn.qkv`` (q and k stay frozen).
    Everything but ``epsilon`` is a buffer, so ``parameters()`` yields ε alone. The factors
    U, S, Vh are non-persistent buffers filled on first need (see :meth:`factors`).
    """

    def __init__(self, linear: nn.Linear, row0: int = 0):
        super().__init__()
        weight = linear.weight.detach()
        if not 0 <= row0 < weight.shape[0]:
            raise ValueError(f"row0={row0} outside the {weight.shape[0]} rows of the weight")
        self.in_features, self.out_features, self.row0 = weight.shape[1], weight.shape[0], row0
        self.register_buffer("weight0", weight.clone())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.epsilon = nn.Parameter(torch.zeros(min(weight.shape[0] - row0, weight.shape[1]), dtype=weight.dtype,
                                                device=weight.device))
        # U, S, Vh of the trainable rows: computed on first need (a gradient or a non-zero ε), since
        # most layers of a deep model never fall in a training window and an SVD is not cheap.
        # Non-persistent buffers: they follow .to(), stay out of the state dict.
        for name in ("U", "S", "Vh"):
            self.register_buffer(name, None, persistent=False)
        self._cache: tuple[tuple[int, int], torch.Tensor] | None = None
        self._cast: tuple | None = None  # (key, effective weight in the autocast dtype)
        self._cast_factors: tuple | None = None  # (dtype, U, Vh) in the autocast dtype

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(U, S, Vh)`` of the trainable rows ``weight0[row0:]``."""
        if self.U is None:
            with torch.no_grad():
                self.U, self.S, self.Vh = _thin_svd(self.weight0[self.row0 :])
        return self.U, self.S, self.Vh

    def effective_weight(self) -> torch.Tensor:
        """``W0 + U·diag(ε)·Vh`` (rows before ``row0`` untouched), recomputed only after ε changes."""
        eps = self.epsilon
        key = (eps._version, eps.data_ptr())  # an optimiser step or load_state_dict bumps the version
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        with torch.no_grad():
            if not bool(eps.any()):
                weight = self.weight0
            else:
                u, _, vh = self.factors()
                shifted = torch.addmm(self.weight0[self.row0 :], u * eps, vh)
                weight = torch.cat([self.weight0[: self.row0], shifted]) if self.row0 else shifted
        self._cache = (key, weight)
        return weight

    def cast(self, dtype: torch.dtype) -> torch.Tensor:
        """The effective weight in ``dtype`` (autocast's), cast once per optimiser step."""
        weight = self.effective_weight()
        if weight.dtype == dtype:
            return weight
        key = (self._cache[0], dtype)  # the ε version effective_weight() was computed for
        if self._cast is None or self._cast[0] != key:
            self._cast = (key, weight.to(dtype))
        return self._cast[1]

    def cast_factors(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        u, _, vh = self.factors()
        if u.dtype == dtype:
            return u, vh
        if self._cast_factors is None or self._cast_factors[0] != dtype:
            self._cast_factors = (dtype, u.to(dtype), vh.to(dtype))
        return self._cast_factors[1], self._cast_factors[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.effective_weight()
        if torch.is_grad_enabled() and (self.epsilon.requires_grad or x.requires_grad):
            return _ShiftedLinear.apply(x, self.epsilon, weight, self.bias, self)
        return F.linear(x, weight, self.bias)

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` holding the effective weight (ε folded in)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.weight0.device, dtype=self.weight0.dtype)
        with torch.no_grad():
            linear.weight.copy_(self.effective_weight())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        linear.weight.requires_grad_(False)
        if linear.bias is not None:
            linear.bias.requires_grad_(False)
        return linear

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, trainable_rows=[{self.row0}:], "
                f"rank={self.epsilon.numel()}")


def _qkv_row0(name: str, linear: nn.Linear) -> int:
    # The fused projection stacks q, k, v row-wise (official layout); only v is trainable.
    return 2 * (linear.out_features // 3) if name == "qkv" else 0


def apply_svd(model: nn.Module) -> dict[str, SVDLinear]:
    """Freeze ``model`` and replace every ``nn.Linear`` in it, in place, by an :class:`SVDLinear`.

    Returns the new modules by their qualified name (``blocks.3.attn.qkv``...).
    """
    for param in model.parameters():
        param.requires_grad_(False)
    targets = [(name, mod) for name, mod in model.named_modules() if type(mod) is nn.Linear]
    replaced: dict[str, SVDLinear] = {}
    for name, linear in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        svd = SVDLinear(linear, row0=_qkv_row0(attr, linear))
        setattr(parent, attr, svd)
        replaced[name] = svd
    return replaced


def fold_svd(model: nn.Module) -> nn.Module:
    """Replace every :class:`SVDLinear` in ``model``, in place, by a plain Linear with ε folded in.

    The state dict afterwards has the layout it had before :func:`apply_svd`.
    """
    targets = [(name, mod) for name, mod in model.named_modules() if isinstance(mod, SVDLinear)]
    for name, svd in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, svd.to_linear())
    return model


def block_epsilons(model: nn.Module) -> list[list[nn.Parameter]]:
    """The ε parameters of each block of ``model.blocks``, in block order."""
    return [[m.epsilon for m in blk.modules() if isinstance(m, SVDLinear)] for blk in model.blocks]


def named_epsilons(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if name.endswith("epsilon")}
