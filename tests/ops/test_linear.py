"""linear and lm_head against the contract: Axis-C every CPU path equal to the
per-output reference on raw bits, Axis-A invariance (batch, position, neighbours,
threads) on raw bits for forward and backward, Axis-B accuracy against float64
with a rigorous bound (and the peer floor), bad input, no mutation."""

from __future__ import annotations

import math

import pytest
import torch

import golden_kernels as gk
from golden_kernels import _C
from golden_kernels.testing import (
    assert_bitwise_equal,
    assert_peer_floor,
    assert_within,
    check_batch_invariance,
    check_neighbour_invariance,
    check_position_invariance,
    check_thread_invariance,
    gamma,
    ulp,
)
from golden_kernels.testing.bounds import smallest_subnormal

from .. import reference
from ..conftest import FLOAT_DTYPES, dtype_id
from ..gpu_target import AVAILABLE, GPU, SKIP_REASON, on_gpu as to_gpu

K_BLOCK = 256  # csrc/core/ops/linear.h kLinearKBlock


def test_k_block_constant_is_the_documented_one():
    assert _C.LINEAR_K_BLOCK == K_BLOCK


def op(backend=None, name="linear"):
    return gk.get_op(name, backend=backend)


def randn(*shape, dtype=torch.float32, gen, scale=1.0):
    return (torch.randn(*shape, generator=gen) * scale).to(dtype)


def problem(rows, out_features, in_features, dtype, gen, bias=True):
    x = randn(rows, in_features, dtype=dtype, gen=gen)
    w = randn(out_features, in_features, dtype=dtype, gen=gen, scale=in_features**-0.5)
    b = randn(out_features, dtype=dtype, gen=gen) if bias else None
    return x, w, b


def assert_same_results(got, want, what):
    assert len(got) == len(want), f"{what}: {len(got)} results, expected {len(want)}"
    for g, w, name in zip(got, want, ("dx", "dweight", "dbias")):
        assert_bitwise_equal(g, w, f"{what} {name}")


# ---- Axis-C: every CPU path gives the reference's bits ---------------------------------

# (rows, out_features, in_features): decode rows (1: the register-transpose path), tile
# tails (rows % 6, out % 16 != 0), K-block tails and block counts 1, 2, 5 and 11.
SHAPES = [(1, 70, 1300), (1, 40, 256), (2, 33, 257), (7, 17, 255), (13, 50, 1), (6, 32, 2800), (25, 9, 600)]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cpu_paths_equal_reference(cpu_isa, threads, dtype, shape, gen):
    rows, out_features, in_features = shape
    x, w, b = problem(rows, out_features, in_features, dtype, gen)
    g = randn(rows, out_features, dtype=dtype, gen=gen)
    threads(2)
    fast, ref = op("cpu"), op("reference")
    assert_bitwise_equal(fast.forward(x, w, b), ref.forward(x, w, b), "forward")
    assert_bitwise_equal(fast.forward_fp32(x, w), ref.forward_fp32(x, w), "forward_fp32 without bias")
    assert_same_results(fast.backward(g, x, w, b), ref.backward(g, x, w, b), "backward")


@pytest.mark.parametrize("rows", [1, 2])
def test_streaming_tree_equals_recursive_tree_for_every_block_count(cpu_isa, rows, gen):
    """The fast path folds block partials into the tree as they arrive (a stack);
    the reference evaluates the recursive ceil|floor tree. Every block count from
    1 to 17 (all tree shapes up to height 5) gives the same bits."""
    for blocks in range(1, 18):
        x, w, _ = problem(rows, 40, blocks * K_BLOCK - 3, torch.float32, gen, bias=False)
        assert_bitwise_equal(op("cpu").forward(x, w), op("reference").forward(x, w), f"{blocks} blocks")


def test_row_reduction_gradients_equal_reference_over_many_row_blocks(cpu_isa, gen):
    """dweight and dbias sum over rows: 1100 rows are 5 row blocks."""
    x, w, b = problem(1100, 20, 24, torch.bfloat16, gen)
    g = randn(1100, 20, dtype=torch.bfloat16, gen=gen)
    assert_same_results(op("cpu").backward(g, x, w, b, fp32=True), op("reference").backward(g, x, w, b, fp32=True),
                        "backward")


