"""Differentiable golden ops for PyTorch tensors (CPU and CUDA; on CUDA the
current stream is used). Each function calls the custom op torch.ops.golden.<name>
(golden_kernels/torch/_library.py), whose registered autograd formula is the
op's own golden backward, so the same call works eagerly, under autograd and
inside torch.compile(fullgraph=True). Calls that need none of that (no grad,
no tracing) run the op's body directly, see _library.GoldenOp."""

from __future__ import annotations

from typing import Optional

import torch

from . import _library
from ..ops.linear_logprob import MAX_SAVED_LOGITS
from ..ops.rope import QWEN3_THETA

DEFAULT_IGNORE_INDEX = _library.DEFAULT_IGNORE_INDEX


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, *, rounding: str = "once") -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last dim. rounding="hf"
    rounds like Hugging Face's Qwen3RMSNorm in the forward; the backward is
    the round-once gradient either way."""
    return _library.rms_norm(x, weight, float(eps), rounding)


def embedding(token_ids: torch.Tensor, weight: torch.Tensor, padding_idx: Optional[int] = None) -> torch.Tensor:
    """weight[token_ids]; no gradient reaches the padding_idx row (as torch.nn.Embedding)."""
    if padding_idx is not None and padding_idx < 0:
        padding_idx += weight.shape[0]
    return _library.embedding(token_ids, weight, padding_idx)


def silu(x: torch.Tensor) -> torch.Tensor:
    return _library.silu(x)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up in one rounding (the Qwen3 MLP activation)."""
    return _library.swiglu(gate, up)


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float = QWEN3_THETA) -> torch.Tensor:
    """Rotate-half RoPE; x [batch, seq, heads, head_dim] with positions [batch, seq],
    or x [tokens, heads, head_dim] with positions [tokens]."""
    return _library.rope(x, positions, float(theta))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x @ weight.T (+ bias), weight [out_features, in_features] (torch.nn.functional.linear's layout)."""
    return _library.linear(x, weight, bias)


def lm_head(hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Logits hidden @ weight.T (+ bias): the linear contraction under the lm_head op's name."""
    return _library.lm_head(hidden, weight, bias)


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log_softmax over the last dim, in logits' dtype."""
    return _library.log_softmax(logits)


def token_logprob(logits: torch.Tensor, target_ids: torch.Tensor,
                  ignore_index: int = DEFAULT_IGNORE_INDEX) -> torch.Tensor:
    """float32 log_softmax(logits)[target] per row; 0 (and no gradient) where target == ignore_index."""
    return _library.token_logprob(logits, target_ids, int(ignore_index))


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """float32 entropy of each row's softmax."""
    return _library.entropy(logits)


def linear_logprob(hidden: torch.Tensor, weight: torch.Tensor, target_ids: torch.Tensor,
                   ignore_index: int = DEFAULT_IGNORE_INDEX, *, return_entropy: bool = False):
    """token_logprob(hidden @ weight.T, target_ids) without the full logits in the
    forward (float32); with return_entropy=True also the entropy: (logprob, entropy).
    The backward takes each row's softmax statistics from the forward (the
    log-sum-exp, or with the entropy its (max, sum, shifted)), and its fp32
    logits too when a gradient is wanted and they take at most
    MAX_SAVED_LOGITS floats (32 MiB); otherwise it recomputes them (see
    docs/torch.md). The bits are the same either way."""
    wants_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    max_saved_logits = MAX_SAVED_LOGITS if wants_grad else 0
    if return_entropy:
        logprob, entropy, _partial, _logits = _library.linear_logprob_entropy_with_logits(
            hidden, weight, target_ids, int(ignore_index), max_saved_logits)
        return logprob, entropy
    logprob, _lse, _logits = _library.linear_logprob_with_logits(hidden, weight, target_ids, int(ignore_index),
                                                                 max_saved_logits)
    return logprob


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = True,
              scale: Optional[float] = None, key_padding_mask: Optional[torch.Tensor] = None,
              keep_fp32_output: bool = False) -> torch.Tensor:
    """GQA softmax attention on [batch, heads, seq, head_dim] (golden_kernels.attention),
    differentiable with the op's deterministic backward, which reads the
    forward's float32 output and LSE instead of recomputing them: always for
    float32 inputs (the output is that float32 output), and for 16-bit inputs
    with keep_fp32_output=True, which keeps a float32 copy of the output until
    the backward (twice the memory of the 16-bit output). The same bits either
    way."""
    args = (q, k, v, bool(causal), None if scale is None else float(scale), key_padding_mask)
    if keep_fp32_output and q.dtype != torch.float32:
        out, _out32, _lse = _library.attention_keeping_fp32(*args)
    else:
        out, _lse = _library.attention_with_lse(*args)
    return out


def attention_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                     cu_seqlens_k: torch.Tensor, *, causal: bool = True,
                     scale: Optional[float] = None, keep_fp32_output: bool = False) -> torch.Tensor:
    """GQA softmax attention on packed [tokens, heads, head_dim] sequences, differentiable
    (see attention, keep_fp32_output included)."""
    args = (q, k, v, cu_seqlens_q, cu_seqlens_k, bool(causal), None if scale is None else float(scale))
    if keep_fp32_output and q.dtype != torch.float32:
        out, _out32, _lse = _library.attention_varlen_keeping_fp32(*args)
    else:
        out, _lse = _library.attention_varlen_with_lse(*args)
    return out
