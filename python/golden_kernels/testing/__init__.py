"""Reusable contract helpers: raw-bit comparison, the invariance transforms
T1-T8 on any callable, rigorous error bounds and the peer tolerance floor.
Used by the project's tests and by `python -m golden_kernels`; kernel authors
can use them to check their own kernels against golden values (docs/testing.md)."""

from .bits import assert_bitwise_equal, bits, bits_equal, ulp_distance
from .bounds import assert_within, gamma, ulp, unit_roundoff
from .invariance import (
    check_batch_invariance,
    check_chunk_invariance,
    check_neighbour_invariance,
    check_packing_invariance,
    check_padding_invariance,
    check_position_invariance,
    check_sharding_invariance,
    check_thread_invariance,
    invariance_report,
)
from .tolerances import PEER_TOLERANCES, assert_peer_floor, peer_tolerance

__all__ = [
    "PEER_TOLERANCES",
    "assert_bitwise_equal",
    "assert_peer_floor",
    "assert_within",
    "bits",
    "bits_equal",
    "check_batch_invariance",
    "check_chunk_invariance",
    "check_neighbour_invariance",
    "check_packing_invariance",
    "check_padding_invariance",
    "check_position_invariance",
    "check_sharding_invariance",
    "check_thread_invariance",
    "gamma",
    "invariance_report",
    "peer_tolerance",
    "ulp",
    "ulp_distance",
    "unit_roundoff",
]
