"""The peer contract's tolerance table (RL-Kernel WS1 profile "ws1-c1-v2"):
the floor every op must pass. Pass rule: |actual - ref| <= atol + rtol * |ref|."""

from __future__ import annotations

import torch

# op class -> dtype -> (atol, rtol)
PEER_TOLERANCES = {
    "elementwise": {torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 1.6e-2), torch.float16: (1e-3, 1e-3)},
    "reduction": {torch.float32: (1e-4, 1e-4), torch.bfloat16: (5e-2, 2e-2), torch.float16: (1e-3, 1e-3)},
    "attention": {torch.float32: (1e-4, 1e-4), torch.bfloat16: (5e-2, 2e-2), torch.float16: (1e-3, 1e-3)},
    "logprob": {torch.float32: (1e-5, 0.0), torch.bfloat16: (6e-2, 0.0), torch.float16: (5e-3, 0.0)},
}


def peer_tolerance(op_class: str, dtype: torch.dtype) -> tuple[float, float]:
    return PEER_TOLERANCES[op_class][dtype]


def assert_peer_floor(actual: torch.Tensor, reference: torch.Tensor, op_class: str, dtype: torch.dtype,
                      what: str = "") -> None:
    atol, rtol = peer_tolerance(op_class, dtype)
    actual64 = actual.detach().cpu().to(torch.float64)
    reference = reference.detach().cpu().to(torch.float64)
    error = (actual64 - reference).abs()
    allowed = atol + rtol * reference.abs()
    over = error > allowed
    assert not bool(over.any()), (
        f"{what}: {int(over.sum())} elements outside the peer tolerance "
        f"(atol {atol}, rtol {rtol}); max error {float(error.max()):.3e}"
    )
