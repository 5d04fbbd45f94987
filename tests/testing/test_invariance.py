"""golden_kernels.testing as a library: each invariance check passes on golden
ops and raises on a function built to break exactly that invariance; the
raw-bit diff names the first differing element, its bits and ulp distance."""

from __future__ import annotations

import pytest
import torch

import golden_kernels as gk
from golden_kernels import testing as gt

STEP = 1e-3  # large enough to change the bits of values of order 1 in fp32


@pytest.fixture
def x(gen):
    return torch.randn(12, 64, generator=gen)


@pytest.fixture
def weight(gen):
    return torch.randn(32, 64, generator=gen) * 0.1


def batch_dependent(x):
    return x + x.shape[0] * STEP


def position_dependent(x):
    return x + torch.arange(x.shape[0], dtype=x.dtype)[:, None] * STEP


def neighbour_dependent(x):
    return x + x.mean(0) * STEP


# ---- T1-T3 -----------------------------------------------------------------------------

@pytest.mark.parametrize("check", (gt.check_batch_invariance, gt.check_position_invariance,
                                   gt.check_neighbour_invariance))
def test_row_checks_pass_on_golden_ops(check, x, weight, gen):
    norm_weight = torch.randn(64, generator=gen)
    check(lambda a: gk.rms_norm(a, norm_weight), x)
    check(gk.linear, x, weight)
    logits = torch.randn(12, 300, generator=gen)
    ids = torch.randint(0, 300, (12,), generator=gen)
    ids[3] = -100
    check(gk.token_logprob, logits, ids, batched=(0, 1))


@pytest.mark.parametrize("check, broken", (
    (gt.check_batch_invariance, batch_dependent),
    (gt.check_position_invariance, position_dependent),
    (gt.check_neighbour_invariance, neighbour_dependent),
))
def test_row_checks_raise_on_the_invariance_they_guard(check, broken, x):
    with pytest.raises(AssertionError, match="T[123]"):
        check(broken, x)


def test_row_checks_compare_every_output(x):
    with pytest.raises(AssertionError, match="output 1"):
        gt.check_batch_invariance(lambda a: (a * 2, batch_dependent(a)), x)


def test_row_checks_name_the_outputs_of_a_dict(x):
    with pytest.raises(AssertionError, match="T2 position in batch: batch reversed, shifted"):
        gt.check_position_invariance(lambda a: {"doubled": a * 2, "shifted": position_dependent(a)}, x)


def nan_neighbour_leaks(x):
    """Row-local unless some row holds a NaN: a fault generic fresh data misses."""
    return x + x.isnan().any() * STEP


def test_neighbour_check_uses_the_given_neighbours(x):
    gt.check_neighbour_invariance(nan_neighbour_leaks, x, row=2)  # fresh data holds no NaN
    nan_rows = torch.full_like(x, float("nan"))
    with pytest.raises(AssertionError, match="T3 neighbour content: row 2"):
        gt.check_neighbour_invariance(nan_neighbour_leaks, x, row=2, neighbours=(nan_rows,))
    gt.check_neighbour_invariance(lambda a: a * 2, x, row=2, neighbours=(nan_rows,))


def test_neighbour_check_fills_unnamed_arguments_and_checks_shapes(x, gen):
    ids = torch.randint(0, 5, (12,), generator=gen)
    gt.check_neighbour_invariance(lambda a, i: a * i[:, None], x, ids, batched=(0, 1), neighbours=(None, ids.flip(0)))
    with pytest.raises(ValueError, match="one entry per batched argument"):
        gt.check_neighbour_invariance(lambda a: a, x, neighbours=(x, x))
    with pytest.raises(ValueError, match="neighbours: expected shape"):
        gt.check_neighbour_invariance(lambda a: a, x, neighbours=(x[:5],))


def test_batched_arguments_must_share_their_rows(x):
    with pytest.raises(ValueError, match="share dim 0"):
        gt.check_batch_invariance(lambda a, b: a + b, x, x[:5], batched=(0, 1))


