"""log_softmax, token_logprob and entropy against the contract: Axis-C every
CPU path equal to the scalar reference on raw bits, Axis-A invariance (T1-T4,
T7 and in-process T8 through golden_kernels.testing), Axis-B accuracy against
float64 PyTorch with a rigorous bound and the peer floor, the non-finite
policy, ignore_index, bad input, no mutation."""

from __future__ import annotations

import math

import pytest
import torch

import golden_kernels as gk
from golden_kernels.testing import assert_bitwise_equal, assert_peer_floor, assert_within, gamma, ulp, unit_roundoff
from golden_kernels.testing import (
    check_batch_invariance,
    check_neighbour_invariance,
    check_padding_invariance,
    check_position_invariance,
    check_sharding_invariance,
    check_thread_invariance,
)
from golden_kernels.testing.bounds import smallest_subnormal

from .. import reference
from ..conftest import FLOAT_DTYPES, dtype_id

CHUNK = 4096  # csrc/core/reduce.h kRowBlock: the vocabulary chunk
LANES = 32
QWEN3_VOCAB = 151936
# Odd sizes around the lane width and the chunk size, and several chunks.
VOCABS = (1, 7, 31, 33, 4096, 4097, 10000, 3 * 4096 + 5)
NAN_BITS = 0x7FC00000


def random_logits(rows, vocab, dtype, gen, scale=3.0):
    return (torch.randn(rows, vocab, generator=gen) * scale).to(dtype)


def random_targets(rows, vocab, gen, ignore_every=0):
    ids = torch.randint(0, vocab, (rows,), generator=gen)
    if ignore_every:
        ids[::ignore_every] = -100
    return ids


def grads_per_row(rows, gen):
    return torch.randn(rows, generator=gen)


def all_outputs(backend, logits, ids, g_rows, g_full):
    """Every forward and backward result of the three ops, by name."""
    lsm, tok, ent = (gk.get_op(name, backend) for name in ("log_softmax", "token_logprob", "entropy"))
    return {
        "log_softmax": lsm.forward(logits),
        "log_softmax fp32": lsm.forward_fp32(logits),
        "log_softmax backward": lsm.backward(g_full, logits),
        "token_logprob": tok.forward(logits, ids),
        "token_logprob backward": tok.backward(g_rows, logits, ids),
        "token_logprob backward fp32": tok.backward(g_rows, logits, ids, fp32=True),
        "entropy": ent.forward(logits),
        "entropy backward": ent.backward(g_rows, logits),
    }


# ---- Axis-C: every CPU path gives the reference's bits ---------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("vocab", VOCABS)
def test_cpu_paths_equal_reference(cpu_isa, threads, dtype, vocab, gen):
    rows = 9
    logits = random_logits(rows, vocab, dtype, gen)
    logits[1, :: 3] = float("-inf")  # masked entries
    ids = random_targets(rows, vocab, gen, ignore_every=4)
    g_rows, g_full = grads_per_row(rows, gen), random_logits(rows, vocab, dtype, gen, 1.0)
    threads(2)
    fast = all_outputs("cpu", logits, ids, g_rows, g_full)
    ref = all_outputs("reference", logits, ids, g_rows, g_full)
    for name in ref:
        assert_bitwise_equal(fast[name], ref[name], name)


def test_cpu_equals_reference_at_qwen3_vocab(gen):
    logits = random_logits(3, QWEN3_VOCAB, torch.bfloat16, gen)
    ids = random_targets(3, QWEN3_VOCAB, gen)
    g_rows, g_full = grads_per_row(3, gen), random_logits(3, QWEN3_VOCAB, torch.bfloat16, gen, 1.0)
    fast = all_outputs("cpu", logits, ids, g_rows, g_full)
    ref = all_outputs("reference", logits, ids, g_rows, g_full)
    for name in ref:
        assert_bitwise_equal(fast[name], ref[name], name)


# ---- Axis-A: a row's bits do not depend on its batch ----------------------------------

def every_output(backend):
    """fn(logits, ids, g_rows, g_full) -> all_outputs by name; every output is
    row-local, so the invariance checks compare them as they are."""
    return lambda *args: all_outputs(backend, *args)


