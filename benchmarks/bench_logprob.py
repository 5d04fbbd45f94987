"""Benchmark of log_softmax / token_logprob / entropy against PyTorch eager on
the CPU, same inputs, same run: median of repeats, ratio, GB/s of logits read.
Also reports each result's max error against the float64 reference of
tests/reference.py. Usage: PYTHONPATH=python python benchmarks/bench_logprob.py
[--rows 1024] [--vocab 151936] [--repeats 3]"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import golden_kernels as gk  # noqa: E402
from tests import reference  # noqa: E402


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def max_error(result: torch.Tensor, ref: torch.Tensor) -> float:
    return float((result.double() - ref).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(args.rows, args.vocab, generator=gen) * 3).to(torch.bfloat16)
    ids = torch.randint(0, args.vocab, (args.rows,), generator=gen)
    gbytes = logits.numel() * logits.element_size() / 1e9
    check_rows = slice(0, 16)  # float64 references on a few rows only (memory)
    ref_tok = reference.token_logprob(logits[check_rows], ids[check_rows])
    ref_lsm = reference.log_softmax(logits[check_rows])
    ref_h = reference.entropy(logits[check_rows])

    cases = [
        ("log_softmax (bf16 out)", lambda: gk.log_softmax(logits), lambda: torch.log_softmax(logits, -1),
         lambda r: max_error(r[check_rows], ref_lsm)),
        ("token_logprob (fp32 out)", lambda: gk.token_logprob(logits, ids),
         lambda: torch.log_softmax(logits.float(), -1).gather(-1, ids[:, None]).squeeze(-1),
         lambda r: max_error(r[check_rows], ref_tok)),
        ("entropy (fp32 out)", lambda: gk.entropy(logits),
         lambda: -(torch.softmax(logits.float(), -1) * torch.log_softmax(logits.float(), -1)).sum(-1),
         lambda r: max_error(r[check_rows], ref_h)),
    ]
    print(f"logits [{args.rows}, {args.vocab}] bf16, {gk.num_threads()} golden threads, "
          f"{torch.get_num_threads()} torch threads, cpu isa {gk.cpu_isa()}")
    print(f"{'op':26s} {'golden s':>9s} {'torch s':>9s} {'ratio':>6s} {'golden GB/s':>11s} "
          f"{'golden err':>10s} {'torch err':>10s}")
    for name, ours, theirs, error in cases:
        t_ours, t_theirs = median_seconds(ours, args.repeats), median_seconds(theirs, args.repeats)
        print(f"{name:26s} {t_ours:9.3f} {t_theirs:9.3f} {t_ours / t_theirs:6.2f} {gbytes / t_ours:11.2f} "
              f"{error(ours()):10.2e} {error(theirs()):10.2e}")


if __name__ == "__main__":
    main()
