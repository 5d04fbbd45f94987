"""SiLU: y = x * sigmoid(x), elementwise, with the core's deterministic
sigmoid. Numerics: csrc/core/ops/swiglu.h; docs/ops/swiglu.md."""

from __future__ import annotations

from typing import Any

from .. import _C, _arrays
from ..registry import resolve_backend


def _forward(x: Any, backend: str | None, fp32: bool, out: Any = None) -> Any:
    _arrays.check_array(x, "x")
    out = _arrays.output(x, _arrays.shape(x), "float32" if fp32 else _arrays.dtype_name(x), out)
    backend = resolve_backend(backend, x, out)
    _C.silu_forward(backend, _arrays.stream(x), _arrays.capsule(x), _arrays.capsule(out))
    return out


def forward(x: Any, *, backend: str | None = None, out: Any = None) -> Any:
    """silu(x) in fp32, rounded once to x's dtype (or written into `out`, of
    x's shape and dtype or float32, dense and not overlapping x: a reused,
    already-touched output saves the allocation and its page faults)."""
    return _forward(x, backend, fp32=False, out=out)


def forward_fp32(x: Any, *, backend: str | None = None) -> Any:
    """silu(x) in fp32, unrounded."""
    return _forward(x, backend, fp32=True)


def backward(grad_out: Any, x: Any, *, backend: str | None = None, fp32: bool = False,
             out: Any = None) -> Any:
    """dx = grad_out * silu'(x), rounded once to x's dtype (float32 with
    fp32=True), or written into `out` (x's shape, its dtype or float32, dense,
    overlapping neither input)."""
    _arrays.check_array(grad_out, "grad_out")
    _arrays.check_array(x, "x")
    dx = _arrays.gradient_output(x, _arrays.shape(x), "float32" if fp32 else _arrays.dtype_name(x), fp32, out, "out")
    backend = resolve_backend(backend, grad_out, x, dx)
    _C.silu_backward(backend, _arrays.stream(x), _arrays.capsule(grad_out), _arrays.capsule(x), _arrays.capsule(dx))
    return dx


def silu(x: Any, *, backend: str | None = None, out: Any = None) -> Any:
    """Functional SiLU (see forward)."""
    return forward(x, backend=backend, out=out)
