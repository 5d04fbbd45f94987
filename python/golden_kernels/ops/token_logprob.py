"""token_logprob: log softmax(logits)[..., target] per row, fp32 output.

Target id ignore_index (default -100) gives logprob 0 and zero gradient; any
other id outside [0, vocab) raises ValueError. Numerics: csrc/core/ops/logprob.h,
docs/ops/logprob.md.
"""

from __future__ import annotations

from typing import Any

from .. import _C, _arrays
from ..registry import resolve_backend
from .log_softmax import check_logits

DEFAULT_IGNORE_INDEX = _C.DEFAULT_IGNORE_INDEX


def leading_shape(logits: Any) -> tuple[int, ...]:
    return _arrays.shape(logits)[:-1]


def check_target_ids(logits: Any, target_ids: Any) -> None:
    check_logits(logits)
    _arrays.check_array(target_ids, "target_ids")
    if _arrays.shape(target_ids) != leading_shape(logits):
        raise ValueError(
            f"target_ids: expected shape {leading_shape(logits)} (logits' shape without the vocabulary), "
            f"got {_arrays.shape(target_ids)}"
        )


def forward(logits: Any, target_ids: Any, *, ignore_index: int = DEFAULT_IGNORE_INDEX,
            backend: str | None = None) -> Any:
    """float32 log-probability of each target (the output is fp32 for every input dtype)."""
    check_target_ids(logits, target_ids)
    backend = resolve_backend(backend, logits, target_ids)
    out = _arrays.empty(logits, leading_shape(logits), "float32")
    _C.token_logprob_forward(
        backend, _arrays.stream(logits), _arrays.capsule(logits), _arrays.capsule(target_ids),
        _arrays.capsule(out), int(ignore_index),
    )
    return out


forward_fp32 = forward


def backward(grad_out: Any, logits: Any, target_ids: Any, *, ignore_index: int = DEFAULT_IGNORE_INDEX,
             backend: str | None = None, fp32: bool = False) -> Any:
    """grad_logits = grad_out * (onehot(target) - softmax(logits)); zero rows for
    ignored targets. grad_out: float32 of the targets' shape. Rounded once to
    logits' dtype (float32 with fp32=True)."""
    check_target_ids(logits, target_ids)
    _arrays.check_array(grad_out, "grad_out")
    backend = resolve_backend(backend, grad_out, logits, target_ids)
    grad_logits = _arrays.empty(logits, _arrays.shape(logits), "float32" if fp32 else _arrays.dtype_name(logits))
    _C.token_logprob_backward(
        backend, _arrays.stream(logits), _arrays.capsule(grad_out), _arrays.capsule(logits),
        _arrays.capsule(target_ids), _arrays.capsule(grad_logits), int(ignore_index),
    )
    return grad_logits


def token_logprob(logits: Any, target_ids: Any, *, ignore_index: int = DEFAULT_IGNORE_INDEX,
                  backend: str | None = None) -> Any:
    """Functional token log-probability (see forward)."""
    return forward(logits, target_ids, ignore_index=ignore_index, backend=backend)
