"""swap_modules: put the golden modules into an existing PyTorch model in place.
The new modules share the old ones' Parameter objects, so optimizers, tied
weights and state_dict keys are unchanged; only the arithmetic changes."""

from __future__ import annotations

from typing import Callable, Optional

from torch import nn

from .modules import Embedding, Linear, LMHead, RMSNorm, SiLU, SwiGLUMLP

SILU_CLASS_NAMES = ("SiLU", "SiLUActivation")  # torch.nn and Hugging Face (ACT2FN["silu"])


def _is_hf_rms_norm(module: nn.Module) -> bool:
    """Llama/Qwen-style RMSNorm: weight * x / sqrt(mean(x^2) + variance_epsilon)."""
    weight = getattr(module, "weight", None)
    return (type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon")
            and isinstance(weight, nn.Parameter) and weight.dim() == 1)


def _is_swiglu_mlp(module: nn.Module) -> bool:
    """Hugging Face's Llama/Qwen MLP: down_proj(act_fn(gate_proj(x)) * up_proj(x)) with silu."""
    projections = [getattr(module, name, None) for name in ("gate_proj", "up_proj", "down_proj")]
    return (all(isinstance(p, nn.Linear) and p.bias is None for p in projections)
            and type(getattr(module, "act_fn", None)).__name__ in SILU_CLASS_NAMES)


def _share(new: nn.Module, old: nn.Module, names: tuple[str, ...]) -> nn.Module:
    for name in names:
        setattr(new, name, getattr(old, name))
    return new.train(old.training)


def _linear(old: nn.Linear, rounding: str, kind: type = Linear) -> nn.Module:
    new = kind(old.in_features, old.out_features, bias=old.bias is not None, device="meta")
    return _share(new, old, ("weight", "bias"))


def _embedding(old: nn.Embedding, rounding: str) -> nn.Module:
    if old.max_norm is not None or old.scale_grad_by_freq or old.sparse:
        raise ValueError(f"cannot swap {old!r}: max_norm, scale_grad_by_freq and sparse are not supported")
    new = Embedding(old.num_embeddings, old.embedding_dim, old.padding_idx, device="meta")
    return _share(new, old, ("weight",))


def _torch_rms_norm(old: nn.RMSNorm, rounding: str) -> nn.Module:
    if old.weight is None or len(old.normalized_shape) != 1 or old.eps is None:
        raise ValueError(f"cannot swap {old!r}: needs elementwise_affine, one normalized dim and an explicit eps")
    return _share(RMSNorm(old.normalized_shape[0], old.eps, rounding=rounding, device="meta"), old, ("weight",))


def _hf_rms_norm(old: nn.Module, rounding: str) -> nn.Module:
    new = RMSNorm(old.weight.shape[0], old.variance_epsilon, rounding=rounding, device="meta")
    return _share(new, old, ("weight",))


def _swiglu_mlp(old: nn.Module, rounding: str) -> nn.Module:
    new = SwiGLUMLP(old.gate_proj.in_features, old.gate_proj.out_features, device="meta")
    for name in ("gate_proj", "up_proj", "down_proj"):
        _share(getattr(new, name), getattr(old, name), ("weight",))
    return new.train(old.training)


def _replacement(name: str, module: nn.Module) -> Optional[Callable[[nn.Module, str], nn.Module]]:
    if isinstance(module, (Linear, Embedding, RMSNorm, SiLU, SwiGLUMLP)):
        return None
    if _is_swiglu_mlp(module):
        return _swiglu_mlp
    if isinstance(module, nn.Linear):
        return (lambda old, rounding: _linear(old, rounding, LMHead)) if name == "lm_head" else _linear
    if isinstance(module, nn.Embedding):
        return _embedding
    if isinstance(module, nn.RMSNorm):
        return _torch_rms_norm
    if type(module).__name__ in SILU_CLASS_NAMES:
        return lambda old, rounding: SiLU()
    return _hf_rms_norm if _is_hf_rms_norm(module) else None


def swap_modules(model: nn.Module, *, rms_norm_rounding: str = "once") -> nn.Module:
    """Replaces, in place, every torch.nn.Linear, Embedding, RMSNorm and SiLU,
    every Llama/Qwen-style *RMSNorm (a `weight` and a `variance_epsilon`) and
    SwiGLU MLP (gate_proj, up_proj, down_proj, act_fn silu; fused swiglu) by its
    golden module (a Linear named lm_head becomes an LMHead), and returns the model. Raises ValueError for a module whose
    options the golden one cannot honour. rms_norm_rounding="hf" keeps HF's
    forward rounding of x * r before the weight multiply."""
    for name, child in list(model.named_children()):
        make = _replacement(name, child)
        if make is None:
            swap_modules(child, rms_norm_rounding=rms_norm_rounding)
        else:
            setattr(model, name, make(child, rms_norm_rounding))
    return model
