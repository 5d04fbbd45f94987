"""Every golden op as a torch.library custom op "golden::<name>", with a fake
(meta) implementation for torch.compile and its autograd formula registered on
the op itself: one definition serves eager autograd and compiled graphs.
The numerics are the ops' own (golden_kernels.ops.*, csrc/core/); this file
only maps tensors to them. Backward formulas are custom ops too, so a compiled
backward graph stays traceable. A call that torch.library would only pass
straight to the body (no autograd, tracing or mode involved) runs the body
directly, and an eager call that only needs autograd runs it inside a plain
autograd.Function built from the same registered setup_context and backward:
same functions, same bits, without the dispatch cost."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
from torch.library import custom_op, register_fake
from torch.library import register_autograd as _register_op_autograd

from .. import _C, _arrays
from ..ops import attention as _attention
from ..ops import convert as _convert
from ..ops import embedding as _embedding
from ..ops import entropy as _entropy
from ..ops import linear as _linear
from ..ops import linear_logprob as _linear_logprob
from ..ops import log_softmax as _log_softmax
from ..ops import rms_norm as _rms_norm
from ..ops import rope as _rope
from ..ops import silu as _silu
from ..ops import swiglu as _swiglu
from ..ops import token_logprob as _token_logprob

NAMESPACE = "golden"
DEFAULT_IGNORE_INDEX = int(_C.DEFAULT_IGNORE_INDEX)


_PLAIN_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


# How GoldenOp.__call__ runs a call (see _eager_path).
VIA_CUSTOM_OP, BODY, BODY_WITH_AUTOGRAD = 0, 1, 2

# The PyTorch internals the direct paths read (private API, which a release
# may rename or drop), as (object, attribute).
_PRIVATE_TORCH_API = (
    (torch._C, "_len_torch_dispatch_stack"),
    (torch._C, "_is_torch_function_mode_enabled"),
    (torch._C, "_get_tracing_state"),
    (getattr(torch._C, "_functorch", None), "peek_interpreter_stack"),
    (getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor"),
    (super(torch.autograd.Function, torch.autograd.Function), "apply"),  # the C apply under the Python one
)

# False on a torch without one of them: every call then goes through the
# custom op (slower per call, the same bits and gradients).
DIRECT_PATHS = all(hasattr(owner, name) for owner, name in _PRIVATE_TORCH_API)


def _eager_path(args: tuple) -> int:
    """BODY where torch.library would hand these arguments straight to the op's
    body: no tracing (torch.compile, jit, functorch transforms), no dispatch or
    function modes (fake tensors, FlopCounter, torch.device contexts), plain
    tensors on a CPU or CUDA device (no subclasses, no meta), and no graph to
    record (grad off or no input requiring it). BODY_WITH_AUTOGRAD where only
    the graph is missing. VIA_CUSTOM_OP otherwise (a functorch wrapper that
    outlived its transform included). Each check is a cheap C call."""
    if not DIRECT_PATHS:
        return VIA_CUSTOM_OP
    if (torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack()
            or torch._C._is_torch_function_mode_enabled() or torch._C._get_tracing_state() is not None
            or torch._C._functorch.peek_interpreter_stack() is not None):
        return VIA_CUSTOM_OP
    grad_mode = torch.is_grad_enabled()
    path = BODY
    for arg in args:
        if isinstance(arg, torch.Tensor):
            if (type(arg) not in _PLAIN_TENSOR_TYPES or not (arg.is_cpu or arg.is_cuda)
                    or torch._C._functorch.is_functorch_wrapped_tensor(arg)):
                return VIA_CUSTOM_OP
            if grad_mode and arg.requires_grad:
                path = BODY_WITH_AUTOGRAD
    return path


def _eager_autograd_function(name: str, body: Callable[..., Any], backward: Callable[..., Any],
                             setup_context: Callable[..., Any]) -> type:
    """An autograd.Function running body, then the op's registered setup_context
    and, on backward, its registered backward: what torch.library's autograd
    kernel does around a redispatch, without the dispatcher round trip and
    argument re-binding (forward takes ctx directly for the same reason)."""
    def forward(ctx, *args):
        output = body(*args)
        setup_context(ctx, args, output)
        return output

    return type(name, (torch.autograd.Function,), {"forward": staticmethod(forward),
                                                   "backward": staticmethod(backward)})


class GoldenOp:
    """A custom op golden::<name> (`.op`, also torch.ops.golden.<name>) and the
    one function that defines it (`.body`). Calling a GoldenOp runs the body
    directly when _eager_path() says the custom op would do nothing else,
    the body inside `.eager_autograd` (once register_autograd gave it one) when
    only autograd is needed, and the custom op otherwise."""

    by_name: dict[str, "GoldenOp"] = {}

    def __init__(self, qualified_name: str, body: Callable[..., Any]):
        self.body = body
        self.op = custom_op(qualified_name, mutates_args=())(body)
        self.eager_autograd: Optional[type] = None
        self._record = None
        GoldenOp.by_name[qualified_name] = self

    def set_eager_autograd(self, function: type) -> None:
        self.eager_autograd = function
        # autograd.Function.apply's Python layer only re-binds default arguments
        # (none here: forward takes ctx) and unwraps functorch wrappers, which
        # _eager_path excludes; the C apply under it records the same node,
        # 20-40 us sooner per call.
        if DIRECT_PATHS:
            self._record = super(torch.autograd.Function, function).apply

    def __call__(self, *args: Any) -> Any:
        path = _eager_path(args)
        if path == BODY:
            return self.body(*args)
        if path == BODY_WITH_AUTOGRAD and self._record is not None:
            return self._record(*args)
        return self.op(*args)


def golden_op(qualified_name: str) -> Callable[[Callable[..., Any]], GoldenOp]:
    """Decorator: the function becomes the body of custom op `qualified_name`."""
    return lambda body: GoldenOp(qualified_name, body)


def register_autograd(qualified_name: str, backward: Callable[..., Any], *,
                      setup_context: Callable[..., Any]) -> None:
    """torch.library.register_autograd on the custom op, and the same two
    functions as the GoldenOp's eager autograd path."""
    _register_op_autograd(qualified_name, backward, setup_context=setup_context)
    golden = GoldenOp.by_name[qualified_name]
    name = qualified_name.replace("::", "_")
    golden.set_eager_autograd(_eager_autograd_function(name, golden.body, backward, setup_context))


