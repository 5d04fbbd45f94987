"""Bitwise comparison on raw bits: separates +0 from -0 and NaN payloads,
which a tolerance (or even ==) would not."""

from __future__ import annotations

import torch

_INT_OF_SIZE = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bit pattern of t as a signed integer tensor of the same size."""
    t = torch.as_tensor(t)
    if not t.is_floating_point():
        return t
    return t.contiguous().view(_INT_OF_SIZE[t.element_size()])


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(bits(a.cpu()), bits(b.cpu()))


def assert_bitwise_equal(actual: torch.Tensor, expected: torch.Tensor, what: str = "") -> None:
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    prefix = f"{what}: " if what else ""
    assert actual.dtype == expected.dtype, f"{prefix}dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{prefix}shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    differ = bits(actual.cpu()) != bits(expected.cpu())
    if bool(differ.any()):
        where = tuple(int(i) for i in differ.nonzero()[0])
        count = int(differ.sum())
        raise AssertionError(
            f"{prefix}{count} of {differ.numel()} elements differ in their bits; first at {where}: "
            f"{actual[where].item()!r} vs {expected[where].item()!r}"
        )
