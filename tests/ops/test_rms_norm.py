"""rms_norm against the contract: Axis-A invariance on raw bits, Axis-B
accuracy against float64 with a rigorous bound (and the peer floor), Axis-C
every CPU path equal to the scalar reference, bad input, no mutation."""

from __future__ import annotations

import math

import pytest
import torch

import golden_kernels as gk
from golden_kernels import _C
from golden_kernels.testing import assert_bitwise_equal, assert_peer_floor, assert_within, gamma, ulp, unit_roundoff
from golden_kernels.testing.bounds import smallest_subnormal
from golden_kernels.testing import (
    check_batch_invariance,
    check_neighbour_invariance,
    check_position_invariance,
    check_thread_invariance,
)

from .. import reference
from ..conftest import FLOAT_DTYPES, dtype_id

ROW_BLOCK = 4096  # csrc/core/reduce.h kRowBlock
LANES = 32
EPS = 1e-6
# Odd sizes around the lane width and the block size, QK-norm 128, Qwen3 hidden 4096.
COLS = (1, 7, 31, 32, 33, 128, 1000, 4096, 4097, 10000)


def rms_op(backend):
    return gk.get_op("rms_norm", backend=backend)


def random_rows(rows, cols, dtype, gen, scale=1.0):
    return (torch.randn(rows, cols, generator=gen) * scale).to(dtype)


def inverse_rms_relative_error(cols: int) -> float:
    """Relative error bound of r = 1/sqrt(ss/cols + eps) as computed: ss has
    per-lane fma chains of ceil(block/32) terms, the 5-level lane tree and the
    block tree; then one rounding each for /cols, +eps, sqrt and 1/x."""
    u = unit_roundoff()
    per_lane = math.ceil(min(cols, ROW_BLOCK) / LANES)
    block_levels = math.ceil(math.log2(math.ceil(cols / ROW_BLOCK))) if cols > ROW_BLOCK else 0
    g = gamma(per_lane + 5 + block_levels + 2)
    return (1 + u) / (math.sqrt(1 - g) * (1 - u)) - 1


def forward_bound(ref: torch.Tensor, cols: int, out_dtype: torch.dtype) -> torch.Tensor:
    """|y - ref| bound: relative error of r, two multiplies, the final rounding
    to out_dtype (half an ulp), plus underflow and float64 reference slack."""
    u = unit_roundoff()
    relative = (1 + inverse_rms_relative_error(cols)) * (1 + u) ** 2 - 1 + 2.0**-45
    fp32_error = relative * ref.abs() + 2 * smallest_subnormal(torch.float32)
    if out_dtype == torch.float32:
        return fp32_error
    return fp32_error + 0.5 * ulp(ref.abs() + fp32_error, out_dtype) + smallest_subnormal(out_dtype)


# ---- Axis-C: every CPU path gives the reference's bits ---------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("cols", COLS)
def test_cpu_paths_equal_reference(cpu_isa, threads, dtype, cols, gen):
    x = random_rows(37, cols, dtype, gen)
    w = random_rows(1, cols, dtype, gen).reshape(cols)
    g = random_rows(37, cols, dtype, gen)
    threads(2)
    fast, ref = rms_op("cpu"), rms_op("reference")
    assert_bitwise_equal(fast.forward(x, w), ref.forward(x, w), "forward")
    assert_bitwise_equal(fast.forward_fp32(x, w), ref.forward_fp32(x, w), "forward_fp32")
    assert_bitwise_equal(fast.forward(x, w, rounding="hf"), ref.forward(x, w, rounding="hf"), "hf rounding")
    for fast_grad, ref_grad, what in zip(fast.backward(g, x, w), ref.backward(g, x, w), ("dx", "dweight")):
        assert_bitwise_equal(fast_grad, ref_grad, what)


def test_float16_extremes_round_as_the_rules_say(cpu_isa, gen):
    """fp16 rows run widened, their outputs made in 512-element pieces and
    narrowed. Against torch's own fp16 casts of our fp32 results: round-once
    is forward_fp32 rounded; HF is x * r (forward_fp32 with unit weights)
    rounded, times w, rounded again. Weights span fp16's range (outputs that
    overflow to inf, subnormal outputs); rows with a NaN, an inf, all zeros,
    fp16's largest values; 1300 columns (two pieces and a tail); every ISA."""
    cols = 1300
    x = random_rows(8, cols, torch.float16, gen)
    x[2, 700] = float("nan")
    x[3, 1299] = float("inf")
    x[4] = 0.0
    x[5] = 65504.0
    x[6, ::3] = -65504.0
    exponents = torch.randint(-24, 16, (cols,), generator=gen).double()
    signs = torch.where(torch.rand(cols, generator=gen) < 0.5, -1.0, 1.0).double()
    w = (signs * 2.0**exponents).to(torch.float16)
    op = rms_op("cpu")
    once = op.forward(x, w)
    assert bool(once.isinf().any()) and bool(((once != 0) & (once.abs() < 2.0**-14)).any()), "extremes not reached"
    assert_bitwise_equal(once, op.forward_fp32(x, w).to(torch.float16), "round once")
    normalized = op.forward_fp32(x, torch.ones(cols, dtype=torch.float16)).to(torch.float16)
    hf = (normalized.float() * w.float()).to(torch.float16)
    assert_bitwise_equal(op.forward(x, w, rounding="hf"), hf, "hf rounding")


