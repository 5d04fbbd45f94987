"""linear_logprob: log-probability of each target under hidden @ weight.T
(an lm_head followed by token_logprob) without holding the full logits.

The vocabulary is streamed in chunks of VOCAB_CHUNK (4096, a constant of the
op: it is the chunk of the canonical log-sum-exp tree), each chunk's logits
computed by the linear kernels, so the result is bitwise
token_logprob(get_op("lm_head").forward_fp32(hidden, weight), target_ids).
The backward streams the same way (logits recomputed chunk by chunk, or read
from the forward's when given; each row's log-sum-exp taken from the forward
when given, else recomputed) and is bitwise token_logprob backward then
lm_head backward in fp32.
Numerics: csrc/core/ops/logprob.h and linear.h; docs/ops/logprob.md.
"""

from __future__ import annotations

from typing import Any

from .. import _C, _arrays
from ..registry import resolve_backend
from .token_logprob import DEFAULT_IGNORE_INDEX

VOCAB_CHUNK = _C.LOGPROB_VOCAB_CHUNK

# The most fp32 logits (32 MiB) golden_kernels.torch's linear_logprob keeps from
# its forward for its backward (return_logits / backward(logits=...)); above
# it the backward recomputes them. The bits are the same either way.
MAX_SAVED_LOGITS = 1 << 23


def _check(hidden: Any, weight: Any, target_ids: Any, chunk_size: int | None) -> None:
    for x, name in ((hidden, "hidden"), (weight, "weight"), (target_ids, "target_ids")):
        _arrays.check_array(x, name)
    if len(hidden.shape) == 0:
        raise ValueError("hidden: expected at least 1 dimension, got a scalar")
    if _arrays.shape(target_ids) != _arrays.shape(hidden)[:-1]:
        raise ValueError(
            f"target_ids: expected shape {_arrays.shape(hidden)[:-1]} (hidden's shape without the hidden "
            f"dimension), got {_arrays.shape(target_ids)}"
        )
    if chunk_size is not None and chunk_size != VOCAB_CHUNK:
        raise ValueError(
            f"chunk_size must be None or {VOCAB_CHUNK}: the vocabulary chunk is a constant of the op "
            f"(it fixes the canonical reduction order), got {chunk_size}"
        )


def forward(hidden: Any, weight: Any, target_ids: Any, *, chunk_size: int | None = None,
            ignore_index: int = DEFAULT_IGNORE_INDEX, return_entropy: bool = False,
            return_lse: bool = False, return_logits: bool = False, return_entropy_partial: bool = False,
            backend: str | None = None) -> Any:
    """float32 log p(target) per row; with return_entropy=True also the float32
    entropy of each row's softmax: (logprob, entropy). return_lse=True appends
    each row's float32 log-sum-exp, for backward(lse=...): (logprob[, entropy], lse).
    return_logits=True appends the float32 logits [..., vocab] (bitwise
    lm_head.forward_fp32's; rows x vocab floats held), for backward(logits=...).
    return_entropy_partial=True appends each row's float32 (max, sum, shifted)
    [..., 3] (entropy_partials' format, bitwise entropy_partials of the logits),
    for backward(entropy_partial=...), with or without grad_entropy. Outputs
    come in this order: logprob, entropy, lse, logits, entropy_partial."""
    _check(hidden, weight, target_ids, chunk_size)
    backend = resolve_backend(backend, hidden, weight, target_ids)
    rows_shape = _arrays.shape(hidden)[:-1]
    logprob = _arrays.empty(hidden, rows_shape, "float32")
    entropy = _arrays.empty(hidden, rows_shape, "float32") if return_entropy else None
    lse = _arrays.empty(hidden, rows_shape, "float32") if return_lse else None
    vocab = _arrays.shape(weight)[0] if len(_arrays.shape(weight)) == 2 else 0  # the binding checks weight
    logits = _arrays.empty(hidden, (*rows_shape, vocab), "float32") if return_logits else None
    partial = _arrays.empty(hidden, (*rows_shape, 3), "float32") if return_entropy_partial else None
    _C.linear_logprob_forward(
        backend, _arrays.stream(hidden), _arrays.capsule(hidden), _arrays.capsule(weight),
        _arrays.capsule(target_ids), _arrays.capsule(logprob),
        None if entropy is None else _arrays.capsule(entropy), int(ignore_index),
        None if lse is None else _arrays.capsule(lse), None if logits is None else _arrays.capsule(logits),
        None if partial is None else _arrays.capsule(partial),
    )
    extra = tuple(x for x in (entropy, lse, logits, partial) if x is not None)
    return (logprob, *extra) if extra else logprob


