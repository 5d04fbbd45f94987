"""A Qwen3 decoder built only from golden ops, with Hugging Face's state_dict keys.

Per layer, in HF Qwen3's order: x += o_proj(attn(rope(q_norm(q_proj(rms(x)))),
rope(k_norm(k_proj(rms(x)))), v_proj(rms(x)))); x += down(swiglu(gate(rms(x)), up(rms(x)))).
Every op computes in fp32 and rounds once to the model dtype (csrc/core/);
the residual adds are torch additions in the model dtype, HF's rounding point
(a single correctly rounded add, the same bits on every device). Two entry
points share this code: forward() for the trainer (padded or packed full
sequences) and prefill()/step()/generate() for the sampler (KV cache)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .. import get_op
from ..ops.kv_cache import KVCache
from ..torch import functional as F
from .config import Qwen3Dims, qwen3_dims

IGNORE_INDEX = -100

# attend(layer_index, q, k, v) -> attention output; q/k/v and output in the
# token-major layout [..., heads, head_dim] of the hidden states.
Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class _Weight(nn.Module):
    """One HF-named `weight` (a norm's scale or an embedding table)."""

    def __init__(self, *shape: int, dtype: torch.dtype, device: Any, fill: float | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(shape, dtype=dtype, device=device))
        if fill is not None:
            nn.init.constant_(self.weight, fill)


class _Projection(nn.Module):
    """A bias-optional linear layer's parameters, HF layout [out_features, in_features]."""

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: torch.dtype, device: Any):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class _RMSNorm(_Weight):
    def __init__(self, size: int, eps: float, dtype: torch.dtype, device: Any):
        super().__init__(size, dtype=dtype, device=device, fill=1.0)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight, self.eps)


class Qwen3Attention(nn.Module):
    def __init__(self, dims: Qwen3Dims, dtype: torch.dtype, device: Any):
        super().__init__()
        self.dims = dims
        bias = dims.attention_bias
        self.q_proj = _Projection(dims.hidden_size, dims.q_size, bias, dtype, device)
        self.k_proj = _Projection(dims.hidden_size, dims.kv_size, bias, dtype, device)
        self.v_proj = _Projection(dims.hidden_size, dims.kv_size, bias, dtype, device)
        self.o_proj = _Projection(dims.q_size, dims.hidden_size, bias, dtype, device)
        self.q_norm = _RMSNorm(dims.head_dim, dims.rms_norm_eps, dtype, device)
        self.k_norm = _RMSNorm(dims.head_dim, dims.rms_norm_eps, dtype, device)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], -1, self.dims.head_dim)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, attend: Callable[..., torch.Tensor]) -> torch.Tensor:
        theta = self.dims.rope_theta
        q = F.rope(self.q_norm(self._heads(self.q_proj(x))), positions, theta)
        k = F.rope(self.k_norm(self._heads(self.k_proj(x))), positions, theta)
        v = self._heads(self.v_proj(x))
        out = attend(q, k, v)
        return self.o_proj(out.reshape(*x.shape[:-1], self.dims.q_size))


class Qwen3MLP(nn.Module):
    def __init__(self, dims: Qwen3Dims, dtype: torch.dtype, device: Any):
        super().__init__()
        self.gate_proj = _Projection(dims.hidden_size, dims.intermediate_size, False, dtype, device)
        self.up_proj = _Projection(dims.hidden_size, dims.intermediate_size, False, dtype, device)
        self.down_proj = _Projection(dims.intermediate_size, dims.hidden_size, False, dtype, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.swiglu(self.gate_proj(x), self.up_proj(x)))


class Qwen3DecoderLayer(nn.Module):
    def __init__(self, dims: Qwen3Dims, dtype: torch.dtype, device: Any):
        super().__init__()
        self.self_attn = Qwen3Attention(dims, dtype, device)
        self.mlp = Qwen3MLP(dims, dtype, device)
        self.input_layernorm = _RMSNorm(dims.hidden_size, dims.rms_norm_eps, dtype, device)
        self.post_attention_layernorm = _RMSNorm(dims.hidden_size, dims.rms_norm_eps, dtype, device)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, attend: Callable[..., torch.Tensor]) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), positions, attend)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen3Model(nn.Module):
    """The decoder body (HF's `model.` prefix): embed_tokens, layers, norm."""

    def __init__(self, dims: Qwen3Dims, dtype: torch.dtype, device: Any):
        super().__init__()
        self.embed_tokens = _Weight(dims.vocab_size, dims.hidden_size, dtype=dtype, device=device)
        self.layers = nn.ModuleList(Qwen3DecoderLayer(dims, dtype, device) for _ in range(dims.num_hidden_layers))
        self.norm = _RMSNorm(dims.hidden_size, dims.rms_norm_eps, dtype, device)

    def forward(self, token_ids: torch.Tensor, positions: torch.Tensor, attend: Attend) -> torch.Tensor:
        x = F.embedding(token_ids, self.embed_tokens.weight)
        for index, layer in enumerate(self.layers):
            x = layer(x, positions, lambda q, k, v, index=index: attend(index, q, k, v))
        return self.norm(x)


