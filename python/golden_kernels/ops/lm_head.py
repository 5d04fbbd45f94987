"""LM head: logits = hidden @ weight.T (+ bias), weight [vocab, hidden] (Qwen3-8B:
[151936, 4096], no bias). The same contraction and canonical order as linear
(csrc/core/ops/linear.h), registered as its own op; see docs/ops/lm_head.md."""

from __future__ import annotations

from typing import Any

from . import linear as _linear


def forward(hidden: Any, weight: Any, bias: Any = None, *, backend: str | None = None, out: Any = None) -> Any:
    """Logits in fp32, rounded once to hidden's dtype (or written into `out`, as
    linear.forward: [..., vocab], hidden's dtype or float32)."""
    return _linear.forward(hidden, weight, bias, backend=backend, out=out)


def forward_fp32(hidden: Any, weight: Any, bias: Any = None, *, backend: str | None = None) -> Any:
    """Logits in fp32, unrounded: the golden value for a log-softmax."""
    return _linear.forward_fp32(hidden, weight, bias, backend=backend)


def backward(grad_logits: Any, hidden: Any, weight: Any, bias: Any = None, *, backend: str | None = None,
             fp32: bool = False) -> tuple[Any, ...]:
    """(dhidden, dweight), and dbias with a bias, as linear.backward."""
    return _linear.backward(grad_logits, hidden, weight, bias, backend=backend, fp32=fp32)


def lm_head(hidden: Any, weight: Any, bias: Any = None, *, backend: str | None = None, out: Any = None) -> Any:
    """Functional LM head (see forward)."""
    return forward(hidden, weight, bias, backend=backend, out=out)