# ---- T4-T6 -----------------------------------------------------------------------------

def rope_inputs(gen, batch=3, seq=10):
    return torch.randn(batch, seq, 2, 16, generator=gen), torch.randint(0, 500, (batch, seq), generator=gen)


def test_padding_passes_on_golden_rope_and_raises_on_length_dependence(gen):
    x, positions = rope_inputs(gen)
    gt.check_padding_invariance(gk.rope, x, positions, padded=(0, 1))
    with pytest.raises(AssertionError, match="T4 padding"):
        gt.check_padding_invariance(lambda a, p: gk.rope(a, p) + a.shape[1] * STEP, x, positions, padded=(0, 1))


def test_padding_uses_the_integer_pad_value(gen):
    x, positions = rope_inputs(gen)

    def negative_position_leaks(a, p):
        return gk.rope(a, p.clamp(min=0)) + bool((p < 0).any()) * STEP

    gt.check_padding_invariance(negative_position_leaks, x, positions, padded=(0, 1))
    with pytest.raises(AssertionError, match="T4 padding"):
        gt.check_padding_invariance(negative_position_leaks, x, positions, padded=(0, 1), int_pad_value=-1)
    gt.check_padding_invariance(gk.rope, x, positions, padded=(0, 1), int_pad_value=-1)


def test_padding_passes_the_mask_and_pads_with_nan(gen):
    x = torch.randn(2, 6, 8, generator=gen)

    def masked_row_sums(a, attention_mask):
        assert attention_mask.shape == a.shape[:2]
        return torch.where(attention_mask[..., None].bool(), a, 0.0).sum(-1)

    gt.check_padding_invariance(masked_row_sums, x, mask_kwarg="attention_mask")
    def mask_ignoring_sequence_sums(a, attention_mask):
        return a.sum(dim=(1, 2))[:, None].expand(a.shape[:2])  # the NaN padding gets in

    with pytest.raises(AssertionError, match="T4 padding"):
        gt.check_padding_invariance(mask_ignoring_sequence_sums, x, mask_kwarg="attention_mask")


def test_chunking_passes_on_golden_rope_and_raises_on_sequence_statistics(gen):
    x, positions = rope_inputs(gen)
    gt.check_chunk_invariance(gk.rope, x, positions, chunked=(0, 1))
    with pytest.raises(AssertionError, match="T5 chunking"):
        gt.check_chunk_invariance(lambda a: a - a.mean(1, keepdim=True), x[..., 0, :])


def running_sum(chunk, state):
    """A decode-style stateful fn: the fp32 prefix sum over tokens, one token at a time."""
    outs = []
    for t in range(chunk.shape[1]):
        state = state + chunk[:, t]
        outs.append(state)
    return torch.stack(outs, dim=1), state


def test_stateful_chunking_carries_the_state(gen):
    x = torch.randn(2, 9, 4, generator=gen)
    gt.check_chunk_invariance(running_sum, x, init_state=lambda: torch.zeros(2, 4))

    def chunk_length_leaks(chunk, seen):
        return chunk + (seen + chunk.shape[1]) * STEP, seen + chunk.shape[1]

    with pytest.raises(AssertionError, match="T5 chunking"):
        gt.check_chunk_invariance(chunk_length_leaks, x, init_state=lambda: 0)


def test_packing_passes_on_golden_ops_and_raises_on_token_count(gen):
    weight = torch.randn(16, generator=gen)
    sequences = [(torch.randn(n, 2, 16, generator=gen), torch.arange(n)) for n in (5, 1, 9)]
    gt.check_packing_invariance(gk.rope, sequences)
    gt.check_packing_invariance(gk.rms_norm, [(s[0],) for s in sequences], shared=(weight,))
    with pytest.raises(AssertionError, match="T6 packing: sequence 0"):
        gt.check_packing_invariance(lambda a: batch_dependent(a), [(s[0],) for s in sequences])


