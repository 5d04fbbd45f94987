"""Softmax attention with GQA: O = softmax(Q K^T * scale + masks) V.

Padded [B, H, S, D] (attention) and packed [T, H, D] (attention_varlen). A
query row's bits depend only on its q row, its valid keys in order and the
scale, so padding, packing, chunked prefill and KV-cache decode all agree bit
for bit. The numerics are in csrc/core/ops/attention.h; docs/ops/attention.md.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from .. import _C, _arrays
from ..registry import resolve_backend


def _is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


# Attention's outputs and workspace are not advised huge pages: a call computes
# for hundreds of flops per output byte, so the page faults of fresh memory
# cost little, and with the advice the CPU prefill ran 4-7% slower (S 8192;
# benchmarks/RESULTS.md, stop 22).
def _empty(like: Any, shape: tuple[int, ...], dtype: str) -> Any:
    return _arrays.empty(like, shape, dtype, huge_pages=False)


def _zeros(like: Any, shape: tuple[int, ...], dtype: str) -> Any:
    out = _empty(like, shape, dtype)
    out[...] = 0
    return out


def _last_dim_contiguous(x: Any) -> Any:
    """x itself when its last dimension is contiguous (a KV-cache view is fine), else a compact copy."""
    if _is_torch(x):
        return x if x.dim() == 0 or x.stride(-1) == 1 else x.contiguous()
    import numpy

    if x.ndim and (x.strides[-1] != x.itemsize or any(s < 0 for s in x.strides)):
        return numpy.ascontiguousarray(x)
    return x


# The CPU kernel reads a kv head's key and value rows where they are. In views
# of [B, S, H, D] memory (the usual projection(x).view(B, S, H, D).transpose(1,
# 2)) and in packed [T, H, D] rows they are H * D elements apart; from 2 KiB
# apart, every row task that reads a key block gathers it again from as many
# pages as it has rows. A head-major copy of k and v, made once per call, costs
# less when at least two 64-row tasks share each kv head (fp32 prefill, S 2048,
# Hkv 8, D 128: 200 ms as they are, 162 ms with the copy; rows 2 KiB apart,
# bf16: 166 vs 154 ms; 1 KiB or less apart: no gain, 0-2% lost; decode and
# short chunks read each block once and are left alone).
_HEAD_MAJOR_MIN_ROW_BYTES = 2048
_HEAD_MAJOR_MIN_QUERY_ROWS = 128


def _rows_far_apart(x: Any, token_axis: int) -> bool:
    """Whether consecutive tokens of a head are _HEAD_MAJOR_MIN_ROW_BYTES or more apart."""
    if x.shape[token_axis] <= 1:
        return False
    if _is_torch(x):
        return abs(x.stride(token_axis)) * x.element_size() >= _HEAD_MAJOR_MIN_ROW_BYTES
    return abs(x.strides[token_axis]) >= _HEAD_MAJOR_MIN_ROW_BYTES


def _head_major(x: Any, token_axis: int) -> Any:
    """x itself unless its rows are far apart, else a copy (same shape) in which each head's rows are consecutive."""
    if not _rows_far_apart(x, token_axis):
        return x
    if _is_torch(x):
        return x.movedim(token_axis, -2).contiguous().movedim(-2, token_axis)
    import numpy

    return numpy.moveaxis(numpy.ascontiguousarray(numpy.moveaxis(x, token_axis, -2)), -2, token_axis)


def _kv_for_backend(k: Any, v: Any, backend: str, token_axis: int, query_rows_per_kv_head: float) -> tuple[Any, Any]:
    if backend != "cpu" or query_rows_per_kv_head < _HEAD_MAJOR_MIN_QUERY_ROWS:
        return k, v
    return _head_major(k, token_axis), _head_major(v, token_axis)


def _optional_capsule(x: Any) -> Any:
    return None if x is None else _arrays.capsule(x)


def default_scale(head_dim: int) -> float:
    """1 / sqrt(head_dim), as the float32 the kernel uses."""
    return 1.0 / math.sqrt(head_dim)


