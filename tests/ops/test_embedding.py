"""embedding against the contract: the gather is an exact copy; the weight
gradient is the documented segmented sum (sequential fp32 additions in token
order) on raw bits, deterministic over threads and ISAs (T1-T3, T7 through
golden_kernels.testing); Axis-B bound against float64; out-of-range ids raise
before any read; bad input."""

from __future__ import annotations


import pytest
import torch

import golden_kernels as gk
from golden_kernels.testing import assert_bitwise_equal, assert_peer_floor, assert_within, gamma, ulp
from golden_kernels.testing import (
    check_batch_invariance,
    check_neighbour_invariance,
    check_position_invariance,
    check_thread_invariance,
)
from golden_kernels.testing.bounds import smallest_subnormal

from .. import reference
from ..conftest import FLOAT_DTYPES, dtype_id

QWEN3_VOCAB, QWEN3_HIDDEN = 151936, 4096
ID_DTYPES = (torch.int32, torch.int64)


def table(vocab, dim, dtype, gen):
    return torch.randn(vocab, dim, generator=gen).to(dtype)


def ids_with_repeats(shape, vocab, gen, dtype=torch.int64):
    """Random ids that hit a few rows many times (so buckets have many tokens)."""
    ids = torch.randint(0, vocab, shape, generator=gen)
    hot = torch.rand(shape, generator=gen) < 0.3
    return torch.where(hot, ids % 3, ids).to(dtype)


def segmented_sum_in_token_order(grad_out, token_ids, vocab):
    """The contract's canonical order, written independently: for each token
    in order, its gradient row added in fp32 to the row it indexes."""
    dim = grad_out.shape[-1]
    acc = torch.zeros(vocab, dim, dtype=torch.float32)
    for t, v in enumerate(token_ids.reshape(-1).tolist()):
        acc[v] = acc[v] + grad_out.reshape(-1, dim)[t].float()
    return acc


# ---- Axis-C: every CPU path gives the reference's bits ---------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("id_dtype", ID_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("dim", (1, 33, 600))
def test_cpu_paths_equal_reference(cpu_isa, threads, dtype, id_dtype, dim, gen):
    vocab = 97
    weight = table(vocab, dim, dtype, gen)
    ids = ids_with_repeats((3, 41), vocab, gen, id_dtype)
    g = torch.randn(3, 41, dim, generator=gen).to(dtype)
    threads(2)
    fast, ref = gk.get_op("embedding", "cpu"), gk.get_op("embedding", "reference")
    assert_bitwise_equal(fast.forward(ids, weight), ref.forward(ids, weight), "forward")
    assert_bitwise_equal(fast.forward_fp32(ids, weight), ref.forward_fp32(ids, weight), "forward_fp32")
    assert_bitwise_equal(fast.backward(g, ids, weight), ref.backward(g, ids, weight), "dweight")
    assert_bitwise_equal(fast.backward(g, ids, weight, fp32=True), ref.backward(g, ids, weight, fp32=True), "fp32")


# ---- The gather is exact -----------------------------------------------------------------

@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("id_dtype", ID_DTYPES, ids=dtype_id)
def test_forward_is_an_exact_gather(backend, dtype, id_dtype, gen):
    weight = table(1000, 64, dtype, gen)
    ids = torch.randint(0, 1000, (2, 3, 7), generator=gen, dtype=id_dtype)
    out = gk.get_op("embedding", backend).forward(ids, weight)
    assert out.dtype == dtype and out.shape == (2, 3, 7, 64)
    assert_bitwise_equal(out, weight[ids.long()], "forward")
    out32 = gk.get_op("embedding", backend).forward_fp32(ids, weight)
    assert_bitwise_equal(out32, weight[ids.long()].float(), "forward_fp32")
    assert_peer_floor(out, weight[ids.long()].double(), "elementwise", dtype, "peer floor")


def test_nan_rows_are_copied_bit_for_bit():
    raw = torch.tensor([[0x7F81, 0xFFC1, 0x0001, 0x8000]], dtype=torch.int32).to(torch.int16)
    weight = torch.cat([raw, raw]).view(torch.bfloat16)  # signalling NaN, negative NaN, subnormal, -0
    out = gk.embedding(torch.tensor([1, 0, 1]), weight)
    assert_bitwise_equal(out, weight[[1, 0, 1]], "bits")


