"""RoPE on the CPU at Qwen3-8B sizes (4096 tokens, 32 heads x 128, theta 1e6)
against Hugging Face's rotary code in PyTorch eager: with its cos/sin (which
HF computes once per model forward and reuses in every layer) and the
rotation alone; the out= rows write into a preallocated, already-touched
output (HF's rotation, which has no out=, allocates). Run: PYTHONPATH=python python benchmarks/bench_rope.py"""

from __future__ import annotations

import torch
from common import header, median_seconds, median_seconds_pair, row

import golden_kernels as gk
from tests import reference

TOKENS, HEADS, HEAD_DIM, THETA = 4096, 32, 128, 1_000_000.0


def hf_rotation_only(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def main() -> None:
    header(f"rope, [1, {TOKENS}, {HEADS}, {HEAD_DIM}]")
    gen = torch.Generator().manual_seed(0)
    positions = torch.arange(TOKENS)[None]
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        name = str(dtype).removeprefix("torch.")
        x = torch.randn(1, TOKENS, HEADS, HEAD_DIM, generator=gen).to(dtype)
        size = 2 * x.numel() * x.element_size()
        golden = median_seconds(lambda: gk.rope(x, positions))
        row(f"forward {name} vs HF (cos/sin + rotation)", golden,
            median_seconds(lambda: reference.rope_hf_eager(x, positions, THETA)), size)
        inv_freq = 1.0 / (THETA ** (torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM))
        emb = torch.cat([positions[..., None].float() * inv_freq] * 2, -1)
        cos, sin = emb.cos().to(dtype)[:, :, None], emb.sin().to(dtype)[:, :, None]
        row(f"forward {name} vs HF rotation only", golden, median_seconds(lambda: hf_rotation_only(x, cos, sin)), size)
        out = torch.empty_like(x)
        row(f"forward {name} out= vs HF rotation only",
            *median_seconds_pair(lambda: gk.rope(x, positions, out=out), lambda: hf_rotation_only(x, cos, sin)), size)
        row(f"backward {name} vs HF rotation only", median_seconds(lambda: gk.get_op("rope").backward(x, positions)),
            median_seconds(lambda: hf_rotation_only(x, cos, -sin)), size)
        row(f"backward {name} out= vs HF rotation only",
            *median_seconds_pair(lambda: gk.get_op("rope").backward(x, positions, out=out),
                                 lambda: hf_rotation_only(x, cos, -sin)), size)


if __name__ == "__main__":
    main()
