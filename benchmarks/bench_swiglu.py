"""SwiGLU and SiLU on the CPU at Qwen3-8B sizes (4096 tokens x intermediate
12288) against PyTorch eager (Hugging Face's act_fn(gate) * up), median time,
speedup and achieved GB/s. Run: PYTHONPATH=python python benchmarks/bench_swiglu.py"""

from __future__ import annotations

import torch
from common import header, median_seconds, row

import golden_kernels as gk
from tests import reference

TOKENS, INTERMEDIATE = 4096, 12288


def main() -> None:
    header(f"swiglu / silu, [{TOKENS}, {INTERMEDIATE}]")
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.bfloat16, torch.float32):
        name = str(dtype).removeprefix("torch.")
        gate, up, g = (torch.randn(TOKENS, INTERMEDIATE, generator=gen).to(dtype) for _ in range(3))
        size = gate.numel() * gate.element_size()
        row(f"swiglu forward {name}", median_seconds(lambda: gk.swiglu(gate, up)),
            median_seconds(lambda: reference.swiglu_hf_eager(gate, up)), 3 * size)
        row(f"silu forward {name}", median_seconds(lambda: gk.silu(gate)),
            median_seconds(lambda: torch.nn.functional.silu(gate)), 2 * size)
        op = gk.get_op("swiglu")
        row(f"swiglu backward {name}", median_seconds(lambda: op.backward(g, gate, up), repeats=3),
            median_seconds(lambda: torch_swiglu_backward(g, gate, up), repeats=3), 5 * size)


def torch_swiglu_backward(g, gate, up):
    gate, up = gate.detach().requires_grad_(), up.detach().requires_grad_()
    return torch.autograd.grad(reference.swiglu_hf_eager(gate, up), (gate, up), g)


if __name__ == "__main__":
    main()
