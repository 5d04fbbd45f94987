"""golden_kernels on a GPU against PyTorch eager at Qwen3-8B sizes: embedding, silu, swiglu,
rope, rms_norm forward and backward (eager as Hugging Face's Qwen3 writes them, backward by
autograd on a graph built outside the timing); attention prefill, decode, forward + backward
against SDPA. Medians of CUDA-event-timed calls queued behind a sleep kernel (so the events
time the GPU's work, not Python's launches), rotating among input sets that span several L2s.
GB/s: golden's minimum traffic (inputs read once, outputs written once) against a copy_.
Golden's first results must be finite and not all zero; a failing row says so and the run
goes on; rows predicted to overrun the time budget are skipped.

    PYTHONPATH=python:. python benchmarks/bench_gpu.py [--out gpu.md] [--time-budget 60]
    PYTHONPATH=python:. python benchmarks/bench_gpu.py --device cpu --quick   # the logic, without a GPU
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import os
import statistics
import time
import types

import torch
import torch.nn.functional as F
from common import print_table

import golden_kernels as gk
from tests import reference

FULL = types.SimpleNamespace(vocab=151936, hidden=4096, tokens=4096, intermediate=12288, norm_rows=8192,
                             lengths=(512, 2048, 8192), caches=(4096, 32768), train_length=2048, copy_bytes=2 << 30)
QUICK = types.SimpleNamespace(vocab=4096, hidden=256, tokens=256, intermediate=512, norm_rows=256,
                              lengths=(64, 256), caches=(256, 1024), train_length=256, copy_bytes=64 << 20)
HEADS, KV_HEADS, HEAD_DIM, THETA, EPS = 32, 8, 128, 1e6, 1e-6
DTYPES = (torch.bfloat16, torch.float32)
ROTATION_BYTES, MAX_SETS = 200 << 20, 16  # rotated input sets span this, so L2 (60 MB) holds none between uses
TARGET_S, MIN_REPEATS, MAX_REPEATS = 0.5, 3, 20  # repeats fill about TARGET_S per timed side
LONG_CALL_S = 2.0  # a first call this long is the only sample: start-up costs (ms) are noise in it
SLEEP_CYCLES = 20_000_000  # ~10 ms at H200 clocks: longer than queuing the repeats takes
HEADER = ["case", "golden ms", "out= ms", "torch ms", "torch/golden", "golden GB/s", "% of copy", "n", "note"]


def check_output(result) -> None:
    """Guards against timing a kernel that did nothing: finite inputs give finite outputs, not all zero."""
    for tensor in result if isinstance(result, (tuple, list)) else (result,):
        if not torch.isfinite(tensor).all():
            raise RuntimeError("golden output has non-finite values")
        if not tensor.count_nonzero():
            raise RuntimeError("golden output is all zeros")


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}" if seconds < 0.01 else f"{seconds * 1e3:.1f}"


def size_of(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def dtype_label(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]


class Bench:
    """Times golden against eager on one device, collects the rows and keeps the time budget."""

    def __init__(self, device: torch.device, time_budget_s: float):
        self.device, self.cuda = device, device.type == "cuda"
        self.deadline = time.perf_counter() + time_budget_s
        self.gen = torch.Generator(device).manual_seed(0)
        self.rows: list[list[str]] = []
        self.failed = self.skipped = 0
        self.copy_gbs = math.nan

    def randn(self, shape, dtype):
        return torch.randn(shape, generator=self.gen, device=self.device, dtype=dtype)

    def sets(self, make) -> list[tuple]:
        """Input sets from make(), enough that rotating among them spans ROTATION_BYTES."""
        first = make()
        return [first] + [make() for _ in range(min(MAX_SETS, math.ceil(ROTATION_BYTES / size_of(*first))) - 1)]

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def _mark(self):
        """Now: a CUDA event recorded on the stream, or the clock on the CPU."""
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _one_call(self, fn, inputs, check: bool) -> float:
        self._sync()
        start = time.perf_counter()
        result = fn(*inputs)
        self._sync()
        elapsed = time.perf_counter() - start
        if check:
            check_output(result)
        return elapsed

    def seconds(self, fn, sets, check: bool = False) -> tuple[float, int]:
        """(median seconds, samples) of fn over the rotating sets. The first call
        warms up (and is checked), the second sizes the repeats; a call of
        LONG_CALL_S, or a second of TARGET_S, is the only sample."""
        first_s = self._one_call(fn, sets[0], check)
        if first_s >= LONG_CALL_S:
            return first_s, 1
        estimate_s = self._one_call(fn, sets[-1], False)
        if estimate_s >= TARGET_S:
            return estimate_s, 1
        repeats = int(min(MAX_REPEATS, max(MIN_REPEATS, TARGET_S / estimate_s)))
        if self.cuda:
            torch.cuda._sleep(SLEEP_CYCLES)  # the GPU waits while the calls queue
        marks = []
        for _, inputs in zip(range(repeats), itertools.cycle(sets)):
            start = self._mark()
            fn(*inputs)
            marks.append((start, self._mark()))
        self._sync()
        elapsed = [start.elapsed_time(end) / 1e3 if self.cuda else end - start for start, end in marks]
        return statistics.median(elapsed), repeats

    def add(self, cells: list[str], line: str | None = None) -> None:
        self.rows.append(cells)
        print(line or " | ".join(cells), flush=True)

    def note_row(self, case: str, note: str) -> None:
        self.add([case] + ["-"] * 7 + [note], f"{case}: {note}")

    def fail(self, case: str, error: Exception) -> None:
        self.failed += 1
        self.note_row(case, f"FAILED {type(error).__name__}: {(str(error).splitlines() or [''])[0][:160]}")

    def compare(self, case, golden, eager, sets, nbytes=None, golden_out=None, eager_sets=None,
                predicted_s=0.0) -> float:
        """One row: golden (and its out= variant) against eager on the same sets (eager_sets: eager's
        own, e.g. autograd graphs); skipped when three golden calls of predicted_s would overrun
        the budget. Returns golden's seconds, nan when the row did not run."""
        left_s = self.deadline - time.perf_counter()
        if 3 * predicted_s > left_s:
            self.skipped += 1
            self.note_row(case, f"SKIPPED: golden call predicted {predicted_s:.1f} s, {left_s:.0f} s left")
            return math.nan
        try:
            golden_s, golden_n = self.seconds(golden, sets, check=True)
            out_s = self.seconds(golden_out, sets, check=True)[0] if golden_out else math.nan
            eager_s, eager_n = self.seconds(eager, eager_sets or sets)
        except Exception as error:  # one failing op must not end the run
            self.fail(case, error)
            return math.nan
        gbs = nbytes / golden_s / 1e9 if nbytes else math.nan
        of_copy = f"{100 * gbs / self.copy_gbs:.0f}%" if nbytes and self.copy_gbs > 0 else "-"  # no copy row: "-"
        self.add([case, ms(golden_s), ms(out_s) if golden_out else "-", ms(eager_s), f"{eager_s / golden_s:.2f}x",
                  f"{gbs:.0f}" if nbytes else "-", of_copy, f"{golden_n}/{eager_n}", ""])
        return golden_s


