"""Reusable contract helpers: raw-bit comparison, rigorous error bounds and the
peer tolerance floor. Used by the project's tests and by `python -m golden_kernels`;
kernel authors can use them to check their own kernels against golden values."""

from .bits import assert_bitwise_equal, bits, bits_equal
from .bounds import assert_within, gamma, ulp, unit_roundoff
from .tolerances import PEER_TOLERANCES, assert_peer_floor, peer_tolerance

__all__ = [
    "PEER_TOLERANCES",
    "assert_bitwise_equal",
    "assert_peer_floor",
    "assert_within",
    "bits",
    "bits_equal",
    "gamma",
    "peer_tolerance",
    "ulp",
    "unit_roundoff",
]
