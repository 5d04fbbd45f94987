"""Huge-page advice for fresh large CPU outputs and scratch buffers: the
advice reaches the kernel only for the buffer's whole 2 MiB pages, only for
large buffers, it can be switched off, it saves the page faults, and it never
changes a result's bits."""

from __future__ import annotations

import ctypes
import json
import mmap
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import torch

import golden_kernels as gk
from golden_kernels import _C, _arrays

HUGE_PAGE = 1 << 21
MIN_BYTES = _C.HUGE_PAGE_ADVICE_MIN_BYTES
THP_MODE_FILE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode() -> str | None:
    """The bracketed choice in the kernel's THP setting, or None off Linux."""
    if not sys.platform.startswith("linux") or not THP_MODE_FILE.exists():
        return None
    text = THP_MODE_FILE.read_text()
    return text[text.index("[") + 1 : text.index("]")]


needs_madvise_mode = pytest.mark.skipif(
    thp_mode() != "madvise",
    reason="only in THP 'madvise' mode does the advice alone decide a mapping's eligibility",
)


def huge_page_eligible(address: int) -> bool:
    """Whether the mapping holding address may get transparent huge pages
    (the THPeligible field of /proc/self/smaps)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:
            start, end = (int(part, 16) for part in fields[0].split("-"))
            inside = start <= address < end
        elif inside and fields[0] == "THPeligible:":
            return fields[1] == "1"
    raise AssertionError(f"no mapping holds address {address:#x}")


@pytest.fixture
def huge_page_setting():
    previous = gk.huge_page_advice()
    yield
    gk.set_huge_page_advice(previous)


def first_whole_huge_page(address: int) -> int:
    return (address + HUGE_PAGE - 1) // HUGE_PAGE * HUGE_PAGE


@pytest.fixture
def fresh_mapping():
    """The address of 8 huge pages of anonymous memory no advice has touched
    (a heap block may lie where an earlier, advised buffer was)."""
    mapping = mmap.mmap(-1, 8 * HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    anchor = ctypes.c_char.from_buffer(mapping)
    yield ctypes.addressof(anchor)
    del anchor
    mapping.close()


def test_small_or_disabled_advice_is_not_given(fresh_mapping, huge_page_setting):
    start = first_whole_huge_page(fresh_mapping)
    gk.set_huge_page_advice(True)
    assert not _C.advise_huge_pages(start, MIN_BYTES - 1)
    gk.set_huge_page_advice(False)
    assert not _C.advise_huge_pages(start, MIN_BYTES)
    if thp_mode() == "madvise":
        assert not huge_page_eligible(start)


@needs_madvise_mode
def test_only_whole_huge_pages_of_the_buffer_are_advised(fresh_mapping, huge_page_setting):
    gk.set_huge_page_advice(True)
    start = first_whole_huge_page(fresh_mapping) + 1024  # never 2 MiB aligned
    assert not huge_page_eligible(first_whole_huge_page(start))
    assert _C.advise_huge_pages(start, MIN_BYTES)
    whole_pages = MIN_BYTES // HUGE_PAGE - 1
    assert not huge_page_eligible(start)  # the partial page before the first whole one
    assert huge_page_eligible(first_whole_huge_page(start))
    assert huge_page_eligible(first_whole_huge_page(start) + (whole_pages - 1) * HUGE_PAGE)
    assert not huge_page_eligible(first_whole_huge_page(start) + whole_pages * HUGE_PAGE)  # partial page at the end


class AdviceRecorder:
    """Stands in for _C in _arrays to record which buffers are offered advice."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def advise_huge_pages(self, address: int, nbytes: int) -> bool:
        self.calls.append((address, nbytes))
        return True


@pytest.mark.parametrize("framework", ["torch", "numpy"])
def test_large_fresh_cpu_outputs_are_offered_advice(monkeypatch, framework):
    recorder = AdviceRecorder()
    monkeypatch.setattr(_arrays, "_C", recorder)
    like = torch.empty(1) if framework == "torch" else numpy.empty(1, dtype=numpy.float32)
    min_elements = MIN_BYTES // 4
    large = _arrays.empty(like, (min_elements,), "float32")
    address = large.data_ptr() if framework == "torch" else large.ctypes.data
    assert recorder.calls == [(address, MIN_BYTES)]
    _arrays.empty(like, (min_elements - 1,), "float32")
    assert len(recorder.calls) == 1


