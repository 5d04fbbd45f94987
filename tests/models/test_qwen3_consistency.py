"""The RL property end to end: the sampler's fp32 log-probabilities (left-padded
prefill + KV-cache decode) equal the trainer's (full sequences, packed or
padded on either side, any batch size and order) bit for bit, in float32 and
bfloat16; and the trainer's outputs are batch invariant (T1-T4, T6)."""

from __future__ import annotations

import copy

import pytest
import torch

from golden_kernels.models import next_token_targets, positions_from_cu_seqlens, positions_from_mask
from golden_kernels.models.consistency import check_golden, score_generation
from golden_kernels.testing import assert_bitwise_equal, bits

from .conftest import pad, ragged_ids

LENGTHS = (5, 11, 2, 8, 13)


def test_sampler_equals_trainer_bitwise(pair, gen, threads):
    """Sampled on 1 thread, scored on 2 (T7 on top of T1-T6)."""
    _, golden = pair
    prompts = ragged_ids(LENGTHS, golden.dims.vocab_size, gen)
    threads(1)
    generation = golden.generate(prompts, 6, do_sample=True, generator=torch.Generator().manual_seed(7))
    assert generation.tokens.shape == (len(prompts), 6)
    threads(2)
    scored = score_generation(golden, generation)
    assert len(scored) == 3
    for s in scored:
        assert s.bitwise_equal and s.diffs.abs().max() == 0, s.composition


def test_check_golden_reports_zero_mismatch(pair, gen):
    _, golden = pair
    result, _ = check_golden(golden, ragged_ids((3, 6), golden.dims.vocab_size, gen), max_new_tokens=3)
    assert result.bitwise_equal, result.summary()
    assert (result.max_abs_diff, result.ratio_min, result.ratio_max, result.tokens) == (0.0, 1.0, 1.0, 6)


def test_the_check_sees_a_one_ulp_weight_change(pair, gen):
    """The comparison can fail: scoring with one weight nudged by an ulp is caught."""
    _, golden = pair
    generation = golden.generate(ragged_ids((4, 9), golden.dims.vocab_size, gen), 4)
    nudged = copy.deepcopy(golden)
    with torch.no_grad():
        weight = nudged.model.layers[0].mlp.down_proj.weight
        raw = bits(weight)
        raw.add_(torch.ones_like(raw))  # the next representable magnitude, in place through the view
    assert not all(s.bitwise_equal for s in score_generation(nudged, generation))


def test_trainer_padding_packing_and_batch_invariance(pair, gen):
    """Each sequence's fp32 log-probabilities are the same bits alone, inside a
    left- or right-padded batch in any order, and packed end to end."""
    _, golden = pair
    rows = ragged_ids(LENGTHS, golden.dims.vocab_size, gen)
    with torch.no_grad():
        alone = [golden.next_token_logprobs(torch.tensor([r]))[0] for r in rows]
        for side in ("left", "right"):
            ids, mask = pad(rows[::-1], side)
            batch = golden.next_token_logprobs(ids, mask)
            for i, row in enumerate(rows[::-1]):
                span = slice(ids.shape[1] - len(row), None) if side == "left" else slice(0, len(row))
                assert_bitwise_equal(batch[i, span], alone[len(rows) - 1 - i], f"{side} padding, row {i}")
        flat = torch.tensor([t for r in rows for t in r])
        cu = torch.tensor([0, *torch.tensor(LENGTHS).cumsum(0).tolist()], dtype=torch.int32)
        packed = golden.next_token_logprobs(flat, cu_seqlens=cu)
        assert_bitwise_equal(packed, torch.cat(alone), "packed")


def test_logits_are_batch_invariant_with_other_neighbours(pair, gen):
    _, golden = pair
    vocab = golden.dims.vocab_size
    ids = torch.randint(0, vocab, (4, 10), generator=gen)
    other = torch.randint(0, vocab, (4, 10), generator=gen)
    with torch.no_grad():
        whole = golden(ids)
        assert_bitwise_equal(golden(ids[2:3])[0], whole[2], "T1")
        assert_bitwise_equal(golden(torch.cat([other[:2], ids[2:3], other[2:]]))[2], whole[2], "T2/T3")


