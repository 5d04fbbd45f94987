"""attention (Hq 32 / Hkv 8 / D 128, causal) against PyTorch SDPA and a naive
materialising implementation, fp32 and bf16: causal prefill and one-token
decode against a KV cache. Median times, ratios, decode GB/s against the
measured copy bandwidth, and the extra memory each method needs.

    PYTHONPATH=python python benchmarks/bench_attention.py           # quick: S 512, cache 4096
    PYTHONPATH=python python benchmarks/bench_attention.py --full    # S 512/2048/8192, B 1/4, caches 4096/32768
"""

from __future__ import annotations

import argparse

import torch

from common import copy_bandwidth_gbs, median_seconds, print_table

import golden_kernels as gk

HQ, HKV, D = 32, 8, 128
NAIVE_LIMIT_BYTES = 8 << 30  # skip the naive method when its score tensor alone would exceed this


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


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def prefill_rows(batches, lengths, dtypes, repeats):
    rows = []
    for dtype in dtypes:
        for b in batches:
            for s in lengths:
                q = torch.randn(b, HQ, s, D).to(dtype)
                k, v = (torch.randn(b, HKV, s, D).to(dtype) for _ in range(2))
                reps = max(1, repeats if s <= 512 else repeats // 5)
                t_gk = median_seconds(lambda: gk.attention(q, k, v), reps, warmup=1)
                t_sdpa = median_seconds(lambda: sdpa(q, k, v), reps, warmup=1)
                score_bytes = b * HQ * s * s * q.element_size()
                naive_ok = 2 * score_bytes <= NAIVE_LIMIT_BYTES
                t_naive = median_seconds(lambda: naive(q, k, v), reps, warmup=1) if naive_ok else float("nan")
                rows.append([str(dtype).removeprefix("torch."), b, s, f"{t_gk * 1e3:.1f}", f"{t_sdpa * 1e3:.1f}",
                             f"{t_naive * 1e3:.1f}" if naive_ok else "skipped", f"{t_sdpa / t_gk:.2f}x",
                             f"{t_naive / t_gk:.2f}x" if naive_ok else "-", mib(q.numel() * q.element_size()),
                             mib(2 * score_bytes)])
    print_table(["dtype", "B", "S", "golden ms", "SDPA ms", "naive ms", "vs SDPA", "vs naive",
                 "golden extra MiB (out)", "naive extra MiB (scores+probs)"], rows)


def decode_rows(caches, dtypes, repeats, copy_gbs):
    rows = []
    for dtype in dtypes:
        for length in caches:
            q = torch.randn(1, HQ, 1, D).to(dtype)
            k, v = (torch.randn(1, HKV, length, D).to(dtype) for _ in range(2))
            t_gk = median_seconds(lambda: gk.attention(q, k, v), repeats)
            t_sdpa = median_seconds(lambda: sdpa(q, k, v), repeats)
            t_naive = median_seconds(lambda: naive(q, k, v), repeats)
            streamed = 2 * k.numel() * k.element_size()
            gbs = streamed / t_gk / 1e9
            rows.append([str(dtype).removeprefix("torch."), length, f"{t_gk * 1e3:.2f}", f"{t_sdpa * 1e3:.2f}",
                         f"{t_naive * 1e3:.2f}", f"{t_sdpa / t_gk:.2f}x", f"{t_naive / t_gk:.2f}x", f"{gbs:.1f}",
                         f"{gbs / (copy_gbs / 2):.0%}"])
    # copy_gbs counts read + write; streaming the cache only reads, so compare with half of it.
    print_table(["dtype", "cache", "golden ms", "SDPA ms", "naive ms", "vs SDPA", "vs naive", "cache GB/s",
                 "of copy read bw"], rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true", help="the issue's full sizes (slow on a small CPU)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lengths", type=int, nargs="*", help="prefill lengths (overrides the preset)")
    parser.add_argument("--batches", type=int, nargs="*", help="prefill batch sizes (overrides the preset)")
    parser.add_argument("--caches", type=int, nargs="*", help="decode cache lengths (overrides the preset)")
    args = parser.parse_args()
    copy_gbs = copy_bandwidth_gbs()
    print(f"cpu isa {gk.cpu_isa()}, golden threads {gk.num_threads()}, torch threads {torch.get_num_threads()}, "
          f"copy bandwidth (read+write) {copy_gbs:.1f} GB/s")
    dtypes = (torch.float32, torch.bfloat16)
    batches, lengths, caches = ((1, 4), (512, 2048, 8192), (4096, 32768)) if args.full else ((1,), (512,), (4096,))
    prefill_rows(args.batches or batches, args.lengths or lengths, dtypes, args.repeats)
    decode_rows(args.caches or caches, dtypes, args.repeats, copy_gbs)


if __name__ == "__main__":
    main()
