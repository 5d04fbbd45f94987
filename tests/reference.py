"""Float64 references, written from the ops' mathematical definitions with
plain PyTorch and independent of the kernels. Inputs are upcast exactly; eps
and similar scalars are taken at the fp32 value the kernels use."""

from __future__ import annotations

import numpy as np
import torch


def fp32_scalar(value: float) -> float:
    return float(np.float32(value))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x64, w64 = x.to(torch.float64), weight.to(torch.float64)
    mean_square = (x64 * x64).mean(dim=-1, keepdim=True)
    return x64 / torch.sqrt(mean_square + fp32_scalar(eps)) * w64


def rms_norm_backward(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, eps: float):
    """(dx, dweight) of rms_norm by float64 autograd."""
    x64 = x.to(torch.float64).requires_grad_()
    w64 = weight.to(torch.float64).requires_grad_()
    rms_norm(x64, w64, eps).backward(grad_out.to(torch.float64))
    return x64.grad, w64.grad


def rms_norm_hf_qwen3(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Hugging Face Qwen3RMSNorm.forward as written there, in x's dtype."""
    hidden = x.to(torch.float32)
    variance = hidden.pow(2).mean(-1, keepdim=True)
    hidden = hidden * torch.rsqrt(variance + eps)
    return weight * hidden.to(x.dtype)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T (+ bias) in float64."""
    y = x.to(torch.float64) @ weight.to(torch.float64).T
    return y if bias is None else y + bias.to(torch.float64)


def linear_backward(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, with_bias: bool):
    """(dx, dweight, dbias or None) of linear by float64 autograd."""
    x64 = x.to(torch.float64).requires_grad_()
    w64 = weight.to(torch.float64).requires_grad_()
    b64 = torch.zeros(weight.shape[0], dtype=torch.float64, requires_grad=True) if with_bias else None
    linear(x64, w64, b64).backward(grad_out.to(torch.float64))
    return x64.grad, w64.grad, (b64.grad if with_bias else None)


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.to(torch.float64), dim=-1)


def token_logprob(logits: torch.Tensor, target_ids: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """log_softmax gathered at the targets; 0 where the target is ignore_index."""
    ignored = target_ids == ignore_index
    safe = torch.where(ignored, torch.zeros_like(target_ids), target_ids)
    picked = log_softmax(logits).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return torch.where(ignored, torch.zeros_like(picked), picked)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """-sum p log p, with 0 log 0 = 0 for masked (-inf) entries."""
    logp = log_softmax(logits)
    p = logp.exp()
    # where() inside the product, so that autograd does not meet 0 * -inf either.
    return -(p * torch.where(p > 0, logp, torch.zeros_like(logp))).sum(-1)


def _autograd_float64(fn, logits: torch.Tensor, grad_out: torch.Tensor, *args) -> torch.Tensor:
    x64 = logits.to(torch.float64).requires_grad_()
    fn(x64, *args).backward(grad_out.to(torch.float64))
    return x64.grad


def log_softmax_backward(grad_out: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return _autograd_float64(log_softmax, logits, grad_out)


def token_logprob_backward(grad_out: torch.Tensor, logits: torch.Tensor, target_ids: torch.Tensor,
                           ignore_index: int = -100) -> torch.Tensor:
    return _autograd_float64(token_logprob, logits, grad_out, target_ids, ignore_index)


def entropy_backward(grad_out: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return _autograd_float64(entropy, logits, grad_out)