def test_greedy_and_seeded_sampling(pair, gen):
    _, golden = pair
    prompts = ragged_ids((3, 7, 1), golden.dims.vocab_size, gen)
    greedy = golden.generate(prompts, 5)
    with torch.no_grad():
        ids, mask = pad(greedy.sequences(), "left")
        logits = golden(ids, mask).float()
    for i, row in enumerate(greedy.sequences()):
        start = ids.shape[1] - len(row)
        chosen = logits[i, start + len(prompts[i]) - 1: -1].argmax(dim=-1)
        assert chosen.tolist() == greedy.completions()[i]

    def sample(seed):
        return golden.generate(prompts, 5, do_sample=True, generator=torch.Generator().manual_seed(seed))

    first, again, other = sample(1), sample(1), sample(2)
    assert_bitwise_equal(again.tokens, first.tokens, "same seed, same tokens")
    assert_bitwise_equal(again.logprobs, first.logprobs, "same seed, same logprobs")
    assert not torch.equal(other.tokens, first.tokens)
    assert bool((first.logprobs < 0).all())


def test_eos_ends_a_row(pair, gen):
    _, golden = pair
    prompts = ragged_ids((4, 6), golden.dims.vocab_size, gen)
    greedy = golden.generate(prompts, 4)
    eos = greedy.tokens[0, 1].item()
    stopped = golden.generate(prompts, 4, eos_token_id=eos, pad_token_id=-1)
    assert stopped.completions()[0] == greedy.completions()[0][:2]
    n = int(stopped.lengths[0])
    assert stopped.tokens[0, n:].tolist() == [-1] * (4 - n)
    assert stopped.logprobs[0, n:].tolist() == [0.0] * (4 - n)
    assert_bitwise_equal(stopped.logprobs[0, :n], greedy.logprobs[0, :n], "logprobs before eos")


def test_positions_and_targets():
    keep = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    assert positions_from_mask(keep)[0, 2:].tolist() == [0, 1, 2]
    assert positions_from_mask(keep)[1, :3].tolist() == [0, 1, 2]
    ids = torch.tensor([[9, 9, 4, 5, 6], [7, 8, 3, 9, 9]])
    assert next_token_targets(ids, keep.long()).tolist() == [[-100, -100, 5, 6, -100], [8, 3, -100, -100, -100]]
    cu = torch.tensor([0, 2, 2, 5], dtype=torch.int32)
    assert positions_from_cu_seqlens(cu, 5).tolist() == [0, 1, 0, 1, 2]
    assert next_token_targets(torch.tensor([1, 2, 3, 4, 5]), cu_seqlens=cu).tolist() == [2, -100, 4, 5, -100]


@pytest.mark.parametrize("call, error, message", [
    (lambda m: m(torch.zeros(2, 3, dtype=torch.int32)), TypeError, "int64"),
    (lambda m: m(torch.zeros(6, dtype=torch.int64)), ValueError, r"\[batch, seq\]"),
    (lambda m: m(torch.zeros(1, 4, dtype=torch.int64), torch.tensor([[1, 0, 1, 1]])), ValueError, "contiguous run"),
    (lambda m: m(torch.zeros(1, 4, dtype=torch.int64), torch.ones(1, 5)), ValueError, "attention_mask"),
    (lambda m: m(torch.zeros(4, dtype=torch.int64), cu_seqlens=torch.tensor([0, 3], dtype=torch.int32)),
     ValueError, "cu_seqlens"),
    (lambda m: m(torch.zeros(4, dtype=torch.int64), cu_seqlens=torch.tensor([0, 3, 2, 4], dtype=torch.int32)),
     ValueError, "cu_seqlens"),
    (lambda m: m(torch.zeros(1, 4, dtype=torch.int64), torch.ones(1, 4), torch.tensor([0, 4])), ValueError, "not both"),
    (lambda m: m(torch.full((1, 4), 10**6, dtype=torch.int64)), ValueError, "token"),
    (lambda m: m(torch.zeros(1, 4, dtype=torch.int64), targets=torch.zeros(1, 3, dtype=torch.int64)),
     ValueError, "targets"),
    (lambda m: m.prefill(torch.zeros(2, 4, dtype=torch.int64), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]),
                       max_new_tokens=1),
     ValueError, "left-padded"),
    (lambda m: m.generate([[1, 2], []], 3), ValueError, "non-empty"),
    (lambda m: m.generate([[1, 2]], 0), ValueError, "max_new_tokens"),
])
def test_bad_input_is_refused(pair, call, error, message):
    with torch.no_grad(), pytest.raises(error, match=message):
        call(pair[1])
