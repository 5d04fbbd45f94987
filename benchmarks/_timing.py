"""Shared timing helpers of the benchmark scripts: median wall time of
repeated calls, and the machine's measured copy bandwidth (torch clone of a
large tensor) that achieved GB/s figures are compared with."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

# The benchmarks import the float64 / Hugging Face references from the tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def median_seconds(fn: Callable[[], object], repeats: int = 7, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_bandwidth_gbs(nbytes: int = 256 << 20) -> float:
    """GB/s of torch.clone on a large tensor (bytes read + bytes written)."""
    x = torch.empty(nbytes // 4, dtype=torch.float32).normal_()
    return 2 * nbytes / median_seconds(lambda: x.clone()) / 1e9


def header(title: str) -> None:
    import golden_kernels as gk

    print(f"## {title}")
    print(f"golden_kernels cpu isa {gk.cpu_isa()}, {gk.num_threads()} threads; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"copy bandwidth (torch clone) {copy_bandwidth_gbs():.2f} GB/s")
    print()
    print("| case | golden ms | torch eager ms | speedup | golden GB/s |")
    print("|---|---:|---:|---:|---:|")


def row(case: str, golden_s: float, torch_s: float, nbytes: int) -> None:
    print(f"| {case} | {golden_s * 1e3:.2f} | {torch_s * 1e3:.2f} | {torch_s / golden_s:.2f}x | "
          f"{nbytes / golden_s / 1e9:.2f} |")
