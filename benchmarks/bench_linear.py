"""Benchmark: golden_kernels linear / lm_head against torch.nn.functional.linear.

Same process, same threads, calls interleaved and timed one by one, medians
reported, so the ratio holds on a shared machine even when absolute numbers
move. Also: the machine's peak fp32 FMA rate (a tiny C loop built here), the
weight bandwidth of the decode-sized calls, the accuracy of both against
float64 (tests/reference.py) and PyTorch's own batch variance.

    PYTHONPATH=python python benchmarks/bench_linear.py [--threads 2] [--quick | --decode | --backward]

Decode-sized calls (M <= 16) are also timed with out= (a reused output), as a
decode loop would call them. --backward times the trainer's gradients instead at
the small Qwen3's shapes (512 tokens): dx = grad @ W and dweight = grad^T @ x,
each alone (the binding computes only the gradients given an output), against
torch's matmuls for the same contractions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import golden_kernels as gk  # noqa: E402
from tests import reference  # noqa: E402

PEAK_SOURCE = r"""
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
/* 12 independent fma chains per thread: enough to fill two FMA pipes. */
#define N_ITER 20000000L
static void* run(void* out) {
  VEC a0 = SET1(1.0f), a1 = SET1(1.1f), a2 = SET1(1.2f), a3 = SET1(1.3f), a4 = SET1(1.4f), a5 = SET1(1.5f);
  VEC a6 = SET1(1.6f), a7 = SET1(1.7f), a8 = SET1(1.8f), a9 = SET1(1.9f), a10 = SET1(2.0f), a11 = SET1(2.1f);
  const VEC b = SET1(0.999999f), c = SET1(1e-7f);
  for (long i = 0; i < N_ITER; ++i) {
    a0 = FMA(a0, b, c); a1 = FMA(a1, b, c); a2 = FMA(a2, b, c); a3 = FMA(a3, b, c);
    a4 = FMA(a4, b, c); a5 = FMA(a5, b, c); a6 = FMA(a6, b, c); a7 = FMA(a7, b, c);
    a8 = FMA(a8, b, c); a9 = FMA(a9, b, c); a10 = FMA(a10, b, c); a11 = FMA(a11, b, c);
  }
  VEC s = ADD(ADD(ADD(a0, a1), ADD(a2, a3)), ADD(ADD(a4, a5), ADD(a6, a7)));
  s = ADD(s, ADD(ADD(a8, a9), ADD(a10, a11)));
  *(float*)out = FIRST(s);
  return NULL;
}
int main(int argc, char** argv) {
  int threads = atoi(argv[1]);
  pthread_t t[64]; float sink[64];
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < threads; ++i) pthread_create(&t[i], NULL, run, &sink[i]);
  for (int i = 0; i < threads; ++i) pthread_join(t[i], NULL);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double seconds = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
  printf("%f %f\n", threads * N_ITER * 12.0 * LANES * 2.0 / seconds / 1e9, sink[0]);
  return 0;
}
"""

ISA_MACROS = {
    "avx512": ("-mavx512f", "#define VEC __m512\n#define LANES 16\n#define SET1 _mm512_set1_ps\n#define FMA _mm512_fmadd_ps\n"
               "#define ADD _mm512_add_ps\n#define FIRST(v) _mm512_cvtss_f32(v)\n"),
    "avx2": ("-mavx2 -mfma", "#define VEC __m256\n#define LANES 8\n#define SET1 _mm256_set1_ps\n#define FMA _mm256_fmadd_ps\n"
             "#define ADD _mm256_add_ps\n#define FIRST(v) _mm256_cvtss_f32(v)\n"),
}


def peak_fma_gflops(threads: int) -> float | None:
    """Best of three runs of the FMA loop on `threads` threads (None without a C compiler)."""
    isa = gk.cpu_isa()
    if isa not in ISA_MACROS:
        return None
    flags, macros = ISA_MACROS[isa]
    with tempfile.TemporaryDirectory() as tmp:
        source, binary = os.path.join(tmp, "peak.c"), os.path.join(tmp, "peak")
        with open(source, "w") as f:
            f.write(macros + PEAK_SOURCE)
        try:
            subprocess.run(f"cc -O2 {flags} -pthread {source} -o {binary}".split(), check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError):
            return None
        runs = [float(subprocess.run([binary, str(threads)], capture_output=True, text=True, check=True).stdout.split()[0])
                for _ in range(3)]
    return max(runs)


def interleaved_medians(calls: dict, repeats: int) -> dict:
    """Median seconds per call, each call timed alone, the calls interleaved."""
    for fn in calls.values():
        fn()
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def batch_variance(fn, x, w) -> float:
    """Max |row 0 alone - row 0 inside the batch| of fn."""
    return float((fn(x[:1], w)[0].double() - fn(x, w)[0].double()).abs().max())


def torch_linear(x, w):
    return torch.nn.functional.linear(x, w)


def bench_case(label, rows, out_features, in_features, dtype, repeats, peak, gen):
    x = torch.randn(rows, in_features, generator=gen).to(dtype)
    w = (torch.randn(out_features, in_features, generator=gen) * in_features**-0.5).to(dtype)
    ours = gk.get_op("linear", "cpu")
    calls = {"ours": lambda: ours.forward(x, w), "torch": lambda: torch_linear(x, w)}
    if rows <= 16:
        out = torch.empty(rows, out_features, dtype=dtype)
        calls["ours_out"] = lambda: ours.forward(x, w, out=out)
    t = interleaved_medians(calls, repeats)
    flops = 2.0 * rows * out_features * in_features
    row = {
        "case": label, "M": rows, "N": out_features, "K": in_features, "dtype": str(dtype).removeprefix("torch."),
        "ours_ms": t["ours"] * 1e3, "torch_ms": t["torch"] * 1e3,
        "ours_gflops": flops / t["ours"] / 1e9, "torch_gflops": flops / t["torch"] / 1e9,
        "ratio": t["torch"] / t["ours"],
        "ours_out_ms": t["ours_out"] * 1e3 if "ours_out" in t else None,
        "out_ratio": t["torch"] / t["ours_out"] if "ours_out" in t else None,
        "weight_gbps": w.numel() * w.element_size() / t["ours"] / 1e9 if rows <= 16 else None,
        "torch_weight_gbps": w.numel() * w.element_size() / t["torch"] / 1e9 if rows <= 16 else None,
        "peak_fraction": flops / t["ours"] / 1e9 / peak if peak else None,
    }
    if rows > 1:
        row["torch_batch_variance"] = batch_variance(torch_linear, x, w)
        row["ours_batch_variance"] = batch_variance(lambda a, b: ours.forward(a, b), x, w)
    return row


# (in_features, out_features) of the small Qwen3 preset's linears and lm_head (512 tokens).
BACKWARD_SHAPES = [(512, 512), (512, 128), (512, 1024), (512, 256), (512, 1536), (1536, 512), (1024, 512),
                   (512, 8192)]


def golden_gradients(grad, x, w, dx, dweight):
    """Only the gradients given an output (None skips one), straight through the binding."""
    from golden_kernels import _C, _arrays

    capsule = lambda a: None if a is None else _arrays.capsule(a)  # noqa: E731
    _C.linear_backward("cpu", 0, capsule(grad), capsule(x), capsule(w), capsule(dx), capsule(dweight), None)


def bench_backward(rows, repeats, gen, dtype=torch.float32):
    print("| K (in) | N (out) | dx ours ms | dx torch ms | dx ratio | dweight ours ms | dweight torch ms "
          "| dweight ratio | both (op) ms | both torch ms | both ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k, n in BACKWARD_SHAPES:
        x = torch.randn(rows, k, generator=gen).to(dtype)
        w = (torch.randn(n, k, generator=gen) * k**-0.5).to(dtype)
        grad = torch.randn(rows, n, generator=gen).to(dtype)
        dx, dweight = torch.empty_like(x), torch.empty_like(w)
        calls = {
            "dx": lambda: golden_gradients(grad, x, w, dx, None),
            "dx_torch": lambda: torch.mm(grad, w),
            "dw": lambda: golden_gradients(grad, x, w, None, dweight),
            "dw_torch": lambda: torch.mm(grad.t(), x),
            "both": lambda: gk.get_op("linear", "cpu").backward(grad, x, w),
            "both_torch": lambda: (torch.mm(grad, w), torch.mm(grad.t(), x)),
        }
        t = interleaved_medians(calls, repeats)
        ms = {name: v * 1e3 for name, v in t.items()}
        print(f"| {k} | {n} | {ms['dx']:.3f} | {ms['dx_torch']:.3f} | {t['dx_torch'] / t['dx']:.2f} "
              f"| {ms['dw']:.3f} | {ms['dw_torch']:.3f} | {t['dw_torch'] / t['dw']:.2f} "
              f"| {ms['both']:.3f} | {ms['both_torch']:.3f} | {t['both_torch'] / t['both']:.2f} |", flush=True)


def accuracy(gen, dtype=torch.float32):
    """Max |error| vs float64 of ours and PyTorch on a 16 x 4096 x 4096 problem."""
    x = torch.randn(16, 4096, generator=gen).to(dtype)
    w = (torch.randn(4096, 4096, generator=gen) / 64).to(dtype)
    ref = reference.linear(x, w)
    return (float((gk.linear(x, w).double() - ref).abs().max()), float((torch_linear(x, w).double() - ref).abs().max()))


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--quick", action="store_true", help="skip the lm_head case")
    parser.add_argument("--decode", action="store_true", help="only the M = 1 cases")
    parser.add_argument("--backward", action="store_true", help="dx and dweight at the small Qwen3's shapes")
    args = parser.parse_args()
    gk.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)

    peak = peak_fma_gflops(args.threads)
    print(f"# linear: {args.threads} threads, isa {gk.cpu_isa()}, torch {torch.__version__}, "
          f"peak fp32 FMA {fmt(peak, '.1f')} GFLOP/s (measured, {args.threads} threads)\n")
    if args.backward:
        return bench_backward(512, args.repeats * 2, gen)
    cases = [("linear", m, 4096, 4096, torch.float32) for m in (1, 16, 256, 2048)]
    cases += [("linear", m, 4096, 4096, torch.bfloat16) for m in (1, 16, 256)]
    if args.decode:
        cases = [c for c in cases if c[1] == 1]
    elif not args.quick:
        cases.append(("lm_head", 16, 151936, 4096, torch.bfloat16))
    print("| case | dtype | M | N | K | ours ms | torch ms | ours GFLOP/s | torch GFLOP/s | ratio (torch/ours time) "
          "| ours out= ms | ratio with out= | of peak | weight GB/s ours / torch | torch batch variance | ours |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, m, n, k, dtype in cases:
        # Short calls get more repeats: their medians move most with the machine's load.
        flops = 2.0 * m * n * k
        repeats = max(3, args.repeats // 3) if flops > 3e10 else args.repeats * 4 if flops < 1e9 else args.repeats
        r = bench_case(label, m, n, k, dtype, repeats, peak, gen)
        gbps = "-" if r["weight_gbps"] is None else f"{r['weight_gbps']:.1f} / {r['torch_weight_gbps']:.1f}"
        print(f"| {r['case']} | {r['dtype']} | {m} | {n} | {k} | {r['ours_ms']:.2f} | {r['torch_ms']:.2f} "
              f"| {r['ours_gflops']:.1f} | {r['torch_gflops']:.1f} | {r['ratio']:.2f} | {fmt(r['ours_out_ms'], '.2f')} "
              f"| {fmt(r['out_ratio'], '.2f')} | {fmt(r['peak_fraction'], '.0%')} "
              f"| {gbps} | {fmt(r.get('torch_batch_variance'), '.2e')} | {fmt(r.get('ours_batch_variance'), '.0e')} |",
              flush=True)
    if args.decode:
        return
    ours_err, torch_err = accuracy(gen)
    print(f"\nfp32 16x4096x4096 max |error| vs float64: ours {ours_err:.2e}, torch {torch_err:.2e}")


if __name__ == "__main__":
    main()
