"""Embedding: out = weight[token_ids] for any shape of int32/int64 ids.

Forward gathers rows (an exact copy, or an exact widening to float32); the
backward weight gradient is a deterministic segmented sum in token order.
Numerics: csrc/core/ops/embedding.h; docs/ops/embedding.md.
"""

from __future__ import annotations

from typing import Any

from .. import _C, _arrays
from ..registry import resolve_backend


def _check(token_ids: Any, weight: Any) -> None:
    _arrays.check_array(token_ids, "token_ids")
    _arrays.check_array(weight, "weight")


def _forward(token_ids: Any, weight: Any, backend: str | None, fp32: bool, out: Any = None) -> Any:
    _check(token_ids, weight)
    dim = _arrays.shape(weight)[-1] if len(weight.shape) else 0
    out_dtype = "float32" if fp32 else _arrays.dtype_name(weight)
    out = _arrays.output(weight, (*_arrays.shape(token_ids), dim), out_dtype, out)
    backend = resolve_backend(backend, token_ids, weight, out)
    _C.embedding_forward(backend, _arrays.stream(weight), _arrays.capsule(token_ids), _arrays.capsule(weight),
                         _arrays.capsule(out))
    return out


def forward(token_ids: Any, weight: Any, *, backend: str | None = None, out: Any = None) -> Any:
    """weight[token_ids] in weight's dtype (the rows' bits, copied), or written
    into `out`, of shape [*token_ids.shape, embedding_dim] and weight's dtype or
    float32 (exact widening), dense and overlapping neither input: a reused,
    already-touched output saves the allocation and its page faults."""
    return _forward(token_ids, weight, backend, fp32=False, out=out)


def forward_fp32(token_ids: Any, weight: Any, *, backend: str | None = None) -> Any:
    """weight[token_ids] widened exactly to float32 (only the gathered rows)."""
    return _forward(token_ids, weight, backend, fp32=True)


def backward(grad_out: Any, token_ids: Any, weight: Any, *, backend: str | None = None, fp32: bool = False,
             out: Any = None) -> Any:
    """dweight: for each table row, the sum of grad_out over the tokens that
    index it, added in token order in fp32, rounded once to weight's dtype (or
    float32 with fp32=True). Rows no token indexes are exactly zero. `weight`
    gives the table's shape, dtype and device; its values are not read.

    With `out` (weight's shape, weight's dtype or float32, dense, overlapping
    no input) dweight is written there, every row overwritten (unindexed rows
    with zeros), never accumulated into."""
    _check(token_ids, weight)
    _arrays.check_array(grad_out, "grad_out")
    weight_shape = _arrays.shape(weight)
    dweight = _arrays.output(weight, weight_shape, "float32" if fp32 else _arrays.dtype_name(weight), out)
    backend = resolve_backend(backend, grad_out, token_ids, weight, dweight)
    tokens = 1
    for d in _arrays.shape(token_ids):
        tokens *= d
    vocab = weight_shape[0] if weight_shape else 0
    workspace = _arrays.empty(weight, (vocab + 1 + tokens,), "int64")
    _C.embedding_backward(backend, _arrays.stream(weight), _arrays.capsule(grad_out), _arrays.capsule(token_ids),
                          _arrays.capsule(weight), _arrays.capsule(dweight), _arrays.capsule(workspace))
    return dweight


def embedding(token_ids: Any, weight: Any, *, backend: str | None = None, out: Any = None) -> Any:
    """Functional embedding lookup (see forward)."""
    return forward(token_ids, weight, backend=backend, out=out)
