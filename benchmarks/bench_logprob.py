"""Benchmark of log_softmax / token_logprob / entropy against PyTorch eager on
the CPU, same inputs, same run: median of repeats, ratio, GB/s of logits read.
Also reports each result's max error against the float64 reference of
tests/reference.py. With --fused: linear_logprob vs the unfused golden path
and PyTorch's log_softmax(hidden @ W.T).gather, each variant in its own
subprocess so its peak extra memory (RSS high-water mark, which also sees
torch's allocations) is its own. With --fused --backward: forward + backward
(gradients to hidden and weight) against the same chains under autograd.
Without --fused the backwards are timed too, against torch's autograd
backward of its forward chains (graphs kept, so only the backward is timed).
Usage: PYTHONPATH=python python benchmarks/bench_logprob.py [--rows 1024]
[--vocab 151936] [--dtype bfloat16] [--repeats 3]
[--fused [--backward] --tokens 256 --hidden 4096]"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import golden_kernels as gk  # noqa: E402
from common import median_seconds  # noqa: E402
from tests import reference  # noqa: E402


def max_error(result: torch.Tensor, ref: torch.Tensor) -> float:
    return float((result.double() - ref).abs().max())


def torch_chain(h, w, ids):
    return torch.log_softmax((h @ w.T).float(), -1).gather(-1, ids[:, None]).squeeze(-1)


FUSED_VARIANTS = {
    "golden linear_logprob": lambda h, w, ids: gk.linear_logprob(h, w, ids),
    "golden lm_head fp32 + token_logprob": lambda h, w, ids: gk.token_logprob(
        gk.get_op("lm_head").forward_fp32(h, w), ids),
    "torch log_softmax((h @ W.T).float()).gather": torch_chain,
    "torch, fp32 upcast (h.float() @ W.float().T)": lambda h, w, ids: torch_chain(h.float(), w.float(), ids),
}


def golden_fused_step(h, w, ids):
    """Forward, then both gradients of sum(g * logprob) with g = 1."""
    logprob = gk.linear_logprob(h, w, ids)
    grads = gk.get_op("linear_logprob").backward(torch.ones_like(logprob), h, w, ids)
    return logprob, grads


def golden_unfused_step(h, w, ids):
    """lm_head fp32 logits held whole; token_logprob backward rounded to bf16 for lm_head backward."""
    logits = gk.get_op("lm_head").forward_fp32(h, w)
    logprob = gk.token_logprob(logits, ids)
    d = gk.get_op("token_logprob").backward(torch.ones_like(logprob), logits, ids)
    del logits
    return logprob, gk.get_op("lm_head").backward(d.to(h.dtype), h, w)


def torch_step(h, w, ids, upcast=False):
    h = (h.float() if upcast else h).requires_grad_()
    w = (w.float() if upcast else w).requires_grad_()
    logprob = torch_chain(h, w, ids)
    logprob.backward(torch.ones_like(logprob))
    return logprob.detach(), (h.grad, w.grad)


BACKWARD_VARIANTS = {
    "golden linear_logprob fwd+bwd": lambda h, w, ids: golden_fused_step(h, w, ids)[0],
    "golden lm_head + token_logprob fwd+bwd": lambda h, w, ids: golden_unfused_step(h, w, ids)[0],
    "torch autograd fwd+bwd (bf16 matmuls)": lambda h, w, ids: torch_step(h, w, ids)[0],
    "torch autograd fwd+bwd (fp32 upcast)": lambda h, w, ids: torch_step(h, w, ids, upcast=True)[0],
}


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fused_problem(tokens: int, hidden: int, vocab: int):
    """bf16 hidden and weight, filled 256 rows at a time so that creating them
    raises the high-water mark at most ~4 MiB above the resident inputs."""
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(tokens, hidden, generator=gen).to(torch.bfloat16)
    w = torch.empty(vocab, hidden, dtype=torch.bfloat16)
    for start in range(0, vocab, 256):
        rows = min(256, vocab - start)
        w[start:start + rows] = (torch.randn(rows, hidden, generator=gen) / hidden**0.5 * 4).to(torch.bfloat16)
    ids = torch.randint(0, vocab, (tokens,), generator=gen)
    return h, w, ids


def run_fused_variant(name: str, args) -> None:
    """One variant in this process: prints JSON (seconds, peak extra bytes, result)."""
    h, w, ids = fused_problem(args.tokens, args.hidden, args.vocab)
    before = current_rss_bytes()  # the high-water mark afterwards, minus what is resident now
    start = time.perf_counter()
    out = {**FUSED_VARIANTS, **BACKWARD_VARIANTS}[name](h, w, ids)
    seconds = time.perf_counter() - start
    extra = peak_rss_bytes() - before
    print(json.dumps({"seconds": seconds, "peak_extra_bytes": extra, "logprob": out[:8].tolist()}))


def fused_comparison(args) -> None:
    print(f"tokens {args.tokens}, hidden {args.hidden}, vocab {args.vocab}, bf16 weight "
          f"({args.vocab * args.hidden * 2 / 2**30:.2f} GiB); one subprocess per variant")
    print(f"{'variant':46s} {'seconds':>8s} {'peak extra MiB':>15s} {'time ratio':>10s} {'memory ratio':>12s}")
    results = {}
    variants = BACKWARD_VARIANTS if args.backward else FUSED_VARIANTS
    fused, unfused = list(variants)[:2]
    for name in variants:  # each row printed as soon as it is measured (long runs)
        command = [sys.executable, __file__, "--fused-variant", name, "--tokens", str(args.tokens),
                   "--hidden", str(args.hidden), "--vocab", str(args.vocab)]
        output = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ).stdout
        r = results[name] = json.loads(output.strip().splitlines()[-1])
        base = results[fused]
        print(f"{name:46s} {r['seconds']:8.2f} {r['peak_extra_bytes'] / 2**20:15.1f} "
              f"{r['seconds'] / base['seconds']:10.2f} {r['peak_extra_bytes'] / max(base['peak_extra_bytes'], 1):12.1f}",
              flush=True)
    golden = torch.tensor(results[fused]["logprob"])
    other = torch.tensor(results[unfused]["logprob"])
    print("fused == unfused golden logprob (first 8 rows, bitwise):",
          bool(torch.equal(golden.view(torch.int32), other.view(torch.int32))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fused", action="store_true")
    parser.add_argument("--backward", action="store_true")
    parser.add_argument("--fused-variant")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=4096)
    args = parser.parse_args()
    if args.fused_variant:
        return run_fused_variant(args.fused_variant, args)
    if args.fused:
        return fused_comparison(args)

    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(args.rows, args.vocab, generator=gen) * 3).to(dtype)
    ids = torch.randint(0, args.vocab, (args.rows,), generator=gen)
    g_rows = torch.randn(args.rows, generator=gen)
    g_full = torch.randn(args.rows, args.vocab, generator=gen).to(dtype)
    gbytes = logits.numel() * logits.element_size() / 1e9
    check_rows = slice(0, 16)  # float64 references on a few rows only (memory)
    ref_tok = reference.token_logprob(logits[check_rows], ids[check_rows])
    ref_lsm = reference.log_softmax(logits[check_rows])
    ref_h = reference.entropy(logits[check_rows])
    ref_dlsm = reference.log_softmax_backward(g_full[check_rows], logits[check_rows])
    ref_dtok = reference.token_logprob_backward(g_rows[check_rows], logits[check_rows], ids[check_rows])
    ref_dh = reference.entropy_backward(g_rows[check_rows], logits[check_rows])
    # torch's backwards: autograd through its forward chains, each graph built
    # once and kept, so only the backward is timed.
    x = logits.detach().requires_grad_(True)
    torch_lsm = torch.log_softmax(x, -1)
    torch_tok = torch.log_softmax(x.float(), -1).gather(-1, ids[:, None]).squeeze(-1)
    torch_h = -(torch.softmax(x.float(), -1) * torch.log_softmax(x.float(), -1)).sum(-1)

    def torch_grad(output, grad):
        return lambda: torch.autograd.grad(output, x, grad, retain_graph=True)[0]

    ops = {name: gk.get_op(name) for name in ("log_softmax", "token_logprob", "entropy")}
    cases = [
        (f"log_softmax ({args.dtype} out)", lambda: gk.log_softmax(logits), lambda: torch.log_softmax(logits, -1),
         lambda r: max_error(r[check_rows], ref_lsm)),
        ("token_logprob (fp32 out)", lambda: gk.token_logprob(logits, ids),
         lambda: torch.log_softmax(logits.float(), -1).gather(-1, ids[:, None]).squeeze(-1),
         lambda r: max_error(r[check_rows], ref_tok)),
        ("entropy (fp32 out)", lambda: gk.entropy(logits),
         lambda: -(torch.softmax(logits.float(), -1) * torch.log_softmax(logits.float(), -1)).sum(-1),
         lambda r: max_error(r[check_rows], ref_h)),
        ("log_softmax backward", lambda: ops["log_softmax"].backward(g_full, logits),
         torch_grad(torch_lsm, g_full), lambda r: max_error(r[check_rows], ref_dlsm)),
        ("token_logprob backward", lambda: ops["token_logprob"].backward(g_rows, logits, ids),
         torch_grad(torch_tok, g_rows), lambda r: max_error(r[check_rows], ref_dtok)),
        ("entropy backward", lambda: ops["entropy"].backward(g_rows, logits),
         torch_grad(torch_h, g_rows), lambda r: max_error(r[check_rows], ref_dh)),
    ]
    print(f"logits [{args.rows}, {args.vocab}] {args.dtype}, {gk.num_threads()} golden threads, "
          f"{torch.get_num_threads()} torch threads, cpu isa {gk.cpu_isa()}; backwards: torch autograd "
          f"from a kept graph (its forward not timed), gradients in {args.dtype}")
    print(f"{'op':26s} {'golden s':>9s} {'torch s':>9s} {'ratio':>6s} {'golden GB/s':>11s} "
          f"{'golden err':>10s} {'torch err':>10s}")
    for name, ours, theirs, error in cases:
        t_ours, t_theirs = median_seconds(ours, args.repeats), median_seconds(theirs, args.repeats)
        print(f"{name:26s} {t_ours:9.3f} {t_theirs:9.3f} {t_ours / t_theirs:6.2f} {gbytes / t_ours:11.2f} "
              f"{error(ours()):10.2e} {error(theirs()):10.2e}")


if __name__ == "__main__":
    main()
