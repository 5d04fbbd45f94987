"""linear_logprob backward with an entropy gradient, taking each row's
statistics from the forward's entropy partial (return_entropy_partial=True:
the statistics pass skipped) against the same backward recomputing them, timed
alternately in one process; and gt.linear_logprob(return_entropy=True)
forward + backward (which saves the partial) against torch autograd through
log_softmax + gather + entropy on the materialised logits, same run.

    PYTHONPATH=python python benchmarks/bench_linear_logprob_entropy.py [--threads 2] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os

import torch

from common import median_seconds, median_seconds_pair, use_threads

import golden_kernels as gk
import golden_kernels.torch as gt


def problem(rows, hidden, vocab, dtype, gen):
    h = torch.randn(rows, hidden, generator=gen).to(dtype)
    w = (torch.randn(vocab, hidden, generator=gen) / hidden**0.5).to(dtype)
    ids = torch.randint(0, vocab, (rows,), generator=gen)
    return h, w, ids, torch.randn(rows, generator=gen), torch.randn(rows, generator=gen)


def op_case(rows, hidden, vocab, dtype, repeats, gen):
    h, w, ids, g, g_entropy = problem(rows, hidden, vocab, dtype, gen)
    op = gk.get_op("linear_logprob")
    partial = op.forward(h, w, ids, return_entropy=True, return_entropy_partial=True)[-1]
    saved, recomputed = median_seconds_pair(
        lambda: op.backward(g, h, w, ids, grad_entropy=g_entropy, entropy_partial=partial),
        lambda: op.backward(g, h, w, ids, grad_entropy=g_entropy), repeats)
    name = str(dtype).removeprefix("torch.")
    print(f"| op backward, [{rows}, {hidden}] x [{vocab}, {hidden}] {name} | {recomputed * 1e3:.0f} | "
          f"{saved * 1e3:.0f} | {recomputed / saved:.2f}x |", flush=True)


def torch_step(h, w, ids, g, g_entropy):
    logp_all = torch.log_softmax((h @ w.T).float(), dim=-1)
    logprob = logp_all.gather(1, ids[:, None])[:, 0]
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    torch.autograd.grad((logprob * g).sum() + (entropy * g_entropy).sum(), (h, w))


def golden_step(h, w, ids, g, g_entropy):
    logprob, entropy = gt.linear_logprob(h, w, ids, return_entropy=True)
    torch.autograd.grad((logprob * g).sum() + (entropy * g_entropy).sum(), (h, w))


def autograd_case(rows, hidden, vocab, dtype, repeats, gen):
    h, w, ids, g, g_entropy = problem(rows, hidden, vocab, dtype, gen)
    h, w = h.requires_grad_(), w.requires_grad_()
    golden_s = median_seconds(lambda: golden_step(h, w, ids, g, g_entropy), repeats)
    torch_s = median_seconds(lambda: torch_step(h, w, ids, g, g_entropy), repeats)
    name = str(dtype).removeprefix("torch.")
    print(f"| fwd+bwd, [{rows}, {hidden}] x [{vocab}, {hidden}] {name}: golden vs torch autograd | "
          f"{torch_s * 1e3:.0f} (torch) | {golden_s * 1e3:.0f} | {torch_s / golden_s:.2f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"{use_threads(args.threads)}; median of {args.repeats}, alternating; "
          f"load average {os.getloadavg()[0]:.2f}")
    print()
    print("| case | recomputed statistics ms | saved entropy partial ms | speedup |")
    print("|---|---:|---:|---:|")
    gen = torch.Generator().manual_seed(0)
    op_case(512, 1024, 32768, torch.float32, args.repeats, gen)
    op_case(512, 1024, 32768, torch.bfloat16, args.repeats, gen)
    op_case(128, 512, 8192, torch.float32, args.repeats, gen)  # logits fit: cached either way
    autograd_case(512, 1024, 32768, torch.float32, args.repeats, gen)


if __name__ == "__main__":
    main()