def logits_with_specials(dtype, gen):
    """7 rows of 16-bit logits, 3 chunks + 5 wide (several output pieces and a
    tail), with a NaN, an inf, a -inf and the dtype's largest values, and
    their targets: one ignored, one just inside the second output piece
    (rows.h kNarrowPiece)."""
    vocab = 3 * CHUNK + 5
    logits = (torch.randn(7, vocab, generator=gen) * 4).to(dtype)
    logits[2, 100] = float("nan")
    logits[3, 7] = float("inf")
    logits[4, ::5] = float("-inf")
    logits[5, :] = torch.finfo(dtype).max
    targets = torch.randint(0, vocab, (7,), generator=gen)
    targets[0] = 513
    targets[1] = -100
    return logits, targets


def rounded_as_torch(result32, dtype):
    """torch's own cast of an fp32 result, NaNs as the canonical 16-bit NaN
    (torch's vector cast to bf16 makes 0xFFFF of any NaN)."""
    canonical = torch.tensor([0x7FC0 if dtype == torch.bfloat16 else 0x7E00], dtype=torch.int16).view(dtype)
    rounded = result32.to(dtype)
    return torch.where(rounded.isnan(), canonical, rounded)


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=dtype_id)
def test_16bit_logits_give_the_bits_of_their_fp32_values(cpu_isa, threads, dtype, gen):
    """The core reads logits only as values, so 16-bit logits and the same
    values in fp32 give the same token logprob and entropy bits, and
    log_softmax the fp32 result rounded once (the CPU widens fp16 rows by
    F16C first, and makes fp16 outputs in fp32 pieces). Rows with an ignored
    target, a NaN, an inf, a -inf and fp16's largest values; a vocabulary of
    several pieces and a tail; every ISA, two threads."""
    logits, targets = logits_with_specials(dtype, gen)
    threads(2)
    for name, args in (("token_logprob", (targets,)), ("entropy", ())):
        op = gk.get_op(name, "cpu")
        assert_bitwise_equal(op.forward(logits, *args), op.forward(logits.float(), *args), name)
    # log_softmax rounds once: its output is the fp32 values' result cast by torch.
    op = gk.get_op("log_softmax", "cpu")
    assert_bitwise_equal(op.forward(logits), rounded_as_torch(op.forward(logits.float()), dtype), "log_softmax")


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=dtype_id)
def test_16bit_backwards_give_the_bits_of_their_fp32_values(cpu_isa, threads, dtype, gen):
    """The backwards read logits (and log_softmax's incoming gradient) only
    as values: with fp32=True, 16-bit inputs and the same values in fp32 give
    the same bits, and the 16-bit gradient is that fp32 gradient rounded once,
    as torch rounds it (the CPU widens fp16 rows by F16C and makes fp16
    gradients in fp32 pieces, each target inside some piece). Rows with an
    ignored target, a NaN, an inf, a -inf and the largest values; every ISA."""
    logits, targets = logits_with_specials(dtype, gen)
    g_rows = torch.randn(7, generator=gen)
    g_full = torch.randn(logits.shape, generator=gen).to(dtype)
    g_full[6, 9] = float("nan")
    threads(2)
    cases = (
        ("token_logprob", (g_rows, logits, targets), (g_rows, logits.float(), targets)),
        ("entropy", (g_rows, logits), (g_rows, logits.float())),
        ("log_softmax", (g_full, logits), (g_full.float(), logits.float())),
        ("log_softmax", (g_full.float(), logits), (g_full.float(), logits.float())),
    )
    for name, args16, args32 in cases:
        op = gk.get_op(name, "cpu")
        grad32 = op.backward(*args32, fp32=True)
        assert_bitwise_equal(op.backward(*args16, fp32=True), grad32, f"{name} fp32=True")
        assert_bitwise_equal(op.backward(*args16), rounded_as_torch(grad32, dtype), name)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_batch_invariance_T1_T2_T3(backend, dtype, gen):
    rows, vocab, row = 24, 9000, 3
    args = (random_logits(rows, vocab, dtype, gen), random_targets(rows, vocab, gen, ignore_every=5),
            grads_per_row(rows, gen), random_logits(rows, vocab, dtype, gen, 1.0))
    fn = every_output(backend)
    check_batch_invariance(fn, *args, batched=(0, 1, 2, 3), rows=(0, row, rows // 2, rows - 1))
    check_position_invariance(fn, *args, batched=(0, 1, 2, 3))
    check_neighbour_invariance(fn, *args, batched=(0, 1, 2, 3), row=row)
    # Neighbours no random draw gives: a NaN row, an all -inf row, logits 50x larger.
    others = random_logits(rows, vocab, dtype, gen, scale=50.0)
    others[0] = float("nan")
    others[1] = float("-inf")
    neighbours = (others, random_targets(rows, vocab, gen), grads_per_row(rows, gen),
                  random_logits(rows, vocab, dtype, gen, 9.0))
    check_neighbour_invariance(fn, *args, batched=(0, 1, 2, 3), row=row, neighbours=neighbours)


def test_padding_invariance_T4(gen):
    """Padded token rows (NaN garbage logits and gradients, ignored targets) to
    the left and/or right leave the real rows' bits alone; padded rows give
    token logprob 0 and a zero gradient."""
    vocab = 5000
    args = (random_logits(6, vocab, torch.bfloat16, gen), random_targets(6, vocab, gen), grads_per_row(6, gen),
            random_logits(6, vocab, torch.bfloat16, gen, 1.0))
    check_padding_invariance(every_output("cpu"), *args, padded=(0, 1, 2, 3), dim=0,
                             pads=((1, 0), (0, 1), (5, 0), (0, 5), (2, 7)), int_pad_value=-100)
    logits, ids = args[0], args[1]
    pad_logits, pad_ids = torch.full((3, vocab), float("nan"), dtype=torch.bfloat16), torch.full((3,), -100)
    tok = gk.get_op("token_logprob")
    for where, pads in (("left", slice(0, 3)), ("right", slice(6, 9))):
        order = (lambda pad, real: (pad, real)) if where == "left" else (lambda pad, real: (real, pad))
        padded_logits, padded_ids = torch.cat(order(pad_logits, logits)), torch.cat(order(pad_ids, ids))
        out = tok.forward(padded_logits, padded_ids)
        assert_bitwise_equal(out[pads], torch.zeros(3), f"{where} padded rows give 0")
        grad = tok.backward(torch.randn(9, generator=gen), padded_logits, padded_ids)
        assert_bitwise_equal(grad[pads], torch.zeros(3, vocab, dtype=torch.bfloat16), f"{where} zero grad")


def test_vocab_padding_with_masked_entries_inside_the_last_chunk_T4(gen):
    """Qwen3's 151936 logits padded with -inf to 152064 (a multiple of 128,
    still 38 chunks): masked entries add exact zeros, so the bits are equal."""
    logits = random_logits(2, QWEN3_VOCAB, torch.float32, gen)
    ids = random_targets(2, QWEN3_VOCAB, gen)
    padded = torch.cat([logits, torch.full((2, 152064 - QWEN3_VOCAB), float("-inf"))], dim=1)
    assert_bitwise_equal(gk.token_logprob(padded, ids), gk.token_logprob(logits, ids), "token_logprob")
    assert_bitwise_equal(gk.entropy(padded), gk.entropy(logits), "entropy")
    assert_bitwise_equal(gk.log_softmax(padded)[:, :QWEN3_VOCAB], gk.log_softmax(logits), "log_softmax")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
def test_thread_count_invariance_T7(dtype, gen):
    rows, vocab = 40, 4 * 4096 + 3
    args = (random_logits(rows, vocab, dtype, gen), random_targets(rows, vocab, gen, ignore_every=7),
            grads_per_row(rows, gen), random_logits(rows, vocab, dtype, gen, 1.0))
    check_thread_invariance(every_output("cpu"), *args, thread_counts=(1, 2, 3, 8))


def test_leading_dimensions_are_rows(gen):
    logits = random_logits(2 * 3, 700, torch.bfloat16, gen).reshape(2, 3, 700)
    ids = random_targets(6, 700, gen).reshape(2, 3)
    out = gk.token_logprob(logits, ids)
    assert out.shape == (2, 3) and out.dtype == torch.float32
    assert_bitwise_equal(out.reshape(6), gk.token_logprob(logits.reshape(6, 700), ids.reshape(6)), "layout")
    assert gk.entropy(logits).shape == (2, 3)
    assert_bitwise_equal(gk.log_softmax(logits).reshape(6, 700), gk.log_softmax(logits.reshape(6, 700)), "lsm")


def token_logprob_from_shards(logits, ids, *, num_shards):
    """The vocab-parallel pieces in one process: per-shard partials and target
    logits, merged by the canonical tree."""
    vocab = logits.shape[-1]
    bounds = gk.vocab_shard_bounds(vocab, num_shards)
    assert bounds[0][0] == 0 and bounds[-1][1] == vocab and len(bounds) == num_shards
    partials = torch.stack([gk.logsumexp_partials(logits[:, a:b].contiguous()) for a, b in bounds])
    picked = sum(gk.target_logits(logits[:, a:b].contiguous(), ids, vocab_start=a, vocab_size=vocab)
                 for a, b in bounds)
    return gk.logprob_from_partials(picked, gk.merge_logsumexp_partials(partials), ids)


def test_single_device_equals_vocab_parallel_pieces_T8(gen):
    """token_logprob is logprob_from_partials of the row's own partial: one
    formula for both paths, for every shard count (in-process T8)."""
    vocab = 10 * 4096 + 77
    logits = random_logits(5, vocab, torch.bfloat16, gen)
    ids = random_targets(5, vocab, gen, ignore_every=3)
    check_sharding_invariance(gk.token_logprob, token_logprob_from_shards, logits, ids, num_shards=(1, 2, 3, 4, 8, 11))


def test_vocab_shard_bounds_are_chunk_aligned_subtrees():
    assert gk.vocab_shard_bounds(QWEN3_VOCAB, 2) == [(0, 19 * CHUNK), (19 * CHUNK, QWEN3_VOCAB)]
    assert gk.vocab_shard_bounds(QWEN3_VOCAB, 4) == [(0, 40960), (40960, 77824), (77824, 118784),
                                                     (118784, QWEN3_VOCAB)]
    assert gk.vocab_shard_bounds(100, 1) == [(0, 100)]
    with pytest.raises(ValueError, match="num_shards must be in"):
        gk.vocab_shard_bounds(2 * CHUNK, 3)
    with pytest.raises(ValueError, match="vocab_size must be"):
        gk.vocab_shard_bounds(0, 1)


# ---- Axis-B: accuracy against float64 ------------------------------------------------

def lse_error_bound(logits: torch.Tensor):
    """(|lse error| bound, float64 lse, p, max) per row. The sum s = sum exp(x - m)
    has relative error <= u * E_p|x - m| (rounding of each x - m, re-based through
    the merges) + gamma(k) for the lane chain, the lane tree, two roundings per
    exp (<= 0.51 ulp each) and per tree level; lse = m + log s adds log's 0.52 ulp
    and one rounding."""
    u = unit_roundoff()
    x = logits.to(torch.float64)
    vocab = x.shape[-1]
    m = x.amax(-1, keepdim=True)
    lse = torch.logsumexp(x, -1, keepdim=True)
    p = torch.exp(x - lse)
    mean_distance = torch.where(p > 0, p * (m - x), torch.zeros_like(p)).sum(-1, keepdim=True)
    depth = math.ceil(math.log2(math.ceil(vocab / CHUNK))) if vocab > CHUNK else 0
    k = math.ceil(min(vocab, CHUNK) / LANES) + 5 + 2 + 4 * depth
    rel_s = u * mean_distance + gamma(k)
    log_s = lse - m
    bound = 1.01 * rel_s + 2.04 * u * log_s.abs() + 2 * u * lse.abs() + 2.0**-60
    return bound, lse, p, m, mean_distance, rel_s


def output_bound(ref, fp32_bound, dtype):
    if dtype == torch.float32:
        return fp32_bound
    return fp32_bound + 0.5 * ulp(ref.abs() + fp32_bound, dtype) + smallest_subnormal(dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("vocab", (1, 33, 4096, 10000, 5 * 4096 + 1))
def test_forward_within_rigorous_bound(dtype, vocab, gen):
    rows = 16
    logits = random_logits(rows, vocab, dtype, gen)
    logits[0] *= 10  # a peaked row
    logits[1] *= 0.01  # a nearly flat row
    if vocab > 8:
        logits[2, 1::2] = float("-inf")
    ids = random_targets(rows, vocab, gen)
    if vocab > 8:
        ids[2] = 0  # a target that is not masked
    lse_bound, lse, _, _, mean_distance, rel_s = lse_error_bound(logits)
    u = unit_roundoff()
    ref = reference.log_softmax(logits)
    y_bound = lse_bound + 2 * u * ref.abs()
    y_bound = torch.where(ref.isinf(), torch.zeros_like(y_bound), y_bound)
    assert_within(gk.get_op("log_softmax").forward_fp32(logits), ref, y_bound, "log_softmax fp32")
    assert_within(gk.log_softmax(logits), ref, output_bound(ref, y_bound, dtype), f"log_softmax {dtype}")
    # The peer floor's atol is absolute: beyond |v| = 64 the fp32 spacing alone
    # (2^-17 at 64) leaves no room, so it is checked where it is meaningful.
    finite = ref.abs() < 64
    assert_peer_floor(gk.get_op("log_softmax").forward_fp32(logits)[finite], ref[finite], "logprob", dtype,
                      "lsm peer floor")

    ref_tok = reference.token_logprob(logits, ids)
    tok_bound = y_bound.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    got_tok = gk.token_logprob(logits, ids)
    assert got_tok.dtype == torch.float32
    assert_within(got_tok, ref_tok, tok_bound, "token_logprob")
    assert_peer_floor(got_tok, ref_tok, "logprob", dtype, "token_logprob peer floor")

    ref_h = reference.entropy(logits)
    depth = math.ceil(math.log2(math.ceil(vocab / CHUNK))) if vocab > CHUNK else 0
    h_bound = (1.01 * rel_s + 2.04 * u * (lse - logits.double().amax(-1, keepdim=True)).abs()
               + mean_distance * (2 * rel_s + gamma(depth + 4))).squeeze(-1) + 2 * u * ref_h.abs() + 2.0**-60
    got_h = gk.entropy(logits)
    assert_within(got_h, ref_h, h_bound, "entropy")
    assert_peer_floor(got_h, ref_h, "logprob", dtype, "entropy peer floor")


def test_real_vocab_accuracy_bf16(gen):
    logits = random_logits(4, QWEN3_VOCAB, torch.bfloat16, gen, scale=4.0)
    ids = random_targets(4, QWEN3_VOCAB, gen)
    bound, *_ = lse_error_bound(logits)
    ref = reference.token_logprob(logits, ids)
    tok_bound = bound.squeeze(-1) + 2 * unit_roundoff() * ref.abs()
    assert_within(gk.token_logprob(logits, ids), ref, tok_bound, "token_logprob at 151936")
    assert_peer_floor(gk.token_logprob(logits, ids), ref, "logprob", torch.bfloat16, "peer floor")
    # fp32 result: within a few fp32 ulps of the truth, far inside the peer floor.
    assert float((gk.token_logprob(logits, ids).double() - ref).abs().max()) < 1e-5


def probability_relative_bound(logits, lse_bound, lse):
    """Relative error bound of p_i = exp(x_i - lse) as computed."""
    u = unit_roundoff()
    return 1.01 * (lse_bound + u * (logits.double() - lse).abs() + 2.04 * u)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("vocab", (7, 4096, 9000))
def test_backward_within_bound(dtype, vocab, gen):
    rows = 12
    u = unit_roundoff()
    logits = random_logits(rows, vocab, dtype, gen)
    logits[0, ::2] = float("-inf")
    ids = random_targets(rows, vocab, gen, ignore_every=5)
    ids[0] = 1
    g_rows = grads_per_row(rows, gen)
    g_full = random_logits(rows, vocab, dtype, gen, 1.0)
    lse_bound, lse, p, m, mean_distance, rel_s = lse_error_bound(logits)
    rel_p = probability_relative_bound(logits, lse_bound, lse)
    rel_p = torch.where(p > 0, rel_p, torch.zeros_like(rel_p))
    x = logits.double()
    tiny = 8 * smallest_subnormal(torch.float32)

    # log_softmax: dx = g - p * G.
    g64 = g_full.double()
    grad_sum = g64.sum(-1, keepdim=True)
    k = math.ceil(min(vocab, CHUNK) / LANES) + 5 + 2
    sum_error = gamma(k) * g64.abs().sum(-1, keepdim=True)
    ref = reference.log_softmax_backward(g_full, logits)
    bound = p * (grad_sum.abs() * rel_p + sum_error) + 2 * u * ref.abs() + tiny
    got = gk.get_op("log_softmax").backward(g_full, logits, fp32=True)
    assert_within(got, ref, bound, "log_softmax backward")
    assert_within(gk.get_op("log_softmax").backward(g_full, logits), ref, output_bound(ref, bound, dtype), "rounded")

    # token_logprob: dx = g (onehot - p).
    ref = reference.token_logprob_backward(g_rows, logits, ids)
    g = g_rows.double().unsqueeze(-1)
    bound = g.abs() * p * rel_p + 2.1 * u * ref.abs() + tiny
    got = gk.get_op("token_logprob").backward(g_rows, logits, ids, fp32=True)
    assert_within(got, ref, bound, "token_logprob backward")
    assert_bitwise_equal(got[ids == -100], torch.zeros(int((ids == -100).sum()), vocab), "ignored rows")

    # entropy: dx = g p (mean - (x - m)), mean = E_p[x - m].
    ref = reference.entropy_backward(g_rows, logits)
    depth = math.ceil(math.log2(math.ceil(vocab / CHUNK))) if vocab > CHUNK else 0
    c = (-mean_distance - (x - m)).abs()
    mean_error = mean_distance * (2 * rel_s + gamma(depth + 4))
    c_error = mean_error + u * (x - m).abs() + u * c
    bound = g.abs() * p * (c * rel_p + c_error) + 2.1 * u * ref.abs() + tiny
    bound = torch.where(x.isinf(), torch.zeros_like(bound), bound)
    got = gk.get_op("entropy").backward(g_rows, logits, fp32=True)
    assert_within(got, ref, bound, "entropy backward")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=dtype_id)
def test_low_precision_outputs_are_rounded_once(dtype, gen):
    logits = random_logits(8, 5000, dtype, gen)
    ids = random_targets(8, 5000, gen)
    g_rows, g_full = grads_per_row(8, gen), random_logits(8, 5000, dtype, gen, 1.0)
    lsm, tok, ent = (gk.get_op(n) for n in ("log_softmax", "token_logprob", "entropy"))
    assert_bitwise_equal(lsm.forward(logits), lsm.forward_fp32(logits).to(dtype), "log_softmax")
    assert_bitwise_equal(lsm.backward(g_full, logits), lsm.backward(g_full, logits, fp32=True).to(dtype), "lsm grad")
    assert_bitwise_equal(tok.backward(g_rows, logits, ids), tok.backward(g_rows, logits, ids, fp32=True).to(dtype),
                         "token grad")
    assert_bitwise_equal(ent.backward(g_rows, logits), ent.backward(g_rows, logits, fp32=True).to(dtype), "H grad")


def test_fp32_grad_out_equals_upcast_grad_for_log_softmax(gen):
    logits = random_logits(4, 300, torch.bfloat16, gen)
    g = random_logits(4, 300, torch.bfloat16, gen, 1.0)
    op = gk.get_op("log_softmax")
    assert_bitwise_equal(op.backward(g.float(), logits), op.backward(g, logits), "grad_out dtype")


# ---- Non-finite policy --------------------------------------------------------------------

def nan_bits_everywhere(t):
    return bool((t.view(torch.int32) == NAN_BITS).all())


def test_masked_entries_and_all_masked_row(gen):
    logits = random_logits(3, 9000, torch.float32, gen)
    logits[0, 100:] = float("-inf")
    logits[1] = float("-inf")  # no distribution at all
    ids = torch.tensor([5, 5, 7])
    lsm = gk.log_softmax(logits)
    assert bool(lsm[0, 100:].isneginf().all())
    assert_bitwise_equal(lsm[0, :100], gk.log_softmax(logits[0, :100]), "masked tail changes nothing")
    assert nan_bits_everywhere(lsm[1]), "all -inf row: NaN"
    tok, ent = gk.token_logprob(logits, ids), gk.entropy(logits)
    assert nan_bits_everywhere(tok[1]) and nan_bits_everywhere(ent[1])
    assert bool(tok[[0, 2]].isfinite().all()) and bool(ent[[0, 2]].isfinite().all())
    g = torch.ones(3)
    for grad in (gk.get_op("token_logprob").backward(g, logits, ids), gk.get_op("entropy").backward(g, logits),
                 gk.get_op("log_softmax").backward(torch.ones_like(logits), logits)):
        assert nan_bits_everywhere(grad[1])
        assert bool(grad[[0, 2]].isfinite().all())
    # A masked target has logprob -inf.
    assert float(gk.token_logprob(logits[:1], torch.tensor([200]))) == float("-inf")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_logit_poisons_only_its_row(bad, gen):
    logits = random_logits(3, 5000, torch.bfloat16, gen)
    clean = all_outputs("cpu", logits, torch.tensor([1, 2, 3]), torch.ones(3), torch.ones(3, 5000, dtype=torch.bfloat16))
    logits[1, 4321] = bad
    dirty = all_outputs("cpu", logits, torch.tensor([1, 2, 3]), torch.ones(3), torch.ones(3, 5000, dtype=torch.bfloat16))
    for name in clean:
        assert_bitwise_equal(dirty[name][[0, 2]], clean[name][[0, 2]], name)
        row = dirty[name][1].float()
        assert bool(row.isnan().all()), f"{name}: the whole row is NaN"


def test_nan_output_is_the_canonical_nan():
    logits = torch.tensor([[1.0, float("-nan"), 2.0]])
    for out in (gk.log_softmax(logits), gk.token_logprob(logits, torch.tensor([0])), gk.entropy(logits)):
        assert nan_bits_everywhere(out)


# ---- ignore_index ---------------------------------------------------------------------

def test_ignore_index_is_configurable(gen):
    logits = random_logits(4, 100, torch.float32, gen)
    ids = torch.tensor([3, -1, 99, -1])
    out = gk.token_logprob(logits, ids, ignore_index=-1)
    assert_bitwise_equal(out[[1, 3]], torch.zeros(2), "ignored")
    assert_bitwise_equal(out[[0, 2]], gk.token_logprob(logits[[0, 2]], ids[[0, 2]]), "others unchanged")
    grad = gk.get_op("token_logprob").backward(torch.ones(4), logits, ids, ignore_index=-1)
    assert_bitwise_equal(grad[[1, 3]], torch.zeros(2, 100), "zero gradient")
    with pytest.raises(ValueError, match="not ignore_index"):
        gk.token_logprob(logits, ids)  # -1 is not the default ignore_index


# ---- API, bad input and no mutation ----------------------------------------------------

def test_inputs_are_not_mutated(gen):
    logits = random_logits(4, 500, torch.bfloat16, gen)
    ids = random_targets(4, 500, gen)
    g_rows, g_full = grads_per_row(4, gen), random_logits(4, 500, torch.bfloat16, gen)
    copies = [t.clone() for t in (logits, ids, g_rows, g_full)]
    all_outputs("cpu", logits, ids, g_rows, g_full)
    for before, after in zip(copies, (logits, ids, g_rows, g_full)):
        assert_bitwise_equal(after, before, "input changed")


def test_numpy_input_gives_numpy_output(gen):
    logits = random_logits(3, 64, torch.float32, gen)
    ids = random_targets(3, 64, gen)
    out = gk.token_logprob(logits.numpy(), ids.numpy())
    assert type(out).__name__ == "ndarray"
    assert_bitwise_equal(torch.from_numpy(out), gk.token_logprob(logits, ids), "numpy vs torch")
    assert_bitwise_equal(torch.from_numpy(gk.entropy(logits.numpy())), gk.entropy(logits), "entropy numpy")


def test_empty_batch_is_fine():
    assert gk.token_logprob(torch.zeros(0, 10), torch.zeros(0, dtype=torch.int64)).shape == (0,)
    assert gk.log_softmax(torch.zeros(0, 10)).shape == (0, 10)
    assert gk.entropy(torch.zeros(0, 10)).shape == (0,)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: (torch.zeros(2, 8), torch.tensor([0, 8])), ValueError, r"id 8 at flat index 1 is outside \[0, 8\)"),
        (lambda: (torch.zeros(2, 8), torch.tensor([-2, 1])), ValueError, "id -2 at flat index 0"),
        (lambda: (torch.zeros(2, 8), torch.tensor([0, 1, 2])), ValueError, "target_ids: expected shape"),
        (lambda: (torch.zeros(2, 8), torch.tensor([[0], [1]])), ValueError, "target_ids: expected shape"),
        (lambda: (torch.zeros(2, 8), torch.tensor([True, False])), TypeError, "expected int64 or int32"),
        (lambda: (torch.zeros(2, 8), torch.tensor([0.0, 1.0])), TypeError, "expected int64 or int32"),
        (lambda: (torch.zeros(2, 8), torch.tensor([0, 8], dtype=torch.int32)), ValueError, r"id 8 at flat index 1"),
        (lambda: (torch.zeros(2, 0), torch.tensor([0, 1])), ValueError, "must not be empty"),
        (lambda: (torch.zeros(2, 8, dtype=torch.float64), torch.tensor([0, 1])), TypeError, "unsupported dtype float64"),
        (lambda: (torch.zeros(2, 8, dtype=torch.int64), torch.tensor([0, 1])), TypeError, "expected float32"),
        (lambda: (torch.zeros(8, 2).t(), torch.tensor([0, 1])), ValueError, "contiguous"),
        (lambda: (torch.tensor(1.0), torch.tensor(0)), ValueError, "at least 1 dimension"),
        (lambda: ([1.0, 2.0], torch.tensor(0)), TypeError, "torch.Tensor or numpy.ndarray"),
    ],
)
def test_token_logprob_bad_input_raises_clearly(make, error, match):
    logits, ids = make()
    with pytest.raises(error, match=match):
        gk.token_logprob(logits, ids)


