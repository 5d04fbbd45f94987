"""Concurrency and the caller's environment: ops called from several Python
threads at once give the serial bits; the library's own pool and PyTorch's
OpenMP team give the same bits; the thread pool works in a child forked after
(or while) the parent used it; the caller's floating-point environment
(FTZ/DAZ in MXCSR, the rounding mode) never changes a result, on the pool's
threads or on the caller's own."""

from __future__ import annotations

import ctypes
import multiprocessing
import platform
import subprocess
import sys
import threading
from contextlib import contextmanager

import numpy as np
import pytest
import torch

import golden_kernels as gk
from golden_kernels.testing import assert_bitwise_equal

from .cases import CASES, run_case

BACKENDS = ("reference", "cpu")
POOLS = ("golden", "openmp")


@pytest.fixture(params=POOLS)
def pool(request):
    """Runs the test on each thread pool; restores the automatic choice."""
    gk.set_thread_pool(request.param)
    yield request.param
    gk.set_thread_pool("auto")


def inputs_for(name: str, seed: int, kind: str = "normal"):
    case = CASES[name]
    return case.build(5, case.n_rule(300), 17, torch.float32, torch.Generator().manual_seed(seed), kind)


# ---- Several Python threads at once ----------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_threads_at_once_give_serial_bits(name, backend, threads, pool):
    threads(2)
    case = CASES[name]
    workers, rounds = 4, 3
    inputs = [inputs_for(name, seed) for seed in range(workers)]
    serial = [run_case(case, backend, i).all() for i in inputs]
    results: dict[tuple[int, int], tuple] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(workers)

    def work(w: int) -> None:
        try:
            start.wait()
            for r in range(rounds):
                results[w, r] = run_case(case, backend, inputs[w]).all()
        except BaseException as error:  # reported below, in the main thread
            errors.append(error)

    pool = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
    assert not errors, errors
    assert len(results) == workers * rounds
    for (w, r), outputs in results.items():
        for i, (a, b) in enumerate(zip(outputs, serial[w])):
            assert_bitwise_equal(a, b, f"{name} thread {w} round {r} output {i}")


# ---- Whose threads ---------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CASES))
def test_thread_pools_give_the_same_bits(name, threads):
    case = CASES[name]
    inputs = inputs_for(name, 4)
    threads(1)
    expected = run_case(case, "cpu", inputs).all()
    for chosen in POOLS:
        gk.set_thread_pool(chosen)
        try:
            for n in (2, 3):
                threads(n)
                assert gk.thread_pool() == chosen
                for i, (a, b) in enumerate(zip(run_case(case, "cpu", inputs).all(), expected)):
                    assert_bitwise_equal(a, b, f"{name} on {n} threads of the {chosen} pool, output {i}")
        finally:
            gk.set_thread_pool("auto")


def test_thread_pool_choice():
    gk.set_thread_pool("openmp")  # torch (imported above) brought its OpenMP runtime
    assert gk.thread_pool() == "openmp"
    gk.set_thread_pool("golden")
    try:
        assert gk.thread_pool() == "golden"
        with pytest.raises(ValueError, match="valid choices: auto, golden, openmp"):
            gk.set_thread_pool("tbb")
        assert gk.thread_pool() == "golden"
    finally:
        gk.set_thread_pool("auto")


WITHOUT_TORCH = """
import sys
import golden_kernels as gk
assert "torch" not in sys.modules
assert gk.thread_pool() == "golden", gk.thread_pool()
try:
    gk.set_thread_pool("openmp")
except ValueError as error:
    assert "OpenMP runtime" in str(error)
else:
    raise AssertionError("openmp accepted with no OpenMP runtime loaded")
import torch  # loads an OpenMP runtime, picked up by the automatic choice
assert gk.thread_pool() == "openmp", gk.thread_pool()
"""


def test_openmp_runtime_is_found_when_torch_is_imported_later():
    subprocess.run([sys.executable, "-c", WITHOUT_TORCH], check=True, timeout=120)


ONE_CORE = """
import os, time
import torch
import golden_kernels as gk
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
x, w = torch.randn(512, 512), torch.randn(2048, 512)
gk.set_num_threads(1)
expected = gk.linear(x, w)
gk.set_num_threads(2)
assert gk.thread_pool() == "openmp", gk.thread_pool()
for _ in range(50):
    got = gk.linear(x, w)  # the team's second member waits for the one core: late
    assert torch.equal(got.view(torch.int32), expected.view(torch.int32))
    if gk.thread_pool() == "golden":
        break
assert gk.thread_pool() == "golden", gk.thread_pool()
time.sleep(1.2)
assert gk.thread_pool() == "openmp", gk.thread_pool()
"""