def _check_qkv(q: Any, k: Any, v: Any, ndim: int) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        _arrays.check_array(x, name)
        if len(x.shape) != ndim:
            layout = "[B, H, S, D]" if ndim == 4 else "[T, H, D]"
            raise ValueError(f"{name}: expected {layout}, got shape {tuple(x.shape)}")
    if _arrays.dtype_name(q) not in _arrays.FLOAT_DTYPES:
        raise TypeError(f"q: expected one of {_arrays.FLOAT_DTYPES}, got {_arrays.dtype_name(q)}")
    hq, hkv = q.shape[1], k.shape[1]
    if hkv == 0 or hq % hkv != 0:
        raise ValueError(f"the number of query heads ({hq}) must be a multiple of the number of kv heads ({hkv})")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"k: head_dim {k.shape[-1]} differs from q's {q.shape[-1]}")


def _scale(scale: float | None, head_dim: int) -> float:
    value = default_scale(head_dim) if scale is None else float(scale)
    if not math.isfinite(value):
        raise ValueError("scale must be finite")
    return value


def key_lists(key_padding_mask: Any, batch: int, k_len: int) -> tuple[Any, Any, Any]:
    """(mask, key_index int32 [B, Skv], key_count int32 [B]) from a bool mask:
    row b of key_index lists the kept key positions in ascending order first."""
    _arrays.check_array(key_padding_mask, "key_padding_mask")
    if _arrays.dtype_name(key_padding_mask) != "bool":
        raise TypeError(f"key_padding_mask: expected bool, got {_arrays.dtype_name(key_padding_mask)}")
    if tuple(key_padding_mask.shape) != (batch, k_len):
        raise ValueError(f"key_padding_mask: expected shape {(batch, k_len)}, got {tuple(key_padding_mask.shape)}")
    if _is_torch(key_padding_mask):
        import torch

        mask = key_padding_mask.contiguous()
        index = torch.argsort((~mask).to(torch.int8), dim=1, stable=True).to(torch.int32)
        return mask, index.contiguous(), mask.sum(dim=1, dtype=torch.int32)
    import numpy

    mask = numpy.ascontiguousarray(key_padding_mask)
    index = numpy.argsort(~mask, axis=1, kind="stable").astype(numpy.int32)
    return mask, numpy.ascontiguousarray(index), mask.sum(axis=1).astype(numpy.int32)


def _layout_args(key_padding_mask: Any, q: Any, k: Any, cu_q: Any = None, cu_k: Any = None,
                 lists: tuple[Any, Any, Any] | None = None) -> tuple[Any, ...]:
    """The five optional layout capsules the bindings take."""
    if lists is None and key_padding_mask is not None:
        lists = key_lists(key_padding_mask, q.shape[0], k.shape[2])
    mask, index, count = lists if lists is not None else (None, None, None)
    return tuple(_optional_capsule(x) for x in (cu_q, cu_k, index, count, mask))


def _run_forward(q, k, v, layout, causal, scale, backend, fp32, return_lse, lse_shape, token_axis, query_rows,
                 longest=(-1, -1)):
    """query_rows: query rows per sequence and kv head (all the group's heads);
    longest: the longest sequence's query and key counts (packed; the GPU
    kernels size their scratch by them)."""
    backend = resolve_backend(backend, q, k, v)
    k, v = _kv_for_backend(k, v, backend, token_axis, query_rows)
    q, k, v = (_last_dim_contiguous(x) for x in (q, k, v))
    out = _empty(q, _arrays.shape(q), "float32" if fp32 else _arrays.dtype_name(q))
    lse = _empty(q, lse_shape, "float32") if return_lse else None
    _C.attention_forward(
        backend, _arrays.stream(q), _arrays.capsule(q), _arrays.capsule(k), _arrays.capsule(v),
        _arrays.capsule(out), _optional_capsule(lse), *layout, bool(causal),
        _scale(scale, q.shape[-1]), *longest,
    )
    return (out, lse) if return_lse else out


