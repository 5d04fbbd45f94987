"""Every golden op as a torch.library custom op "golden::<name>", with a fake
(meta) implementation for torch.compile and its autograd formula registered on
the op itself: one definition serves eager autograd and compiled graphs.
The numerics are the ops' own (golden_kernels.ops.*, csrc/core/); this file
only maps tensors to them. Backward formulas are custom ops too, so a compiled
backward graph stays traceable."""

from __future__ import annotations

from typing import Optional

import torch
from torch.library import custom_op, register_autograd, register_fake

from .. import _C
from ..ops import convert as _convert
from ..ops import embedding as _embedding
from ..ops import entropy as _entropy
from ..ops import linear as _linear
from ..ops import log_softmax as _log_softmax
from ..ops import rms_norm as _rms_norm
from ..ops import rope as _rope
from ..ops import silu as _silu
from ..ops import swiglu as _swiglu
from ..ops import token_logprob as _token_logprob

NAMESPACE = "golden"
DEFAULT_IGNORE_INDEX = int(_C.DEFAULT_IGNORE_INDEX)


def _dense(t: torch.Tensor) -> torch.Tensor:
    """The kernels read row-major memory: autograd hands them expanded or
    transposed views (a sum's gradient has stride 0), which this copies."""
    return t.contiguous()


# ---- rms_norm ----------------------------------------------------------------------------

@custom_op("golden::rms_norm", mutates_args=())
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, rounding: str) -> torch.Tensor:
    return _rms_norm.forward(_dense(x), _dense(weight), eps, rounding=rounding)


@register_fake("golden::rms_norm")
def _(x, weight, eps, rounding):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@custom_op("golden::rms_norm_backward", mutates_args=())
def rms_norm_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                      eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    return _rms_norm.backward(_dense(grad), _dense(x), _dense(weight), eps)


@register_fake("golden::rms_norm_backward")
def _(grad, x, weight, eps):
    return torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(weight)


def _rms_norm_setup(ctx, inputs, output):
    x, weight, eps, _rounding = inputs
    ctx.save_for_backward(x, weight)
    ctx.eps = eps


def _rms_norm_grad(ctx, grad):
    x, weight = ctx.saved_tensors
    dx, dweight = rms_norm_backward(grad, x, weight, ctx.eps)
    return dx, dweight, None, None


register_autograd("golden::rms_norm", _rms_norm_grad, setup_context=_rms_norm_setup)


# ---- embedding ---------------------------------------------------------------------------

@custom_op("golden::embedding", mutates_args=())
def embedding(token_ids: torch.Tensor, weight: torch.Tensor, padding_idx: Optional[int]) -> torch.Tensor:
    """weight[token_ids]; padding_idx (torch.nn.Embedding's convention) only
    matters to the backward, where that row's gradient is zero."""
    return _embedding.forward(_dense(token_ids), _dense(weight))


@register_fake("golden::embedding")
def _(token_ids, weight, padding_idx):
    return weight.new_empty((*token_ids.shape, weight.shape[-1]))


@custom_op("golden::embedding_backward", mutates_args=())
def embedding_backward(grad: torch.Tensor, token_ids: torch.Tensor, weight: torch.Tensor,
                       padding_idx: Optional[int]) -> torch.Tensor:
    dweight = _embedding.backward(_dense(grad), _dense(token_ids), weight)
    if padding_idx is not None:
        dweight[padding_idx] = 0
    return dweight


@register_fake("golden::embedding_backward")
def _(grad, token_ids, weight, padding_idx):
    return torch.empty_like(weight, memory_format=torch.contiguous_format)


def _embedding_setup(ctx, inputs, output):
    token_ids, weight, padding_idx = inputs
    ctx.save_for_backward(token_ids, weight)  # weight gives dweight's shape and dtype only
    ctx.padding_idx = padding_idx


def _embedding_grad(ctx, grad):
    token_ids, weight = ctx.saved_tensors
    return None, embedding_backward(grad, token_ids, weight, ctx.padding_idx), None


register_autograd("golden::embedding", _embedding_grad, setup_context=_embedding_setup)


# ---- silu, swiglu ------------------------------------------------------------------------

@custom_op("golden::silu", mutates_args=())
def silu(x: torch.Tensor) -> torch.Tensor:
    return _silu.forward(_dense(x))


