"""golden_kernels.torch: the golden ops for PyTorch models.

- functional: differentiable functions (rms_norm, linear, attention, ...), each a
  torch.library custom op "golden::<name>" with a fake implementation and a
  registered golden backward, so autograd and torch.compile(fullgraph=True) work;
- modules: RMSNorm, Linear, LMHead, Embedding, SiLU, SwiGLUMLP with torch.nn /
  Hugging Face state_dict keys; swap_modules() puts them into an existing model.

See docs/torch.md.
"""

from .functional import (
    attention,
    attention_varlen,
    embedding,
    entropy,
    linear,
    linear_logprob,
    lm_head,
    log_softmax,
    rms_norm,
    rope,
    silu,
    swiglu,
    token_logprob,
)
from .modules import Embedding, Linear, LMHead, RMSNorm, SiLU, SwiGLUMLP
from .swap import swap_modules

CUSTOM_OPS = (
    "rms_norm", "embedding", "silu", "swiglu", "rope", "linear", "lm_head", "log_softmax", "token_logprob",
    "entropy", "linear_logprob", "linear_logprob_entropy", "linear_logprob_entropy_with_logits",
    "linear_logprob_with_lse", "linear_logprob_with_logits", "attention", "attention_varlen",
)

__all__ = [
    "CUSTOM_OPS",
    "Embedding",
    "LMHead",
    "Linear",
    "RMSNorm",
    "SiLU",
    "SwiGLUMLP",
    "attention",
    "attention_varlen",
    "embedding",
    "entropy",
    "linear",
    "linear_logprob",
    "lm_head",
    "log_softmax",
    "rms_norm",
    "rope",
    "silu",
    "swap_modules",
    "swiglu",
    "token_logprob",
]