# ---- Axis-A: a row's bits do not depend on its batch ----------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_batch_invariance_T1_T2_T3(backend, dtype, gen):
    cols = 4096
    x, g = random_rows(64, cols, dtype, gen), random_rows(64, cols, dtype, gen)
    w = random_rows(1, cols, dtype, gen).reshape(cols)
    op = rms_op(backend)

    def y_and_dx(x, g):
        return op.forward(x, w), op.backward(g, x, w)[0]

    check_batch_invariance(y_and_dx, x, g, batched=(0, 1))
    check_position_invariance(y_and_dx, x, g, batched=(0, 1))
    check_neighbour_invariance(y_and_dx, x, g, batched=(0, 1), row=3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
def test_thread_count_invariance_T7(dtype, gen):
    x, g = random_rows(300, 4097, dtype, gen), random_rows(300, 4097, dtype, gen)
    w = random_rows(1, 4097, dtype, gen).reshape(4097)
    op = rms_op("cpu")
    check_thread_invariance(lambda x, g: (op.forward(x, w), *op.backward(g, x, w)), x, g, thread_counts=(1, 2, 3, 8))


def test_qk_norm_layout_matches_rows(gen):
    """QK-norm over head_dim 128 on [B, S, H, D]: the same as normalising the
    flattened rows, and each head's bits independent of the others."""
    q = random_rows(2 * 5 * 8, 128, torch.bfloat16, gen).reshape(2, 5, 8, 128)
    w = random_rows(1, 128, torch.bfloat16, gen).reshape(128)
    y = gk.rms_norm(q, w)
    assert y.shape == q.shape
    assert_bitwise_equal(y.reshape(-1, 128), gk.rms_norm(q.reshape(-1, 128), w), "layout")
    assert_bitwise_equal(gk.rms_norm(q[1, 4, 6], w), y[1, 4, 6], "one head alone")


# ---- Axis-B: accuracy against float64 ------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("cols", (1, 33, 128, 4096, 10000))
def test_forward_within_rigorous_bound(dtype, cols, gen):
    x = random_rows(64, cols, dtype, gen)
    x[0] *= 1e-3  # a small-magnitude row
    w = random_rows(1, cols, dtype, gen).reshape(cols)
    ref = reference.rms_norm(x, w, EPS)
    fp32 = gk.get_op("rms_norm").forward_fp32(x, w, EPS)
    assert_within(fp32, ref, forward_bound(ref, cols, torch.float32), "forward_fp32")
    rounded = gk.rms_norm(x, w, EPS)
    assert_within(rounded, ref, forward_bound(ref, cols, dtype), f"forward {dtype}")
    assert_peer_floor(rounded, ref, "reduction", dtype, "peer floor")


def test_bf16_output_within_one_ulp_of_the_truth(gen):
    x = random_rows(256, 4096, torch.bfloat16, gen)
    w = random_rows(1, 4096, torch.bfloat16, gen).reshape(4096)
    ref = reference.rms_norm(x, w, EPS)
    error = (gk.rms_norm(x, w, EPS).double() - ref).abs()
    assert bool((error <= ulp(ref, torch.bfloat16)).all())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=dtype_id)
def test_hf_rounding_mode(dtype, gen):
    """HF mode rounds twice (x * r to the input dtype, then the weight product),
    so it is within two half-ulps of the truth, and it agrees with Hugging
    Face's own formula wherever that one's fp32 stage lands on the same value."""
    x = random_rows(64, 4096, dtype, gen)
    w = random_rows(1, 4096, dtype, gen).reshape(4096)
    ours = gk.rms_norm(x, w, EPS, rounding="hf")
    ref = reference.rms_norm(x, w, EPS)
    u = unit_roundoff(dtype)
    fp32_part = forward_bound(ref, 4096, torch.float32)
    bound = (ref.abs() + fp32_part) * ((1 + u) ** 2 - 1) + fp32_part + 2 * smallest_subnormal(dtype)
    assert_within(ours, ref, bound, "hf mode vs float64")
    hf = reference.rms_norm_hf_qwen3(x, w, EPS)
    agree = float((ours == hf).double().mean())
    assert agree > 0.99, f"only {agree:.4f} of elements equal Hugging Face's output"


