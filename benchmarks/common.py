"""Shared benchmark helpers: median timing, measured copy bandwidth, tables.

The machines are shared and noisy: every figure is a median of repeats and
every comparison is a ratio measured in the same run."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

# Benchmarks import their references from the test suite instead of copying them.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def use_threads(threads: int) -> str:
    """Gives golden_kernels and torch `threads` threads each; returns a line
    naming the ISA, the thread counts and the torch version for a header."""
    import golden_kernels as gk

    torch.set_num_threads(threads)
    gk.set_num_threads(threads)
    return (f"golden_kernels cpu isa {gk.cpu_isa()}, {gk.num_threads()} threads; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def median_seconds(fn: Callable[[], object], repeats: int = 15, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def median_seconds_pair(fn_a: Callable[[], object], fn_b: Callable[[], object], repeats: int = 15,
                        warmup: int = 2) -> tuple[float, float]:
    """Medians of fn_a and fn_b timed alternately: a change of load on the
    shared machine hits both sides alike, which keeps their ratio honest."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times_a), statistics.median(times_b)


def copy_bandwidth_gbs(num_bytes: int = 512 << 20, repeats: int = 15) -> float:
    """Read + write GB/s of a large preallocated copy: the memory roofline."""
    src = torch.empty(num_bytes // 4, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    seconds = median_seconds(lambda: dst.copy_(src), repeats)
    return 2 * num_bytes / seconds / 1e9


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))


# The run's measured copy bandwidth, set by header(); row() reports against it.
_copy_gbs = float("nan")


def header(title: str) -> None:
    import os

    import golden_kernels as gk

    global _copy_gbs
    _copy_gbs = copy_bandwidth_gbs()
    print(f"## {title}")
    print(f"golden_kernels cpu isa {gk.cpu_isa()}, {gk.num_threads()} threads ({gk.thread_pool()} pool); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"copy bandwidth (torch copy_) {_copy_gbs:.2f} GB/s; load average {os.getloadavg()[0]:.2f}")
    # Fresh-page faults dominate allocating calls, so say who gets huge pages:
    # golden advises them for large buffers, torch only with THP_MEM_ALLOC_ENABLE=1.
    print(f"huge-page advice: golden {'on' if gk.huge_page_advice() else 'off'}, "
          f"torch {'on' if os.environ.get('THP_MEM_ALLOC_ENABLE') == '1' else 'off'} (THP_MEM_ALLOC_ENABLE)")
    print()
    print("| case | golden ms | torch eager ms | speedup | golden GB/s | % of copy |")
    print("|---|---:|---:|---:|---:|---:|")


def row(case: str, golden_s: float, torch_s: float, nbytes: int) -> None:
    gbs = nbytes / golden_s / 1e9
    print(f"| {case} | {golden_s * 1e3:.2f} | {torch_s * 1e3:.2f} | {torch_s / golden_s:.2f}x | "
          f"{gbs:.2f} | {100 * gbs / _copy_gbs:.0f}% |")