@pytest.mark.gpu
@pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", SHAPES + [(300, 130, 700)], ids=lambda s: "x".join(map(str, s)))
def test_gpu_equals_reference(dtype, shape, gen):
    rows, out_features, in_features = shape
    x, w, b = problem(rows, out_features, in_features, dtype, gen)
    g = randn(rows, out_features, dtype=dtype, gen=gen)
    ref, gpu = op("reference"), op(GPU)
    on_gpu = [to_gpu(t) for t in (x, w, b, g)]
    assert_bitwise_equal(gpu.forward(*on_gpu[:3]).cpu(), ref.forward(x, w, b), "forward")
    assert_bitwise_equal(gpu.forward_fp32(*on_gpu[:2]).cpu(), ref.forward_fp32(x, w), "forward_fp32")
    got = gpu.backward(on_gpu[3], *on_gpu[:3])
    assert_same_results([t.cpu() for t in got], ref.backward(g, x, w, b), "backward")
    partials = torch.stack([ref.forward_fp32(x, w), ref.forward_fp32(x, w) * 0.5])
    assert_bitwise_equal(gk.merge_linear_partials(to_gpu(partials), on_gpu[2], dtype=dtype, backend=GPU).cpu(),
                         gk.merge_linear_partials(partials, b, dtype=dtype), "merge")


# ---- Axis-A: a row's bits do not depend on its batch ----------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
def test_decode_row_equals_the_same_row_in_a_big_batch_T1(dtype, gen):
    """A decode step (M = 1) and prefill-sized batches (M = 4096, 37) give the same
    bits for the same rows, whatever tile or thread the row lands in."""
    x, w, b = problem(4096, 80, 512, dtype, gen)
    big = gk.linear(x, w, b)
    for row in (0, 5, 2047, 4095):
        assert_bitwise_equal(gk.linear(x[row:row + 1], w, b)[0], big[row], f"row {row} alone")
        assert_bitwise_equal(gk.linear(x[row], w, b), big[row], f"row {row} as a vector")
    assert_bitwise_equal(gk.linear(x[100:137], w, b), big[100:137], "rows 100..136 as a batch of 37")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_batch_invariance_T1_T2_T3(backend, dtype, gen):
    x, w, b = problem(64, 48, 300, dtype, gen)
    g = randn(64, 48, dtype=dtype, gen=gen)
    lin = op(backend)

    def y_and_dx(x, g):  # rows move to other tiles and tile positions
        return lin.forward(x, w, b), lin.backward(g, x, w)[0]

    check_batch_invariance(y_and_dx, x, g, batched=(0, 1))
    check_position_invariance(y_and_dx, x, g, batched=(0, 1))
    check_neighbour_invariance(y_and_dx, x, g, batched=(0, 1), row=3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=dtype_id)
def test_thread_count_invariance_T7(dtype, gen):
    x, w, b = problem(301, 150, 700, dtype, gen)
    g = randn(301, 150, dtype=dtype, gen=gen)
    lin = op("cpu")

    def outputs(x, g):  # y, the decode row alone, dx, dweight, dbias
        return lin.forward(x, w, b), lin.forward(x[:1], w, b), *lin.backward(g, x, w, b)

    check_thread_invariance(outputs, x, g, thread_counts=(1, 2, 3, 8))


def test_weight_gradients_are_deterministic_over_runs(threads, gen):
    x, w, b = problem(700, 40, 64, torch.float32, gen)
    g = randn(700, 40, gen=gen)
    threads(2)
    first = op("cpu").backward(g, x, w, b)
    for _ in range(3):
        assert_same_results(op("cpu").backward(g, x, w, b), first, "rerun")


def test_leading_dimensions_are_rows(gen):
    x, w, b = problem(2 * 3 * 5, 24, 40, torch.bfloat16, gen)
    y = gk.linear(x.reshape(2, 3, 5, 40), w, b)
    assert y.shape == (2, 3, 5, 24)
    assert_bitwise_equal(y.reshape(-1, 24), gk.linear(x, w, b), "layout")


def test_lm_head_is_the_same_contraction(gen):
    hidden, w, _ = problem(5, 1000, 256, torch.bfloat16, gen, bias=False)
    head = op(name="lm_head")
    assert_bitwise_equal(head.forward(hidden, w), gk.linear(hidden, w), "lm_head forward")
    assert_bitwise_equal(head.forward_fp32(hidden, w), op().forward_fp32(hidden, w), "lm_head forward_fp32")
    assert_bitwise_equal(gk.lm_head(hidden[2], w), gk.linear(hidden, w)[2], "lm_head decode row")


