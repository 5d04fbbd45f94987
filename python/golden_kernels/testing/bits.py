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


def ulp_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How many representable values lie between a and b (same float dtype), as
    int64: the distance of their bit patterns on the ordered integer line, where
    -0 and +0 are both 0 and the negatives mirror the positives."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return (_ordered(a) - _ordered(b)).abs()


def _ordered(t: torch.Tensor) -> torch.Tensor:
    raw = bits(t.cpu()).to(torch.int64)
    sign_bit = 1 << (8 * t.element_size() - 1)
    magnitude = raw & (sign_bit - 1)
    return torch.where(raw < 0, -magnitude, magnitude)


def _hex(t: torch.Tensor, where: tuple[int, ...]) -> str:
    width = 2 * t.element_size()
    return f"0x{int(bits(t.cpu())[where]) & ((1 << 4 * width) - 1):0{width}x}"


def _describe_difference(actual: torch.Tensor, expected: torch.Tensor, differ: torch.Tensor) -> str:
    where = tuple(int(i) for i in differ.nonzero()[0])
    count, total = int(differ.sum()), differ.numel()
    first = f"first at index {where}: {actual[where].item()!r} ({_hex(actual, where)}) vs " \
            f"{expected[where].item()!r} ({_hex(expected, where)})"
    if not actual.is_floating_point():
        return f"{count} of {total} elements differ; {first}"
    distance = ulp_distance(actual, expected)
    finite = actual.cpu().isfinite() & expected.cpu().isfinite() & differ
    worst = f"; max {int(distance[finite].max())} ulp over finite elements" if bool(finite.any()) else ""
    return f"{count} of {total} elements differ in their bits{worst}; {first}, {_gap(actual, expected, where)}"


def _gap(actual: torch.Tensor, expected: torch.Tensor, where: tuple[int, ...]) -> str:
    a, b = actual[where], expected[where]
    if bool(a.isnan() | b.isnan()):
        return "NaN payloads or NaN vs number"
    distance = int(ulp_distance(a, b))
    return "+0 vs -0" if distance == 0 else f"{distance} ulp apart"


def assert_bitwise_equal(actual: torch.Tensor, expected: torch.Tensor, what: str = "") -> None:
    """Raises AssertionError unless actual and expected have the same dtype, shape
    and raw bits; the message gives the count of differing elements, the largest
    ulp distance, and the first differing element's values, bits and distance."""
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    prefix = f"{what}: " if what else ""
    assert actual.dtype == expected.dtype, f"{prefix}dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{prefix}shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    actual, expected = actual.detach().cpu(), expected.detach().cpu()
    differ = bits(actual) != bits(expected)
    if bool(differ.any()):
        raise AssertionError(prefix + _describe_difference(actual, expected, differ))
