"""Per-call overhead of every golden op on a decode-sized problem (one token,
bf16): the direct API (golden_kernels.<op>), the torch functional API
(golden_kernels.torch.<op>, the torch.library custom op) with and without
inputs that require grad, and PyTorch's own eager op, all in the same run.
The problems are tiny on purpose: what is timed is the Python, binding and
dispatch path, not the arithmetic."""

from __future__ import annotations

import statistics
import time

import torch
from common import print_table

import golden_kernels as gk
import golden_kernels.torch as gt

HIDDEN, INTERMEDIATE, HEADS, HEAD_DIM, VOCAB, THETA = 1024, 3072, 16, 128, 1024, 1e6
WARMUP, CALLS = 20, 401


def median_call_us(fn) -> float:
    """Median over CALLS single calls: on a shared machine a preempted call is
    an outlier the median drops, where a mean over a loop would absorb it."""
    for _ in range(WARMUP):
        fn()
    samples = []
    for _ in range(CALLS):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1e3


def torch_rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def torch_token_logprob(logits, ids):
    return torch.log_softmax(logits.float(), -1).gather(-1, ids[:, None])[:, 0]


def torch_entropy(logits):
    logp = torch.log_softmax(logits.float(), -1)
    return -(logp.exp() * logp).sum(-1)


def cases(requires_grad: bool):
    """(name, golden direct, golden torch functional, torch eager): zero-argument callables."""
    gen = torch.Generator().manual_seed(0)

    def bf16(*shape):
        return torch.randn(*shape, generator=gen).bfloat16().requires_grad_(requires_grad)

    x, w, small_w = bf16(1, HIDDEN), bf16(HIDDEN), bf16(64, 64)
    x64, gate, up = bf16(1, 64), bf16(1, INTERMEDIATE), bf16(1, INTERMEDIATE)
    q, table = bf16(1, HEADS, HEAD_DIM), bf16(VOCAB, HIDDEN)
    logits, head = bf16(1, VOCAB), bf16(VOCAB, 64)
    ids, positions = torch.tensor([7]), torch.tensor([5])
    angle = positions[:, None].float() * THETA ** (-torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM)
    cos, sin = (torch.cat((f(angle), f(angle)), -1)[:, None].bfloat16() for f in (torch.cos, torch.sin))
    F = torch.nn.functional
    return [
        ("rms_norm [1, 1024]", lambda: gk.rms_norm(x, w, 1e-6), lambda: gt.rms_norm(x, w, 1e-6),
         lambda: F.rms_norm(x, (HIDDEN,), w, 1e-6)),
        ("embedding 1 id, [1024, 1024]", lambda: gk.embedding(ids, table), lambda: gt.embedding(ids, table),
         lambda: F.embedding(ids, table)),
        ("silu [1, 3072]", lambda: gk.silu(gate), lambda: gt.silu(gate), lambda: F.silu(gate)),
        ("swiglu [1, 3072]", lambda: gk.swiglu(gate, up), lambda: gt.swiglu(gate, up),
         lambda: F.silu(gate) * up),
        ("rope [1, 16, 128]", lambda: gk.rope(q, positions, theta=THETA), lambda: gt.rope(q, positions, THETA),
         lambda: torch_rope(q, cos, sin)),
        ("linear [1, 64] x [64, 64]", lambda: gk.linear(x64, small_w), lambda: gt.linear(x64, small_w),
         lambda: F.linear(x64, small_w)),
        ("lm_head [1, 64] x [1024, 64]", lambda: gk.lm_head(x64, head), lambda: gt.lm_head(x64, head),
         lambda: F.linear(x64, head)),
        ("log_softmax [1, 1024]", lambda: gk.log_softmax(logits), lambda: gt.log_softmax(logits),
         lambda: torch.log_softmax(logits, -1)),
        ("token_logprob [1, 1024]", lambda: gk.token_logprob(logits, ids), lambda: gt.token_logprob(logits, ids),
         lambda: torch_token_logprob(logits, ids)),
        ("entropy [1, 1024]", lambda: gk.entropy(logits), lambda: gt.entropy(logits),
         lambda: torch_entropy(logits)),
        ("linear_logprob [1, 64] x [1024, 64]", lambda: gk.linear_logprob(x64, head, ids),
         lambda: gt.linear_logprob(x64, head, ids), lambda: torch_token_logprob(F.linear(x64, head), ids)),
    ]


def overhead_rows():
    rows = []
    with_grad = {name: fn for name, _, fn, _ in cases(requires_grad=True)}
    for name, direct, functional, eager in cases(requires_grad=False):
        golden_us, functional_us = median_call_us(direct), median_call_us(functional)
        grad_us, torch_us = median_call_us(with_grad[name]), median_call_us(eager)
        rows.append([name, f"{golden_us:.1f}", f"{functional_us:.1f}", f"{grad_us:.1f}", f"{torch_us:.1f}",
                     f"{torch_us / golden_us:.2f}x", f"{torch_us / functional_us:.2f}x"])
    return rows


if __name__ == "__main__":
    print(f"golden_kernels cpu isa {gk.cpu_isa()}, {gk.num_threads()} threads; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"median of {CALLS} single calls\n")
    print("### per-call time of a decode-sized bf16 problem (microseconds)\n")
    print_table(["op", "gk.<op>", "gt.<op>", "gt.<op> requires_grad", "torch eager",
                 "gk speed vs torch", "gt speed vs torch"], overhead_rows())
