"""cast: dtype conversion by the library's one rounding rule (round to nearest
even, NaN quieted with sign and leading payload kept), identical on every
backend. See docs/contract.md."""

from __future__ import annotations

from typing import Any

from .. import _C, _arrays
from ..registry import resolve_backend


def cast(x: Any, dtype: str, *, backend: str | None = None) -> Any:
    """x converted to dtype ('float32', 'bfloat16' or 'float16')."""
    _arrays.check_array(x, "x")
    if dtype not in _arrays.FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {_arrays.FLOAT_DTYPES}, got {dtype!r}")
    backend = resolve_backend(backend, x)
    out = _arrays.empty(x, _arrays.shape(x), dtype)
    _C.convert(backend, _arrays.stream(x), _arrays.capsule(x), _arrays.capsule(out))
    return out
