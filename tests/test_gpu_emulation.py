"""The GPU emulation checks itself (csrc/emulation/self_check.h): what a GPU
would refuse or hang on fails the launch, a missing barrier shows as a
difference between the two thread orders, and shuffles, fresh memory and
fresh shared memory behave as documented. Runs only in the GPU-emulating build
(scripts/emulate-gpu.sh); elsewhere skipped, never passed."""

from __future__ import annotations

import pytest

from golden_kernels import _C

from .gpu_target import EMULATED

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not EMULATED, reason="not the GPU-emulating build (scripts/emulate-gpu.sh)")]


@pytest.fixture(params=["forward", "reverse"])
def schedule(request, monkeypatch):
    monkeypatch.setenv("GOLDEN_GPU_EMULATION_SCHEDULE", request.param)
    return request.param


@pytest.mark.parametrize("name, error", [
    ("barrier_and_shuffle", "unspecified launch failure"),
    ("shared_over_default", "invalid argument"),
    ("too_many_threads", "invalid configuration argument"),
])
def test_launches_a_gpu_would_refuse_or_hang_on_fail(name, error, schedule):
    with pytest.raises(RuntimeError, match=f"self check: {error}"):
        _C._gpu_emulation_self_check(name)
    assert _C._gpu_emulation_self_check("synchronised_read") == [1], "the emulation works after a failed launch"


def test_a_missing_barrier_changes_the_result_between_the_orders(monkeypatch):
    results = {}
    for order in ("forward", "reverse"):
        monkeypatch.setenv("GOLDEN_GPU_EMULATION_SCHEDULE", order)
        results[order] = (_C._gpu_emulation_self_check("unsynchronised_read"),
                          _C._gpu_emulation_self_check("synchronised_read"))
    assert results["forward"][0] == [1]
    assert results["reverse"][0] == [-1], "read before the write: shared memory's fresh NaN bytes"
    assert results["forward"][1] == results["reverse"][1] == [1]


def test_warp_shuffle_exchanges_within_each_warp(schedule):
    assert _C._gpu_emulation_self_check("warp_shuffle_xor") == [i ^ 1 for i in range(64)]


def test_shuffle_from_a_lane_past_the_block_reads_no_value(schedule):
    """40 threads: threads 32-39 (lanes 0-7 of the second warp) would read
    its lanes 16-23, threads 48-55, which do not exist."""
    want = [i ^ 16 if i ^ 16 < 40 else -1 for i in range(40)]
    assert _C._gpu_emulation_self_check("partial_warp_shuffle") == want


def test_fresh_device_memory_is_nan_bytes(schedule):
    assert _C._gpu_emulation_self_check("fresh_device_memory") == [-1]


def test_static_shared_memory_starts_every_block_as_nan_bytes(schedule):
    # Without the reset the second block to run would read the first one's 7.
    assert _C._gpu_emulation_self_check("static_shared_per_block") == [-1, -1]


def test_unknown_self_check_is_a_value_error():
    with pytest.raises(ValueError, match="unknown GPU emulation self-check"):
        _C._gpu_emulation_self_check("nothing")
