"""The CPU thread pool (csrc/cpu/parallel.cpp): who runs a task never changes
its bits, whether the caller runs a one-task problem inline or helpers join a
many-task one late, early or not at all; every task runs under the default
floating-point environment whatever the caller set, and the caller's own is
restored; several Python threads may call at once."""

from __future__ import annotations

import threading

import torch

import golden_kernels as gk
from golden_kernels.testing import assert_bitwise_equal

FLOAT32_MIN_NORMAL = 1.1754943508222875e-38
SWIGLU_ELEMENTS_PER_TASK = 1 << 14  # csrc/cpu/swiglu.cpp kMinElementsPerTask


def subnormal_inputs(elements: int, gen: torch.Generator):
    """gate and up whose swiglu is subnormal: flush-to-zero would change it."""
    gate = torch.rand(elements, generator=gen) * 1e-3
    up = torch.rand(elements, generator=gen) * 1e-33
    return gate, up


def test_caller_flush_to_zero_changes_nothing_and_is_restored(threads, gen):
    tiny = torch.tensor([FLOAT32_MIN_NORMAL / 4])
    for num_threads, elements in ((1, 1000), (2, 4 * SWIGLU_ELEMENTS_PER_TASK)):
        threads(num_threads)
        gate, up = subnormal_inputs(elements, gen)
        expected = gk.swiglu(gate, up)
        assert ((expected != 0) & (expected.abs() < FLOAT32_MIN_NORMAL)).any(), "no subnormal results to test"
        assert torch.set_flush_denormal(True), "this CPU cannot flush denormals"
        try:
            got = gk.swiglu(gate, up)
            assert (tiny * 1.0).item() == 0.0, "the caller's flush-to-zero mode was not restored"
        finally:
            torch.set_flush_denormal(False)
        assert_bitwise_equal(got, expected)


def test_many_small_multi_task_jobs_in_a_row(threads, gen):
    """Two-task jobs back to back: a helper may wake after its job was closed,
    or join the next one; neither may change a result."""
    gate = torch.randn(2 * SWIGLU_ELEMENTS_PER_TASK, generator=gen)
    up = torch.randn(2 * SWIGLU_ELEMENTS_PER_TASK, generator=gen)
    expected = gk.swiglu(gate, up, backend="reference")
    threads(2)
    for _ in range(300):
        assert_bitwise_equal(gk.swiglu(gate, up), expected)


def test_concurrent_python_callers(threads, gen):
    x = torch.randn(33, 256, generator=gen)
    weight = torch.randn(96, 256, generator=gen)
    expected = gk.linear(x, weight, backend="reference")
    threads(3)
    results, errors = [], []

    def call():
        try:
            results.extend(gk.linear(x, weight) for _ in range(10))
        except Exception as error:  # surfaced below: a thread's exception is otherwise lost
            errors.append(error)

    callers = [threading.Thread(target=call) for _ in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert not errors
    assert len(results) == 40
    for result in results:
        assert_bitwise_equal(result, expected)