def test_real_qwen3_table_size(gen):
    """[151936, 4096] bf16 (1.2 GB): only the gathered rows are touched."""
    weight = torch.empty(QWEN3_VOCAB, QWEN3_HIDDEN, dtype=torch.bfloat16)
    ids = torch.tensor([[0, QWEN3_VOCAB - 1, 77777], [151000, 5, 0]])
    weight[ids.reshape(-1)] = torch.randn(6, QWEN3_HIDDEN, generator=gen).to(torch.bfloat16)
    for backend in ("reference", "cpu"):
        assert_bitwise_equal(gk.get_op("embedding", backend).forward(ids, weight), weight[ids], backend)
    with pytest.raises(ValueError, match="out of range"):
        gk.embedding(torch.tensor([QWEN3_VOCAB]), weight)


@pytest.mark.slow
def test_real_qwen3_table_size_backward(gen):
    weight = torch.empty(QWEN3_VOCAB, QWEN3_HIDDEN, dtype=torch.bfloat16)
    ids = torch.tensor([3, QWEN3_VOCAB - 1, 3])
    g = torch.randn(3, QWEN3_HIDDEN, generator=gen).to(torch.bfloat16)
    dweight = gk.get_op("embedding").backward(g, ids, weight)
    assert_bitwise_equal(dweight[3], (g[0].float() + g[2].float()).to(torch.bfloat16), "row 3")
    assert_bitwise_equal(dweight[-1], g[1], "last row")
    assert int(dweight.view(torch.int16).count_nonzero()) == int(dweight[[3, -1]].view(torch.int16).count_nonzero())


# ---- Backward: the canonical order, deterministic -------------------------------------

@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_backward_is_the_token_order_segmented_sum(backend, dtype, gen):
    vocab, dim = 50, 130
    ids = ids_with_repeats((4, 60), vocab, gen)
    g = torch.randn(4, 60, dim, generator=gen).to(dtype)
    expected = segmented_sum_in_token_order(g, ids, vocab)
    op = gk.get_op("embedding", backend)
    assert_bitwise_equal(op.backward(g, ids, torch.empty(vocab, dim, dtype=dtype), fp32=True), expected, "fp32")
    assert_bitwise_equal(op.backward(g, ids, torch.empty(vocab, dim, dtype=dtype)), expected.to(dtype), "rounded once")


def test_rows_never_indexed_are_exactly_zero(gen):
    ids = torch.tensor([4, 4, 9])
    g = -torch.ones(3, 16)
    dweight = gk.get_op("embedding").backward(g, ids, torch.empty(12, 16))
    untouched = [v for v in range(12) if v not in (4, 9)]
    assert_bitwise_equal(dweight[untouched], torch.zeros(len(untouched), 16), "+0 rows")
    # A single -0 gradient gives +0: the sum starts from +0.
    dweight = gk.get_op("embedding").backward(torch.full((1, 4), -0.0), torch.tensor([1]), torch.empty(2, 4))
    assert_bitwise_equal(dweight, torch.zeros(2, 4), "+0 + -0 = +0")


def test_dweight_row_depends_only_on_its_own_tokens(gen):
    """Tokens of other ids, wherever they sit, do not change a row's bits."""
    dim = 64
    ids = torch.tensor([2, 2, 2, 2, 2])
    g = torch.randn(5, dim, generator=gen) * torch.logspace(-6, 6, 5)[:, None]
    alone = gk.get_op("embedding").backward(g, ids, torch.empty(8, dim))[2]
    mixed_ids = torch.tensor([7, 2, 5, 2, 2, 0, 2, 1, 2, 3])
    mixed_g = torch.randn(10, dim, generator=gen) * 1e6
    mixed_g[mixed_ids == 2] = g
    assert_bitwise_equal(gk.get_op("embedding").backward(mixed_g, mixed_ids, torch.empty(8, dim))[2], alone)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
