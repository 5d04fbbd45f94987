"""The RL consistency check: sample continuations of ragged prompts with the
sampler path (left-padded prefill + KV-cache decode), then score the same
tokens with the trainer path in other batch compositions (packed, right
padding, other batch sizes, permuted) and compare the per-token fp32
log-probabilities. For the golden model the target is 0 difference, bitwise;
the Hugging Face eager model on the same weights is the contrast."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .qwen3 import Qwen3ForCausalLM, next_token_targets
from .sampling import Generation, left_pad

TINY = dict(vocab_size=2048, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32)


@dataclass
class Consistency:
    """One implementation and dtype: sampler vs trainer log-probabilities."""

    implementation: str
    dtype: str
    tokens: int
    max_abs_diff: float
    ratio_min: float
    ratio_max: float
    bitwise_equal: bool
    sample_tokens_per_s: float
    train_tokens_per_s: float
    compositions: list[str] = field(default_factory=list)
    diffs: list[float] = field(default_factory=list)  # train - sample, per scored token (first composition)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "diffs"}


def random_hf_qwen3(seed: int = 0, **overrides: Any):
    """A randomly initialised transformers Qwen3ForCausalLM (float32, eager attention, HF's own
    initialisation: normal(0, initializer_range = 0.02) unless overridden), built locally."""
    from transformers import Qwen3Config, Qwen3ForCausalLM as HFQwen3

    torch.manual_seed(seed)
    config = Qwen3Config(**{**TINY, **overrides})
    config._attn_implementation = "eager"
    return HFQwen3(config).eval()


def random_prompts(count: int, vocab_size: int, generator: torch.Generator, min_len: int = 3,
                   max_len: int = 17) -> list[list[int]]:
    lengths = torch.randint(min_len, max_len + 1, (count,), generator=generator)
    return [torch.randint(1, vocab_size, (int(n),), generator=generator).tolist() for n in lengths]


# ---- the trainer's compositions: each scores every sequence's completion ----

def _completion_slices(logprobs_row: torch.Tensor, prompt_len: int, completion_len: int) -> torch.Tensor:
    """Token t's log-probability sits at position t - 1 (next-token alignment)."""
    return logprobs_row[prompt_len - 1: prompt_len - 1 + completion_len]


@dataclass
class _Rollout:
    sequences: list[list[int]]  # prompt + completion
    prompt_lens: list[int]
    completion_lens: list[int]

    def completion(self, i: int, logprobs_from_sequence_start: torch.Tensor) -> torch.Tensor:
        return _completion_slices(logprobs_from_sequence_start, self.prompt_lens[i], self.completion_lens[i])


def _score_batch(model: Qwen3ForCausalLM, rollout: _Rollout, layout: str, order: list[int]) -> dict[int, torch.Tensor]:
    """One trainer batch of the sequences in `order`: packed, left- or right-padded."""
    rows = [rollout.sequences[i] for i in order]
    if layout == "packed":
        cu_seqlens = torch.tensor([0, *map(len, rows)]).cumsum(0).to(torch.int32)
        logprobs = model.next_token_logprobs(torch.tensor([t for r in rows for t in r]), cu_seqlens=cu_seqlens)
        return {i: rollout.completion(i, logprobs[int(cu_seqlens[b]):]) for b, i in enumerate(order)}
    input_ids, mask = left_pad(rows) if layout == "left" else _right_pad(rows)
    logprobs = model.next_token_logprobs(input_ids, mask)
    offsets = [input_ids.shape[1] - len(r) if layout == "left" else 0 for r in rows]
    return {i: rollout.completion(i, logprobs[b, offsets[b]:]) for b, i in enumerate(order)}


def _right_pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    input_ids = torch.zeros((len(rows), width), dtype=torch.int64)
    mask = torch.zeros((len(rows), width), dtype=torch.int64)
    for i, row in enumerate(rows):
        input_ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    return input_ids, mask


