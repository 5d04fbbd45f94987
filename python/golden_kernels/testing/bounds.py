"""Rigorous floating-point error bounds (Higham's notation).

u: unit roundoff of a format (half its machine epsilon); gamma(n) = n u / (1 - n u)
bounds the relative error of n successive roundings. ulp(v, dtype): the spacing
of the format at |v|, subnormals included.
"""

from __future__ import annotations

import math

import torch

_PRECISION = {torch.float32: 24, torch.bfloat16: 8, torch.float16: 11, torch.float64: 53}
_MIN_EXPONENT = {torch.float32: -126, torch.bfloat16: -126, torch.float16: -14, torch.float64: -1022}


def unit_roundoff(dtype: torch.dtype = torch.float32) -> float:
    return 2.0 ** -_PRECISION[dtype]


def gamma(n: int, dtype: torch.dtype = torch.float32) -> float:
    nu = n * unit_roundoff(dtype)
    assert nu < 1, "bound meaningless: n * u >= 1"
    return nu / (1 - nu)


def ulp(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Spacing of `dtype` at |v| (float64 tensor in, float64 tensor out)."""
    v = v.abs().to(torch.float64)
    exponent = torch.floor(torch.log2(v.clamp_min(2.0 ** _MIN_EXPONENT[dtype])))
    exponent = exponent.clamp_min(_MIN_EXPONENT[dtype])
    return torch.exp2(exponent - (_PRECISION[dtype] - 1))


def smallest_subnormal(dtype: torch.dtype) -> float:
    return 2.0 ** (_MIN_EXPONENT[dtype] - (_PRECISION[dtype] - 1))


def assert_within(actual: torch.Tensor, reference: torch.Tensor, bound: torch.Tensor, what: str = "") -> None:
    """|actual - reference| <= bound elementwise (float64), NaN positions equal."""
    actual64 = actual.detach().cpu().to(torch.float64)
    reference = reference.detach().cpu().to(torch.float64)
    bound = torch.as_tensor(bound, dtype=torch.float64).expand_as(reference)
    nan_actual, nan_reference = actual64.isnan(), reference.isnan()
    assert torch.equal(nan_actual, nan_reference), f"{what}: NaN positions differ"
    finite = ~nan_reference
    error = (actual64 - reference).abs()
    error = torch.where(actual64 == reference, torch.zeros_like(error), error)  # inf == inf
    excess = (error - bound)[finite]
    if excess.numel() and float(excess.max()) > 0:
        worst = int(torch.argmax((error - bound).where(finite, torch.full_like(error, -math.inf))))
        flat = lambda t: t.reshape(-1)[worst].item()  # noqa: E731
        raise AssertionError(
            f"{what}: error {flat(error):.3e} exceeds bound {flat(bound):.3e} at flat index {worst} "
            f"(actual {flat(actual64)!r}, reference {flat(reference)!r}); "
            f"{int((excess > 0).sum())} elements over"
        )