@pytest.mark.parametrize("framework", ["torch", "numpy"])
def test_outputs_asked_without_huge_pages_are_not_advised(monkeypatch, framework):
    recorder = AdviceRecorder()
    monkeypatch.setattr(_arrays, "_C", recorder)
    like = torch.empty(1) if framework == "torch" else numpy.empty(1, dtype=numpy.float32)
    _arrays.empty(like, (MIN_BYTES,), "float32", huge_pages=False)
    assert recorder.calls == []


def test_attention_outputs_are_not_advised(monkeypatch):
    """Attention computes long per output byte; its outputs (8 MiB and more
    here) skip the advice (python/golden_kernels/ops/attention.py)."""
    advised = []
    monkeypatch.setattr(_arrays, "_advise_fresh_torch", advised.append)
    q = torch.randn(1, 4, 4096, 128)
    k, v = torch.randn(1, 1, 4096, 128), torch.randn(1, 1, 4096, 128)
    op = gk.get_op("attention")
    out = op.forward(q, k, v)
    dq, _, _ = op.backward(torch.ones_like(q), q, k, v)
    assert out.nbytes >= MIN_BYTES and dq.nbytes >= MIN_BYTES
    assert advised == []


def test_large_kv_cache_storage_is_offered_advice_and_zeroed(monkeypatch):
    """The KV cache's k and v (8 MiB each here) are advised before their zero
    fill faults them in; its small index tensors are not."""
    recorder = AdviceRecorder()
    monkeypatch.setattr(_arrays, "_C", recorder)
    cache = gk.KVCache(1, 4, 128, MIN_BYTES // (4 * 128 * 4), dtype=torch.float32)
    assert recorder.calls == [(cache.k.data_ptr(), MIN_BYTES), (cache.v.data_ptr(), MIN_BYTES)]
    assert not cache.k.any() and not cache.v.any()


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view({2: torch.int16, 4: torch.int32}[t.element_size()])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_advice_never_changes_bits(huge_page_setting, dtype):
    gen = torch.Generator().manual_seed(7)
    gate, up = (torch.randn(1024, 4096, generator=gen).to(dtype) for _ in range(2))
    weight = torch.randn(8192, 1024, generator=gen).to(dtype)
    ids = torch.randint(0, 8192, (4096,), generator=gen)
    grad_rows = torch.randn(4096, 1024, generator=gen).to(dtype)
    x = torch.randn(2, 1024, 16, 128, generator=gen).to(dtype)
    rows = torch.randn(2048, 1024, generator=gen).to(dtype)  # x packed as fp32 would fill 8 MiB of scratch
    square = torch.randn(1024, 1024, generator=gen).to(dtype)
    positions = torch.arange(1024).repeat(2, 1)

    def results():
        return [
            gk.swiglu(gate, up),
            gk.get_op("embedding").backward(grad_rows, ids, weight),
            gk.rope(x, positions),
            gk.linear(rows, square),
        ]

    gk.set_huge_page_advice(True)
    advised = results()
    assert all(a.numel() * a.element_size() >= MIN_BYTES for a in advised[:3])
    gk.set_huge_page_advice(False)
    plain = results()
    for a, b in zip(advised, plain):
        assert torch.equal(bits(a), bits(b))


SCRATCH_FAULTS = """
import json, resource, torch
import golden_kernels as gk
gen = torch.Generator().manual_seed(3)
x = torch.randn(4096, 4096, generator=gen).to(torch.bfloat16)
weight = torch.randn(64, 4096, generator=gen).to(torch.bfloat16)
out = torch.empty(4096, 64, dtype=torch.bfloat16)
faults = {}
for enabled in (False, True):
    gk.set_huge_page_advice(enabled)
    gk.linear(x, weight, out=out)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    gk.linear(x, weight, out=out)
    faults[str(enabled)] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps(faults))
"""


@needs_madvise_mode
def test_large_scratch_buffers_are_advised():
    """linear packs a bf16 x as fp32 scratch, 64 MiB here: above glibc's
    largest mmap threshold, so in a fresh process (whose heap holds no free
    64 MiB) every call gets fresh pages; a long test run's heap may hand back
    resident memory instead, hence the child process."""
    child = subprocess.run([sys.executable, "-c", SCRATCH_FAULTS], check=True, timeout=120, capture_output=True,
                           text=True)
    faults = json.loads(child.stdout.strip().splitlines()[-1])
    scratch_small_pages = 64 * 2**20 // 4096
    assert faults["False"] >= scratch_small_pages, faults
    # Most of the scratch's 4 KiB faults are gone (a difference, not a ratio:
    # under ASan its shadow memory adds faults to both calls).
    assert faults["False"] - faults["True"] >= scratch_small_pages * 3 // 4, faults
