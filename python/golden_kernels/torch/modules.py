"""nn.Modules over the golden ops whose parameters and state_dict keys are those
of torch.nn and Hugging Face (`weight`, `bias`; Qwen3's MLP keys gate_proj,
up_proj, down_proj), so weights load from either unchanged. The numerics are
the ops' (golden_kernels.torch.functional)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from . import functional as F


class RMSNorm(nn.Module):
    """Hugging Face Qwen3RMSNorm's interface (weight of ones, variance_epsilon)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6, *, rounding: str = "once", device=None, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        self.variance_epsilon = eps
        self.rounding = rounding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight, self.variance_epsilon, rounding=self.rounding)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}, rounding={self.rounding!r}"


class Linear(nn.Linear):
    """torch.nn.Linear with the golden contraction. bias defaults to False (the
    Qwen3 projections have none), unlike torch.nn.Linear."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class LMHead(Linear):
    """The vocabulary projection (HF: lm_head = nn.Linear(hidden, vocab, bias=False))."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.lm_head(hidden, self.weight, self.bias)


class Embedding(nn.Embedding):
    """torch.nn.Embedding with the golden gather and deterministic backward;
    padding_idx is honoured, the options that rescale rows are refused."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: Optional[int] = None,
                 max_norm: Optional[float] = None, norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                 sparse: bool = False, _weight=None, _freeze: bool = False, device=None, dtype=None):
        if max_norm is not None or scale_grad_by_freq or sparse:
            raise ValueError("golden Embedding supports neither max_norm, scale_grad_by_freq nor sparse")
        super().__init__(num_embeddings, embedding_dim, padding_idx, _weight=_weight, _freeze=_freeze,
                         device=device, dtype=dtype)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(token_ids, self.weight, self.padding_idx)


class SiLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


class SwiGLUMLP(nn.Module):
    """down_proj(silu(gate_proj(x)) * up_proj(x)): Hugging Face Qwen3MLP's keys
    and shapes, with the activation and product fused into one rounding."""

    def __init__(self, hidden_size: int, intermediate_size: int, device=None, dtype=None):
        super().__init__()
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.gate_proj = Linear(hidden_size, intermediate_size, device=device, dtype=dtype)
        self.up_proj = Linear(hidden_size, intermediate_size, device=device, dtype=dtype)
        self.down_proj = Linear(intermediate_size, hidden_size, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.swiglu(self.gate_proj(x), self.up_proj(x)))
