"""log_softmax over the last dimension (the vocabulary).

The numerics (canonical chunked (max, sum) reduction, non-finite policy) are in
csrc/core/ops/logprob.h and documented in docs/ops/logprob.md.
"""

from __future__ import annotations

from typing import Any

from .. import _C, _arrays
from ..registry import resolve_backend


def check_logits(logits: Any) -> None:
    _arrays.check_array(logits, "logits")
    if len(logits.shape) == 0:
        raise ValueError("logits: expected at least 1 dimension, got a scalar")


def _forward(logits: Any, backend: str | None, fp32: bool) -> Any:
    check_logits(logits)
    backend = resolve_backend(backend, logits)
    out = _arrays.empty(logits, _arrays.shape(logits), "float32" if fp32 else _arrays.dtype_name(logits))
    _C.log_softmax_forward(backend, _arrays.stream(logits), _arrays.capsule(logits), _arrays.capsule(out))
    return out


def forward(logits: Any, *, backend: str | None = None) -> Any:
    """log_softmax in fp32, rounded once to logits' dtype."""
    return _forward(logits, backend, fp32=False)


def forward_fp32(logits: Any, *, backend: str | None = None) -> Any:
    """log_softmax in fp32, returned unrounded (float32)."""
    return _forward(logits, backend, fp32=True)


def backward(grad_out: Any, logits: Any, *, backend: str | None = None, fp32: bool = False) -> Any:
    """grad_logits = grad_out - softmax(logits) * sum(grad_out), rounded once to
    logits' dtype (float32 with fp32=True). grad_out: logits' dtype or float32."""
    check_logits(logits)
    _arrays.check_array(grad_out, "grad_out")
    backend = resolve_backend(backend, grad_out, logits)
    grad_logits = _arrays.empty(logits, _arrays.shape(logits), "float32" if fp32 else _arrays.dtype_name(logits))
    _C.log_softmax_backward(
        backend, _arrays.stream(logits), _arrays.capsule(grad_out), _arrays.capsule(logits),
        _arrays.capsule(grad_logits),
    )
    return grad_logits


def log_softmax(logits: Any, *, backend: str | None = None) -> Any:
    """Functional log_softmax over the last dimension (see forward)."""
    return forward(logits, backend=backend)
