"""rms_norm on [8192, 4096] against PyTorch eager and F.rms_norm, fp32 and
bf16, at 1 and 2 threads: median times, ratios and GB/s vs copy bandwidth.

    PYTHONPATH=python python benchmarks/bench_rms_norm.py [--rows 8192 --cols 4096]
"""

from __future__ import annotations

import argparse

import torch

from common import copy_bandwidth_gbs, median_seconds, print_table

import golden_kernels as gk


def eager(x, w, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--cols", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    copy_gbs = copy_bandwidth_gbs()
    print(f"copy bandwidth (read+write): {copy_gbs:.1f} GB/s; cpu isa {gk.cpu_isa()}")
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        gk.set_num_threads(threads)
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            x = torch.randn(args.rows, args.cols).to(dtype)
            w = torch.randn(args.cols).to(dtype)
            out = torch.empty_like(x)
            moved = 2 * x.numel() * x.element_size()
            t_gk = median_seconds(lambda: gk.rms_norm(x, w), args.repeats)
            t_gk_out = median_seconds(lambda: gk.rms_norm(x, w, out=out), args.repeats)
            t_eager = median_seconds(lambda: eager(x, w), args.repeats)
            t_fn = median_seconds(lambda: torch.nn.functional.rms_norm(x, (args.cols,), w, 1e-6), args.repeats)
            t_copy = median_seconds(lambda: out.copy_(x), args.repeats)
            gbs = moved / t_gk_out / 1e9
            rows.append([
                threads, str(dtype).removeprefix("torch."), f"{t_gk * 1e3:.1f}", f"{t_gk_out * 1e3:.1f}",
                f"{t_eager * 1e3:.1f}", f"{t_fn * 1e3:.1f}", f"{t_eager / t_gk:.2f}x", f"{t_fn / t_gk:.2f}x",
                f"{gbs:.1f}", f"{gbs / copy_gbs:.0%}", f"{t_copy / t_gk_out:.0%}",
            ])
    # "golden ms" allocates its output like the PyTorch calls do; "out= ms" writes a
    # preallocated buffer, the kernel's own speed (fresh pages fault on first touch).
    print_table(["threads", "dtype", "golden ms", "out= ms", "eager ms", "F.rms_norm ms", "vs eager",
                 "vs F.rms_norm", "GB/s (out=)", "of copy bw", "same-size copy / golden"], rows)


if __name__ == "__main__":
    main()