def copy_row(bench: Bench, sizes) -> None:
    """The memory roofline: read + write GB/s of a large device-to-device copy."""
    src = torch.empty(sizes.copy_bytes // 4, device=bench.device).uniform_()
    dst = torch.empty_like(src)
    seconds, samples = bench.seconds(lambda: dst.copy_(src), [()])
    bench.copy_gbs = 2 * sizes.copy_bytes / seconds / 1e9
    bench.add([f"copy_ {sizes.copy_bytes >> 20} MiB (roofline)", "-", "-", ms(seconds), "-",
               f"{bench.copy_gbs:.0f}", "100%", f"-/{samples}", ""])


def autograd_graphs(sets, forward, num_inputs: int) -> list[tuple]:
    """Per set (inputs..., grad, ...): eager's graph, built once so the timing is the backward alone."""
    graphs = []
    for inputs in sets:
        leaves = [t.detach().requires_grad_() for t in inputs[:num_inputs]]
        graphs.append((forward(*leaves), leaves, inputs[num_inputs]))
    return graphs


def eager_backward(output, leaves, grad):
    return torch.autograd.grad(output, leaves, grad, retain_graph=True)


def embedding_rows(bench: Bench, sizes) -> None:
    op = gk.get_op("embedding")
    weight = bench.randn((sizes.vocab, sizes.hidden), torch.bfloat16)
    dweight = torch.empty_like(weight)  # the backward's out=: table-sized, so one buffer for all sets

    def make():
        ids = torch.randint(0, sizes.vocab, (sizes.tokens,), generator=bench.gen, device=bench.device)
        return ids, bench.randn((sizes.tokens, sizes.hidden), weight.dtype), torch.empty_like(weight[:sizes.tokens])

    sets = bench.sets(make)
    ids, grad, out = sets[0]
    bench.compare("embedding fwd bf16", lambda ids, g, out: op.forward(ids, weight),
                  lambda ids, g, out: F.embedding(ids, weight), sets, size_of(ids) + 2 * size_of(out),
                  golden_out=lambda ids, g, out: op.forward(ids, weight, out=out))
    trainable = weight.detach().requires_grad_()
    graphs = [(F.embedding(ids, trainable), [trainable], g) for ids, g, _ in sets]
    bench.compare("embedding bwd bf16 (dweight)", lambda ids, g, out: op.backward(g, ids, weight),
                  eager_backward, sets, size_of(ids, grad, weight),
                  golden_out=lambda ids, g, out: op.backward(g, ids, weight, out=dweight), eager_sets=graphs)


def hf_rope_cos_sin(positions, dtype):
    """HF Qwen3RotaryEmbedding: fp32 inv_freq and angles, cos/sin rounded to dtype, [T, 1, D]."""
    inv_freq = 1.0 / (THETA ** (torch.arange(0, HEAD_DIM, 2, device=positions.device).float() / HEAD_DIM))
    freqs = positions.float()[:, None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def hf_rotate(x, cos, sin):
    """HF apply_rotary_pos_emb's rotate-half, in x's dtype."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def elementwise_rows(bench: Bench, sizes, dtype) -> None:
    dt, hf_rms_norm = dtype_label(dtype), functools.partial(reference.rms_norm_hf_qwen3, eps=EPS)
    silu, swiglu, rope, norm = (gk.get_op(op) for op in ("silu", "swiglu", "rope", "rms_norm"))
    shape = (sizes.tokens, sizes.intermediate)
    sets = bench.sets(lambda: tuple(bench.randn(shape, dtype) for _ in range(5)))  # gate (x), up, grad, out, out2
    size = size_of(sets[0][0])
    bench.compare(f"silu fwd {dt}", lambda x, *_: silu.forward(x), lambda x, *_: F.silu(x), sets, 2 * size,
                  golden_out=lambda x, u, g, out, _: silu.forward(x, out=out))
    bench.compare(f"silu bwd {dt}", lambda x, u, g, *_: silu.backward(g, x), eager_backward, sets, 3 * size,
                  golden_out=lambda x, u, g, out, _: silu.backward(g, x, out=out),
                  eager_sets=autograd_graphs([(x, g) for x, u, g, *_ in sets], F.silu, 1))
    bench.compare(f"swiglu fwd {dt}", lambda x, u, *_: swiglu.forward(x, u),
                  lambda x, u, *_: reference.swiglu_hf_eager(x, u), sets, 3 * size,
                  golden_out=lambda x, u, g, out, _: swiglu.forward(x, u, out=out))
    bench.compare(f"swiglu bwd {dt}", lambda x, u, g, *_: swiglu.backward(g, x, u), eager_backward, sets, 5 * size,
                  golden_out=lambda x, u, g, out, out2: swiglu.backward(g, x, u, out=(out, out2)),
                  eager_sets=autograd_graphs(sets, reference.swiglu_hf_eager, 2))
    del sets

    positions = torch.arange(sizes.tokens, device=bench.device)
    cos, sin = hf_rope_cos_sin(positions, dtype)  # HF computes them once per model forward, for all layers
    sets = bench.sets(lambda: tuple(bench.randn((sizes.tokens, HEADS, HEAD_DIM), dtype) for _ in range(3)))
    size = 2 * size_of(sets[0][0]) + size_of(positions)
    bench.compare(f"rope fwd {dt} (vs HF rotation)", lambda x, *_: rope.forward(x, positions, theta=THETA),
                  lambda x, *_: hf_rotate(x, cos, sin), sets, size,
                  golden_out=lambda x, g, out: rope.forward(x, positions, theta=THETA, out=out))
    bench.compare(f"rope bwd {dt}", lambda x, g, out: rope.backward(g, positions, theta=THETA), eager_backward,
                  sets, size, golden_out=lambda x, g, out: rope.backward(g, positions, theta=THETA, out=out),
                  eager_sets=autograd_graphs(sets, lambda x: hf_rotate(x, cos, sin), 1))
    del sets

    def make_norm():
        x, grad, out = (bench.randn((sizes.norm_rows, sizes.hidden), dtype) for _ in range(3))
        return x, bench.randn((sizes.hidden,), dtype), grad, out

    sets = bench.sets(make_norm)
    x, w = sets[0][:2]
    bench.compare(f"rms_norm fwd {dt}", lambda x, w, *_: norm.forward(x, w, EPS), lambda x, w, *_: hf_rms_norm(x, w),
                  sets, 2 * size_of(x) + size_of(w), golden_out=lambda x, w, g, out: norm.forward(x, w, EPS, out=out))
    bench.compare(f"rms_norm bwd {dt}", lambda x, w, g, _: norm.backward(g, x, w, EPS), eager_backward, sets,
                  3 * size_of(x) + 2 * size_of(w), eager_sets=autograd_graphs(sets, hf_rms_norm, 2))


def sdpa(q, k, v):
    # SDPA's causal mask is top-left aligned: a single decode query must see the whole cache.
    return F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] > 1, enable_gqa=True)


def sdpa_train(q, k, v, grad):
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    return torch.autograd.grad(sdpa(*leaves), leaves, grad)


def golden_train(q, k, v, grad):
    """Forward keeping the fp32 output and LSE, then the backward reading them (gt.attention, keep_fp32_output=True)."""
    op = gk.get_op("attention")
    out, lse = op.forward_fp32(q, k, v, return_lse=True)
    return op.backward(grad, q, k, v, saved_out=out, saved_lse=lse)


def forced_kernels(kernels: str):
    """gk.attention with GOLDEN_KERNELS_GPU_ATTENTION set to `kernels` for the call."""
    def attention(q, k, v):
        os.environ["GOLDEN_KERNELS_GPU_ATTENTION"] = kernels
        try:
            return gk.attention(q, k, v)
        finally:
            del os.environ["GOLDEN_KERNELS_GPU_ATTENTION"]
    return attention


def attention_rows(bench: Bench, sizes) -> None:
    def qkv(dtype, q_len, kv_len, grad=False, batch=1):
        q = bench.randn((batch, HEADS, q_len, HEAD_DIM), dtype)
        kv = tuple(bench.randn((batch, KV_HEADS, kv_len, HEAD_DIM), dtype) for _ in range(2))
        return (q, *kv, bench.randn(q.shape, dtype)) if grad else (q, *kv)

    def predicted_s(last, size, power):
        """Golden's time at the last size measured, (size, seconds), scaled to this size."""
        return last[1] * (size / last[0]) ** power

    for dtype in DTYPES:
        last = (1, 0.0)
        for cache in sizes.caches:
            sets = bench.sets(lambda: qkv(dtype, 1, cache))
            t = bench.compare(f"decode {dtype_label(dtype)} cache {cache}", gk.attention, sdpa, sets,
                              size_of(*sets[0][1:]), predicted_s=predicted_s(last, cache, 1))
            # The same step on the query-tile kernels (csrc/cuda/attention.cu), which a decode used before.
            bench.compare(f"decode {dtype_label(dtype)} cache {cache} (tile kernels)", forced_kernels("tiles"), sdpa,
                          sets, size_of(*sets[0][1:]), predicted_s=predicted_s(last, cache, 1))
            last = (cache, t) if math.isfinite(t) else last
        # A sampler's batch: 16 sequences' steps in one call.
        cache = sizes.caches[0]
        sets = bench.sets(lambda: qkv(dtype, 1, cache, batch=16))
        bench.compare(f"decode {dtype_label(dtype)} batch 16 cache {cache}", gk.attention, sdpa, sets,
                      size_of(*sets[0][1:]), predicted_s=16 * predicted_s(last, cache, 1))
    last = {dtype: (1, 0.0) for dtype in DTYPES}
    for length in sizes.lengths:
        for dtype in DTYPES:
            label = f"{dtype_label(dtype)} S {length}"
            sets = bench.sets(lambda: qkv(dtype, length, length))
            t = bench.compare(f"prefill {label}", gk.attention, sdpa, sets,
                              predicted_s=predicted_s(last[dtype], length, 2))
            last[dtype] = (length, t) if math.isfinite(t) else last[dtype]
            if length == sizes.train_length and dtype is torch.bfloat16:
                sets = bench.sets(lambda: qkv(dtype, length, length, grad=True))
                # The forward's two score-sized passes and the backward's five (docs/ops/attention.md), and a margin.
                bench.compare(f"fwd+bwd {label} (saved out, lse)", golden_train, sdpa_train, sets,
                              predicted_s=6 * predicted_s(last[dtype], length, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the script's logic")
    parser.add_argument("--out", help="also write the table as markdown to this file")
    parser.add_argument("--time-budget", type=float, default=60.0, help="seconds; rows predicted past it are skipped")
    parser.add_argument("--sections", default="copy,embedding,elementwise,attention",
                        help="comma-separated subset of copy, embedding, elementwise, attention")
    args = parser.parse_args()
    wanted = set(args.sections.split(","))
    sizes = QUICK if args.quick else FULL
    bench = Bench(torch.device(args.device), args.time_budget)
    device_name = (torch.cuda.get_device_name(bench.device) if bench.cuda
                   else f"cpu ({gk.cpu_isa()}, {gk.num_threads()} golden threads)")
    lines = [f"torch {torch.__version__} (CUDA {torch.version.cuda}), device {device_name}, "
             f"golden_kernels {gk.__version__}, backends {gk.available_backends()}",
             "n = golden/torch timed samples; torch/golden > 1: golden faster; GB/s: golden's minimum traffic"]
    print(*lines, sep="\n", flush=True)
    sections = [functools.partial(copy_row, bench, sizes)] if "copy" in wanted else []
    sections += [functools.partial(embedding_rows, bench, sizes)] if "embedding" in wanted else []
    if "elementwise" in wanted:
        sections += [functools.partial(elementwise_rows, bench, sizes, dtype) for dtype in DTYPES]
    sections += [functools.partial(attention_rows, bench, sizes)] if "attention" in wanted else []
    for section in sections:
        try:
            section()
        except Exception as error:  # e.g. making its inputs failed: the other sections still run
            bench.fail(section.func.__name__, error)
    title = f"## golden_kernels vs PyTorch eager on {device_name}"
    footer = [f"SKIPPED ROWS: {bench.skipped}", f"FAILED ROWS: {bench.failed}"]
    print("", title, *lines, sep="\n")
    print_table(HEADER, bench.rows)
    print(*footer, sep="\n", flush=True)
    if args.out:
        table = [f"| {' | '.join(cells)} |" for cells in [HEADER, ["---"] * len(HEADER), *bench.rows]]
        with open(args.out, "w") as file:
            file.write("\n".join([title, "", *lines, "", *table, "", *footer]) + "\n")


if __name__ == "__main__":
    main()