# ---- Axis-B: accuracy against float64 ------------------------------------------------

def contraction_gamma(length: int) -> float:
    """gamma for one contraction of `length` terms in the canonical order: a chain of
    at most K_BLOCK fmas (one rounding each), then ceil(log2(blocks)) tree additions."""
    blocks = max(1, math.ceil(length / K_BLOCK))
    return gamma(min(max(length, 1), K_BLOCK) + math.ceil(math.log2(blocks)))


def rounded_bound(fp32_error, ref, out_dtype):
    """The fp32 error, plus half an ulp of out_dtype for the final rounding."""
    if out_dtype == torch.float32:
        return fp32_error
    return fp32_error + 0.5 * ulp(ref.abs() + fp32_error, out_dtype) + smallest_subnormal(out_dtype)


def forward_bound(x, w, b, ref, out_dtype):
    """|y - ref| <= gamma(n + 1) * (sum_k |x_k w_k| + |b|) + output rounding (the +1 is
    the bias add), with n the chain length plus tree depth."""
    magnitude = x.double().abs() @ w.double().abs().T
    if b is not None:
        magnitude = magnitude + b.double().abs()
    in_features = x.shape[-1]
    fp32_error = (contraction_gamma(in_features) + gamma(1)) * magnitude + 2 * smallest_subnormal(torch.float32)
    return rounded_bound(fp32_error, ref, out_dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("in_features", [1, 100, 256, 4096, 5000])
def test_forward_within_rigorous_bound(dtype, in_features, gen):
    x, w, b = problem(20, 96, in_features, dtype, gen)
    x[0] *= 1e-3  # a small-magnitude row
    ref = reference.linear(x, w, b)
    fp32 = op().forward_fp32(x, w, b)
    assert_within(fp32, ref, forward_bound(x, w, b, ref, torch.float32), "forward_fp32")
    rounded = gk.linear(x, w, b)
    assert_within(rounded, ref, forward_bound(x, w, b, ref, dtype), f"forward {dtype}")
    assert_peer_floor(rounded, ref, "reduction", dtype, "peer floor")


def test_bf16_output_within_one_ulp_of_the_truth(gen):
    x, w, _ = problem(64, 256, 4096, torch.bfloat16, gen, bias=False)
    ref = reference.linear(x, w)
    error = (gk.linear(x, w).double() - ref).abs()
    well_conditioned = ref.abs() > 0.05 * (x.double().abs() @ w.double().abs().T)
    assert bool((error <= ulp(ref, torch.bfloat16))[well_conditioned].all())


@pytest.mark.parametrize("rows", [1, 300, 1100])
def test_backward_within_bound(rows, gen):
    x, w, b = problem(rows, 600, 80, torch.float32, gen)
    g = randn(rows, 600, gen=gen)
    dx, dw, db = op().backward(g, x, w, b)
    ref_dx, ref_dw, ref_db = reference.linear_backward(g, x, w, with_bias=True)
    g64, x64, w64 = g.double().abs(), x.double().abs(), w.double().abs()
    tiny = 2 * smallest_subnormal(torch.float32)
    assert_within(dx, ref_dx, contraction_gamma(600) * (g64 @ w64) + tiny, "dx")
    assert_within(dw, ref_dw, contraction_gamma(rows) * (g64.T @ x64) + tiny, "dweight")
    assert_within(db, ref_db, contraction_gamma(rows) * g64.sum(0) + tiny, "dbias")
    assert_peer_floor(dx, ref_dx, "reduction", torch.float32, "dx peer floor")


def test_backward_returns_dbias_only_with_a_bias(gen):
    x, w, b = problem(3, 4, 5, torch.float32, gen)
    g = randn(3, 4, gen=gen)
    assert len(op().backward(g, x, w)) == 2
    dx, dw, db = op().backward(g, x, w, b)
    assert db.shape == (4,)
    assert_same_results(op().backward(g, x, w), (dx, dw), "no bias")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=dtype_id)