def test_thread_count_invariance_T7(dtype, gen):
    vocab, dim = 3000, 256
    ids = ids_with_repeats((2000,), vocab, gen)
    g = torch.randn(2000, dim, generator=gen).to(dtype)
    weight = table(vocab, dim, dtype, gen)
    op = gk.get_op("embedding", "cpu")
    check_thread_invariance(lambda ids: (op.forward(ids, weight), op.backward(g, ids, weight)), ids,
                            thread_counts=(1, 2, 3, 8))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_forward_batch_invariance_T1_T2_T3(backend, gen):
    """Rows of ids [16, 9]; the weight gradient sums over rows, so its own
    order property is test_dweight_row_depends_only_on_its_own_tokens."""
    weight = table(500, 128, torch.bfloat16, gen)
    ids = torch.randint(0, 500, (16, 9), generator=gen)
    op = gk.get_op("embedding", backend)

    def gather(ids):
        return op.forward(ids, weight)

    check_batch_invariance(gather, ids, rows=(0, 3, 8, 15))
    check_position_invariance(gather, ids)
    check_neighbour_invariance(gather, ids, row=3)
    check_neighbour_invariance(gather, ids, row=3, neighbours=(torch.randint(0, 500, (16, 9), generator=gen),))


# ---- Axis-B: accuracy of the weight gradient against float64 ----------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_backward_within_rigorous_bound(dtype, gen):
    vocab, dim = 40, 300
    ids = ids_with_repeats((3000,), vocab, gen)
    g = torch.randn(3000, dim, generator=gen).to(dtype)
    ref = reference.embedding_backward(g, ids, vocab)
    counts = torch.bincount(ids, minlength=vocab)
    abs_sum = reference.embedding_backward(g.abs(), ids, vocab)
    # n sequential additions from +0: the first is exact, the rest round once each.
    bound = torch.tensor([gamma(max(int(n) - 1, 1)) for n in counts], dtype=torch.float64)[:, None] * abs_sum
    bound = bound + smallest_subnormal(torch.float32)
    op = gk.get_op("embedding")
    weight = torch.empty(vocab, dim, dtype=dtype)
    fp32 = op.backward(g, ids, weight, fp32=True)
    assert_within(fp32, ref, bound, "fp32")
    rounded = op.backward(g, ids, weight)
    assert_within(rounded, ref, bound + 0.5 * ulp(ref.abs() + bound, dtype) + smallest_subnormal(dtype), "rounded")
    assert max(int(n) for n in counts) > 300  # long buckets were exercised
    if dtype != torch.float32:
        assert_peer_floor(rounded, ref, "elementwise", dtype, "peer floor")


# ---- Out-of-range ids, bad input, no mutation -------------------------------------------

@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("bad", [10, -1, 2**40, -(2**63)])
def test_out_of_range_ids_raise(backend, bad):
    weight = torch.ones(10, 4)
    id_dtype = torch.int32 if -(2**31) <= bad < 2**31 else torch.int64
    ids = torch.tensor([[1, 2], [bad, 3]], dtype=id_dtype)
    op = gk.get_op("embedding", backend)
    with pytest.raises(ValueError, match=rf"id {bad} at flat position 2 is out of range for a table of 10 rows"):
        op.forward(ids, weight)
    with pytest.raises(ValueError, match="out of range"):
        op.backward(torch.ones(2, 2, 4), ids, weight)


def test_inputs_are_not_mutated(gen):
    weight = table(30, 8, torch.bfloat16, gen)
    ids = ids_with_repeats((20,), 30, gen, torch.int32)
    g = torch.randn(20, 8, generator=gen).to(torch.bfloat16)
    copies = [t.clone() for t in (weight, ids, g)]
    gk.embedding(ids, weight)
    gk.get_op("embedding").backward(g, ids, weight)
    for before, after in zip(copies, (weight, ids, g)):
        assert_bitwise_equal(after, before, "input changed")


