"""Resources: repeated calls of every op (forward and backward, both
backends) do not grow the process's resident memory after a warm-up, and
the GIL is released while a kernel runs (a Python thread keeps counting)."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

import golden_kernels as gk

from .cases import CASES, run_case

PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


@pytest.mark.skipif(UNDER_ASAN, reason="ASan's quarantine keeps freed memory resident")
@pytest.mark.parametrize("name", sorted(CASES))
def test_repeated_calls_do_not_grow_memory(name, threads):
    """Each call moves ~1 MiB of arrays, so a leak of any array (or of the
    DLPack capsules holding them) would add hundreds of MiB over the loop."""
    threads(2)
    case = CASES[name]
    inputs = case.build(64, case.n_rule(1024), 33, torch.float32, torch.Generator().manual_seed(1), "normal")
    for backend in ("cpu", "reference"):
        for _ in range(5):
            run_case(case, backend, inputs)
    before = resident_bytes()
    for _ in range(200):
        run_case(case, "cpu", inputs)
    for _ in range(5):
        run_case(case, "reference", inputs)
    grown = resident_bytes() - before
    assert grown < 8 << 20, f"{name}: resident memory grew by {grown / 2**20:.1f} MiB over 205 calls"


# The long kernels: one per binding file (the linear and linear_logprob
# references release the GIL through their own paths).
LONG_CALLS = {
    "rms_norm": lambda: gk.get_op("rms_norm", "reference").forward(torch.randn(2048, 4096), torch.ones(4096)),
    "swiglu": lambda: gk.get_op("swiglu", "reference").forward(torch.randn(1 << 22), torch.randn(1 << 22)),
    "rope": lambda: gk.get_op("rope", "reference").forward(torch.randn(4096, 8, 128), torch.arange(4096)),
    "embedding": lambda: gk.get_op("embedding", "reference").backward(
        torch.randn(1 << 15, 256), torch.randint(64, (1 << 15,)), torch.empty(64, 256)),
    "attention": lambda: gk.get_op("attention", "reference").forward(
        torch.randn(1, 8, 512, 128), torch.randn(1, 2, 512, 128), torch.randn(1, 2, 512, 128)),
    "linear": lambda: gk.get_op("linear", "reference").forward(torch.randn(64, 1024), torch.randn(512, 1024)),
    "token_logprob": lambda: gk.get_op("token_logprob", "reference").forward(
        torch.randn(64, 32768), torch.zeros(64, dtype=torch.int64)),
    "linear_logprob": lambda: gk.get_op("linear_logprob", "reference").forward(
        torch.randn(8, 1024), torch.randn(4096, 1024), torch.zeros(8, dtype=torch.int64)),
}


@pytest.mark.parametrize("name", sorted(LONG_CALLS))
def test_gil_released_during_kernels(name):
    counter = [0]
    stop = threading.Event()

    def count():
        while not stop.is_set():
            counter[0] += 1

    counting = threading.Thread(target=count)
    counting.start()
    try:
        time.sleep(0.01)
        started = time.perf_counter()
        before = counter[0]
        LONG_CALLS[name]()
        during = counter[0] - before
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        counting.join()
    # With the GIL held for the whole call the counter could move only before
    # the call took the GIL (a handful of steps); released, it runs freely.
    assert elapsed > 0.02, f"{name}: the call took {elapsed * 1e3:.1f} ms, too short to tell"
    assert during > 10_000, f"{name}: the counting thread advanced {during} times in {elapsed * 1e3:.0f} ms"