def _dense(t: torch.Tensor) -> torch.Tensor:
    """The kernels read row-major memory: autograd hands them expanded or
    transposed views (a sum's gradient has stride 0), which this copies."""
    return t.contiguous()


# ---- rms_norm ----------------------------------------------------------------------------

@golden_op("golden::rms_norm")
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, rounding: str) -> torch.Tensor:
    return _rms_norm.forward(_dense(x), _dense(weight), eps, rounding=rounding)


@register_fake("golden::rms_norm")
def _(x, weight, eps, rounding):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@golden_op("golden::rms_norm_backward")
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

@golden_op("golden::embedding")
def embedding(token_ids: torch.Tensor, weight: torch.Tensor, padding_idx: Optional[int]) -> torch.Tensor:
    """weight[token_ids]; padding_idx (torch.nn.Embedding's convention) only
    matters to the backward, where that row's gradient is zero."""
    return _embedding.forward(_dense(token_ids), _dense(weight))


@register_fake("golden::embedding")
def _(token_ids, weight, padding_idx):
    return weight.new_empty((*token_ids.shape, weight.shape[-1]))


@golden_op("golden::embedding_backward")
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

@golden_op("golden::silu")
def silu(x: torch.Tensor) -> torch.Tensor:
    return _silu.forward(_dense(x))


@register_fake("golden::silu")
def _(x):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@golden_op("golden::silu_backward")
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


@golden_op("golden::swiglu")
def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return _swiglu.forward(_dense(gate), _dense(up))


@register_fake("golden::swiglu")
def _(gate, up):
    return torch.empty_like(gate, memory_format=torch.contiguous_format)


@golden_op("golden::swiglu_backward")
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

@golden_op("golden::rope")
def rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    return _rope.forward(_dense(x), _dense(positions), theta=theta)


@register_fake("golden::rope")
def _(x, positions, theta):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@golden_op("golden::rope_backward")
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


@golden_op("golden::linear")
def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return _linear.forward(_dense(x), _dense(weight), _optional_dense(bias))


