"""SwiGLU: y = silu(gate) * up, elementwise (the Qwen3 MLP's activation).
Numerics: csrc/core/ops/swiglu.h; docs/ops/swiglu.md."""

from __future__ import annotations

from typing import Any

from .. import _C, _arrays
from ..registry import resolve_backend


def _check(gate: Any, up: Any) -> None:
    _arrays.check_array(gate, "gate")
    _arrays.check_array(up, "up")


def _forward(gate: Any, up: Any, backend: str | None, fp32: bool, out: Any = None) -> Any:
    _check(gate, up)
    out = _arrays.output(gate, _arrays.shape(gate), "float32" if fp32 else _arrays.dtype_name(gate), out)
    backend = resolve_backend(backend, gate, up, out)
    _C.swiglu_forward(backend, _arrays.stream(gate), _arrays.capsule(gate), _arrays.capsule(up), _arrays.capsule(out))
    return out


def forward(gate: Any, up: Any, *, backend: str | None = None, out: Any = None) -> Any:
    """silu(gate) * up in fp32, rounded once to the inputs' dtype (or written
    into `out`, of gate's shape and dtype or float32, dense and overlapping
    neither input: a reused, already-touched output saves the allocation and
    its page faults)."""
    return _forward(gate, up, backend, fp32=False, out=out)


def forward_fp32(gate: Any, up: Any, *, backend: str | None = None) -> Any:
    """silu(gate) * up in fp32, unrounded."""
    return _forward(gate, up, backend, fp32=True)


def backward(grad_out: Any, gate: Any, up: Any, *, backend: str | None = None,
             fp32: bool = False, out: tuple[Any, Any] | None = None) -> tuple[Any, Any]:
    """(dgate, dup) = (grad_out * up * silu'(gate), grad_out * silu(gate)),
    each rounded once to the inputs' dtype (float32 with fp32=True), or
    written into out = (dgate, dup): each of gate's shape, both of its dtype or
    both float32, dense, overlapping no input and not each other."""
    _check(gate, up)
    _arrays.check_array(grad_out, "grad_out")
    if out is not None and (not isinstance(out, (tuple, list)) or len(out) != 2):
        raise TypeError("out: expected a pair (dgate, dup)")
    dgate_out, dup_out = (None, None) if out is None else out
    grad_dtype = "float32" if fp32 else _arrays.dtype_name(gate)
    dgate = _arrays.gradient_output(gate, _arrays.shape(gate), grad_dtype, fp32, dgate_out, "dgate")
    dup = _arrays.gradient_output(gate, _arrays.shape(gate), grad_dtype, fp32, dup_out, "dup")
    backend = resolve_backend(backend, grad_out, gate, up, dgate, dup)
    _C.swiglu_backward(backend, _arrays.stream(gate), _arrays.capsule(grad_out), _arrays.capsule(gate),
                       _arrays.capsule(up), _arrays.capsule(dgate), _arrays.capsule(dup))
    return dgate, dup


def swiglu(gate: Any, up: Any, *, backend: str | None = None, out: Any = None) -> Any:
    """Functional SwiGLU (see forward)."""
    return forward(gate, up, backend=backend, out=out)
