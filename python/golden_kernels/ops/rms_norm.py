"""RMSNorm: y = x / sqrt(mean(x^2) + eps) * weight over the last dimension.

The numerics (canonical order, rounding points) are in csrc/core/ops/rms_norm.h
and documented in docs/ops/rms_norm.md.
"""

from __future__ import annotations

from typing import Any

from .. import _C, _arrays
from ..registry import resolve_backend

ROUNDINGS = ("once", "hf")


def _check(x: Any, weight: Any, rounding: str = "once") -> None:
    _arrays.check_array(x, "x")
    _arrays.check_array(weight, "weight")
    if len(x.shape) == 0:
        raise ValueError("x: expected at least 1 dimension, got a scalar")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")


def _forward(x: Any, weight: Any, eps: float, rounding: str, backend: str | None, fp32: bool, out: Any = None) -> Any:
    _check(x, weight, rounding)
    out = _arrays.output(x, _arrays.shape(x), "float32" if fp32 else _arrays.dtype_name(x), out)
    backend = resolve_backend(backend, x, weight, out)
    _C.rms_norm_forward(
        backend, _arrays.stream(x), _arrays.capsule(x), _arrays.capsule(weight), _arrays.capsule(out),
        float(eps), rounding == "hf",
    )
    return out


def forward(x: Any, weight: Any, eps: float = 1e-6, *, rounding: str = "once", backend: str | None = None,
            out: Any = None) -> Any:
    """RMSNorm in fp32, rounded to x's dtype (or written into `out`, of x's
    shape and dtype or float32, which saves the allocation in hot loops).

    rounding="once" rounds only the final value; rounding="hf" follows Hugging
    Face's Qwen3RMSNorm, which rounds x * r to x's dtype before the weight multiply.
    """
    return _forward(x, weight, eps, rounding, backend, fp32=False, out=out)


def forward_fp32(x: Any, weight: Any, eps: float = 1e-6, *, backend: str | None = None) -> Any:
    """RMSNorm in fp32, returned unrounded (float32)."""
    return _forward(x, weight, eps, "once", backend, fp32=True)


def backward(grad_out: Any, x: Any, weight: Any, eps: float = 1e-6, *, backend: str | None = None,
             fp32: bool = False) -> tuple[Any, Any]:
    """Gradients (dx, dweight) of the round-once forward, rounded once to x's dtype
    (or float32 with fp32=True). dweight sums rows in a fixed order: deterministic."""
    _check(x, weight)
    _arrays.check_array(grad_out, "grad_out")
    backend = resolve_backend(backend, grad_out, x, weight)
    x_shape = _arrays.shape(x)
    cols = x_shape[-1]
    rows = 1
    for d in x_shape[:-1]:
        rows *= d
    block = _C.RMS_NORM_GRAD_ROW_BLOCK
    grad_dtype = "float32" if fp32 else _arrays.dtype_name(x)
    dx = _arrays.empty(x, x_shape, grad_dtype)
    dweight = _arrays.empty(x, _arrays.shape(weight), grad_dtype)
    workspace = _arrays.empty(x, ((rows + block - 1) // block, cols), "float32")
    _C.rms_norm_backward(
        backend, _arrays.stream(x), _arrays.capsule(grad_out), _arrays.capsule(x), _arrays.capsule(weight),
        _arrays.capsule(dx), _arrays.capsule(dweight), _arrays.capsule(workspace), float(eps),
    )
    return dx, dweight


def rms_norm(x: Any, weight: Any, eps: float = 1e-6, *, rounding: str = "once", backend: str | None = None,
             out: Any = None) -> Any:
    """Functional RMSNorm (see forward)."""
    return forward(x, weight, eps, rounding=rounding, backend=backend, out=out)
