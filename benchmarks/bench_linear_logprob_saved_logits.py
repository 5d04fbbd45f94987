"""linear_logprob forward + backward with the forward's fp32 logits handed to
the backward (return_logits / logits=: no recomputation) against the same
pair recomputing them (both with the forward's lse), timed alternately in one
process, and torch eager (F.linear + log_softmax + gather, autograd) in the
same run, at the Qwen3 trainer's lm_head shape and at vocab 32768; then the
small Qwen3 trainer step (fp32 forward + backward) with gt.linear_logprob
keeping the logits or not (MAX_SAVED_LOGITS 0), alternately, and HF eager.

    PYTHONPATH=python python benchmarks/bench_linear_logprob_saved_logits.py [--threads 1] [--repeats 11] [--torch-repeats 3]
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F

from bench_qwen3 import hf_logprobs, training_batch
from common import median_seconds, median_seconds_pair, use_threads

import golden_kernels as gk
from golden_kernels.demo import PRESETS
from golden_kernels.models import Qwen3ForCausalLM
from golden_kernels.models.consistency import random_hf_qwen3
from golden_kernels.ops import linear_logprob as linear_logprob_op
from golden_kernels.torch import functional as gt_functional


def golden_step(h, w, ids, g, saved_logits):
    op = gk.get_op("linear_logprob")
    if saved_logits:
        _, lse, logits = op.forward(h, w, ids, return_lse=True, return_logits=True)
        return op.backward(g, h, w, ids, lse=lse, logits=logits)
    _, lse = op.forward(h, w, ids, return_lse=True)
    return op.backward(g, h, w, ids, lse=lse)


def torch_step(h, w, ids, g):
    logp = torch.log_softmax(F.linear(h, w).float(), dim=-1).gather(1, ids[:, None])[:, 0]
    return torch.autograd.grad(logp, (h, w), g)


def case(rows, hidden, vocab, dtype, repeats, torch_repeats, gen):
    h = torch.randn(rows, hidden, generator=gen).to(dtype)
    w = (torch.randn(vocab, hidden, generator=gen) / hidden**0.5).to(dtype)
    ids = torch.randint(0, vocab, (rows,), generator=gen)
    g = torch.randn(rows, generator=gen)
    saved, recomputed = median_seconds_pair(lambda: golden_step(h, w, ids, g, True),
                                            lambda: golden_step(h, w, ids, g, False), repeats)
    h_t, w_t = h.clone().requires_grad_(), w.clone().requires_grad_()
    torch_s = median_seconds(lambda: torch_step(h_t, w_t, ids, g), torch_repeats, warmup=1)
    kept = "yes" if rows * vocab <= linear_logprob_op.MAX_SAVED_LOGITS else "no (over budget)"
    print(f"| [{rows}, {hidden}] x [{vocab}, {hidden}] {str(dtype).removeprefix('torch.')} | {kept} | "
          f"{recomputed * 1e3:.1f} | {saved * 1e3:.1f} | {recomputed / saved:.3f}x | {torch_s * 1e3:.1f} | "
          f"{torch_s / recomputed:.2f}x | {torch_s / saved:.2f}x |", flush=True)


def trainer_case(repeats, gen):
    hf = random_hf_qwen3(seed=0, **PRESETS["small"])
    golden = Qwen3ForCausalLM.from_hf(hf)
    ids, mask, targets = training_batch(hf.config.vocab_size, 4, 128, gen)
    budget = gt_functional.MAX_SAVED_LOGITS

    def golden_step(max_saved_logits):
        gt_functional.MAX_SAVED_LOGITS = max_saved_logits
        golden.zero_grad()
        golden(ids, mask, targets=targets).sum().backward()

    def hf_step():
        hf.zero_grad()
        hf_logprobs(hf, ids, mask, targets).sum().backward()

    saved, recomputed = median_seconds_pair(lambda: golden_step(budget), lambda: golden_step(0), repeats)
    gt_functional.MAX_SAVED_LOGITS = budget
    hf_s = median_seconds(hf_step, repeats, warmup=1)
    print()
    print("| small Qwen3 trainer fwd+bwd fp32, 4 x 128 | recomputed ms | saved logits ms | speedup | HF eager ms | "
          "HF/recomputed | HF/saved |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| step | {recomputed * 1e3:.0f} | {saved * 1e3:.0f} | {recomputed / saved:.3f}x | {hf_s * 1e3:.0f} | "
          f"{hf_s / recomputed:.2f}x | {hf_s / saved:.2f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--torch-repeats", type=int, default=3, help="torch's bf16 matmul is slow on CPUs")
    args = parser.parse_args()
    print(f"{use_threads(args.threads)}; golden median of {args.repeats} (pair alternating), torch median of "
          f"{args.torch_repeats}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print()
    print("| fwd+bwd | gt.linear_logprob keeps logits | recomputed ms | saved logits ms | speedup | torch ms | "
          "torch/recomputed | torch/saved |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    gen = torch.Generator().manual_seed(0)
    for vocab in (8192, 32768):
        for dtype in (torch.float32, torch.bfloat16):
            case(512, 512, vocab, dtype, args.repeats, args.torch_repeats, gen)
    trainer_case(args.repeats, gen)


if __name__ == "__main__":
    main()
