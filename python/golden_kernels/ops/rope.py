"""RoPE: rotary position embedding in the rotate-half layout (GPT-NeoX,
Hugging Face Qwen3) with explicit integer position ids per token, on
x [batch, seq, heads, head_dim] with positions [batch, seq], or packed
x [tokens, heads, head_dim] with positions [tokens].

The inverse frequencies are computed by the core itself, correctly rounded
(RN(1 / RN(theta^(2i/D))), HF's fp32 formula), identically on every backend.
Numerics: csrc/core/ops/rope.h; docs/ops/rope.md.
"""

from __future__ import annotations

from typing import Any

from .. import _C, _arrays
from ..registry import resolve_backend

QWEN3_THETA = 1_000_000.0


def _head_dim(x: Any) -> int:
    return _arrays.shape(x)[-1] if len(x.shape) else 0


def _apply(x: Any, positions: Any, out: Any, theta: float, backend: str | None, transpose: bool) -> Any:
    """Rotates the checked x into the checked out."""
    _arrays.check_array(positions, "positions")
    backend = resolve_backend(backend, x, positions, out)
    inv_freq = _arrays.empty(x, (max(_head_dim(x), 0) // 2,), "float32")
    _C.rope_apply(backend, _arrays.stream(x), _arrays.capsule(x), _arrays.capsule(positions),
                  _arrays.capsule(inv_freq), _arrays.capsule(out), float(theta), transpose)
    return out


def _rotate(x: Any, positions: Any, theta: float, backend: str | None, out_dtype: str, out: Any = None) -> Any:
    _arrays.check_array(x, "x")
    return _apply(x, positions, _arrays.output(x, _arrays.shape(x), out_dtype, out), theta, backend, False)


def forward(x: Any, positions: Any, *, theta: float = QWEN3_THETA, backend: str | None = None,
            out: Any = None) -> Any:
    """x rotated by its tokens' positions, in fp32, rounded once to x's dtype
    (or written into `out`, of x's shape and dtype or float32, dense and
    overlapping neither input: a reused, already-touched output saves the
    allocation and its page faults)."""
    return _rotate(x, positions, theta, backend, _arrays.dtype_name(x), out)


def forward_fp32(x: Any, positions: Any, *, theta: float = QWEN3_THETA, backend: str | None = None) -> Any:
    """x rotated by its tokens' positions, in fp32, unrounded."""
    return _rotate(x, positions, theta, backend, "float32")


def backward(grad_out: Any, positions: Any, *, theta: float = QWEN3_THETA, backend: str | None = None,
             fp32: bool = False, out: Any = None) -> Any:
    """dx: grad_out rotated by the transposed rotation (the angle negated),
    rounded once to grad_out's dtype (float32 with fp32=True), or written
    into `out` (grad_out's shape, its dtype or float32, dense, overlapping
    neither input)."""
    _arrays.check_array(grad_out, "grad_out")
    out_dtype = "float32" if fp32 else _arrays.dtype_name(grad_out)
    out = _arrays.gradient_output(grad_out, _arrays.shape(grad_out), out_dtype, fp32, out, "out")
    return _apply(grad_out, positions, out, theta, backend, transpose=True)


def inverse_frequencies(head_dim: int, theta: float = QWEN3_THETA, *, like: Any = None,
                        backend: str | None = None) -> Any:
    """The float32 table inv_freq[i] = RN(1 / RN(theta^(2i/head_dim))) the
    kernels use, computed by the chosen backend (on `like`'s device;
    a CPU torch tensor if like is None)."""
    if like is None:
        import torch

        like = torch.empty(0)
    backend = resolve_backend(backend, like)
    out = _arrays.empty(like, (max(int(head_dim), 0) // 2,), "float32")
    _C.rope_inverse_frequencies(backend, _arrays.stream(like), _arrays.capsule(out), int(head_dim), float(theta))
    return out


def rope(x: Any, positions: Any, *, theta: float = QWEN3_THETA, backend: str | None = None,
         out: Any = None) -> Any:
    """Functional RoPE (see forward)."""
    return forward(x, positions, theta=theta, backend=backend, out=out)
