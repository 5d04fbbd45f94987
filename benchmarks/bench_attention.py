"""attention (Hq 32 / Hkv 8 / D 128, causal) against PyTorch SDPA and a naive
materialising implementation, fp32 and bf16: causal prefill and one-token
decode against a KV cache. Median times, ratios, decode GB/s against the
measured copy bandwidth, and (--memory) the peak extra memory of one call of
each method, measured in a fresh subprocess per case.

    PYTHONPATH=python python benchmarks/bench_attention.py           # quick: S 512, cache 4096
    PYTHONPATH=python python benchmarks/bench_attention.py --full    # S 512/2048/8192, B 1/4, caches 4096/32768
    PYTHONPATH=python python benchmarks/bench_attention.py --memory --lengths 512 2048 8192
    PYTHONPATH=python python benchmarks/bench_attention.py --backward --lengths 1024 2048
    PYTHONPATH=python python benchmarks/bench_attention.py --layout bshd  # inputs as a model's views
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from common import copy_bandwidth_gbs, median_seconds, median_seconds_pair, print_table

import golden_kernels as gk

HQ, HKV, D = 32, 8, 128
NAIVE_LIMIT_BYTES = 8 << 30  # skip the naive method when its scores and probabilities would exceed this


def naive(q, k, v):
    """softmax(q k^T / sqrt(D) + causal mask) v, materialising [B, Hq, Sq, Skv] in q's dtype."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    sq, skv = q.shape[2], k.shape[2]
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    allowed = torch.arange(skv) <= torch.arange(sq).unsqueeze(1) + (skv - sq)
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ v


def sdpa(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] > 1, enable_gqa=True)


def golden(q, k, v):
    return gk.attention(q, k, v)


METHODS = {"golden": golden, "sdpa": sdpa, "naive": naive}


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


NAIVE_BF16_MAX_S = 512  # PyTorch's CPU bf16 matmuls take minutes per call beyond this


def naive_fits(b: int, s: int, element_size: int) -> bool:
    """Whether the naive method is run: its scores and probabilities fit the
    memory limit, and (bf16) it finishes in reasonable time."""
    return 2 * b * HQ * s * s * element_size <= NAIVE_LIMIT_BYTES and (element_size == 4 or s <= NAIVE_BF16_MAX_S)