def test_numpy_and_empty(gen):
    weight = table(30, 8, torch.float32, gen)
    ids = torch.tensor([3, 1, 29])
    out = gk.embedding(ids.numpy(), weight.numpy())
    assert type(out).__name__ == "ndarray"
    assert_bitwise_equal(torch.from_numpy(out), weight[ids], "numpy")
    assert gk.embedding(torch.zeros(0, 5, dtype=torch.int64), weight).shape == (0, 5, 8)
    dweight = gk.get_op("embedding").backward(torch.zeros(0, 8), torch.zeros(0, dtype=torch.int64), weight)
    assert_bitwise_equal(dweight, torch.zeros(30, 8), "no tokens")
    assert_bitwise_equal(gk.embedding(torch.tensor(29), weight), weight[29], "0-d ids")
    for backend in ("reference", "cpu"):  # rows of no columns: nothing is copied
        assert gk.embedding(ids, torch.empty(30, 0, dtype=torch.bfloat16), backend=backend).shape == (3, 0)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: (torch.tensor([1.0]), torch.ones(4, 2)), TypeError, "token_ids: expected int32 or int64"),
        (lambda: (torch.tensor([True]), torch.ones(4, 2)), TypeError, "token_ids: expected int32 or int64"),
        (lambda: (torch.tensor([1]), torch.ones(8)), ValueError, "expected a 2-D"),
        (lambda: (torch.tensor([1]), torch.ones(2, 4, 2)), ValueError, "expected a 2-D"),
        (lambda: (torch.tensor([1]), torch.ones(4, 2, dtype=torch.int32)), TypeError, "weight: expected float32"),
        (lambda: (torch.tensor([1]), torch.ones(4, 2, dtype=torch.float64)), TypeError, "unsupported dtype"),
        (lambda: (torch.tensor([[1, 2], [3, 0]]).t(), torch.ones(4, 2)), ValueError, "token_ids: expected a contiguous"),
        (lambda: (torch.tensor([1]), torch.ones(2, 4).t()), ValueError, "weight: expected a contiguous"),
        (lambda: ([1, 2], torch.ones(4, 2)), TypeError, "torch.Tensor or numpy.ndarray"),
        (lambda: (torch.tensor([1]), torch.ones(4, 2).numpy()), ValueError, "one device"),
    ],
)
def test_bad_input_raises_clearly(make, error, match):
    ids, weight = make()
    with pytest.raises(error, match=match):
        gk.embedding(ids, weight)


def test_bad_backward_input_raises_clearly():
    op = gk.get_op("embedding")
    with pytest.raises(ValueError, match=r"grad_out: expected shape \(2, 4\)"):
        op.backward(torch.ones(2, 3), torch.tensor([0, 1]), torch.ones(5, 4))
    with pytest.raises(TypeError, match="grad_out must have the dtype of weight"):
        op.backward(torch.ones(2, 4, dtype=torch.float16), torch.tensor([0, 1]), torch.ones(5, 4))
    with pytest.raises(ValueError, match="unknown backend"):
        gk.get_op("embedding", backend="tpu")


# ---- out= -------------------------------------------------------------------------------

def test_forward_out_receives_the_same_bits_and_is_returned(gen):
    weight = table(30, 8, torch.bfloat16, gen)
    ids = ids_with_repeats((4, 5), 30, gen, torch.int32)
    copies = [t.clone() for t in (weight, ids)]
    out = torch.full((4, 5, 8), float("nan"), dtype=torch.bfloat16)
    assert gk.embedding(ids, weight, out=out) is out
    assert_bitwise_equal(out, gk.embedding(ids, weight), "out=")
    out32 = torch.full((4, 5, 8), float("nan"))
    assert gk.get_op("embedding").forward(ids, weight, out=out32) is out32
    assert_bitwise_equal(out32, gk.get_op("embedding").forward_fp32(ids, weight), "float32 out=")
    for before, after in zip(copies, (weight, ids)):
        assert_bitwise_equal(after, before, "input changed")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=dtype_id)
