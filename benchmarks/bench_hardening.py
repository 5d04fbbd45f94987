"""What the hardening changes cost: the canonical-NaN select in the rms_norm
and linear output loops, and the MXCSR save/restore around every launch
(seen best on a tiny call, where fixed per-call work dominates). Medians, and
ratios against PyTorch measured in the same run.
  PYTHONPATH=python python benchmarks/bench_hardening.py"""

from __future__ import annotations

import torch
from common import median_seconds, print_table

import golden_kernels as gk


def cases(gen: torch.Generator) -> list[tuple[str, object, object]]:
    x = torch.randn(4096, 4096, generator=gen).to(torch.bfloat16)
    w = torch.randn(4096, generator=gen).to(torch.bfloat16)
    a = torch.randn(256, 4096, generator=gen).to(torch.bfloat16)
    weight = torch.randn(4096, 4096, generator=gen).to(torch.bfloat16)
    tiny = torch.randn(8, generator=gen)

    def torch_rms_norm():
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6) * w.float()).to(torch.bfloat16)

    return [
        ("rms_norm bf16 4096x4096", lambda: gk.rms_norm(x, w), torch_rms_norm),
        ("linear bf16 256x4096x4096", lambda: gk.linear(a, weight), lambda: torch.nn.functional.linear(a, weight)),
        ("silu fp32 8 elements (per-call cost)", lambda: gk.silu(tiny), lambda: torch.nn.functional.silu(tiny)),
    ]


def main() -> None:
    rows = []
    for name, ours, theirs in cases(torch.Generator().manual_seed(0)):
        repeats = 200 if "8 elements" in name else 15
        t_ours, t_torch = median_seconds(ours, repeats), median_seconds(theirs, repeats)
        rows.append([name, f"{t_ours * 1e6:.1f}", f"{t_torch * 1e6:.1f}", f"{t_ours / t_torch:.2f}"])
    print(f"threads {gk.num_threads()}, isa {gk.cpu_isa()}")
    print_table(["case", "golden us (median)", "torch us (median)", "golden / torch"], rows)


if __name__ == "__main__":
    main()