def repeats_for(s: int, repeats: int) -> tuple[int, int]:
    """(repeats, warm-ups): fewer of both at long sequences (seconds per call)."""
    if s <= 512:
        return repeats, 1
    if s <= 2048:
        return max(1, repeats // 2), 1
    return max(1, repeats // 3), 0


# --layout: "bhsd" makes q, k, v contiguous [B, H, S, D]; "bshd" makes them in
# [B, S, H, D] memory viewed as [B, H, S, D] (a model's projection(x).view(B, S,
# H, D).transpose(1, 2), what a Hugging Face attention function receives).
INPUT_LAYOUT = "bhsd"


def inputs(b: int, s: int, dtype: torch.dtype, sq: int | None = None):
    """q [b, Hq, sq, D], k, v [b, Hkv, s, D] made directly in dtype, so that
    creating them raises the RSS high-water mark only by their own size."""
    gen = torch.Generator().manual_seed(0)
    sq = s if sq is None else sq
    if INPUT_LAYOUT == "bshd":
        q = torch.randn(b, sq, HQ, D, generator=gen, dtype=dtype).transpose(1, 2)
        k, v = (torch.randn(b, s, HKV, D, generator=gen, dtype=dtype).transpose(1, 2) for _ in range(2))
        return q, k, v
    q = torch.randn(b, HQ, sq, D, generator=gen, dtype=dtype)
    k, v = (torch.randn(b, HKV, s, D, generator=gen, dtype=dtype) for _ in range(2))
    return q, k, v


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_extra_case(method: str, dtype_name: str, b: int, s: int) -> None:
    """In this (fresh) process: one call of method; prints the RSS high-water
    mark during the call minus the resident size before it (output included)."""
    fn, dtype = METHODS[method], getattr(torch, dtype_name)
    fn(*inputs(1, 64, dtype))  # library start-up (thread pools, kernels) outside the measurement
    q, k, v = inputs(b, s, dtype)
    before = resident_bytes()
    out = fn(q, k, v)
    extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before  # Linux: KiB
    print(json.dumps({"peak_extra_bytes": extra, "out_bytes": out.numel() * out.element_size()}))


def peak_extra_bytes(method: str, dtype: torch.dtype, b: int, s: int) -> int:
    command = [sys.executable, __file__, "--layout", INPUT_LAYOUT, "--peak-case", method,
               str(dtype).removeprefix("torch."), str(b), str(s)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ).stdout
    return json.loads(output.strip().splitlines()[-1])["peak_extra_bytes"]


def memory_rows(batches, lengths, dtypes):
    rows = []
    for dtype in dtypes:
        for b in batches:
            for s in lengths:
                ours, theirs = peak_extra_bytes("golden", dtype, b, s), peak_extra_bytes("sdpa", dtype, b, s)
                elem = torch.tensor([], dtype=dtype).element_size()
                naive_cell = mib(peak_extra_bytes("naive", dtype, b, s)) if naive_fits(b, s, elem) else "not run"
                rows.append([str(dtype).removeprefix("torch."), b, s, mib(ours), mib(theirs), naive_cell,
                             mib(b * HQ * s * D * elem), mib(b * HQ * s * s * elem), f"{ours / (b * HQ * s * D * elem):.2f}"])
    print_table(["dtype", "B", "S", "golden MiB", "SDPA MiB", "naive MiB", "output MiB", "one S^2 score tensor MiB",
                 "golden / output"], rows)
    print("peak extra = RSS high-water mark during one call minus the resident size before it (the output "
          f"included); naive not run where its scores and probabilities exceed {NAIVE_LIMIT_BYTES >> 30} GiB, "
          f"nor in bf16 beyond S = {NAIVE_BF16_MAX_S} (minutes per call)")


def prefill_rows(batches, lengths, dtypes, repeats):
    rows = []
    for dtype in dtypes:
        for b in batches:
            for s in lengths:
                q, k, v = inputs(b, s, dtype)
                reps, warmup = repeats_for(s, repeats)
                t_gk, t_sdpa = median_seconds_pair(lambda: golden(q, k, v), lambda: sdpa(q, k, v), reps, warmup)
                naive_ok = naive_fits(b, s, q.element_size())
                t_naive = median_seconds(lambda: naive(q, k, v), reps, warmup) if naive_ok else float("nan")
                rows.append([str(dtype).removeprefix("torch."), b, s, reps, f"{t_gk * 1e3:.1f}", f"{t_sdpa * 1e3:.1f}",
                             f"{t_naive * 1e3:.1f}" if naive_ok else "not run", f"{t_sdpa / t_gk:.2f}x",
                             f"{t_naive / t_gk:.2f}x" if naive_ok else "-"])
                print("  ".join(map(str, rows[-1])), flush=True)  # long runs: show progress
    print_table(["dtype", "B", "S", "repeats", "golden ms", "SDPA ms", "naive ms", "vs SDPA", "vs naive"], rows)


def backward_rows(batches, lengths, dtypes, repeats):
    """dq, dk, dv: golden's backward recomputing the forward, and taking the
    forward's fp32 output and LSE (saved_out, saved_lse: what gk.torch.attention
    does for float32, and for 16-bit inputs with keep_fp32_output=True),
    against SDPA's backward (autograd, graph kept)."""
    rows = []
    backward = gk.get_op("attention").backward
    for dtype in dtypes:
        for b in batches:
            for s in lengths:
                q, k, v = inputs(b, s, dtype)
                grad = torch.randn(q.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
                out, lse = gk.get_op("attention").forward_fp32(q, k, v, return_lse=True)
                reps, warmup = repeats_for(s, repeats)
                t_recompute, t_saved = median_seconds_pair(
                    lambda: backward(grad, q, k, v), lambda: backward(grad, q, k, v, saved_out=out, saved_lse=lse),
                    reps, warmup)
                leaves = [t.clone().requires_grad_() for t in (q, k, v)]
                sdpa_out = sdpa(*leaves)
                t_sdpa = median_seconds(lambda: torch.autograd.grad(sdpa_out, leaves, grad, retain_graph=True),
                                        reps, warmup)
                rows.append([str(dtype).removeprefix("torch."), b, s, reps, f"{t_recompute * 1e3:.1f}",
                             f"{t_saved * 1e3:.1f}", f"{t_recompute / t_saved:.2f}x", f"{t_sdpa * 1e3:.1f}",
                             f"{t_sdpa / t_saved:.2f}x"])
                print("  ".join(map(str, rows[-1])), flush=True)
    print_table(["dtype", "B", "S", "repeats", "golden recompute ms", "golden saved ms", "saved speedup",
                 "SDPA backward ms", "SDPA / golden saved"], rows)


# An OpenMP team's idle members spin for a while after each region; that CPU time counts too.
OPENMP_SPIN_NOTE = ", whose idle members spin after each call: above 2.00 is their spinning"


def wall_and_cpu_seconds(fn, repeats: int) -> tuple[float, float]:
    """Medians of one call's wall time and of the process CPU time it used (all threads)."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def decode_rows(caches, dtypes, repeats):
    rows = []
    for dtype in dtypes:
        for length in caches:
            q, k, v = inputs(1, length, dtype, sq=1)
            # The roofline is re-measured next to each case: the shared machine's load changes by the minute.
            copy_gbs = copy_bandwidth_gbs(repeats=5)
            t_gk, t_sdpa = median_seconds_pair(lambda: gk.attention(q, k, v), lambda: sdpa(q, k, v), repeats)
            wall, cpu = wall_and_cpu_seconds(lambda: gk.attention(q, k, v), repeats)
            t_naive = median_seconds(lambda: naive(q, k, v), repeats)
            streamed = 2 * k.numel() * k.element_size()
            gbs = streamed / t_gk / 1e9
            rows.append([str(dtype).removeprefix("torch."), length, f"{t_gk * 1e3:.2f}", f"{t_sdpa * 1e3:.2f}",
                         f"{t_naive * 1e3:.2f}", f"{t_sdpa / t_gk:.2f}x", f"{t_naive / t_gk:.2f}x", f"{gbs:.1f}",
                         f"{gbs / (copy_gbs / 2):.0%}", f"{cpu / wall:.2f}", f"{streamed / cpu / 1e9:.1f}"])
    # copy_gbs counts read + write; streaming the cache only reads, so compare with half of it.
    print_table(["dtype", "cache", "golden ms", "SDPA ms", "naive ms", "vs SDPA", "vs naive", "cache GB/s",
                 "of copy read bw", "golden threads busy", "cache GB/s per CPU-second"], rows)
    print(f"golden threads busy = CPU time / wall time of one golden call (2.00 = both threads ran throughout; "
          f"about 1 = the helper thread rarely got a core, the caller drained the tasks alone; on the "
          f"{gk.thread_pool()} pool{OPENMP_SPIN_NOTE if gk.thread_pool() == 'openmp' else ''}); per CPU-second = "
          "cache bytes / CPU time, what one core streams while it runs, whatever the load")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true", help="the issue's full sizes (slow on a small CPU)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="at S <= 512; half at 2048, a third (at least one) at longer; golden and SDPA alternate")
    parser.add_argument("--lengths", type=int, nargs="*", help="prefill lengths (overrides the preset)")
    parser.add_argument("--batches", type=int, nargs="*", help="prefill batch sizes (overrides the preset)")
    parser.add_argument("--caches", type=int, nargs="*", help="decode cache lengths (overrides the preset)")
    parser.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"])
    parser.add_argument("--no-prefill", action="store_true")
    parser.add_argument("--no-decode", action="store_true")
    parser.add_argument("--memory", action="store_true", help="peak extra memory instead of timings")
    parser.add_argument("--backward", action="store_true", help="the backward (prefill lengths) instead of "
                        "prefill and decode")
    parser.add_argument("--layout", choices=("bhsd", "bshd"), default="bhsd",
                        help="the inputs: contiguous [B, H, S, D], or [B, S, H, D] memory "
                        "viewed as [B, H, S, D] (a model's layout)")
    parser.add_argument("--peak-case", nargs=4, metavar=("METHOD", "DTYPE", "B", "S"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    global INPUT_LAYOUT
    INPUT_LAYOUT = args.layout
    if args.peak_case:
        method, dtype_name, b, s = args.peak_case
        peak_extra_case(method, dtype_name, int(b), int(s))
        return
    dtypes = [getattr(torch, name) for name in args.dtypes]
    batches, lengths, caches = ((1, 4), (512, 2048, 8192), (4096, 32768)) if args.full else ((1,), (512,), (4096,))
    batches, lengths = args.batches or batches, args.lengths or lengths
    if args.memory:
        memory_rows(batches, lengths, dtypes)
        return
    copy_gbs = copy_bandwidth_gbs()
    print(f"cpu isa {gk.cpu_isa()}, golden threads {gk.num_threads()} ({gk.thread_pool()} pool), "
          f"torch threads {torch.get_num_threads()}, copy bandwidth (read+write) {copy_gbs:.1f} GB/s, "
          f"input layout {args.layout}")
    if args.backward:
        backward_rows(batches, lengths, dtypes, args.repeats)
        return
    if not args.no_prefill:
        prefill_rows(batches, lengths, dtypes, args.repeats)
    if not args.no_decode:
        decode_rows(args.caches or caches, dtypes, args.repeats)


if __name__ == "__main__":
    main()