@golden_op("golden::lm_head")
def lm_head(hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """The linear contraction registered under its own name (docs/ops/lm_head.md)."""
    return _linear.forward(_dense(hidden), _dense(weight), _optional_dense(bias))


register_fake("golden::linear", _linear_fake)
register_fake("golden::lm_head", _linear_fake)


@golden_op("golden::linear_backward")
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

@golden_op("golden::log_softmax")
def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    return _log_softmax.forward(_dense(logits))


@register_fake("golden::log_softmax")
def _(logits):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


@golden_op("golden::log_softmax_backward")
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


@golden_op("golden::token_logprob")
def token_logprob(logits: torch.Tensor, target_ids: torch.Tensor, ignore_index: int) -> torch.Tensor:
    return _token_logprob.forward(_dense(logits), _dense(target_ids), ignore_index=ignore_index)


@register_fake("golden::token_logprob")
def _(logits, target_ids, ignore_index):
    return logits.new_empty(logits.shape[:-1], dtype=torch.float32)


@golden_op("golden::token_logprob_backward")
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


@golden_op("golden::entropy")
def entropy(logits: torch.Tensor) -> torch.Tensor:
    return _entropy.forward(_dense(logits))


@register_fake("golden::entropy")
def _(logits):
    return logits.new_empty(logits.shape[:-1], dtype=torch.float32)


@golden_op("golden::entropy_backward")
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
    return _linear_logprob.forward(_dense(hidden), _dense(weight), _dense(target_ids),
                                   ignore_index=ignore_index, return_entropy=return_entropy)


def _rows_fp32(hidden):
    return hidden.new_empty(hidden.shape[:-1], dtype=torch.float32)


@golden_op("golden::linear_logprob")
def linear_logprob(hidden: torch.Tensor, weight: torch.Tensor, target_ids: torch.Tensor,
                   ignore_index: int) -> torch.Tensor:
    """float32 log p(target) per row from the fused streaming kernel."""
    return _fused_linear_logprob(hidden, weight, target_ids, ignore_index, return_entropy=False)


@golden_op("golden::linear_logprob_entropy")
def linear_logprob_entropy(hidden: torch.Tensor, weight: torch.Tensor, target_ids: torch.Tensor,
                           ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(logprob, entropy) per row, both float32, from the same fused kernel."""
    return _fused_linear_logprob(hidden, weight, target_ids, ignore_index, return_entropy=True)


@golden_op("golden::linear_logprob_with_lse")
def linear_logprob_with_lse(hidden: torch.Tensor, weight: torch.Tensor, target_ids: torch.Tensor,
                            ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(logprob, lse) per row, both float32: the lse (not differentiable) is what
    the backward takes back instead of recomputing every row's statistics."""
    return _linear_logprob.forward(_dense(hidden), _dense(weight), _dense(target_ids), ignore_index=ignore_index,
                                   return_lse=True)


def _saves_logits(hidden, weight, max_saved_logits):
    """Whether linear_logprob_with_logits keeps the fp32 logits: rows x vocab <= max_saved_logits."""
    return weight.dim() == 2 and math.prod(hidden.shape[:-1]) * weight.shape[0] <= max_saved_logits


@golden_op("golden::linear_logprob_with_logits")
def linear_logprob_with_logits(hidden: torch.Tensor, weight: torch.Tensor, target_ids: torch.Tensor,
                               ignore_index: int, max_saved_logits: int,
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logprob, lse, logits): as linear_logprob_with_lse, plus the float32
    logits [..., vocab] when rows x vocab <= max_saved_logits (else an empty
    [0]), for the backward to read instead of recomputing; neither lse nor
    logits is differentiable."""
    hidden, weight, target_ids = _dense(hidden), _dense(weight), _dense(target_ids)
    if _saves_logits(hidden, weight, max_saved_logits):
        return _linear_logprob.forward(hidden, weight, target_ids, ignore_index=ignore_index, return_lse=True,
                                       return_logits=True)
    logprob, lse = _linear_logprob.forward(hidden, weight, target_ids, ignore_index=ignore_index, return_lse=True)
    return logprob, lse, hidden.new_empty((0,), dtype=torch.float32)


def _fake_saved_logits(hidden, weight, max_saved_logits):
    saved = _saves_logits(hidden, weight, max_saved_logits)
    return hidden.new_empty((*hidden.shape[:-1], weight.shape[0]) if saved else (0,), dtype=torch.float32)


@register_fake("golden::linear_logprob_with_logits")
def _(hidden, weight, target_ids, ignore_index, max_saved_logits):
    return _rows_fp32(hidden), _rows_fp32(hidden), _fake_saved_logits(hidden, weight, max_saved_logits)


@golden_op("golden::linear_logprob_entropy_with_logits")
def linear_logprob_entropy_with_logits(hidden: torch.Tensor, weight: torch.Tensor, target_ids: torch.Tensor,
                                       ignore_index: int, max_saved_logits: int,
                                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logprob, entropy, entropy_partial, logits): as linear_logprob_entropy,
    plus each row's float32 (max, sum, shifted) [..., 3] and the float32 logits
    [..., vocab] when rows x vocab <= max_saved_logits (else an empty [0]), for
    the backward to take back instead of recomputing; neither entropy_partial
    nor logits is differentiable."""
    hidden, weight, target_ids = _dense(hidden), _dense(weight), _dense(target_ids)
    if _saves_logits(hidden, weight, max_saved_logits):
        logprob, entropy, logits, partial = _linear_logprob.forward(
            hidden, weight, target_ids, ignore_index=ignore_index, return_entropy=True, return_logits=True,
            return_entropy_partial=True)
        return logprob, entropy, partial, logits
    logprob, entropy, partial = _linear_logprob.forward(hidden, weight, target_ids, ignore_index=ignore_index,
                                                        return_entropy=True, return_entropy_partial=True)
    return logprob, entropy, partial, hidden.new_empty((0,), dtype=torch.float32)


@register_fake("golden::linear_logprob_entropy_with_logits")
def _(hidden, weight, target_ids, ignore_index, max_saved_logits):
    partial = hidden.new_empty((*hidden.shape[:-1], 3), dtype=torch.float32)
    return _rows_fp32(hidden), _rows_fp32(hidden), partial, _fake_saved_logits(hidden, weight, max_saved_logits)


register_fake("golden::linear_logprob", lambda hidden, weight, target_ids, ignore_index: _rows_fp32(hidden))
register_fake("golden::linear_logprob_with_lse",
              lambda hidden, weight, target_ids, ignore_index: (_rows_fp32(hidden), _rows_fp32(hidden)))
register_fake("golden::linear_logprob_entropy",
              lambda hidden, weight, target_ids, ignore_index: (_rows_fp32(hidden), _rows_fp32(hidden)))


@golden_op("golden::linear_logprob_backward")
def linear_logprob_backward(grad_logprob: torch.Tensor, grad_entropy: Optional[torch.Tensor], hidden: torch.Tensor,
                            weight: torch.Tensor, target_ids: torch.Tensor, ignore_index: int,
                            lse: Optional[torch.Tensor] = None, logits: Optional[torch.Tensor] = None,
                            entropy_partial: Optional[torch.Tensor] = None,
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(dhidden, dweight) from the fused streaming backward: the logits are
    recomputed chunk by chunk (or read from the forward's `logits`), and the
    result is bitwise the unfused chain (token_logprob (+ entropy) backward,
    then lm_head backward in fp32, rounded once to the inputs' dtype).
    lse, logits, entropy_partial: the forward's, or None: recomputed."""
    return _linear_logprob.backward(_dense(grad_logprob), _dense(hidden), _dense(weight), _dense(target_ids),
                                    grad_entropy=None if grad_entropy is None else _dense(grad_entropy),
                                    ignore_index=ignore_index, lse=None if lse is None else _dense(lse),
                                    logits=None if logits is None else _dense(logits),
                                    entropy_partial=None if entropy_partial is None else _dense(entropy_partial))


@register_fake("golden::linear_logprob_backward")
def _(grad_logprob, grad_entropy, hidden, weight, target_ids, ignore_index, lse=None, logits=None,
      entropy_partial=None):
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


def _linear_logprob_with_lse_setup(ctx, inputs, output):
    hidden, weight, target_ids, ignore_index = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(hidden, weight, target_ids, output[1])
    ctx.ignore_index = ignore_index


def _linear_logprob_with_lse_grad(ctx, grad_logprob, _grad_lse):
    hidden, weight, target_ids, lse = ctx.saved_tensors
    dhidden, dweight = linear_logprob_backward(grad_logprob, None, hidden, weight, target_ids, ctx.ignore_index,
                                               lse)
    return dhidden, dweight, None, None


def _linear_logprob_with_logits_setup(ctx, inputs, output):
    hidden, weight, target_ids, ignore_index, _max_saved_logits = inputs
    _logprob, lse, logits = output
    ctx.mark_non_differentiable(lse, logits)
    ctx.save_for_backward(hidden, weight, target_ids, lse, logits)
    ctx.ignore_index = ignore_index


def _linear_logprob_with_logits_grad(ctx, grad_logprob, _grad_lse, _grad_logits):
    hidden, weight, target_ids, lse, logits = ctx.saved_tensors
    saved = logits if logits.numel() > 0 else None  # empty: not kept (or no rows), recomputed
    dhidden, dweight = linear_logprob_backward(grad_logprob, None, hidden, weight, target_ids, ctx.ignore_index,
                                               lse, saved)
    return dhidden, dweight, None, None, None


def _linear_logprob_entropy_with_logits_setup(ctx, inputs, output):
    hidden, weight, target_ids, ignore_index, _max_saved_logits = inputs
    _logprob, _entropy, partial, logits = output
    ctx.mark_non_differentiable(partial, logits)
    ctx.save_for_backward(hidden, weight, target_ids, partial, logits)
    ctx.ignore_index = ignore_index


def _linear_logprob_entropy_with_logits_grad(ctx, grad_logprob, grad_entropy, _grad_partial, _grad_logits):
    hidden, weight, target_ids, partial, logits = ctx.saved_tensors
    saved = logits if logits.numel() > 0 else None  # empty: not kept (or no rows), recomputed
    dhidden, dweight = linear_logprob_backward(grad_logprob, grad_entropy, hidden, weight, target_ids,
                                               ctx.ignore_index, None, saved, partial)
    return dhidden, dweight, None, None, None


register_autograd("golden::linear_logprob", _linear_logprob_grad, setup_context=_linear_logprob_setup)
register_autograd("golden::linear_logprob_entropy_with_logits", _linear_logprob_entropy_with_logits_grad,
                  setup_context=_linear_logprob_entropy_with_logits_setup)
register_autograd("golden::linear_logprob_with_logits", _linear_logprob_with_logits_grad,
                  setup_context=_linear_logprob_with_logits_setup)
register_autograd("golden::linear_logprob_with_lse", _linear_logprob_with_lse_grad,
                  setup_context=_linear_logprob_with_lse_setup)
register_autograd("golden::linear_logprob_entropy", _linear_logprob_grad, setup_context=_linear_logprob_setup)


# ---- attention ---------------------------------------------------------------------------

@golden_op("golden::attention")
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: Optional[float],
              key_padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """GQA softmax attention on [batch, heads, seq, head_dim]; strided views whose
    last dim is dense are accepted (the CPU forward may copy k and v head-major
    first, see ops/attention.py)."""
    return _attention.forward(q, k, v, causal=causal, scale=scale, key_padding_mask=key_padding_mask)


@register_fake("golden::attention")
def _(q, k, v, causal, scale, key_padding_mask):
    return q.new_empty(q.shape)


@golden_op("golden::attention_with_lse")
def attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: Optional[float],
                       key_padding_mask: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """attention and its float32 LSE [batch, heads, seq] (not differentiable).
    With a float32 output the backward reads both instead of recomputing the
    forward: the same bits, two fewer score-sized passes."""
    return _attention.forward(q, k, v, causal=causal, scale=scale, key_padding_mask=key_padding_mask,
                              return_lse=True)


@register_fake("golden::attention_with_lse")
def _(q, k, v, causal, scale, key_padding_mask):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


@golden_op("golden::attention_backward")
def attention_backward(grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                       scale: Optional[float], key_padding_mask: Optional[torch.Tensor],
                       saved_out: Optional[torch.Tensor] = None, saved_lse: Optional[torch.Tensor] = None,
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _attention.backward(_dense(grad), q, k, v, causal=causal, scale=scale,
                               key_padding_mask=key_padding_mask, saved_out=saved_out, saved_lse=saved_lse)


@register_fake("golden::attention_backward")
def _(grad, q, k, v, causal, scale, key_padding_mask, saved_out=None, saved_lse=None):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _kept_for_backward(out: torch.Tensor, lse: torch.Tensor) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """What the backward can take from the forward: its output and LSE when the
    output is float32 (a 16-bit output is rounded, so the backward recomputes)."""
    return (out, lse) if out.dtype == torch.float32 else (None, None)


def _attention_setup(ctx, inputs, output):
    q, k, v, causal, scale, key_padding_mask = inputs
    ctx.save_for_backward(q, k, v, key_padding_mask)
    ctx.causal, ctx.scale = causal, scale


def _attention_grad(ctx, grad):
    q, k, v, key_padding_mask = ctx.saved_tensors
    dq, dk, dv = attention_backward(grad, q, k, v, ctx.causal, ctx.scale, key_padding_mask)
    return dq, dk, dv, None, None, None


def _attention_with_lse_setup(ctx, inputs, output):
    q, k, v, causal, scale, key_padding_mask = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(q, k, v, key_padding_mask, *_kept_for_backward(*output))
    ctx.causal, ctx.scale = causal, scale


def _attention_with_lse_grad(ctx, grad, _grad_lse):
    q, k, v, key_padding_mask, saved_out, saved_lse = ctx.saved_tensors
    dq, dk, dv = attention_backward(grad, q, k, v, ctx.causal, ctx.scale, key_padding_mask, saved_out, saved_lse)
    return dq, dk, dv, None, None, None


register_autograd("golden::attention", _attention_grad, setup_context=_attention_setup)
register_autograd("golden::attention_with_lse", _attention_with_lse_grad, setup_context=_attention_with_lse_setup)


def _rounded_keeping_fp32(q: torch.Tensor, out32: torch.Tensor,
                          lse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out, out32, lse) for 16-bit q: out is out32 rounded once by the core's
    conversion, the very bits the forward writes for q's dtype."""
    if q.dtype == torch.float32:
        raise ValueError("keeping the float32 output is for 16-bit inputs: a float32 output is kept as it is")
    return _convert.cast(out32, _arrays.dtype_name(q)), out32, lse


@golden_op("golden::attention_keeping_fp32")
def attention_keeping_fp32(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                           scale: Optional[float], key_padding_mask: Optional[torch.Tensor],
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """attention on 16-bit inputs, its float32 output before rounding and its
    LSE (the last two not differentiable): the backward reads them instead of
    recomputing the forward, at the cost of keeping the float32 output."""
    out32, lse = _attention.forward_fp32(q, k, v, causal=causal, scale=scale, key_padding_mask=key_padding_mask,
                                         return_lse=True)
    return _rounded_keeping_fp32(q, out32, lse)


@register_fake("golden::attention_keeping_fp32")
def _(q, k, v, causal, scale, key_padding_mask):
    return (q.new_empty(q.shape), q.new_empty(q.shape, dtype=torch.float32),
            q.new_empty(q.shape[:3], dtype=torch.float32))


def _attention_keeping_fp32_setup(ctx, inputs, output):
    q, k, v, causal, scale, key_padding_mask = inputs
    _out, out32, lse = output
    ctx.mark_non_differentiable(out32, lse)
    ctx.save_for_backward(q, k, v, key_padding_mask, out32, lse)
    ctx.causal, ctx.scale = causal, scale


def _attention_keeping_fp32_grad(ctx, grad, _grad_out32, _grad_lse):
    # The saved tensors are attention_with_lse's (q, k, v, mask, out32, lse).
    return _attention_with_lse_grad(ctx, grad, None)


register_autograd("golden::attention_keeping_fp32", _attention_keeping_fp32_grad,
                  setup_context=_attention_keeping_fp32_setup)


@golden_op("golden::attention_varlen")
def attention_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                     cu_seqlens_k: torch.Tensor, causal: bool, scale: Optional[float]) -> torch.Tensor:
    """GQA softmax attention on packed [tokens, heads, head_dim] sequences."""
    return _attention.attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, causal=causal, scale=scale)


@register_fake("golden::attention_varlen")
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, causal, scale):
    return q.new_empty(q.shape)


@golden_op("golden::attention_varlen_with_lse")
def attention_varlen_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                              cu_seqlens_k: torch.Tensor, causal: bool,
                              scale: Optional[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """attention_varlen and its float32 LSE [heads, tokens] (see attention_with_lse)."""
    return _attention.attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, causal=causal, scale=scale,
                                       return_lse=True)


@register_fake("golden::attention_varlen_with_lse")
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, causal, scale):
    return q.new_empty(q.shape), q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)


@golden_op("golden::attention_varlen_backward")
def attention_varlen_backward(grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor, causal: bool,
                              scale: Optional[float], saved_out: Optional[torch.Tensor] = None,
                              saved_lse: Optional[torch.Tensor] = None,
                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _attention.attention_varlen_backward(_dense(grad), q, k, v, cu_seqlens_q, cu_seqlens_k,
                                                causal=causal, scale=scale, saved_out=saved_out,
                                                saved_lse=saved_lse)


@register_fake("golden::attention_varlen_backward")
def _(grad, q, k, v, cu_seqlens_q, cu_seqlens_k, causal, scale, saved_out=None, saved_lse=None):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _attention_varlen_setup(ctx, inputs, output):
    q, k, v, cu_seqlens_q, cu_seqlens_k, causal, scale = inputs
    ctx.save_for_backward(q, k, v, cu_seqlens_q, cu_seqlens_k)
    ctx.causal, ctx.scale = causal, scale


def _attention_varlen_grad(ctx, grad):
    q, k, v, cu_seqlens_q, cu_seqlens_k = ctx.saved_tensors
    dq, dk, dv = attention_varlen_backward(grad, q, k, v, cu_seqlens_q, cu_seqlens_k, ctx.causal, ctx.scale)
    return dq, dk, dv, None, None, None, None


def _attention_varlen_with_lse_setup(ctx, inputs, output):
    q, k, v, cu_seqlens_q, cu_seqlens_k, causal, scale = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(q, k, v, cu_seqlens_q, cu_seqlens_k, *_kept_for_backward(*output))
    ctx.causal, ctx.scale = causal, scale


def _attention_varlen_with_lse_grad(ctx, grad, _grad_lse):
    q, k, v, cu_seqlens_q, cu_seqlens_k, saved_out, saved_lse = ctx.saved_tensors
    dq, dk, dv = attention_varlen_backward(grad, q, k, v, cu_seqlens_q, cu_seqlens_k, ctx.causal, ctx.scale,
                                           saved_out, saved_lse)
    return dq, dk, dv, None, None, None, None


register_autograd("golden::attention_varlen", _attention_varlen_grad, setup_context=_attention_varlen_setup)
register_autograd("golden::attention_varlen_with_lse", _attention_varlen_with_lse_grad,
                  setup_context=_attention_varlen_with_lse_setup)


@golden_op("golden::attention_varlen_keeping_fp32")
def attention_varlen_keeping_fp32(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                                  cu_seqlens_k: torch.Tensor, causal: bool, scale: Optional[float],
                                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """attention_varlen on 16-bit inputs with its float32 output and LSE kept
    (see attention_keeping_fp32)."""
    out32, lse = _attention.attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, causal=causal, scale=scale,
                                             return_lse=True, fp32=True)
    return _rounded_keeping_fp32(q, out32, lse)


@register_fake("golden::attention_varlen_keeping_fp32")
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, causal, scale):
    return (q.new_empty(q.shape), q.new_empty(q.shape, dtype=torch.float32),
            q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32))


def _attention_varlen_keeping_fp32_setup(ctx, inputs, output):
    q, k, v, cu_seqlens_q, cu_seqlens_k, causal, scale = inputs
    _out, out32, lse = output
    ctx.mark_non_differentiable(out32, lse)
    ctx.save_for_backward(q, k, v, cu_seqlens_q, cu_seqlens_k, out32, lse)
    ctx.causal, ctx.scale = causal, scale


def _attention_varlen_keeping_fp32_grad(ctx, grad, _grad_out32, _grad_lse):
    # The saved tensors are attention_varlen_with_lse's (q, k, v, cu_q, cu_k, out32, lse).
    return _attention_varlen_with_lse_grad(ctx, grad, None)


register_autograd("golden::attention_varlen_keeping_fp32", _attention_varlen_keeping_fp32_grad,
                  setup_context=_attention_varlen_keeping_fp32_setup)
