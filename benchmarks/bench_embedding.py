"""Embedding on the CPU at the real Qwen3-8B table size ([151936, 4096] bf16)
with 4096 tokens, against torch.nn.functional.embedding and its dense
backward. Run: PYTHONPATH=python python benchmarks/bench_embedding.py"""

from __future__ import annotations

import torch
from common import header, median_seconds, row

import golden_kernels as gk

VOCAB, HIDDEN, TOKENS = 151936, 4096, 4096


def torch_embedding_backward(g, ids):
    return torch.ops.aten.embedding_dense_backward(g, ids, VOCAB, -1, False)


def main() -> None:
    header(f"embedding, table [{VOCAB}, {HIDDEN}] bfloat16, {TOKENS} tokens")
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(VOCAB, HIDDEN, generator=gen).to(torch.bfloat16)
    ids = torch.randint(0, VOCAB, (TOKENS,), generator=gen)
    row_bytes = TOKENS * HIDDEN * weight.element_size()
    row("forward", median_seconds(lambda: gk.embedding(ids, weight)),
        median_seconds(lambda: torch.nn.functional.embedding(ids, weight)), 2 * row_bytes)
    row("forward_fp32", median_seconds(lambda: gk.get_op("embedding").forward_fp32(ids, weight)),
        median_seconds(lambda: torch.nn.functional.embedding(ids, weight).float()), 3 * row_bytes)
    g = torch.randn(TOKENS, HIDDEN, generator=gen).to(torch.bfloat16)
    op = gk.get_op("embedding")
    table_bytes = VOCAB * HIDDEN * weight.element_size()
    row("backward (writes the whole dweight)", median_seconds(lambda: op.backward(g, ids, weight), repeats=3),
        median_seconds(lambda: torch_embedding_backward(g, ids), repeats=3), table_bytes + row_bytes)


if __name__ == "__main__":
    main()