def golden_compositions(count: int, generator: torch.Generator) -> dict[str, list[tuple[str, list[int]]]]:
    """The trainer's compositions, each a list of (layout, sequence order) batches,
    all different from the sampler's one left-padded batch in prompt order."""
    perm = torch.randperm(count, generator=generator).tolist()
    split = max(1, count // 3)
    return {"packed (permuted)": [("packed", perm)],
            f"right-padded, batches of {split} and {count - split} (permuted)":
                [("right", perm[:split]), ("right", perm[split:])],
            "left-padded, batch size 1": [("left", [i]) for i in reversed(range(count))]}


# ---- the comparison ----

def _differences(train: dict[int, torch.Tensor], sample: list[torch.Tensor]) -> tuple[torch.Tensor, bool]:
    train_all = torch.cat([train[i] for i in range(len(sample))])
    sample_all = torch.cat(sample)
    bitwise = torch.equal(train_all.view(torch.int32), sample_all.view(torch.int32))
    return train_all.double() - sample_all.double(), bitwise


def _result(name: str, dtype: torch.dtype, diffs: list[torch.Tensor], bitwise: bool, tokens: int,
            sample_s: float, train_s: float, train_tokens: int, compositions: list[str]) -> Consistency:
    every = torch.cat(diffs)
    return Consistency(
        implementation=name, dtype=str(dtype).removeprefix("torch."), tokens=tokens,
        max_abs_diff=float(every.abs().max()), ratio_min=math.exp(float(every.min())),
        ratio_max=math.exp(float(every.max())), bitwise_equal=bitwise,
        sample_tokens_per_s=tokens / sample_s, train_tokens_per_s=train_tokens / train_s,
        compositions=compositions, diffs=diffs[0].tolist())


@dataclass
class Scored:
    """One trainer composition's log-probabilities against the sampler's."""

    composition: str
    diffs: torch.Tensor  # float64 train - sample, every completion token in prompt order
    bitwise_equal: bool
    seconds: float


@torch.no_grad()
def score_generation(model: Qwen3ForCausalLM, generation: Generation, *, seed: int = 0) -> list[Scored]:
    """Scores a generation's tokens with every golden trainer composition."""
    rollout = _Rollout(generation.sequences(), [len(p) for p in generation.prompts], generation.lengths.tolist())
    sample = generation.completion_logprobs()
    scored = []
    compositions = golden_compositions(len(rollout.sequences), torch.Generator().manual_seed(seed + 1))
    for name, batches in compositions.items():
        start = time.perf_counter()
        train = {}
        for layout, order in batches:
            train.update(_score_batch(model, rollout, layout, order))
        seconds = time.perf_counter() - start
        scored.append(Scored(name, *_differences(train, sample), seconds))
    return scored


@torch.no_grad()
def check_golden(model: Qwen3ForCausalLM, prompts: list[list[int]], max_new_tokens: int, *,
                 seed: int = 0) -> tuple[Consistency, Generation]:
    """Samples with the golden sampler (seeded), scores with every golden trainer composition."""
    start = time.perf_counter()
    generation = model.generate(prompts, max_new_tokens, do_sample=True,
                                generator=torch.Generator().manual_seed(seed))
    sample_s = time.perf_counter() - start
    scored = score_generation(model, generation, seed=seed)
    train_tokens = sum(map(len, generation.sequences())) * len(scored)
    result = _result("golden-kernels", model.dtype, [s.diffs for s in scored],
                     all(s.bitwise_equal for s in scored), int(generation.lengths.sum()), sample_s,
                     sum(s.seconds for s in scored), train_tokens, [s.composition for s in scored])
    return result, generation


@torch.no_grad()
def check_hf(hf_model: Any, prompts: list[list[int]], max_new_tokens: int, *, seed: int = 0) -> Consistency:
    """The contrast: HF's own generate (KV cache, left padding, same sampling) and
    its own right-padded, permuted training forward, on the same weights."""
    input_ids, mask = left_pad(prompts)
    torch.manual_seed(seed)
    start = time.perf_counter()
    out = hf_model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                            min_new_tokens=max_new_tokens, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                            output_logits=True, return_dict_in_generate=True, pad_token_id=0)
    sample_s = time.perf_counter() - start
    completions = out.sequences[:, input_ids.shape[1]:]
    step_logits = torch.stack(out.logits, dim=1).float()
    sample_all = torch.log_softmax(step_logits, dim=-1).gather(-1, completions[..., None])[..., 0]
    sample = [row for row in sample_all]
    sequences = [p + c.tolist() for p, c in zip(prompts, completions)]
    perm = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed + 1)).tolist()
    start = time.perf_counter()
    ids, right_mask = _right_pad([sequences[i] for i in perm])
    logits = hf_model(input_ids=ids, attention_mask=right_mask).logits.float()
    train_s = time.perf_counter() - start
    targets = next_token_targets(ids, right_mask)
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    train = {i: _completion_slices(logprobs[row], len(prompts[i]), max_new_tokens) for row, i in enumerate(perm)}
    diff, bitwise = _differences(train, sample)
    return _result("PyTorch / HF eager", hf_model.dtype, [diff], bitwise, completions.numel(), sample_s, train_s,
                   int(right_mask.sum()), ["right-padded (permuted)"])


@torch.no_grad()
def _warm_up(golden: Qwen3ForCausalLM, hf: Any, prompts: list[list[int]]) -> None:
    """One short untimed run of each, so tokens/s do not include first-call costs."""
    golden.generate(prompts, 2)
    input_ids, mask = left_pad(prompts)
    hf.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=2, do_sample=False, pad_token_id=0)
    hf(input_ids=input_ids, attention_mask=mask)


def run(*, dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16), prompts: int = 6,
        max_new_tokens: int = 12, seed: int = 0, **overrides: Any) -> list[Consistency]:
    """The full check: golden and HF eager, for each dtype, on one random Qwen3."""
    hf32 = random_hf_qwen3(seed, **overrides)
    batch = random_prompts(prompts, hf32.config.vocab_size, torch.Generator().manual_seed(seed))
    results = []
    for dtype in dtypes:
        hf = copy.deepcopy(hf32).to(dtype)
        golden = Qwen3ForCausalLM.from_hf(hf)
        _warm_up(golden, hf, batch)
        results.append(check_golden(golden, batch, max_new_tokens, seed=seed)[0])
        results.append(check_hf(hf, batch, max_new_tokens, seed=seed))
    return results
