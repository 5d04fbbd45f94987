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


def attention_weights(q: torch.Tensor, k: torch.Tensor, causal: bool, scale: float,
                      key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T * scale) in float64 over the allowed keys, [B, Hq, Sq, Skv]:
    kv heads repeated for GQA; causal allows key j <= i + (Skv - Sq); masked
    keys get weight 0; a causal query whose own token is masked (padding) and
    any row with no allowed key get all-zero weights."""
    q64, k64 = q.double(), k.double()
    group = q.shape[1] // k.shape[1]
    k64 = k64.repeat_interleave(group, dim=1)
    sq, skv = q.shape[2], k.shape[2]
    allowed = torch.ones(q.shape[0], 1, sq, skv, dtype=torch.bool)
    if causal:
        rows = torch.arange(sq).unsqueeze(1) + (skv - sq)
        allowed = allowed & (torch.arange(skv).unsqueeze(0) <= rows)
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask[:, None, None, :]
        if causal:
            own = torch.arange(sq) + (skv - sq)
            inside = (own >= 0) & (own < skv)
            own_kept = torch.ones(q.shape[0], sq, dtype=torch.bool)
            own_kept[:, inside] = key_padding_mask[:, own[inside]]
            allowed = allowed & own_kept[:, None, :, None]
    scores = torch.einsum("bhid,bhjd->bhij", q64, k64) * fp32_scalar(scale)
    any_allowed = allowed.any(dim=-1, keepdim=True)
    scores = scores.masked_fill(~allowed, -torch.inf).where(any_allowed, torch.zeros_like(scores))
    return torch.softmax(scores, dim=-1) * any_allowed  # rows with no allowed key: 0


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True, scale: float | None = None,
              key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention in float64 from its definition, materialising the weights."""
    scale = 1.0 / q.shape[-1] ** 0.5 if scale is None else scale
    weights = attention_weights(q, k, causal, scale, key_padding_mask)
    v64 = v.double().repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    return weights @ v64


def attention_lse(q: torch.Tensor, k: torch.Tensor, causal: bool = True, scale: float | None = None) -> torch.Tensor:
    """logsumexp of the allowed scores in float64 (-inf for a row with none)."""
    scale = 1.0 / q.shape[-1] ** 0.5 if scale is None else scale
    k64 = k.double().repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = torch.einsum("bhid,bhjd->bhij", q.double(), k64) * fp32_scalar(scale)
    if causal:
        sq, skv = q.shape[2], k.shape[2]
        allowed = torch.arange(skv).unsqueeze(0) <= torch.arange(sq).unsqueeze(1) + (skv - sq)
        scores = scores.masked_fill(~allowed, -torch.inf)
    return torch.logsumexp(scores, dim=-1)


def attention_backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       causal: bool = True, scale: float | None = None,
                       key_padding_mask: torch.Tensor | None = None):
    """(dq, dk, dv) of attention by float64 autograd."""
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    out = attention(q64, k64, v64, causal, scale, key_padding_mask)
    out.backward(grad_out.double())
    return q64.grad, k64.grad, v64.grad
