"""swap_modules: put the golden modules into an existing PyTorch model in place.
The new modules share the old ones' Parameter objects, so optimizers, tied
weights and state_dict keys are unchanged; only the arithmetic changes."""

from __future__ import annotations

from typing import Callable, Optional

from torch import nn

from .modules import Embedding, Linear, RMSNorm, SiLU


def _is_hf_rms_norm(module: nn.Module) -> bool:
    """Llama/Qwen-style RMSNorm: weight * x / sqrt(mean(x^2) + variance_epsilon)."""
    weight = getattr(module, "weight", None)
    return (type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon")
            and isinstance(weight, nn.Parameter) and weight.dim() == 1)


def _share(new: nn.Module, old: nn.Module, names: tuple[str, ...]) -> nn.Module:
    for name in names:
        setattr(new, name, getattr(old, name))
    return new.train(old.training)


def _linear(old: nn.Linear, rounding: str) -> nn.Module:
    new = Linear(old.in_features, old.out_features, bias=old.bias is not None, device="meta")
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


def _replacement(module: nn.Module) -> Optional[Callable[[nn.Module, str], nn.Module]]:
    if isinstance(module, (Linear, Embedding, RMSNorm, SiLU)):
        return None
    if isinstance(module, nn.Linear):
        return _linear
    if isinstance(module, nn.Embedding):
        return _embedding
    if isinstance(module, nn.RMSNorm):
        return _torch_rms_norm
    if isinstance(module, nn.SiLU):
        return lambda old, rounding: SiLU()
    return _hf_rms_norm if _is_hf_rms_norm(module) else None


def swap_modules(model: nn.Module, *, rms_norm_rounding: str = "once") -> nn.Module:
    """Replaces, in place, every torch.nn.Linear, Embedding, RMSNorm and SiLU, and
    every Llama/Qwen-style *RMSNorm (a `weight` and a `variance_epsilon`), by its
    golden module, and returns the model. Raises ValueError for a module whose
    options the golden one cannot honour. rms_norm_rounding="hf" keeps HF's
    forward rounding of x * r before the weight multiply."""
    for name, child in list(model.named_children()):
        make = _replacement(child)
        if make is None:
            swap_modules(child, rms_norm_rounding=rms_norm_rounding)
        else:
            setattr(model, name, make(child, rms_norm_rounding))
    return model
