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


# ---- Elementwise ops: embedding, silu, swiglu, rope ----------------------------------

def silu(x: torch.Tensor) -> torch.Tensor:
    x64 = x.to(torch.float64)
    return x64 * torch.sigmoid(x64)


def silu_backward(grad_out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dx of silu by float64 autograd."""
    x64 = x.to(torch.float64).requires_grad_()
    silu(x64).backward(grad_out.to(torch.float64))
    return x64.grad


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return silu(gate) * up.to(torch.float64)


def swiglu_backward(grad_out: torch.Tensor, gate: torch.Tensor, up: torch.Tensor):
    """(dgate, dup) of swiglu by float64 autograd."""
    gate64 = gate.to(torch.float64).requires_grad_()
    up64 = up.to(torch.float64).requires_grad_()
    swiglu(gate64, up64).backward(grad_out.to(torch.float64))
    return gate64.grad, up64.grad


def swiglu_hf_eager(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Hugging Face Qwen3MLP's activation as written there (act_fn(gate) * up), in the inputs' dtype."""
    return torch.nn.functional.silu(gate) * up


def embedding_backward(grad_out: torch.Tensor, token_ids: torch.Tensor, num_embeddings: int) -> torch.Tensor:
    """dweight in float64: each token's gradient added to the row it indexes."""
    dim = grad_out.shape[-1]
    dweight = torch.zeros(num_embeddings, dim, dtype=torch.float64)
    return dweight.index_add_(0, token_ids.reshape(-1).long(), grad_out.reshape(-1, dim).to(torch.float64))


def rope_hf_float64(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Hugging Face's rotary code (default rope, rotate-half) evaluated entirely
    in float64: inverse frequencies, angles, cos/sin and the rotation.
    x [..., heads, head_dim], positions x.shape[:-2]."""
    head_dim = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).to(torch.float64) / head_dim))
    angles = positions.to(torch.float64)[..., None] * inv_freq
    return _rotate_half_float64(x, angles)


def rope_at_fp32_angles(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """The rotation in float64 at HF's fp32 angles, angle = fp32(position * inv_freq)
    (HF: inv_freq @ position_ids.float()), for a given float32 inv_freq table."""
    angles = (positions.to(torch.float32)[..., None] * inv_freq.to(torch.float32)).to(torch.float64)
    return _rotate_half_float64(x, angles)


def _rotate_half_float64(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    x64 = x.to(torch.float64)
    emb = torch.cat((angles, angles), dim=-1).unsqueeze(-2)  # broadcast over heads
    half = x.shape[-1] // 2
    rotated = torch.cat((-x64[..., half:], x64[..., :half]), dim=-1)
    return x64 * emb.cos() + rotated * emb.sin()


def rope_hf_eager(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Hugging Face Qwen3RotaryEmbedding + apply_rotary_pos_emb as written there:
    fp32 inv_freq and angles, cos/sin rounded to x's dtype, rotation in x's dtype.
    x [batch, seq, heads, head_dim], positions [batch, seq]."""
    head_dim = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).to(torch.float32) / head_dim))
    inv_freq_expanded = inv_freq[None, :, None].expand(positions.shape[0], -1, 1)
    freqs = (inv_freq_expanded @ positions[:, None, :].float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # [batch, seq, 1, head_dim]
    half = head_dim // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
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