def test_backward_out_is_fully_overwritten(dtype, gen):
    weight = table(30, 8, torch.bfloat16, gen)
    ids = torch.tensor([5, 1, 5, 29, 5, 1], dtype=torch.int64)  # rows 0, 2-4, 6-28 never indexed
    g = torch.randn(6, 8, generator=gen).to(torch.bfloat16)
    copies = [t.clone() for t in (weight, ids, g)]
    op = gk.get_op("embedding")
    out = torch.full((30, 8), float("nan"), dtype=dtype)  # stale contents: neither kept nor accumulated into
    assert op.backward(g, ids, weight, out=out) is out
    expected = op.backward(g, ids, weight, fp32=dtype == torch.float32)
    assert_bitwise_equal(out, expected, "out=")
    untouched = torch.ones(30, dtype=torch.bool)
    untouched[ids] = False
    assert_bitwise_equal(out[untouched], torch.zeros(int(untouched.sum()), 8, dtype=dtype), "unindexed rows")
    for before, after in zip(copies, (weight, ids, g)):
        assert_bitwise_equal(after, before, "input changed")


BAD_FORWARD_OUT = [
    (lambda w, ids: torch.empty(4, 5, 7, dtype=w.dtype), ValueError, r"out: expected shape \(4, 5, 8\)"),
    (lambda w, ids: torch.empty(4, 5, 8, dtype=torch.float16), TypeError, "out: expected bfloat16 or float32"),
    (lambda w, ids: torch.empty(8, 5, 4, dtype=w.dtype).transpose(0, 2), ValueError, "contiguous"),
    (lambda w, ids: torch.empty(4, 5, 8, dtype=w.dtype, device="meta"), ValueError, "one device"),
    (lambda w, ids: torch.empty(4, 5, 8).numpy(), ValueError, "one device"),
    (lambda w, ids: w[:20].view(4, 5, 8), ValueError, "out overlaps weight"),
]


@pytest.mark.parametrize("make_out, error, match", BAD_FORWARD_OUT)
def test_bad_forward_out_is_rejected(make_out, error, match, gen):
    weight = table(30, 8, torch.bfloat16, gen)
    ids = ids_with_repeats((4, 5), 30, gen, torch.int32)
    copies = [t.clone() for t in (weight, ids)]
    with pytest.raises(error, match=match):
        gk.embedding(ids, weight, out=make_out(weight, ids))
    for before, after in zip(copies, (weight, ids)):
        assert_bitwise_equal(after, before, "input changed")


def test_forward_out_overlapping_ids_is_rejected():
    buffer = torch.zeros(4, dtype=torch.int32)  # ids [2] int32 inside out [2, 2] float32's storage
    with pytest.raises(ValueError, match="out overlaps token_ids"):
        gk.embedding(buffer[:2], torch.ones(3, 2), out=buffer.view(torch.float32).view(2, 2))


BAD_BACKWARD_OUT = [
    (lambda w, grad_buffer: torch.empty(30, 7, dtype=w.dtype), ValueError, "dweight must have the shape of weight"),
    (lambda w, grad_buffer: torch.empty(30, 8, dtype=torch.float16), TypeError, "dweight: expected bfloat16 or float32"),
    (lambda w, grad_buffer: torch.empty(8, 30, dtype=w.dtype).t(), ValueError, "contiguous"),
    (lambda w, grad_buffer: torch.empty(30, 8, dtype=w.dtype, device="meta"), ValueError, "one device"),
    (lambda w, grad_buffer: w, ValueError, "dweight overlaps weight"),
    (lambda w, grad_buffer: grad_buffer, ValueError, "dweight overlaps grad_out"),
]


@pytest.mark.parametrize("make_out, error, match", BAD_BACKWARD_OUT)
def test_bad_backward_out_is_rejected(make_out, error, match, gen):
    weight = table(30, 8, torch.bfloat16, gen)
    ids = torch.tensor([5, 1, 5, 29, 5, 1], dtype=torch.int64)
    buffer = torch.randn(30, 8, generator=gen).to(torch.bfloat16)
    g = buffer[:6]  # grad_out [6, 8] inside a [30, 8] buffer, to test the overlap
    copies = [t.clone() for t in (weight, ids, g)]
    with pytest.raises(error, match=match):
        gk.get_op("embedding").backward(g, ids, weight, out=make_out(weight, buffer))
    for before, after in zip(copies, (weight, ids, g)):
        assert_bitwise_equal(after, before, "input changed")
