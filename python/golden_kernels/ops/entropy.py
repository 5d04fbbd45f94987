"""entropy: -sum softmax(logits) * log_softmax(logits) over the last dimension,
fp32 output. Numerics: csrc/core/ops/logprob.h, docs/ops/logprob.md."""

from __future__ import annotations

from typing import Any

from .. import _C, _arrays
from ..registry import resolve_backend
from .log_softmax import check_logits


def forward(logits: Any, *, backend: str | None = None) -> Any:
    """float32 entropy of each row's softmax distribution."""
    check_logits(logits)
    backend = resolve_backend(backend, logits)
    out = _arrays.empty(logits, _arrays.shape(logits)[:-1], "float32")
    _C.entropy_forward(backend, _arrays.stream(logits), _arrays.capsule(logits), _arrays.capsule(out))
    return out


forward_fp32 = forward


def backward(grad_out: Any, logits: Any, *, backend: str | None = None, fp32: bool = False) -> Any:
    """grad_logits = -grad_out * p * (log p + H); grad_out: float32 per row.
    Rounded once to logits' dtype (float32 with fp32=True)."""
    check_logits(logits)
    _arrays.check_array(grad_out, "grad_out")
    backend = resolve_backend(backend, grad_out, logits)
    grad_logits = _arrays.empty(logits, _arrays.shape(logits), "float32" if fp32 else _arrays.dtype_name(logits))
    _C.entropy_backward(
        backend, _arrays.stream(logits), _arrays.capsule(grad_out), _arrays.capsule(logits),
        _arrays.capsule(grad_logits),
    )
    return grad_logits


def entropy(logits: Any, *, backend: str | None = None) -> Any:
    """Functional entropy (see forward)."""
    return forward(logits, backend=backend)