def test_low_precision_rounds_once(dtype, gen):
    x, w, b = problem(30, 40, 300, dtype, gen)
    g = randn(30, 40, dtype=dtype, gen=gen)
    lin = op()
    assert_bitwise_equal(lin.forward(x, w, b), lin.forward_fp32(x, w, b).to(dtype), "forward")
    for rounded, fp32, what in zip(lin.backward(g, x, w, b), lin.backward(g, x, w, b, fp32=True),
                                   ("dx", "dweight", "dbias")):
        assert rounded.dtype == dtype and fp32.dtype == torch.float32
        assert_bitwise_equal(rounded, fp32.to(dtype), f"{what} is the fp32 gradient rounded once")


# ---- Edge cases ------------------------------------------------------------------------

def test_non_finite_input_stays_in_its_row(gen):
    x, w, b = problem(4, 20, 64, torch.float32, gen)
    clean = gk.linear(x, w, b)
    x[1, 7] = float("nan")
    x[2, 9] = float("inf")
    dirty = gk.linear(x, w, b)
    assert bool(dirty[1].isnan().all()) and bool((~dirty[2].isfinite()).all())
    assert_bitwise_equal(dirty[[0, 3]], clean[[0, 3]], "clean rows")


def test_empty_sizes():
    assert gk.linear(torch.zeros(0, 8), torch.ones(5, 8)).shape == (0, 5)
    assert gk.linear(torch.zeros(3, 8), torch.ones(0, 8)).shape == (3, 0)
    bias = torch.tensor([1.5, -2.0])
    assert_bitwise_equal(gk.linear(torch.zeros(3, 0), torch.zeros(2, 0), bias), bias.expand(3, 2), "K = 0: bias")
    dx, dw, db = op().backward(torch.zeros(0, 2), torch.zeros(0, 8), torch.ones(2, 8), bias)
    assert dx.shape == (0, 8)
    assert_bitwise_equal(dw, torch.zeros(2, 8), "no rows: zero weight gradient")
    assert_bitwise_equal(db, torch.zeros(2), "no rows: zero bias gradient")


def test_inputs_are_not_mutated(gen):
    x, w, b = problem(8, 24, 100, torch.bfloat16, gen)
    g = randn(8, 24, dtype=torch.bfloat16, gen=gen)
    copies = [t.clone() for t in (x, w, b, g)]
    gk.linear(x, w, b)
    op().backward(g, x, w, b)
    for before, after in zip(copies, (x, w, b, g)):
        assert_bitwise_equal(after, before, "input changed")


def test_numpy_input_gives_numpy_output(gen):
    x, w, b = problem(4, 8, 64, torch.float32, gen)
    y = gk.linear(x.numpy(), w.numpy(), b.numpy())
    assert type(y).__name__ == "ndarray"
    assert_bitwise_equal(torch.from_numpy(y), gk.linear(x, w, b), "numpy vs torch")


# ---- Bad input -------------------------------------------------------------------------

F32, BF16 = torch.float32, torch.bfloat16


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: (torch.zeros(4, 8), torch.ones(5, 7), None), ValueError, "inner dimensions differ"),
        (lambda: (torch.zeros(4, 8), torch.ones(8), None), ValueError, "weight: expected 2 dimensions"),
        (lambda: (torch.zeros(4, 8), torch.ones(5, 8), torch.ones(4)), ValueError, "bias: expected shape"),
        (lambda: (torch.zeros(4, 8), torch.ones(5, 8), torch.ones(1, 5)), ValueError, "bias: expected shape"),
        (lambda: (torch.zeros(4, 8), torch.ones(5, 8, dtype=BF16), None), TypeError, "must have the dtype of x"),
        (lambda: (torch.zeros(4, 8), torch.ones(5, 8), torch.ones(5, dtype=BF16)), TypeError, "must have the dtype"),
        (lambda: (torch.zeros(4, 8, dtype=torch.float64), torch.ones(5, 8, dtype=torch.float64), None), TypeError,
         "unsupported dtype float64"),
        (lambda: (torch.zeros(4, 8, dtype=torch.int32), torch.ones(5, 8, dtype=torch.int32), None), TypeError,
         "expected float32"),
        (lambda: (torch.zeros(8, 4).t(), torch.ones(5, 8), None), ValueError, "contiguous"),
        (lambda: (torch.zeros(4, 8), torch.ones(8, 5).t(), None), ValueError, "contiguous"),
        (lambda: (torch.tensor(1.0), torch.ones(5, 1), None), ValueError, "at least 1 dimension"),
        (lambda: ([1.0, 2.0], torch.ones(5, 2), None), TypeError, "torch.Tensor or numpy.ndarray"),
        (lambda: (torch.zeros(4, 8), torch.ones(5, 8).numpy(), None), ValueError, "one device"),
        (lambda: (torch.zeros(4, 8, device="meta"), torch.ones(5, 8, device="meta"), None), ValueError,
         "unsupported device meta"),
    ],
)
def test_bad_input_raises_clearly(make, error, match):
    x, w, b = make()
    with pytest.raises(error, match=match):
        gk.linear(x, w, b)


