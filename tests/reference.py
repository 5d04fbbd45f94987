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
