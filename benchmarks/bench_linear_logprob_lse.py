"""linear_logprob backward with the forward's per-row lse (the statistics pass
skipped) against the same backward recomputing it, timed alternately in one
process: the op alone at trainer shapes, and the small Qwen3 trainer step
(fp32 forward + backward), with torch / HF eager measured in the same run.

    PYTHONPATH=python python benchmarks/bench_linear_logprob_lse.py [--threads 1] [--repeats 11]
"""

from __future__ import annotations

import argparse
import os

import torch

from bench_qwen3 import hf_logprobs, training_batch
from common import median_seconds, median_seconds_pair, use_threads

import golden_kernels as gk
from golden_kernels.demo import PRESETS
from golden_kernels.models import Qwen3ForCausalLM
from golden_kernels.models.consistency import random_hf_qwen3
from golden_kernels.ops import linear_logprob as linear_logprob_op


def op_case(rows, hidden, vocab, repeats, gen):
    h = torch.randn(rows, hidden, generator=gen)
    w = torch.randn(vocab, hidden, generator=gen) / hidden**0.5
    ids = torch.randint(0, vocab, (rows,), generator=gen)
    g = torch.randn(rows, generator=gen)
    op = gk.get_op("linear_logprob")
    lse = op.forward(h, w, ids, return_lse=True)[1]
    with_lse, recomputed = median_seconds_pair(lambda: op.backward(g, h, w, ids, lse=lse),
                                               lambda: op.backward(g, h, w, ids), repeats)
    h_t, w_t = h.clone().requires_grad_(), w.clone().requires_grad_()

    def torch_step():
        logp = torch.log_softmax(h_t @ w_t.T, dim=-1).gather(1, ids[:, None])[:, 0]
        torch.autograd.grad(logp, (h_t, w_t), g)

    torch_s = median_seconds(torch_step, repeats)
    print(f"| backward [{rows}, {hidden}] x [{vocab}, {hidden}] | {recomputed * 1e3:.1f} | {with_lse * 1e3:.1f} | "
          f"{recomputed / with_lse:.3f}x | {torch_s * 1e3:.1f} (fwd+bwd) |", flush=True)


def recomputing_backward(*args, **kwargs):
    """The backward as before this change: the saved lse dropped, the statistics pass run."""
    kwargs["lse"] = None
    return saved_lse_backward(*args, **kwargs)


saved_lse_backward = linear_logprob_op.backward


def trainer_case(repeats, gen):
    hf = random_hf_qwen3(seed=0, **PRESETS["small"])
    golden = Qwen3ForCausalLM.from_hf(hf)
    ids, mask, targets = training_batch(hf.config.vocab_size, 4, 128, gen)

    def golden_step(backward):
        linear_logprob_op.backward = backward
        golden.zero_grad()
        golden(ids, mask, targets=targets).sum().backward()

    def hf_step():
        hf.zero_grad()
        hf_logprobs(hf, ids, mask, targets).sum().backward()

    with_lse, recomputed = median_seconds_pair(lambda: golden_step(saved_lse_backward),
                                               lambda: golden_step(recomputing_backward), repeats)
    linear_logprob_op.backward = saved_lse_backward
    hf_s = median_seconds(hf_step, repeats, warmup=1)
    print(f"| small Qwen3 trainer fwd+bwd fp32, 4 x 128 | {recomputed * 1e3:.0f} | {with_lse * 1e3:.0f} | "
          f"{recomputed / with_lse:.3f}x | {hf_s * 1e3:.0f} (HF eager) |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()
    print(f"{use_threads(args.threads)}; median of {args.repeats}, alternating; "
          f"load average {os.getloadavg()[0]:.2f}")
    print()
    print("| case | recomputed lse ms | saved lse ms | speedup | torch ms |")
    print("|---|---:|---:|---:|---:|")
    gen = torch.Generator().manual_seed(0)
    op_case(512, 512, 8192, args.repeats, gen)
    op_case(512, 512, 32768, args.repeats, gen)
    trainer_case(args.repeats, gen)


if __name__ == "__main__":
    main()
