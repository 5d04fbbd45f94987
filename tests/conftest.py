"""Shared fixtures: every CPU instruction set the machine can run, thread
counts, and a seeded generator."""

from __future__ import annotations

import pytest
import torch

import golden_kernels as gk
from golden_kernels import _C

ALL_ISAS = ("scalar", "avx2", "avx512")
SUPPORTED_ISAS = tuple(isa for isa in ALL_ISAS if _C.cpu_isa_supported(isa))
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def pytest_report_header(config):
    emulated = (" (avx512 emulated: AVX2 code with the AVX-512 path's 16-lane vectors)"
                if _C.cpu_avx512_emulated() else "")
    return f"golden_kernels CPU paths this machine runs: {', '.join(SUPPORTED_ISAS)}{emulated}"


@pytest.fixture(params=ALL_ISAS)
def cpu_isa(request):
    """Forces the 'cpu' backend onto each instruction set in turn. An ISA this
    processor lacks is reported as skipped, never as passed."""
    isa = request.param
    if isa not in SUPPORTED_ISAS:
        pytest.skip(f"this CPU does not support {isa}")
    previous = gk.cpu_isa()
    gk.set_cpu_isa(isa)
    yield isa
    gk.set_cpu_isa(previous)


@pytest.fixture
def threads():
    """Sets the 'cpu' backend's thread count for the test; restores the default."""
    def set_threads(n: int) -> None:
        gk.set_num_threads(n)

    yield set_threads
    gk.set_num_threads(0)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(20261123)
