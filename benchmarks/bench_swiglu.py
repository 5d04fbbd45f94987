"""SwiGLU and SiLU on the CPU at Qwen3-8B sizes (4096 tokens x intermediate
12288) against PyTorch eager (Hugging Face's act_fn(gate) * up): median time
(the two sides timed alternately), speedup, achieved GB/s and its share of the
measured copy bandwidth. Both sides allocate their outputs, except in the
out= rows: golden writes into a preallocated, already-touched output, against
torch.mul(..., out=) for swiglu (silu itself allocates), F.silu for silu
(which has no out=) and autograd for the backward (which allocates).
Run: PYTHONPATH=python python benchmarks/bench_swiglu.py"""

from __future__ import annotations

import torch
from common import header, median_seconds_pair, row

import golden_kernels as gk
from tests import reference

TOKENS, INTERMEDIATE = 4096, 12288


def main() -> None:
    header(f"swiglu / silu, [{TOKENS}, {INTERMEDIATE}]")
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        name = str(dtype).removeprefix("torch.")
        gate, up, g = (torch.randn(TOKENS, INTERMEDIATE, generator=gen).to(dtype) for _ in range(3))
        size = gate.numel() * gate.element_size()
        row(f"swiglu forward {name}",
            *median_seconds_pair(lambda: gk.swiglu(gate, up), lambda: reference.swiglu_hf_eager(gate, up)),
            3 * size)
        row(f"silu forward {name}",
            *median_seconds_pair(lambda: gk.silu(gate), lambda: torch.nn.functional.silu(gate)), 2 * size)
        out, torch_out = torch.empty_like(gate), torch.empty_like(gate)
        row(f"swiglu forward {name} out=",
            *median_seconds_pair(lambda: gk.swiglu(gate, up, out=out),
                                 lambda: torch.mul(torch.nn.functional.silu(gate), up, out=torch_out)), 3 * size)
        row(f"silu forward {name} out= (torch allocates)",
            *median_seconds_pair(lambda: gk.silu(gate, out=out), lambda: torch.nn.functional.silu(gate)), 2 * size)
        op = gk.get_op("swiglu")
        row(f"swiglu backward {name}",
            *median_seconds_pair(lambda: op.backward(g, gate, up), lambda: torch_swiglu_backward(g, gate, up),
                                 repeats=5), 5 * size)
        grads = torch.empty_like(gate), torch.empty_like(gate)
        row(f"swiglu backward {name} out= (torch allocates)",
            *median_seconds_pair(lambda: op.backward(g, gate, up, out=grads),
                                 lambda: torch_swiglu_backward(g, gate, up), repeats=5), 5 * size)


def torch_swiglu_backward(g, gate, up):
    gate, up = gate.detach().requires_grad_(), up.detach().requires_grad_()
    return torch.autograd.grad(reference.swiglu_hf_eager(gate, up), (gate, up), g)


if __name__ == "__main__":
    main()