@register_fake("golden::silu")
def _(x):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@custom_op("golden::silu_backward", mutates_args=())
def silu_backward(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return _silu.backward(_dense(grad), _dense(x))


@register_fake("golden::silu_backward")
def _(grad, x):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _silu_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _silu_grad(ctx, grad):
    (x,) = ctx.saved_tensors
    return silu_backward(grad, x)


register_autograd("golden::silu", _silu_grad, setup_context=_silu_setup)


@custom_op("golden::swiglu", mutates_args=())
def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return _swiglu.forward(_dense(gate), _dense(up))


@register_fake("golden::swiglu")
def _(gate, up):
    return torch.empty_like(gate, memory_format=torch.contiguous_format)


@custom_op("golden::swiglu_backward", mutates_args=())
def swiglu_backward(grad: torch.Tensor, gate: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _swiglu.backward(_dense(grad), _dense(gate), _dense(up))


@register_fake("golden::swiglu_backward")
def _(grad, gate, up):
    like = torch.empty_like(gate, memory_format=torch.contiguous_format)
    return like, torch.empty_like(like)


def _swiglu_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _swiglu_grad(ctx, grad):
    gate, up = ctx.saved_tensors
    return swiglu_backward(grad, gate, up)


register_autograd("golden::swiglu", _swiglu_grad, setup_context=_swiglu_setup)


# ---- rope --------------------------------------------------------------------------------

@custom_op("golden::rope", mutates_args=())
def rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    return _rope.forward(_dense(x), _dense(positions), theta=theta)


@register_fake("golden::rope")
def _(x, positions, theta):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@custom_op("golden::rope_backward", mutates_args=())
def rope_backward(grad: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    return _rope.backward(_dense(grad), _dense(positions), theta=theta)


@register_fake("golden::rope_backward")
def _(grad, positions, theta):
    return torch.empty_like(grad, memory_format=torch.contiguous_format)


def _rope_setup(ctx, inputs, output):
    _x, positions, theta = inputs
    ctx.save_for_backward(positions)
    ctx.theta = theta


def _rope_grad(ctx, grad):
    (positions,) = ctx.saved_tensors
    return rope_backward(grad, positions, ctx.theta), None, None


register_autograd("golden::rope", _rope_grad, setup_context=_rope_setup)


# ---- linear, lm_head ---------------------------------------------------------------------

def _optional_dense(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else _dense(t)


def _linear_fake(x, weight, bias):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


@custom_op("golden::linear", mutates_args=())
def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return _linear.forward(_dense(x), _dense(weight), _optional_dense(bias))


@custom_op("golden::lm_head", mutates_args=())
def lm_head(hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """The linear contraction registered under its own name (docs/ops/lm_head.md)."""
    return _linear.forward(_dense(hidden), _dense(weight), _optional_dense(bias))


register_fake("golden::linear", _linear_fake)
register_fake("golden::lm_head", _linear_fake)


@custom_op("golden::linear_backward", mutates_args=())
def linear_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                    bias: Optional[torch.Tensor]) -> list[torch.Tensor]:
    """[dx, dweight], and dbias last when a bias is passed."""
    return list(_linear.backward(_dense(grad), _dense(x), _dense(weight), _optional_dense(bias)))


@register_fake("golden::linear_backward")
def _(grad, x, weight, bias):
    grads = [torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(weight, dtype=x.dtype)]
    return grads if bias is None else grads + [x.new_empty(bias.shape)]


def _linear_setup(ctx, inputs, output):
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight, bias)


def _linear_grad(ctx, grad):
    x, weight, bias = ctx.saved_tensors
    grads = linear_backward(grad, x, weight, bias)
    return grads[0], grads[1], (grads[2] if bias is not None else None)


register_autograd("golden::linear", _linear_grad, setup_context=_linear_setup)
register_autograd("golden::lm_head", _linear_grad, setup_context=_linear_setup)


# ---- log_softmax, token_logprob, entropy ------------------------------------------------

@custom_op("golden::log_softmax", mutates_args=())
def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    return _log_softmax.forward(_dense(logits))


@register_fake("golden::log_softmax")
def _(logits):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


@custom_op("golden::log_softmax_backward", mutates_args=())
def log_softmax_backward(grad: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return _log_softmax.backward(_dense(grad), _dense(logits))


@register_fake("golden::log_softmax_backward")
def _(grad, logits):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


def _save_logits(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _log_softmax_grad(ctx, grad):
    (logits,) = ctx.saved_tensors
    return log_softmax_backward(grad, logits)


register_autograd("golden::log_softmax", _log_softmax_grad, setup_context=_save_logits)


@custom_op("golden::token_logprob", mutates_args=())
def token_logprob(logits: torch.Tensor, target_ids: torch.Tensor, ignore_index: int) -> torch.Tensor:
    return _token_logprob.forward(_dense(logits), _dense(target_ids), ignore_index=ignore_index)


@register_fake("golden::token_logprob")
def _(logits, target_ids, ignore_index):
    return logits.new_empty(logits.shape[:-1], dtype=torch.float32)


@custom_op("golden::token_logprob_backward", mutates_args=())
def token_logprob_backward(grad: torch.Tensor, logits: torch.Tensor, target_ids: torch.Tensor,
                           ignore_index: int) -> torch.Tensor:
    return _token_logprob.backward(_dense(grad), _dense(logits), _dense(target_ids), ignore_index=ignore_index)


@register_fake("golden::token_logprob_backward")
def _(grad, logits, target_ids, ignore_index):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


def _token_logprob_setup(ctx, inputs, output):
    logits, target_ids, ignore_index = inputs
    ctx.save_for_backward(logits, target_ids)
    ctx.ignore_index = ignore_index


def _token_logprob_grad(ctx, grad):
    logits, target_ids = ctx.saved_tensors
    return token_logprob_backward(grad, logits, target_ids, ctx.ignore_index), None, None


register_autograd("golden::token_logprob", _token_logprob_grad, setup_context=_token_logprob_setup)


@custom_op("golden::entropy", mutates_args=())
def entropy(logits: torch.Tensor) -> torch.Tensor:
    return _entropy.forward(_dense(logits))


@register_fake("golden::entropy")
def _(logits):
    return logits.new_empty(logits.shape[:-1], dtype=torch.float32)


@custom_op("golden::entropy_backward", mutates_args=())
def entropy_backward(grad: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return _entropy.backward(_dense(grad), _dense(logits))


@register_fake("golden::entropy_backward")
def _(grad, logits):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


def _entropy_grad(ctx, grad):
    (logits,) = ctx.saved_tensors
    return entropy_backward(grad, logits)


register_autograd("golden::entropy", _entropy_grad, setup_context=_save_logits)


# ---- linear_logprob ----------------------------------------------------------------------

def _fused_linear_logprob(hidden, weight, target_ids, ignore_index, return_entropy):
    from ..ops import linear_logprob as _fused

    return _fused.forward(_dense(hidden), _dense(weight), _dense(target_ids), ignore_index=ignore_index,
                          return_entropy=return_entropy)


def _rows_fp32(hidden):
    return hidden.new_empty(hidden.shape[:-1], dtype=torch.float32)


@custom_op("golden::linear_logprob", mutates_args=())
def linear_logprob(hidden: torch.Tensor, weight: torch.Tensor, target_ids: torch.Tensor,
                   ignore_index: int) -> torch.Tensor:
    """float32 log p(target) per row from the fused streaming kernel."""
    return _fused_linear_logprob(hidden, weight, target_ids, ignore_index, return_entropy=False)


@custom_op("golden::linear_logprob_entropy", mutates_args=())
def linear_logprob_entropy(hidden: torch.Tensor, weight: torch.Tensor, target_ids: torch.Tensor,
                           ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(logprob, entropy) per row, both float32, from the same fused kernel."""
    return _fused_linear_logprob(hidden, weight, target_ids, ignore_index, return_entropy=True)


register_fake("golden::linear_logprob", lambda hidden, weight, target_ids, ignore_index: _rows_fp32(hidden))
register_fake("golden::linear_logprob_entropy",
              lambda hidden, weight, target_ids, ignore_index: (_rows_fp32(hidden), _rows_fp32(hidden)))


@custom_op("golden::linear_logprob_backward", mutates_args=())
def linear_logprob_backward(grad_logprob: torch.Tensor, grad_entropy: Optional[torch.Tensor], hidden: torch.Tensor,
                            weight: torch.Tensor, target_ids: torch.Tensor,
                            ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(dhidden, dweight), composed from the golden ops at the fused forward's own
    fp32 logits (lm_head.forward_fp32 gives them bitwise): token_logprob (and
    entropy) backward in fp32, then the linear backward in fp32 (16-bit inputs
    widen exactly), rounded once to hidden's dtype. It materialises the
    [rows, vocab] fp32 logits: a fused streaming backward is future work."""
    hidden, weight, target_ids = _dense(hidden), _dense(weight), _dense(target_ids)
    logits = _linear.forward_fp32(hidden, weight)
    grad_logits = _token_logprob.backward(_dense(grad_logprob), logits, target_ids, ignore_index=ignore_index)
    if grad_entropy is not None:
        grad_logits = grad_logits + _entropy.backward(_dense(grad_entropy), logits)
    if hidden.dtype == torch.float32:
        return _linear.backward(grad_logits, hidden, weight)
    dhidden, dweight = _linear.backward(grad_logits, hidden.float(), weight.float())
    return _convert.cast(dhidden, _dtype_name(hidden)), _convert.cast(dweight, _dtype_name(weight))


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


@register_fake("golden::linear_logprob_backward")
def _(grad_logprob, grad_entropy, hidden, weight, target_ids, ignore_index):
    return (torch.empty_like(hidden, memory_format=torch.contiguous_format),
            torch.empty_like(weight, memory_format=torch.contiguous_format))


def _linear_logprob_setup(ctx, inputs, output):
    hidden, weight, target_ids, ignore_index = inputs
    ctx.save_for_backward(hidden, weight, target_ids)
    ctx.ignore_index = ignore_index


def _linear_logprob_grad(ctx, grad_logprob, grad_entropy=None):
    hidden, weight, target_ids = ctx.saved_tensors
    dhidden, dweight = linear_logprob_backward(grad_logprob, grad_entropy, hidden, weight, target_ids,
                                               ctx.ignore_index)
    return dhidden, dweight, None, None


register_autograd("golden::linear_logprob", _linear_logprob_grad, setup_context=_linear_logprob_setup)
register_autograd("golden::linear_logprob_entropy", _linear_logprob_grad, setup_context=_linear_logprob_setup)
