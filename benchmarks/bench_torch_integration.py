"""golden_kernels.torch overhead and a training step: (1) the cost of going
through the torch.library custom op (golden_kernels.torch.rms_norm) against
calling the op directly (golden_kernels.rms_norm) and torch's own rms_norm;
(2) forward+backward of an RMSNorm + SwiGLU MLP block built from the golden
modules against the same block in torch.nn, same weights, same run."""

from __future__ import annotations

import torch
from common import median_seconds, print_table

import golden_kernels as gk
import golden_kernels.torch as gt


def dispatch_rows():
    rows = []
    for tokens, hidden in ((1, 1024), (64, 4096)):
        x = torch.randn(tokens, hidden).bfloat16()
        w = torch.randn(hidden).bfloat16()
        direct = median_seconds(lambda: gk.rms_norm(x, w, 1e-6), repeats=50)
        custom = median_seconds(lambda: gt.rms_norm(x, w, 1e-6), repeats=50)
        eager = median_seconds(lambda: torch.nn.functional.rms_norm(x, (hidden,), w, 1e-6), repeats=50)
        rows.append([f"rms_norm bf16 [{tokens}, {hidden}]", f"{direct * 1e6:.1f}", f"{custom * 1e6:.1f}",
                     f"{(custom - direct) * 1e6:+.1f}", f"{eager * 1e6:.1f}"])
    return rows


class TorchBlock(torch.nn.Module):
    def __init__(self, hidden, intermediate):
        super().__init__()
        self.norm = torch.nn.RMSNorm(hidden, eps=1e-6)
        self.gate_proj = torch.nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = torch.nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = torch.nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x):
        h = self.norm(x)
        return x + self.down_proj(torch.nn.functional.silu(self.gate_proj(h)) * self.up_proj(h))


def golden_block(torch_block, hidden, intermediate):
    block = TorchBlock(hidden, intermediate)
    block.load_state_dict(torch_block.state_dict())
    return gt.swap_modules(block)


def training_step(block, x):
    def step():
        block.zero_grad(set_to_none=True)
        leaf = x.detach().requires_grad_()
        block(leaf).square().mean().backward()
    return median_seconds(step, repeats=10)


def block_rows():
    rows = []
    for tokens, hidden, intermediate in ((64, 1024, 3072), (256, 1024, 3072)):
        reference = TorchBlock(hidden, intermediate)
        golden = golden_block(reference, hidden, intermediate)
        x = torch.randn(tokens, hidden)
        g, t = training_step(golden, x), training_step(reference, x)
        rows.append([f"fp32 tokens {tokens}, hidden {hidden}, intermediate {intermediate}",
                     f"{g * 1e3:.2f}", f"{t * 1e3:.2f}", f"{t / g:.2f}x"])
    return rows


if __name__ == "__main__":
    print(f"golden_kernels cpu isa {gk.cpu_isa()}, {gk.num_threads()} threads; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("### custom-op dispatch (median microseconds per call)\n")
    print_table(["case", "gk.rms_norm", "gt.rms_norm (custom op)", "overhead", "torch F.rms_norm"], dispatch_rows())
    print("\n### RMSNorm + SwiGLU MLP block, forward + backward (median ms)\n")
    print_table(["case", "golden", "torch eager", "speed vs torch"], block_rows())