def _padded_forward(q, k, v, causal, scale, key_padding_mask, return_lse, backend, fp32, lists=None):
    _check_qkv(q, k, v, 4)
    layout = _layout_args(key_padding_mask, q, k, lists=lists)
    return _run_forward(q, k, v, layout, causal, scale, backend, fp32, return_lse,
                        (q.shape[0], q.shape[1], q.shape[2]), 2, q.shape[2] * (q.shape[1] // k.shape[1]))


def forward(q: Any, k: Any, v: Any, *, causal: bool = True, scale: float | None = None,
            key_padding_mask: Any = None, return_lse: bool = False, backend: str | None = None) -> Any:
    """Attention on [B, H, S, D], computed in fp32 and rounded once to q's dtype.

    k, v: [B, Hkv, Skv, D] with Hq a multiple of Hkv (query head h uses kv
    head h // (Hq // Hkv)). causal: query i sees keys j <= i + (Skv - Sq), so
    prefill, chunked prefill and decode share one rule. key_padding_mask:
    [B, Skv] bool, True = keep (left or right padding, or holes); masked
    keys are skipped, so they may hold NaN. With causal and a mask, a query
    row whose own token (i + Skv - Sq) is masked is padding. A row with no
    valid key (padding included) is 0 with LSE -inf. scale defaults to
    1/sqrt(D). return_lse adds the float32 LSE [B, Hq, Sq].
    """
    return _padded_forward(q, k, v, causal, scale, key_padding_mask, return_lse, backend, fp32=False)


def forward_fp32(q: Any, k: Any, v: Any, *, causal: bool = True, scale: float | None = None,
                 key_padding_mask: Any = None, return_lse: bool = False, backend: str | None = None) -> Any:
    """forward, returned in float32 without the final rounding."""
    return _padded_forward(q, k, v, causal, scale, key_padding_mask, return_lse, backend, fp32=True)


def attention(q: Any, k: Any, v: Any, *, causal: bool = True, scale: float | None = None,
              key_padding_mask: Any = None, return_lse: bool = False, backend: str | None = None) -> Any:
    """Functional attention on [B, H, S, D] (see forward)."""
    return forward(q, k, v, causal=causal, scale=scale, key_padding_mask=key_padding_mask,
                   return_lse=return_lse, backend=backend)


def _cu_seqlens(cu: Any, name: str, total: int) -> tuple[Any, int]:
    """The offsets as contiguous int64, checked, and the longest sequence's length."""
    _arrays.check_array(cu, name)
    if len(cu.shape) != 1 or cu.shape[0] < 1:
        raise ValueError(f"{name}: expected a 1-D array of num_seqs + 1 offsets, got shape {tuple(cu.shape)}")
    if _arrays.dtype_name(cu) not in ("int32", "int64"):
        raise TypeError(f"{name}: expected int32 or int64, got {_arrays.dtype_name(cu)}")
    if _is_torch(cu):
        import torch

        cu = cu.to(torch.int64).contiguous()
        values = cu.cpu().tolist()
    else:
        import numpy

        cu = numpy.ascontiguousarray(cu, dtype=numpy.int64)
        values = cu.tolist()
    if values[0] != 0:
        raise ValueError(f"{name}: must start at 0, got {values[0]}")
    if any(b < a for a, b in zip(values, values[1:])):
        raise ValueError(f"{name}: offsets must be non-decreasing")
    if values[-1] != total:
        raise ValueError(f"{name}: the last offset must equal the number of tokens {total}, got {values[-1]}")
    return cu, max((b - a for a, b in zip(values, values[1:])), default=0)


def _varlen_layout(q, k, v, cu_seqlens_q, cu_seqlens_k):
    """The layout capsules and (longest query sequence, longest key sequence)."""
    _check_qkv(q, k, v, 3)
    cu_q, longest_q = _cu_seqlens(cu_seqlens_q, "cu_seqlens_q", q.shape[0])
    cu_k, longest_k = _cu_seqlens(cu_seqlens_k, "cu_seqlens_k", k.shape[0])
    if cu_q.shape != cu_k.shape:
        raise ValueError("cu_seqlens_q and cu_seqlens_k must list the same number of sequences")
    return _layout_args(None, q, k, cu_q, cu_k), (longest_q, longest_k)


def attention_varlen(q: Any, k: Any, v: Any, cu_seqlens_q: Any, cu_seqlens_k: Any, *, causal: bool = True,
                     scale: float | None = None, return_lse: bool = False, backend: str | None = None,
                     fp32: bool = False) -> Any:
    """Attention on sequences packed end to end: q [T, Hq, D], k, v [Tk, Hkv, D];
    sequence b owns q rows cu_seqlens_q[b]:cu_seqlens_q[b+1] (likewise k, v).
    Bit for bit the valid rows of the padded attention. LSE is [Hq, T]."""
    layout, longest = _varlen_layout(q, k, v, cu_seqlens_q, cu_seqlens_k)
    num_seqs = _arrays.shape(cu_seqlens_q)[0] - 1
    query_rows = q.shape[0] / num_seqs * (q.shape[1] // k.shape[1]) if num_seqs else 0
    return _run_forward(q, k, v, layout, causal, scale, backend, fp32, return_lse, (q.shape[1], q.shape[0]), 0,
                        query_rows, longest)


def _saved_forward(saved_out: Any, saved_lse: Any) -> tuple[Any, Any]:
    """The forward's float32 output and LSE (both or neither), checked as arrays."""
    if (saved_out is None) != (saved_lse is None):
        raise ValueError("saved_out and saved_lse come together: the float32 output and the LSE of the forward")
    if saved_out is None:
        return None, None
    _arrays.check_array(saved_out, "saved_out")
    _arrays.check_array(saved_lse, "saved_lse")
    return _last_dim_contiguous(saved_out), saved_lse


def _run_backward(grad_out, q, k, v, layout, causal, scale, backend, fp32, query_rows, saved_out, saved_lse):
    _arrays.check_array(grad_out, "grad_out")
    saved_out, saved_lse = _saved_forward(saved_out, saved_lse)
    grad_out, q, k, v = (_last_dim_contiguous(x) for x in (grad_out, q, k, v))
    grad_dtype = "float32" if fp32 else _arrays.dtype_name(q)
    dq = _empty(q, _arrays.shape(q), grad_dtype)
    dk = _zeros(q, _arrays.shape(k), grad_dtype)  # masked keys get exactly 0
    dv = _zeros(q, _arrays.shape(v), grad_dtype)
    workspace = _empty(q, (2, query_rows, q.shape[1]), "float32")
    saved = [a for a in (saved_out, saved_lse) if a is not None]
    backend = resolve_backend(backend, grad_out, q, k, v, *saved)
    _C.attention_backward(
        backend, _arrays.stream(q), _arrays.capsule(grad_out), _arrays.capsule(q), _arrays.capsule(k),
        _arrays.capsule(v), _arrays.capsule(dq), _arrays.capsule(dk), _arrays.capsule(dv),
        _arrays.capsule(workspace), _optional_capsule(saved_out), _optional_capsule(saved_lse), *layout, bool(causal),
        _scale(scale, q.shape[-1]),
    )
    return dq, dk, dv


def backward(grad_out: Any, q: Any, k: Any, v: Any, *, causal: bool = True, scale: float | None = None,
             key_padding_mask: Any = None, backend: str | None = None, fp32: bool = False,
             saved_out: Any = None, saved_lse: Any = None) -> tuple[Any, Any, Any]:
    """(dq, dk, dv) of the padded forward, rounded once to q's dtype (float32
    with fp32=True). Deterministic: dk, dv of a kv head sum over its query heads
    in head order, then over query rows in order; no atomics. Padding query
    rows and masked keys get 0.

    saved_out, saved_lse: the forward's output in float32 (forward_fp32, or
    forward on float32 inputs) and its LSE (return_lse=True), from the same
    inputs and arguments. With them the backward skips recomputing the
    forward (two score-sized passes) and gives the same bits; other values
    give the gradients of another forward."""
    _check_qkv(q, k, v, 4)
    layout = _layout_args(key_padding_mask, q, k)
    return _run_backward(grad_out, q, k, v, layout, causal, scale, backend, fp32, q.shape[0] * q.shape[2],
                         saved_out, saved_lse)


def attention_varlen_backward(grad_out: Any, q: Any, k: Any, v: Any, cu_seqlens_q: Any, cu_seqlens_k: Any, *,
                              causal: bool = True, scale: float | None = None, backend: str | None = None,
                              fp32: bool = False, saved_out: Any = None,
                              saved_lse: Any = None) -> tuple[Any, Any, Any]:
    """(dq, dk, dv) of attention_varlen; bit for bit the padded backward's valid
    rows. saved_out, saved_lse: attention_varlen's float32 output and LSE (see
    backward)."""
    layout, _ = _varlen_layout(q, k, v, cu_seqlens_q, cu_seqlens_k)
    return _run_backward(grad_out, q, k, v, layout, causal, scale, backend, fp32, q.shape[0],
                         saved_out, saved_lse)
