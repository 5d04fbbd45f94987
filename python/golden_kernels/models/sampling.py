"""The sampler: ragged prompts, left-padded, one prefill, then one token per row
per step against the KV cache. Tokens are chosen greedily (argmax of the fp32
logits, first index on ties) or sampled from the fp32 softmax with a
torch.Generator; the fp32 log-probability of each chosen token is recorded by
the golden token_logprob, the same kernels the trainer's forward uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

import golden_kernels as gk


@dataclass
class Generation:
    """tokens / logprobs [B, max_new_tokens]: each row's continuation and the
    fp32 log-probability the sampler gave each token; positions past a row's
    length (after its eos) hold pad_token_id and 0."""

    prompts: list[list[int]]
    tokens: torch.Tensor
    logprobs: torch.Tensor
    lengths: torch.Tensor

    def completions(self) -> list[list[int]]:
        return [row[:n].tolist() for row, n in zip(self.tokens, self.lengths.tolist())]

    def completion_logprobs(self) -> list[torch.Tensor]:
        return [row[:n] for row, n in zip(self.logprobs, self.lengths.tolist())]

    def sequences(self) -> list[list[int]]:
        """Prompt + completion of each row."""
        return [p + c for p, c in zip(self.prompts, self.completions())]


def _as_lists(prompts: Sequence[Any]) -> list[list[int]]:
    rows = [p.tolist() if isinstance(p, torch.Tensor) else list(p) for p in prompts]
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("prompts: expected a non-empty list of non-empty token-id sequences")
    return [[int(t) for t in r] for r in rows]


def left_pad(rows: list[list[int]], pad_token_id: int = 0, device: Any = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) [B, max_len] with each row right-aligned."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.int64, device=device)
    mask = torch.zeros((len(rows), width), dtype=torch.int64, device=device)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row):] = torch.tensor(row, dtype=torch.int64)
        mask[i, width - len(row):] = 1
    return input_ids, mask


def choose_tokens(logits32: torch.Tensor, do_sample: bool, generator: torch.Generator | None) -> torch.Tensor:
    if not do_sample:
        return logits32.argmax(dim=-1)
    probs = gk.get_op("log_softmax").forward_fp32(logits32).exp()
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def generate(model: Any, prompts: Sequence[Any], max_new_tokens: int, *, do_sample: bool = False,
             generator: torch.Generator | None = None, eos_token_id: int | None = None,
             pad_token_id: int = 0) -> Generation:
    """Continues each prompt (a list of token-id lists or 1-D tensors, any
    lengths) by up to max_new_tokens tokens. Rows stop after eos_token_id."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    rows = _as_lists(prompts)
    device = model.lm_head.weight.device
    input_ids, mask = left_pad(rows, pad_token_id, device)
    tokens = torch.full((len(rows), max_new_tokens), pad_token_id, dtype=torch.int64, device=device)
    logprobs = torch.zeros((len(rows), max_new_tokens), dtype=torch.float32, device=device)
    live = torch.ones(len(rows), dtype=torch.bool, device=device)
    lengths = torch.zeros(len(rows), dtype=torch.int64, device=device)
    state = model.prefill(input_ids, mask, max_new_tokens=max_new_tokens)
    for t in range(max_new_tokens):
        chosen = choose_tokens(state.logits32, do_sample, generator)
        tokens[:, t] = torch.where(live, chosen, tokens[:, t])
        logprobs[:, t] = torch.where(live, gk.token_logprob(state.logits32, chosen), logprobs[:, t])
        lengths += live.long()
        if eos_token_id is not None:
            live &= chosen != eos_token_id
        if t + 1 == max_new_tokens or not bool(live.any()):
            break
        model.step(state, chosen)
    return Generation(rows, tokens, logprobs, lengths)