@pytest.mark.timing
def test_automatic_choice_leaves_a_team_that_cannot_get_cores():
    """On one core the OpenMP team's second member arrives after the work is
    done (the caller would wait for it at the end of every region): the
    automatic choice moves to the own pool for a second, then tries again.
    Whether a call's member is late depends on the scheduler (it may instead
    get a time slice mid-call and take tasks, which costs nothing), so the
    script allows up to 50 calls for the first late one."""
    subprocess.run([sys.executable, "-c", ONE_CORE], check=True, timeout=120)


# ---- fork ------------------------------------------------------------------------------

def output_bytes(name: str, seed: int) -> list[bytes]:
    """The raw bytes of every output (picklable, for a child process to return)."""
    outputs = run_case(CASES[name], "cpu", inputs_for(name, seed)).all()
    return [out.contiguous().view(torch.uint8).numpy().tobytes() for out in outputs]


def pool_in_child() -> str:
    return gk.thread_pool()


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy-parent"])
def test_pool_survives_fork(busy, threads, pool):
    """A fork-start multiprocessing worker uses the library after the parent
    used the pool; with busy=True another parent thread is inside a kernel
    (holding the pool) at the moment of the fork. A forked child always runs
    on the library's own pool (an OpenMP team does not survive a fork)."""
    threads(2)
    names = ("rms_norm", "linear", "token_logprob")
    expected = {n: output_bytes(n, 1) for n in names}
    stop = threading.Event()

    def keep_pool_busy():
        x = torch.randn(256, 1024)
        w = torch.randn(512, 1024)
        while not stop.is_set():
            gk.linear(x, w)

    background = threading.Thread(target=keep_pool_busy)
    if busy:
        background.start()
    try:
        context = multiprocessing.get_context("fork")
        with context.Pool(1) as child:
            got = {n: child.apply_async(output_bytes, (n, 1)).get(timeout=120) for n in names}
            child_pool = child.apply_async(pool_in_child).get(timeout=120)
    finally:
        stop.set()
        if busy:
            background.join()
    assert got == expected
    assert child_pool == "golden"


# ---- The caller's floating-point environment ------------------------------------------

HELPER = r"""
#include <fenv.h>
#include <xmmintrin.h>
unsigned get_mxcsr(void) { return _mm_getcsr(); }
void set_mxcsr(unsigned value) { _mm_setcsr(value); }
int get_rounding(void) { return fegetround(); }
int set_rounding(int mode) { return fesetround(mode); }
int upward(void) { return FE_UPWARD; }
"""
FTZ_DAZ = 0x8040


@pytest.fixture(scope="module")
def fenv(tmp_path_factory):
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("MXCSR is x86's")
    directory = tmp_path_factory.mktemp("fenv")
    (directory / "fenv.c").write_text(HELPER)
    library = directory / "libfenv.so"
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", str(directory / "fenv.c"), "-o", str(library), "-lm"],
                   check=True)
    lib = ctypes.CDLL(str(library))
    lib.get_mxcsr.restype = ctypes.c_uint
    lib.set_mxcsr.argtypes = [ctypes.c_uint]
    lib.set_rounding.argtypes = [ctypes.c_int]
    return lib


@contextmanager
def hostile_environment(lib):
    """FTZ + DAZ and round-upward on this thread for the scope."""
    mxcsr, rounding = lib.get_mxcsr(), lib.get_rounding()
    assert lib.set_rounding(lib.upward()) == 0
    lib.set_mxcsr(lib.get_mxcsr() | FTZ_DAZ)
    try:
        yield
    finally:
        lib.set_mxcsr(mxcsr)
        lib.set_rounding(rounding)


def test_hostile_environment_is_real(fenv):
    """The precondition of the next test: this thread's own float arithmetic changes."""
    denormal, one, tiny = np.float32(1e-40), np.float32(1.0), np.float32(1e-8)
    with hostile_environment(fenv):
        flushed, rounded_up = denormal * one, one + tiny
    assert denormal * one == denormal and one + tiny == one
    assert flushed == 0 and rounded_up > one


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_caller_float_environment_changes_nothing(name, backend, fenv, threads, pool):
    case = CASES[name]
    inputs = inputs_for(name, 3, kind="special")  # denormals, infinities, NaNs, huge values
    expected = run_case(case, backend, inputs).all()
    got = {}
    for n in (1, 2):
        threads(n)
        with hostile_environment(fenv):
            got[n] = run_case(case, backend, inputs).all()
    for n, outputs in got.items():
        for i, (a, b) in enumerate(zip(outputs, expected)):
            assert_bitwise_equal(a, b, f"{name} on {n} thread(s) under FTZ/DAZ + round-upward, output {i}")
