"""Embedding on the CPU at the real Qwen3-8B table size ([151936, 4096] bf16)
with 4096 tokens, against torch: the forward against F.embedding, the
backward (a dense [151936, 4096] gradient, allocated by each call on both
sides) against what a user runs: autograd through F.embedding with a bf16
weight, and torch.zeros + index_add_. The out= rows write into a preallocated,
already-touched output on both sides (torch.index_select(out=); a reused
gradient zeroed and index_add_-ed). Medians of the two sides timed
alternately. Run: PYTHONPATH=python python benchmarks/bench_embedding.py"""

from __future__ import annotations

import torch
from common import header, median_seconds_pair, row

import golden_kernels as gk

VOCAB, HIDDEN, TOKENS = 151936, 4096, 4096


def torch_autograd_backward(weight, ids, g):
    weight.grad = None
    torch.nn.functional.embedding(ids, weight).backward(g)
    return weight.grad


def torch_index_add_backward(ids, g):
    return torch.zeros(VOCAB, HIDDEN, dtype=g.dtype).index_add_(0, ids, g)


def main() -> None:
    header(f"embedding, table [{VOCAB}, {HIDDEN}] bfloat16, {TOKENS} tokens")
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(VOCAB, HIDDEN, generator=gen).to(torch.bfloat16)
    ids = torch.randint(0, VOCAB, (TOKENS,), generator=gen)
    op = gk.get_op("embedding")
    row_bytes = TOKENS * HIDDEN * weight.element_size()
    row("forward", *median_seconds_pair(lambda: gk.embedding(ids, weight),
                                        lambda: torch.nn.functional.embedding(ids, weight)), 2 * row_bytes)
    row("forward_fp32", *median_seconds_pair(lambda: op.forward_fp32(ids, weight),
                                             lambda: torch.nn.functional.embedding(ids, weight).float()),
        3 * row_bytes)
    out, torch_out = (torch.empty(TOKENS, HIDDEN, dtype=weight.dtype) for _ in range(2))
    row("forward out= vs index_select(out=)",
        *median_seconds_pair(lambda: gk.embedding(ids, weight, out=out),
                             lambda: torch.index_select(weight, 0, ids, out=torch_out)), 2 * row_bytes)
    g = torch.randn(TOKENS, HIDDEN, generator=gen).to(torch.bfloat16)
    trainable = weight.detach().requires_grad_()
    table_bytes = VOCAB * HIDDEN * weight.element_size()

    def golden_backward():
        return op.backward(g, ids, weight)

    row("backward vs autograd(F.embedding)",
        *median_seconds_pair(golden_backward, lambda: torch_autograd_backward(trainable, ids, g), repeats=5),
        table_bytes + row_bytes)
    row("backward vs torch.zeros + index_add_",
        *median_seconds_pair(golden_backward, lambda: torch_index_add_backward(ids, g), repeats=5),
        table_bytes + row_bytes)
    dweight, torch_dweight = torch.empty_like(weight), torch.empty_like(weight)
    row("backward out= vs reused zero_() + index_add_",
        *median_seconds_pair(lambda: op.backward(g, ids, weight, out=dweight),
                             lambda: torch_dweight.zero_().index_add_(0, ids, g), repeats=5),
        table_bytes + row_bytes)


if __name__ == "__main__":
    main()