forward_fp32 = forward


def backward(grad_logprob: Any, hidden: Any, weight: Any, target_ids: Any, *, grad_entropy: Any = None,
             ignore_index: int = DEFAULT_IGNORE_INDEX, fp32: bool = False, backend: str | None = None,
             needs: tuple[bool, bool] = (True, True), lse: Any = None, logits: Any = None,
             entropy_partial: Any = None) -> tuple[Any, Any]:
    """(grad_hidden, grad_weight) of the logprob output (grad_logprob: float32
    [rows]) and, with grad_entropy, of the entropy output too; neither logits nor
    their gradient are ever held whole. Bitwise equal to token_logprob.backward
    (+ entropy.backward, added in fp32) with fp32=True, then lm_head.backward on
    fp32 operands, rounded once to hidden's dtype (float32 with fp32=True).
    Ignored targets contribute nothing. `needs` skips a gradient (None).
    lse: the forward's (return_lse=True; not with grad_entropy) skips the row
    statistics pass (one more lm_head over the vocabulary); the bits are the same.
    logits: the forward's (return_logits=True; float32 [..., vocab]) are read
    instead of recomputed (with grad_entropy too); the bits are the same.
    entropy_partial: the forward's (return_entropy_partial=True) skips the row
    statistics pass with or without grad_entropy (not together with lse); the
    bits are the same."""
    _check(hidden, weight, target_ids, None)
    named = [(grad_logprob, "grad_logprob"), (grad_entropy, "grad_entropy"), (lse, "lse"), (logits, "logits"),
             (entropy_partial, "entropy_partial")]
    arrays = [x for x, _ in named if x is not None]
    for x, name in named:
        if x is not None:
            _arrays.check_array(x, name)
    backend = resolve_backend(backend, hidden, weight, target_ids, *arrays)
    grad_dtype = "float32" if fp32 else _arrays.dtype_name(hidden)
    grad_hidden = _arrays.empty(hidden, _arrays.shape(hidden), grad_dtype) if needs[0] else None
    grad_weight = _arrays.empty(hidden, _arrays.shape(weight), grad_dtype) if needs[1] else None
    _C.linear_logprob_backward(
        backend, _arrays.stream(hidden), _arrays.capsule(grad_logprob),
        None if grad_entropy is None else _arrays.capsule(grad_entropy), _arrays.capsule(hidden),
        _arrays.capsule(weight), _arrays.capsule(target_ids),
        None if grad_hidden is None else _arrays.capsule(grad_hidden),
        None if grad_weight is None else _arrays.capsule(grad_weight), int(ignore_index),
        None if lse is None else _arrays.capsule(lse), None if logits is None else _arrays.capsule(logits),
        None if entropy_partial is None else _arrays.capsule(entropy_partial),
    )
    return grad_hidden, grad_weight


def linear_logprob(hidden: Any, weight: Any, target_ids: Any, *, chunk_size: int | None = None,
                   ignore_index: int = DEFAULT_IGNORE_INDEX, return_entropy: bool = False,
                   backend: str | None = None) -> Any:
    """Functional fused lm_head + token logprob (see forward)."""
    return forward(hidden, weight, target_ids, chunk_size=chunk_size, ignore_index=ignore_index,
                   return_entropy=return_entropy, backend=backend)