def backward_bounds(g, x, w, cols):
    """First-order bounds for dx and dweight from the canonical formulas:
    dx = gw r - x c with c = dot/cols r^3, dweight = sum over rows of g (x r)."""
    r_error = inverse_rms_relative_error(cols)
    g64, x64, w64 = g.double(), x.double(), w.double()
    r = 1 / torch.sqrt((x64 * x64).mean(-1, keepdim=True) + reference.fp32_scalar(EPS))
    gw = g64 * w64
    per_lane = math.ceil(min(cols, ROW_BLOCK) / LANES)
    dot_abs = (gw * x64).abs().sum(-1, keepdim=True)
    c_abs = dot_abs / cols * r**3
    dx_relative = 3 * r_error + gamma(per_lane + 12)
    dx_bound = dx_relative * (gw.abs() * r + x64.abs() * c_abs) + 4 * smallest_subnormal(torch.float32)
    rows = x.shape[0]
    blocks = math.ceil(rows / _C.RMS_NORM_GRAD_ROW_BLOCK)
    tree_levels = math.ceil(math.log2(blocks)) if blocks > 1 else 0
    dw_relative = r_error + gamma(min(rows, _C.RMS_NORM_GRAD_ROW_BLOCK) + tree_levels + 2)
    dw_bound = dw_relative * (g64 * x64 * r).abs().sum(0) + 4 * smallest_subnormal(torch.float32)
    return dx_bound, dw_bound


@pytest.mark.parametrize("cols", (33, 128, 4096, 5000))
@pytest.mark.parametrize("rows", (1, 64, 300))
def test_backward_within_bound(rows, cols, gen):
    x = random_rows(rows, cols, torch.float32, gen)
    w = random_rows(1, cols, torch.float32, gen).reshape(cols)
    g = random_rows(rows, cols, torch.float32, gen)
    dx, dw = gk.get_op("rms_norm").backward(g, x, w, EPS)
    ref_dx, ref_dw = reference.rms_norm_backward(g, x, w, EPS)
    dx_bound, dw_bound = backward_bounds(g, x, w, cols)
    assert_within(dx, ref_dx, dx_bound, "dx")
    assert_within(dw, ref_dw, dw_bound, "dweight")
    assert_peer_floor(dx, ref_dx, "reduction", torch.float32, "dx peer floor")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=dtype_id)
def test_backward_low_precision_rounds_once(dtype, gen):
    x = random_rows(50, 4096, dtype, gen)
    w = random_rows(1, 4096, dtype, gen).reshape(4096)
    g = random_rows(50, 4096, dtype, gen)
    op = gk.get_op("rms_norm")
    dx, dw = op.backward(g, x, w)
    dx32, dw32 = op.backward(g, x, w, fp32=True)
    assert dx.dtype == dtype and dx32.dtype == torch.float32
    assert_bitwise_equal(dx, dx32.to(dtype), "dx is the fp32 gradient rounded once")
    assert_bitwise_equal(dw, dw32.to(dtype), "dweight is the fp32 gradient rounded once")


def test_dweight_is_deterministic_over_runs_and_threads(threads, gen):
    x = random_rows(1000, 512, torch.float32, gen)
    w = random_rows(1, 512, torch.float32, gen).reshape(512)
    g = random_rows(1000, 512, torch.float32, gen)
    threads(1)
    first = gk.get_op("rms_norm", "cpu").backward(g, x, w)[1]
    for n in (2, 5):
        threads(n)
        for _ in range(3):
            assert_bitwise_equal(gk.get_op("rms_norm", "cpu").backward(g, x, w)[1], first, f"{n} threads")


# ---- Non-finite values stay in their row ------------------------------------------------

def test_non_finite_row_does_not_touch_others(gen):
    x = random_rows(4, 256, torch.float32, gen)
    w = random_rows(1, 256, torch.float32, gen).reshape(256)
    clean = gk.rms_norm(x, w)
    x[1, 7] = float("nan")
    x[2, 9] = float("inf")
    dirty = gk.rms_norm(x, w)
    assert bool(dirty[1].isnan().all()) and bool(dirty[2].isnan().any())
    assert_bitwise_equal(dirty[[0, 3]], clean[[0, 3]], "clean rows")


def test_zero_row_is_zero_with_positive_eps():
    y = gk.rms_norm(torch.zeros(2, 64), torch.ones(64), 1e-6)
    assert_bitwise_equal(y, torch.zeros(2, 64), "zeros")


# ---- API, bad input and no mutation ----------------------------------------------------

def test_inputs_are_not_mutated(gen):
    x = random_rows(8, 100, torch.bfloat16, gen)
    w = random_rows(1, 100, torch.bfloat16, gen).reshape(100)
    g = random_rows(8, 100, torch.bfloat16, gen)
    copies = [t.clone() for t in (x, w, g)]
    gk.rms_norm(x, w)
    gk.get_op("rms_norm").backward(g, x, w)
    for before, after in zip(copies, (x, w, g)):
        assert_bitwise_equal(after, before, "input changed")