def test_backward_bad_input_raises_clearly():
    logits, ids = torch.zeros(2, 8), torch.tensor([0, 1])
    with pytest.raises(TypeError, match="grad_out: expected float32"):
        gk.get_op("token_logprob").backward(torch.ones(2, dtype=torch.bfloat16), logits, ids)
    with pytest.raises(ValueError, match="grad_out: expected shape"):
        gk.get_op("entropy").backward(torch.ones(3), logits)
    with pytest.raises(ValueError, match="grad_out must have the shape of logits"):
        gk.get_op("log_softmax").backward(torch.ones(2, 7), logits)
    with pytest.raises(TypeError, match="grad_out: expected bfloat16 or float32"):
        gk.get_op("log_softmax").backward(torch.ones(2, 8, dtype=torch.float16), logits.bfloat16())
    with pytest.raises(ValueError, match="outside"):
        gk.get_op("token_logprob").backward(torch.ones(2), logits, torch.tensor([0, 100]))


def test_vocab_parallel_bad_input_raises_clearly(gen):
    shard = random_logits(2, 4096, torch.float32, gen)
    ids = torch.tensor([0, 9000])
    with pytest.raises(ValueError, match="must lie inside"):
        gk.target_logits(shard, ids, vocab_start=8192, vocab_size=10000)
    with pytest.raises(ValueError, match=r"outside \[0, 10000\)"):
        gk.target_logits(shard, torch.tensor([0, 10000]), vocab_start=0, vocab_size=10000)
    with pytest.raises(ValueError, match="last dimension of 2"):
        gk.merge_logsumexp_partials(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="partials: expected shape"):
        gk.logprob_from_partials(torch.zeros(2), torch.zeros(3, 2), ids)