def test_packing_passes_cu_seqlens(gen):
    seen = []

    def record(a, cu_seqlens):
        seen.append(cu_seqlens.tolist())
        return a * 2

    gt.check_packing_invariance(record, [(torch.ones(3, 2),), (torch.ones(4, 2),)], cu_seqlens_kwarg="cu_seqlens")
    assert seen == [[0, 3, 7], [0, 3], [0, 4]]


# ---- T7, T8 ----------------------------------------------------------------------------

def test_threads_pass_on_golden_linear_and_raise_on_thread_dependence(x, weight):
    before = (gk.num_threads(), torch.get_num_threads())
    gt.check_thread_invariance(gk.linear, x, weight, thread_counts=(1, 2))
    with pytest.raises(AssertionError, match="T7 threads"):
        gt.check_thread_invariance(lambda a: a + torch.get_num_threads() * STEP, x, thread_counts=(1, 2))
    assert (gk.num_threads(), torch.get_num_threads()) == before


def sharded_linear(x, weight, *, num_shards):
    bounds = gk.linear_shard_bounds(x.shape[-1], num_shards)
    partials = [gk.linear_partials(x[:, b:e].contiguous(), weight[:, b:e].contiguous(), shard=s,
                                   num_shards=num_shards, in_features=x.shape[-1])
                for s, (b, e) in enumerate(bounds)]
    return gk.merge_linear_partials(partials)


def test_sharding_passes_on_golden_linear_and_raises_on_shard_dependence(gen):
    x, weight = torch.randn(4, 4096, generator=gen), torch.randn(8, 4096, generator=gen)
    gt.check_sharding_invariance(gk.linear, sharded_linear, x, weight)
    with pytest.raises(AssertionError, match="T8 sharding: 2 shards"):
        gt.check_sharding_invariance(gk.linear, lambda *a, num_shards: sharded_linear(*a, num_shards=num_shards)
                                     + num_shards * STEP, x, weight)


def test_report_names_what_is_kept_and_what_is_broken(x):
    report = gt.invariance_report(batch_dependent, x)
    assert report["T1 batch size"].startswith("BROKEN: T1 batch size: row 0 alone vs in 12 rows")
    assert report["T2 position in batch"] == report["T3 neighbour content"] == report["T7 threads"] == "kept"
    assert set(gt.invariance_report(gk.silu, x).values()) == {"kept"}


# ---- the raw-bit diff ------------------------------------------------------------------

def test_diff_names_count_first_element_bits_and_ulps():
    expected = torch.tensor([1.0, 2.0, 3.0, 4.0])
    actual = expected.clone()
    actual[1] = torch.nextafter(torch.tensor(2.0), torch.tensor(3.0))
    actual[3] = 4.0 + 3 * 2.0 ** -21  # 3 ulp at 4
    with pytest.raises(AssertionError) as error:
        gt.assert_bitwise_equal(actual, expected, "demo")
    message = str(error.value)
    for part in ("demo: 2 of 4 elements differ", "max 3 ulp", "index (1,)", "0x40000001", "0x40000000",
                 "1 ulp apart"):
        assert part in message, message


def test_diff_separates_signed_zeros_and_nan_payloads():
    with pytest.raises(AssertionError, match=r"\+0 vs -0"):
        gt.assert_bitwise_equal(torch.tensor([0.0]), torch.tensor([-0.0]))
    quiet = torch.tensor([0x7FC00000], dtype=torch.int32).view(torch.float32)
    payload = torch.tensor([0x7FC00001], dtype=torch.int32).view(torch.float32)
    with pytest.raises(AssertionError, match="NaN"):
        gt.assert_bitwise_equal(payload, quiet)
    gt.assert_bitwise_equal(quiet.clone(), quiet)


def test_ulp_distance_counts_across_zero_and_in_bfloat16():
    tiny = torch.tensor([2.0 ** -149])
    assert int(gt.ulp_distance(tiny, -tiny)) == 2
    one = torch.tensor([1.0], dtype=torch.bfloat16)
    assert int(gt.ulp_distance(one, torch.tensor([1.0234375], dtype=torch.bfloat16))) == 3