def test_numpy_input_gives_numpy_output(gen):
    x = random_rows(4, 64, torch.float32, gen)
    w = random_rows(1, 64, torch.float32, gen).reshape(64)
    y = gk.rms_norm(x.numpy(), w.numpy())
    assert type(y).__name__ == "ndarray"
    assert_bitwise_equal(torch.from_numpy(y), gk.rms_norm(x, w), "numpy vs torch")


def test_empty_batch_is_fine():
    y = gk.rms_norm(torch.zeros(0, 64), torch.ones(64))
    assert y.shape == (0, 64)
    dx, dw = gk.get_op("rms_norm").backward(torch.zeros(0, 64), torch.zeros(0, 64), torch.ones(64))
    assert dx.shape == (0, 64)
    assert_bitwise_equal(dw, torch.zeros(64), "no rows, zero weight gradient")


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: (torch.zeros(4, 8), torch.ones(7)), ValueError, "weight: expected shape"),
        (lambda: (torch.zeros(4, 8), torch.ones(1, 8)), ValueError, "weight: expected shape"),
        (lambda: (torch.zeros(4, 0), torch.ones(0)), ValueError, "must not be empty"),
        (lambda: (torch.zeros(4, 8, dtype=torch.float64), torch.ones(8, dtype=torch.float64)), TypeError, "unsupported dtype float64"),
        (lambda: (torch.zeros(4, 8, dtype=torch.int32), torch.ones(8, dtype=torch.int32)), TypeError, "expected float32"),
        (lambda: (torch.zeros(4, 8), torch.ones(8, dtype=torch.bfloat16)), TypeError, "must have the dtype of x"),
        (lambda: (torch.zeros(8, 4).t(), torch.ones(8)), ValueError, "contiguous"),
        (lambda: (torch.tensor(1.0), torch.ones(1)), ValueError, "at least 1 dimension"),
        (lambda: ([1.0, 2.0], torch.ones(2)), TypeError, "torch.Tensor or numpy.ndarray"),
    ],
)
def test_bad_input_raises_clearly(make, error, match):
    x, w = make()
    with pytest.raises(error, match=match):
        gk.rms_norm(x, w)


@pytest.mark.parametrize("eps", [float("nan"), float("inf"), -1.0])
def test_bad_eps_is_rejected(eps):
    with pytest.raises(ValueError, match="eps"):
        gk.rms_norm(torch.ones(2, 8), torch.ones(8), eps)


def test_bad_rounding_and_backend_are_rejected():
    with pytest.raises(ValueError, match="rounding must be one of"):
        gk.rms_norm(torch.ones(2, 8), torch.ones(8), rounding="twice")
    with pytest.raises(ValueError, match="unknown backend"):
        gk.rms_norm(torch.ones(2, 8), torch.ones(8), backend="tpu")


def test_mixed_frameworks_are_rejected():
    with pytest.raises(ValueError, match="one device"):
        gk.rms_norm(torch.ones(2, 8), torch.ones(8).numpy())


def test_backward_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="grad_out must have the shape of x"):
        gk.get_op("rms_norm").backward(torch.ones(3, 8), torch.ones(2, 8), torch.ones(8))


def test_out_argument_receives_the_same_bits(gen):
    x = random_rows(8, 300, torch.bfloat16, gen)
    w = random_rows(1, 300, torch.bfloat16, gen).reshape(300)
    out = torch.empty_like(x)
    assert gk.rms_norm(x, w, out=out) is out
    assert_bitwise_equal(out, gk.rms_norm(x, w), "out=")
    out32 = torch.empty(8, 300)
    gk.rms_norm(x, w, out=out32)
    assert_bitwise_equal(out32, gk.get_op("rms_norm").forward_fp32(x, w), "float32 out")


@pytest.mark.parametrize(
    "make_out, error, match",
    [
        (lambda x: torch.empty(8, 299, dtype=x.dtype), ValueError, "out must have the shape of x"),
        (lambda x: torch.empty(8, 300, dtype=torch.float16), TypeError, "out: expected bfloat16 or float32"),
        (lambda x: x, ValueError, "overlaps x"),
        (lambda x: torch.empty(300, 8, dtype=x.dtype).t(), ValueError, "contiguous"),
    ],
)
def test_bad_out_is_rejected(make_out, error, match, gen):
    x = random_rows(8, 300, torch.bfloat16, gen)
    w = random_rows(1, 300, torch.bfloat16, gen).reshape(300)
    before = x.clone()
    with pytest.raises(error, match=match):
        gk.rms_norm(x, w, out=make_out(x))
    assert_bitwise_equal(x, before, "x untouched")