def test_bad_backward_input_raises_clearly():
    x, w = torch.zeros(4, 8), torch.ones(5, 8)
    with pytest.raises(ValueError, match="grad_out: expected shape"):
        op().backward(torch.zeros(4, 6), x, w)
    with pytest.raises(TypeError, match="must have the dtype of x"):
        op().backward(torch.zeros(4, 5, dtype=BF16), x, w)
    with pytest.raises(ValueError, match="unknown backend"):
        gk.get_op("linear", backend="tpu")


# ---- out= ------------------------------------------------------------------------------

@pytest.mark.parametrize("rows", [1, 7])
def test_out_argument_receives_the_same_bits(rows, gen):
    x, w, b = problem(rows, 40, 300, torch.bfloat16, gen)
    out = torch.empty(rows, 40, dtype=torch.bfloat16)
    assert gk.linear(x, w, b, out=out) is out
    assert_bitwise_equal(out, gk.linear(x, w, b), "out=")
    out32 = torch.empty(rows, 40)
    gk.linear(x, w, b, out=out32)
    assert_bitwise_equal(out32, op().forward_fp32(x, w, b), "float32 out=")
    x32, w32, _ = problem(rows, 40, 300, torch.float32, gen)
    out32 = torch.full((rows, 40), float("nan"))
    gk.linear(x32, w32, out=out32)
    assert_bitwise_equal(out32, op(backend="reference").forward(x32, w32), "fp32 decode out= vs reference")


def test_lm_head_out_argument(gen):
    hidden, w, _ = problem(3, 500, 256, torch.bfloat16, gen, bias=False)
    out = torch.empty(3, 500, dtype=torch.bfloat16)
    assert gk.lm_head(hidden, w, out=out) is out
    assert_bitwise_equal(out, gk.lm_head(hidden, w), "lm_head out=")


@pytest.mark.parametrize(
    "make_out, error, match",
    [
        (lambda x, w: torch.empty(4, 5, dtype=x.dtype), ValueError, "out: expected shape"),
        (lambda x, w: torch.empty(4, 6, dtype=torch.float16), TypeError, "out: expected bfloat16 or float32"),
        (lambda x, w: x[:, :6], ValueError, "contiguous"),
        (lambda x, w: torch.empty(6, 4, dtype=x.dtype).t(), ValueError, "contiguous"),
        (lambda x, w: x.reshape(-1)[:24].reshape(4, 6), ValueError, "overlaps x"),
        (lambda x, w: w.reshape(-1)[:24].reshape(4, 6), ValueError, "overlaps weight"),
        (lambda x, w: torch.empty(4, 6).numpy(), ValueError, "one device"),
    ],
)
def test_bad_out_is_rejected(make_out, error, match, gen):
    x, w, _ = problem(4, 6, 8, torch.bfloat16, gen, bias=False)
    before = [t.clone() for t in (x, w)]
    with pytest.raises(error, match=match):
        gk.linear(x, w, out=make_out(x, w))
    for after, want in zip((x, w), before):
        assert_bitwise_equal(after, want, "input untouched")


def test_back_to_back_decode_calls_on_the_thread_pool(threads, gen):
    """Many short multi-threaded jobs in a row (helpers may join a job late or
    not at all): every call gives the one-thread bits, and none hangs."""
    x, w, _ = problem(1, 256, 512, torch.float32, gen, bias=False)
    threads(1)
    want = gk.linear(x, w)
    for n in (2, 3, 2, 4):
        threads(n)
        out = torch.empty(1, 256)
        for _ in range(200):
            assert_bitwise_equal(gk.linear(x, w, out=out), want, f"{n} threads")
