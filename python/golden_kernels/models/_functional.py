"""The ops the Qwen3 decoder is made of, each one call: the plain golden op when
no gradient is needed, the golden_kernels.torch autograd op when one is
(attention: an autograd Function over the op's golden backward, here until
golden_kernels.torch covers attention). Both run the same kernels
(csrc/core/), so they return the same bits."""

from __future__ import annotations

import importlib

import torch

import golden_kernels as gk


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _autograd():
    """golden_kernels.torch's functional ops; imported only when a gradient is asked for."""
    try:
        return importlib.import_module("golden_kernels.torch.functional")
    except ImportError as error:
        raise RuntimeError(
            "a gradient through the golden Qwen3 model needs golden_kernels.torch (the autograd ops); "
            "run the model under torch.no_grad() for inference") from error


def embedding(token_ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if _needs_grad(weight):
        return _autograd().embedding(token_ids, weight)
    return gk.embedding(token_ids, weight)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if _needs_grad(x, weight):
        return _autograd().rms_norm(x, weight, eps)
    return gk.rms_norm(x, weight, eps)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if _needs_grad(x, weight, bias):
        return _autograd().linear(x, weight, bias)
    return gk.linear(x, weight, bias)


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    if _needs_grad(x):
        return _autograd().rope(x, positions, theta)
    return gk.rope(x, positions, theta=theta)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    if _needs_grad(gate, up):
        return _autograd().swiglu(gate, up)
    return gk.swiglu(gate, up)


class _Attention(torch.autograd.Function):
    """Causal GQA attention with the golden backward (deterministic dq, dk, dv)."""

    @staticmethod
    def forward(ctx, q, k, v, key_padding_mask):
        ctx.save_for_backward(q, k, v, key_padding_mask)
        return gk.attention(q, k, v, causal=True, key_padding_mask=key_padding_mask)

    @staticmethod
    def backward(ctx, grad):
        q, k, v, key_padding_mask = ctx.saved_tensors
        dq, dk, dv = gk.get_op("attention").backward(grad, q, k, v, causal=True, key_padding_mask=key_padding_mask)
        return dq, dk, dv, None


class _AttentionVarlen(torch.autograd.Function):
    """Causal GQA attention over packed sequences with the golden backward."""

    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens):
        ctx.save_for_backward(q, k, v, cu_seqlens)
        return gk.attention_varlen(q, k, v, cu_seqlens, cu_seqlens, causal=True)

    @staticmethod
    def backward(ctx, grad):
        q, k, v, cu_seqlens = ctx.saved_tensors
        dq, dk, dv = gk.attention_varlen_backward(grad, q, k, v, cu_seqlens, cu_seqlens, causal=True)
        return dq, dk, dv, None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Causal GQA attention on [B, H, S, D] with an optional [B, S_kv] keep-mask."""
    if _needs_grad(q, k, v):
        return _Attention.apply(q, k, v, key_padding_mask)
    return gk.attention(q, k, v, causal=True, key_padding_mask=key_padding_mask)


def attention_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Causal GQA attention on packed [T, H, D] sequences."""
    if _needs_grad(q, k, v):
        return _AttentionVarlen.apply(q, k, v, cu_seqlens)
    return gk.attention_varlen(q, k, v, cu_seqlens, cu_seqlens, causal=True)


def logits(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """lm_head, rounded once to hidden's dtype (HF's logits dtype)."""
    if _needs_grad(hidden, weight):
        return _autograd().lm_head(hidden, weight)
    return gk.lm_head(hidden, weight)


def logits_fp32(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """lm_head in fp32, unrounded: what every log-probability here is computed from."""
    return gk.get_op("lm_head").forward_fp32(hidden, weight)


def target_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """fp32 log p(target) per token; ignore_index (-100) gives 0. Bitwise equal to
    token_logprob(lm_head fp32 logits) (docs/ops/logprob.md), the sampler's record."""
    if _needs_grad(hidden, weight):
        return _autograd().linear_logprob(hidden, weight, targets)
    return gk.linear_logprob(hidden, weight, targets)


def sampled_logprobs(logits32: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """fp32 log p(token) from fp32 logits: the sampler's record."""
    return gk.token_logprob(logits32, tokens)


def log_softmax_fp32(logits32: torch.Tensor) -> torch.Tensor:
    return gk.get_op("log_softmax").forward_fp32(logits32)