@dataclass
class DecodeState:
    """The sampler's state between steps: one golden KVCache per layer (left
    padding marked as such), each row's next position, and the fp32 logits
    [B, V] of each row's next token."""

    caches: list[KVCache]
    next_positions: torch.Tensor
    logits32: torch.Tensor


class Qwen3ForCausalLM(nn.Module):
    """Qwen3 causal LM on golden ops. Build it with `from_hf`, `from_state_dict`
    or `from_safetensors`; its state_dict keys are Hugging Face's. The
    constructor alone leaves the projection and embedding weights uninitialised.

    keep_fp32_attention_output (default False): when a gradient is wanted and
    the model is bf16/fp16, each layer's attention keeps its float32 output and
    LSE for the backward instead of recomputing its forward there
    (gk.torch.attention's keep_fp32_output): the same bits, a faster backward,
    a float32 copy of every layer's attention output held until the backward."""

    def __init__(self, config: Any, *, dtype: torch.dtype = torch.float32, device: Any = "cpu"):
        super().__init__()
        self.keep_fp32_attention_output = False
        self.dims = config if isinstance(config, Qwen3Dims) else qwen3_dims(config)
        self.model = Qwen3Model(self.dims, dtype, device)
        self.lm_head = _Weight(self.dims.vocab_size, self.dims.hidden_size, dtype=dtype, device=device)
        if self.dims.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @classmethod
    def from_hf(cls, hf_model: Any, *, dtype: torch.dtype | None = None) -> "Qwen3ForCausalLM":
        """From a transformers Qwen3ForCausalLM (its config and weights)."""
        from .loading import from_hf

        return from_hf(hf_model, dtype=dtype)

    @classmethod
    def from_state_dict(cls, config: Any, state_dict: Any, **options: Any) -> "Qwen3ForCausalLM":
        """From a Qwen3Config (or dict) and an HF-keyed state dict; options: dtype, device."""
        from .loading import from_state_dict

        return from_state_dict(config, state_dict, **options)

    @classmethod
    def from_safetensors(cls, path: Any, config: Any = None, **options: Any) -> "Qwen3ForCausalLM":
        """From a .safetensors file or an HF checkpoint directory; options: dtype, device."""
        from .loading import from_safetensors

        return from_safetensors(path, config, **options)

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    # ---- trainer: full sequences, padded or packed ----

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        """Final-norm hidden states of full sequences: [B, S, hidden] for a padded
        batch (attention_mask [B, S], 1 = real token, any padding side; None = no
        padding) or [T, hidden] for sequences packed end to end (input_ids [T],
        cu_seqlens [N + 1] int32 offsets)."""
        if cu_seqlens is not None:
            if attention_mask is not None:
                raise ValueError("pass attention_mask (padded batch) or cu_seqlens (packed), not both")
            return self._packed_hidden(input_ids, cu_seqlens)
        return self._padded_hidden(input_ids, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cu_seqlens: torch.Tensor | None = None, *, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits in the model dtype (HF's), or with `targets` (input_ids' shape,
        -100 = ignore) the fp32 log-probability of each target under each
        position's next-token distribution (0 where ignored)."""
        hidden = self.hidden_states(input_ids, attention_mask, cu_seqlens)
        if targets is None:
            return F.lm_head(hidden, self.lm_head.weight)
        if targets.shape != input_ids.shape:
            raise ValueError(f"targets: expected input_ids' shape {tuple(input_ids.shape)}, got {tuple(targets.shape)}")
        return F.linear_logprob(hidden, self.lm_head.weight, targets)

    def next_token_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                            cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        """out[..., t] = fp32 log p(token t+1 | tokens <= t) of the same sequence;
        0 at each sequence's last token and at padding."""
        targets = next_token_targets(input_ids, attention_mask, cu_seqlens)
        return self.forward(input_ids, attention_mask, cu_seqlens, targets=targets)

    def _keeps_fp32_attention_output(self) -> bool:
        # Without a gradient nothing is kept, and the plain forward is cheaper.
        return self.keep_fp32_attention_output and torch.is_grad_enabled()

    def _padded_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        _check_ids(input_ids, 2, "input_ids [batch, seq]")
        keep = _keep_mask(attention_mask, input_ids)
        positions = positions_from_mask(keep)
        token_ids = torch.where(keep, input_ids, torch.zeros_like(input_ids))  # padding may hold any id
        key_mask = None if attention_mask is None else keep

        keep_fp32 = self._keeps_fp32_attention_output()

        def attend(_: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            out = F.attention(_heads_first(q), _heads_first(k), _heads_first(v), key_padding_mask=key_mask,
                              keep_fp32_output=keep_fp32)
            return out.transpose(1, 2)

        return self.model(token_ids, positions, attend)

    def _packed_hidden(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
        _check_ids(input_ids, 1, "input_ids [tokens] (packed)")
        positions = positions_from_cu_seqlens(cu_seqlens, input_ids.shape[0])
        cu_seqlens = cu_seqlens.to(torch.int32)

        keep_fp32 = self._keeps_fp32_attention_output()

        def attend(_: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return F.attention_varlen(q, k, v, cu_seqlens, cu_seqlens, keep_fp32_output=keep_fp32)

        return self.model(input_ids, positions, attend)

    # ---- sampler: prefill then one token at a time against the KV cache ----

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                max_new_tokens: int) -> DecodeState:
        """Runs left-padded prompts [B, S] (attention_mask 1 = real token) and
        returns the state holding their caches (room for max_new_tokens more)
        and next-token fp32 logits."""
        _check_ids(input_ids, 2, "input_ids [batch, seq]")
        keep = _keep_mask(attention_mask, input_ids)
        if bool((~keep[:, -1]).any()):
            raise ValueError("prefill: prompts must be left-padded (every row's last position a real token)")
        batch, length = input_ids.shape
        caches = [KVCache(batch, self.dims.num_key_value_heads, self.dims.head_dim, length + max_new_tokens,
                          dtype=self.dtype, device=input_ids.device) for _ in self.model.layers]
        positions = positions_from_mask(keep)
        token_ids = torch.where(keep, input_ids, torch.zeros_like(input_ids))
        hidden = self.model(token_ids, positions, _cached_attend(caches, keep))
        return DecodeState(caches, positions[:, -1] + 1, self._next_logits32(hidden))

    @torch.no_grad()
    def step(self, state: DecodeState, tokens: torch.Tensor) -> DecodeState:
        """Appends one token per row ([B] int64) and updates the state in place
        (caches, positions, next-token fp32 logits). Returns the state."""
        if tokens.shape != state.next_positions.shape:
            raise ValueError(f"tokens: expected shape {tuple(state.next_positions.shape)}, got {tuple(tokens.shape)}")
        hidden = self.model(tokens[:, None], state.next_positions[:, None], _cached_attend(state.caches, None))
        state.next_positions = state.next_positions + 1
        state.logits32 = self._next_logits32(hidden)
        return state

    def _next_logits32(self, hidden: torch.Tensor) -> torch.Tensor:
        # lm_head in fp32, unrounded: what every sampled log-probability comes from.
        return get_op("lm_head").forward_fp32(hidden[:, -1].contiguous(), self.lm_head.weight)

    def generate(self, prompts: Any, max_new_tokens: int, **options: Any):
        """Samples continuations (see golden_kernels.models.sampling.generate)."""
        from .sampling import generate

        return generate(self, prompts, max_new_tokens, **options)


# ---- positions, masks and targets ----

def _check_ids(input_ids: torch.Tensor, ndim: int, what: str) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype != torch.int64:
        raise TypeError(f"input_ids: expected an int64 torch.Tensor {what}")
    if input_ids.dim() != ndim:
        raise ValueError(f"input_ids: expected {what}, got shape {tuple(input_ids.shape)}")


def _keep_mask(attention_mask: torch.Tensor | None, input_ids: torch.Tensor) -> torch.Tensor:
    if attention_mask is None:
        return torch.ones_like(input_ids, dtype=torch.bool)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask: expected input_ids' shape {tuple(input_ids.shape)}, "
                         f"got {tuple(attention_mask.shape)}")
    return padding_keep_mask(attention_mask)


@torch.library.custom_op("golden::padding_keep_mask", mutates_args=())
def padding_keep_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """attention_mask [B, S] as bool, after checking that each row's real tokens
    are one contiguous run. A custom op so that the check, which reads the data,
    runs (and raises) in eager calls and in compiled graphs alike while
    torch.compile(fullgraph=True) traces through it (its fake gives the shape)."""
    keep = attention_mask != 0  # a new tensor: a custom op's output may not alias its input
    starts = keep[:, 1:] & ~keep[:, :-1]
    runs = starts.sum(dim=1) + keep[:, 0].long()
    if bool((runs > 1).any()):
        raise ValueError("attention_mask: each row's real tokens must be one contiguous run "
                         "(left and/or right padding only)")
    return keep


@padding_keep_mask.register_fake
def _(attention_mask):
    return torch.empty_like(attention_mask, dtype=torch.bool)


def _heads_first(x: torch.Tensor) -> torch.Tensor:
    """[B, S, H, D] -> the attention op's [B, H, S, D], a view (no copy)."""
    return x.transpose(1, 2)


def _cached_attend(caches: list[KVCache], keep: torch.Tensor | None) -> Attend:
    """Appends each layer's new k/v to its cache, then attends over the cache."""
    def attend(index: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        caches[index].append(_heads_first(k), _heads_first(v), key_padding_mask=keep)
        return caches[index].attend(_heads_first(q)).transpose(1, 2)

    return attend


def positions_from_mask(keep: torch.Tensor) -> torch.Tensor:
    """Position ids [B, S]: 0 at each row's first real token, counting real
    tokens (left padding does not shift positions); padding gets 0 or its
    row's last position (ignored: padded keys are skipped)."""
    return (keep.long().cumsum(dim=1) - 1).clamp(min=0)


def positions_from_cu_seqlens(cu_seqlens: torch.Tensor, tokens: int) -> torch.Tensor:
    """Position ids [T] of packed sequences: t - start of t's sequence."""
    return packed_positions(cu_seqlens, tokens)


@torch.library.custom_op("golden::packed_positions", mutates_args=())
def packed_positions(cu_seqlens: torch.Tensor, tokens: int) -> torch.Tensor:
    """positions_from_cu_seqlens after checking the offsets. A custom op for the
    same reason as padding_keep_mask: the check and the per-sequence repeat
    read the data, and its fake gives the [tokens] shape to torch.compile."""
    cu = cu_seqlens.to(torch.int64)
    if cu.dim() != 1 or cu.numel() < 1 or int(cu[0]) != 0 or int(cu[-1]) != tokens or bool((cu[1:] < cu[:-1]).any()):
        raise ValueError(f"cu_seqlens: expected non-decreasing offsets from 0 to {tokens} (the token count), "
                         f"got {cu.tolist()}")
    lengths = cu[1:] - cu[:-1]
    starts = torch.repeat_interleave(cu[:-1], lengths)
    return torch.arange(tokens, dtype=torch.int64, device=cu.device) - starts


@packed_positions.register_fake
def _(cu_seqlens, tokens):
    return cu_seqlens.new_empty(tokens, dtype=torch.int64)


def next_token_targets(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
    """targets[..., t] = the next token of t's sequence, IGNORE_INDEX at each
    sequence's last token and at padding."""
    targets = torch.full_like(input_ids, IGNORE_INDEX)
    if cu_seqlens is not None:
        _check_ids(input_ids, 1, "input_ids [tokens] (packed)")
        positions_from_cu_seqlens(cu_seqlens, input_ids.shape[0])  # validates the offsets
        cu = cu_seqlens.to(torch.int64)
        has_next = torch.ones_like(input_ids, dtype=torch.bool)
        has_next[cu[1:][cu[1:] > cu[:-1]] - 1] = False  # the last token of each non-empty sequence
        targets[:-1] = torch.where(has_next[:-1], input_ids[1:], targets[:-1])
        return targets
    _check_ids(input_ids, 2, "input_ids [batch, seq]")
    keep = _keep_mask(attention_mask, input_ids)
    has_next = keep[:, :-1] & keep[:, 1:]
    targets[:, :-1] = torch.where(has_next, input_ids[:, 1:], targets[:, :-1])
    return targets
