"""A key/value cache for sampling with golden attention: prefill, then decode
token by token, with results bitwise equal to one full-sequence attention.
Torch tensors only. The numerics are those of ops/attention.py."""

from __future__ import annotations

from typing import Any

from .. import _arrays
from . import attention as _attention


class KVCache:
    """Keys and values of a batch of sequences, appended step by step.

    Usage (per layer)::

        cache = KVCache(batch, num_kv_heads, head_dim, max_len, dtype=torch.bfloat16)
        cache.append(k, v, key_padding_mask=prompt_mask)  # prefill: k, v [B, Hkv, T, D]
        out = cache.attend(q)                              # q [B, Hq, T, D]: the same T tokens
        for step in ...:
            cache.append(k_new, v_new)                     # [B, Hkv, 1, D]
            out = cache.attend(q_new)                      # [B, Hq, 1, D]

    append() stores T new tokens after the ones already held; its
    key_padding_mask ([B, T] bool, True = real token) marks padding, e.g. the
    left padding of ragged prompts (default: all real). attend(q) runs causal
    attention of the last q.shape[2] appended tokens' queries over every
    cached token, skipping padding, so each real query row has the bits of
    golden_kernels.attention over the unpadded sequence, however the tokens
    were split into append() calls. Padding rows return 0.
    """

    def __init__(self, batch: int, num_kv_heads: int, head_dim: int, max_len: int, dtype: Any = None,
                 device: Any = None):
        import torch

        dtype = torch.float32 if dtype is None else dtype
        shape = (batch, num_kv_heads, max_len, head_dim)
        self.k = _arrays.torch_zeros(shape, dtype, device)
        self.v = _arrays.torch_zeros(shape, dtype, device)
        self.keep = torch.zeros((batch, max_len), dtype=torch.bool, device=device)
        # Valid key positions of each sequence, ascending, first `count` entries.
        self.key_index = torch.zeros((batch, max_len), dtype=torch.int32, device=device)
        self.key_count = torch.zeros((batch,), dtype=torch.int32, device=device)
        self.length = 0
        self.max_len = max_len

    def reset(self) -> None:
        """Forget every token (the storage is kept)."""
        self.keep.zero_()
        self.key_count.zero_()
        self.length = 0

    def append(self, k: Any, v: Any, key_padding_mask: Any = None) -> None:
        """Store k, v [B, Hkv, T, D] as the next T tokens."""
        import torch

        batch, heads, steps, dim = self.k.shape[0], self.k.shape[1], k.shape[2], self.k.shape[3]
        if tuple(k.shape) != (batch, heads, steps, dim) or tuple(v.shape) != tuple(k.shape):
            raise ValueError(f"k, v: expected [{batch}, {heads}, T, {dim}], got {tuple(k.shape)}, {tuple(v.shape)}")
        if k.dtype != self.k.dtype or v.dtype != self.k.dtype:
            raise TypeError(f"k, v: expected {self.k.dtype}, got {k.dtype}, {v.dtype}")
        if self.length + steps > self.max_len:
            raise ValueError(f"KVCache full: {self.length} + {steps} tokens > max_len {self.max_len}")
        if key_padding_mask is None:
            key_padding_mask = torch.ones((batch, steps), dtype=torch.bool, device=self.k.device)
        elif key_padding_mask.dtype != torch.bool or tuple(key_padding_mask.shape) != (batch, steps):
            raise ValueError(f"key_padding_mask: expected bool [{batch}, {steps}], got "
                             f"{key_padding_mask.dtype} {tuple(key_padding_mask.shape)}")
        new = slice(self.length, self.length + steps)
        self.k[:, :, new] = k
        self.v[:, :, new] = v
        self.keep[:, new] = key_padding_mask
        self._append_key_positions(key_padding_mask)
        self.length += steps

    def _append_key_positions(self, mask: Any) -> None:
        """Each sequence's kept tokens go to its next ranks of key_index, in
        token order, with no host round trip (on a GPU, nothing waits)."""
        import torch

        counts = self.key_count.to(torch.int64)[:, None]
        kept = mask.to(torch.int64)
        ranks = counts + kept.cumsum(1) - 1
        positions = torch.arange(self.length, self.length + mask.shape[1], dtype=torch.int32, device=mask.device)
        # A dropped token writes -1 to the rank after the sequence's kept ones,
        # which no reader looks at (and which exists: that token is not kept).
        spare = counts + kept.sum(1, keepdim=True)
        self.key_index.scatter_(1, torch.where(mask, ranks, spare),
                                torch.where(mask, positions.expand(mask.shape), torch.full_like(positions, -1)))
        self.key_count += kept.sum(1).to(torch.int32)

    def attend(self, q: Any, *, scale: float | None = None, return_lse: bool = False,
               backend: str | None = None, fp32: bool = False) -> Any:
        """Causal attention of q [B, Hq, T, D] (the last T appended tokens) over the cache."""
        if q.shape[2] > self.length:
            raise ValueError(f"q has {q.shape[2]} tokens but the cache holds only {self.length}")
        held = slice(0, self.length)
        lists = (self.keep[:, held], self.key_index[:, held], self.key_count)
        return _attention._padded_forward(q, self.k[:, :, held], self.v[:, :, held], True, scale, None,
                                          return_lse, backend, fp32, lists=lists)

