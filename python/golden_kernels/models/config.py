"""The Qwen3 dimensions the golden decoder needs, read from a Hugging Face
Qwen3Config (transformers 4.x or 5.x) or a plain dict of its fields. Features
the decoder does not implement (sliding window, scaled RoPE, other
activations) are refused here, naming the field, instead of computed wrongly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class Qwen3Dims:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    attention_bias: bool

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim


def _fields(config: Any) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):
        return config.to_dict()
    raise TypeError(f"config: expected a transformers Qwen3Config or a dict, got {type(config).__name__}")


def _rope_theta(fields: dict[str, Any]) -> float:
    """transformers 5 keeps theta in rope_parameters; 4.x in rope_theta (+ rope_scaling)."""
    parameters = fields.get("rope_parameters") or fields.get("rope_scaling") or {}
    rope_type = parameters.get("rope_type", parameters.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"config: rope_type {rope_type!r} is not supported (only 'default' RoPE)")
    theta = parameters.get("rope_theta", fields.get("rope_theta"))
    if theta is None:
        raise ValueError("config: no rope_theta (in rope_parameters or rope_theta)")
    return float(theta)


def _check_supported(fields: dict[str, Any]) -> None:
    act = fields.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"config: hidden_act {act!r} is not supported (Qwen3 uses 'silu')")
    layer_types = fields.get("layer_types") or []
    if fields.get("use_sliding_window") or any(t != "full_attention" for t in layer_types):
        raise ValueError("config: sliding-window attention (use_sliding_window / layer_types) is not supported")
    if fields.get("attention_dropout", 0.0):
        raise ValueError("config: attention_dropout must be 0 (the decoder is deterministic)")


def qwen3_dims(config: Any) -> Qwen3Dims:
    """Qwen3Dims from a transformers Qwen3Config or a dict of its fields."""
    fields = _fields(config)
    _check_supported(fields)
    required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    missing = [name for name in required if fields.get(name) is None]
    if missing:
        raise ValueError(f"config: missing fields {missing}")
    heads = int(fields["num_attention_heads"])
    kv_heads = int(fields.get("num_key_value_heads") or heads)
    if heads % kv_heads:
        raise ValueError(f"config: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    head_dim = int(fields.get("head_dim") or int(fields["hidden_size"]) // heads)
    return Qwen3Dims(
        vocab_size=int(fields["vocab_size"]),
        hidden_size=int(fields["hidden_size"]),
        intermediate_size=int(fields["intermediate_size"]),
        num_hidden_layers=int(fields["num_hidden_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=float(fields.get("rms_norm_eps", 1e-6)),
        rope_theta=_rope_theta(fields),
        tie_word_embeddings=bool(fields.get("tie_word_embeddings", False)),
        attention_bias=bool(fields.get("attention_bias", False)),
    )
