"""NaN bit patterns for the NaN-policy tests (docs/contract.md): the canonical
quiet NaN of each dtype, a signaling NaN with a payload and the same NaN
quieted, and raw-bit reads and writes that involve no rounding."""

from __future__ import annotations

import torch

from golden_kernels.testing import bits

CANONICAL = {torch.float32: 0x7FC00000, torch.bfloat16: 0x7FC0, torch.float16: 0x7E00}
# (a signaling NaN with a payload, the same NaN quieted), per dtype.
SIGNALING = {torch.float32: (0x7FA00021, 0x7FE00021), torch.bfloat16: (0x7F85, 0x7FC5),
             torch.float16: (0x7C15, 0x7E15)}


def unsigned_bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits of t as non-negative int64."""
    mask = (1 << (8 * t.element_size())) - 1
    return bits(t).to(torch.int64) & mask


def set_bits(t: torch.Tensor, index, value_bits: int) -> None:
    """Writes the raw bits value_bits into t[index] (in place, no rounding)."""
    width = 8 * t.element_size()
    raw = t.view(torch.int16 if width == 16 else torch.int32)
    raw[index] = value_bits - (1 << width) if value_bits >= 1 << (width - 1) else value_bits
