"""Linear: y = x @ weight.T (+ bias), weight in Hugging Face [out_features, in_features] layout.

The numerics (canonical order: fma chains in K-blocks of LINEAR_K_BLOCK, block
partials merged by the balanced tree; rounding once) are in csrc/core/ops/linear.h
and documented in docs/ops/linear.md. The sharding helpers at the end reproduce
the single-device bits from tensor-parallel shards (contract T8).
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

from .. import _C, _arrays
from ..registry import resolve_backend

K_BLOCK = _C.LINEAR_K_BLOCK


def _check(x: Any, weight: Any, bias: Any = None) -> None:
    _arrays.check_array(x, "x")
    _arrays.check_array(weight, "weight")
    if bias is not None:
        _arrays.check_array(bias, "bias")
    if len(x.shape) == 0:
        raise ValueError("x: expected at least 1 dimension, got a scalar")
    if len(weight.shape) != 2:
        raise ValueError(f"weight: expected 2 dimensions [out_features, in_features], got shape {tuple(weight.shape)}")


def _optional_capsule(a: Any) -> Any:
    return None if a is None else _arrays.capsule(a)


def _present(*arrays: Any) -> list[Any]:
    return [a for a in arrays if a is not None]


def _forward(x: Any, weight: Any, bias: Any, backend: str | None, fp32: bool, out: Any = None) -> Any:
    _check(x, weight, bias)
    out_shape = _arrays.shape(x)[:-1] + (_arrays.shape(weight)[0],)
    out = _arrays.output(x, out_shape, "float32" if fp32 else _arrays.dtype_name(x), out)
    backend = resolve_backend(backend, *_present(x, weight, bias, out))
    _C.linear_forward(backend, _arrays.stream(x), _arrays.capsule(x), _arrays.capsule(weight),
                      _optional_capsule(bias), _arrays.capsule(out))
    return out


def forward(x: Any, weight: Any, bias: Any = None, *, backend: str | None = None, out: Any = None) -> Any:
    """x @ weight.T (+ bias) accumulated in fp32, rounded once to x's dtype (or
    written into `out`, of shape [..., out_features] and x's dtype or float32,
    contiguous and not overlapping an input: saves the allocation in decode loops)."""
    return _forward(x, weight, bias, backend, fp32=False, out=out)


def forward_fp32(x: Any, weight: Any, bias: Any = None, *, backend: str | None = None) -> Any:
    """x @ weight.T (+ bias) in fp32, returned unrounded (float32)."""
    return _forward(x, weight, bias, backend, fp32=True)


def backward(grad_out: Any, x: Any, weight: Any, bias: Any = None, *, backend: str | None = None,
             fp32: bool = False) -> tuple[Any, ...]:
    """(dx, dweight), and dbias too when a bias is passed: dx = grad_out @ weight,
    dweight = grad_out^T @ x, dbias = grad_out summed over rows, each rounded once
    to x's dtype (or float32 with fp32=True). Every sum runs in the canonical
    order over its contraction index: row-local dx, deterministic dweight/dbias."""
    _check(x, weight, bias)
    _arrays.check_array(grad_out, "grad_out")
    backend = resolve_backend(backend, *_present(grad_out, x, weight, bias))
    grad_dtype = "float32" if fp32 else _arrays.dtype_name(x)
    dx = _arrays.empty(x, _arrays.shape(x), grad_dtype)
    dweight = _arrays.empty(x, _arrays.shape(weight), grad_dtype)
    dbias = None if bias is None else _arrays.empty(x, (_arrays.shape(weight)[0],), grad_dtype)
    _C.linear_backward(backend, _arrays.stream(x), _arrays.capsule(grad_out), _arrays.capsule(x),
                       _arrays.capsule(weight), _arrays.capsule(dx), _arrays.capsule(dweight),
                       _optional_capsule(dbias))
    return (dx, dweight) if bias is None else (dx, dweight, dbias)


def linear(x: Any, weight: Any, bias: Any = None, *, backend: str | None = None, out: Any = None) -> Any:
    """Functional linear (see forward)."""
    return forward(x, weight, bias, backend=backend, out=out)


# ---- Sharding (T8): tensor-parallel shards that reproduce the single-device bits. ----

def linear_shard_bounds(in_features: int, num_shards: int) -> list[tuple[int, int]]:
    """The [begin, end) contraction range of each shard of a row-parallel linear.

    Blocks and shards are split together by the tree's own rule (ceil | floor),
    so each shard is one node of the balanced tree and the merged shard values
    equal the single-device sum. When the number of K-blocks is a multiple of a
    power-of-two shard count, the split is even: in_features / num_shards each.
    """
    return [tuple(b) for b in _C.linear_shard_bounds(int(in_features), int(num_shards))]


def linear_partials(x_shard: Any, weight_shard: Any, *, shard: int, num_shards: int, in_features: int,
                    backend: str | None = None) -> Any:
    """One shard's fp32 partial of a row-parallel linear (no bias): x_shard [..., k_s]
    times weight_shard [out, k_s], where k_s is this shard's range from
    linear_shard_bounds(in_features, num_shards). Gather all shards' partials and
    merge them with merge_linear_partials."""
    _check(x_shard, weight_shard)
    begin, end = linear_shard_bounds(in_features, num_shards)[shard] if 0 <= shard < num_shards else (None, None)
    if begin is None:
        raise ValueError(f"shard must be in [0, {num_shards}), got {shard}")
    if _arrays.shape(x_shard)[-1] != end - begin or _arrays.shape(weight_shard)[-1] != end - begin:
        raise ValueError(
            f"shard {shard} of {num_shards} must hold contraction indices [{begin}, {end}) "
            f"({end - begin} of in_features {in_features}); got x_shard {_arrays.shape(x_shard)} and "
            f"weight_shard {_arrays.shape(weight_shard)}")
    return _forward(x_shard, weight_shard, None, backend, fp32=True)


def _stack(arrays: Sequence[Any]) -> Any:
    first = arrays[0]
    if _arrays._is_torch(first):
        return sys.modules["torch"].stack(list(arrays))
    return sys.modules["numpy"].stack(list(arrays))


def merge_linear_partials(partials: Any, bias: Any = None, *, dtype: Any = "float32",
                          backend: str | None = None) -> Any:
    """Merges shard partials (a sequence of S float32 arrays [..., out], shard order,
    or one stacked [S, ..., out] array) by the balanced tree over S, adds bias in
    fp32 and rounds once to `dtype` (float32, or the dtype of bias)."""
    if isinstance(partials, (list, tuple)):
        if not partials:
            raise ValueError("partials: expected at least one shard")
        for i, p in enumerate(partials):
            _arrays.check_array(p, f"partials[{i}]")
        stacked = _stack(partials)
    else:
        _arrays.check_array(partials, "partials")
        stacked = partials
    if bias is not None:
        _arrays.check_array(bias, "bias")
    backend = resolve_backend(backend, *_present(stacked, bias))
    dtype_name = str(dtype).removeprefix("torch.")
    out = _arrays.empty(stacked, _arrays.shape(stacked)[1:], dtype_name)
    _C.linear_merge(backend, _arrays.stream(stacked), _arrays.capsule(stacked), _optional_capsule(bias),
                    _arrays.capsule(out))
    return out
