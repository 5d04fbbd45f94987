"""rope against the contract: the inverse-frequency table is HF's fp32 formula
correctly rounded; Axis-C every CPU path equal to the scalar reference on raw
bits; Axis-A T1-T7 through golden_kernels.testing (T4 padding, T5 chunked
prefill / decode, T6 packing) plus a ragged padded batch; Axis-B against
float64 at HF's fp32 angles (rigorous bound) and against HF's rotary code
entirely in float64 (bound including the fp32 angle); bad input."""

from __future__ import annotations

import decimal

import numpy as np
import pytest
import torch

import golden_kernels as gk
from golden_kernels.ops.rope import inverse_frequencies
from golden_kernels.testing import assert_bitwise_equal, assert_peer_floor, assert_within, ulp, unit_roundoff
from golden_kernels.testing import (
    check_batch_invariance,
    check_chunk_invariance,
    check_neighbour_invariance,
    check_packing_invariance,
    check_padding_invariance,
    check_position_invariance,
    check_thread_invariance,
)
from golden_kernels.testing.bounds import smallest_subnormal

from .. import reference
from ..nan_bits import CANONICAL, SIGNALING, set_bits, unsigned_bits
from ..conftest import FLOAT_DTYPES, dtype_id

THETA = 1_000_000.0  # Qwen3
HEADS, HEAD_DIM = 32, 128
# csrc/core/math.h's sin_f32/cos_f32 error, measured by tests/core/math_ulp.cpp,
# rounded up to 1 ulp: at most 2u relative.
TRIG_RELATIVE = 2 * unit_roundoff()
CONFIGS = [(128, 1e6), (128, 1e4), (64, 1e4), (80, 1e4), (96, 1e6), (256, 5e5), (2, 10.0), (6, 3.0)]


def rows(tokens, heads, head_dim, dtype, gen):
    return torch.randn(tokens, heads, head_dim, generator=gen).to(dtype)


def correctly_rounded_inv_freq(head_dim: int, theta: float) -> np.ndarray:
    """RN(1 / RN(theta ** RN(2i / D))) in float32 with exact intermediate powers (decimal, 50 digits)."""
    decimal.getcontext().prec = 50
    out = []
    for i in range(head_dim // 2):
        e = np.float32(2 * i) / np.float32(head_dim)
        exact = decimal.Decimal(float(np.float32(theta))) ** decimal.Decimal(float(e))
        guess = np.float32(float(exact))
        candidates = [np.nextafter(guess, np.float32(0)), guess, np.nextafter(guess, np.float32(np.inf))]
        power = min(candidates, key=lambda c: abs(decimal.Decimal(float(c)) - exact))
        out.append(np.float32(1) / power)
    return np.array(out, dtype=np.float32)


def fp32_bound(x, positions, inv_freq):
    """|out - ref| at fp32 angles: cos/sin within 2u, two products and a sum
    rounded once each, over the terms' magnitudes |x1 c| + |x2 s|."""
    u = unit_roundoff()
    angles = (positions.float()[..., None] * inv_freq).double()
    c = torch.cat((angles.cos(), angles.cos()), -1).unsqueeze(-2).abs()
    s = torch.cat((angles.sin(), angles.sin()), -1).unsqueeze(-2).abs()
    x64 = x.double().abs()
    half = x.shape[-1] // 2
    partner = torch.cat((x64[..., half:], x64[..., :half]), -1)
    return (TRIG_RELATIVE + 3 * u) * (x64 * c + partner * s) + 4 * smallest_subnormal(torch.float32)


def rounded(bound, ref, dtype):
    if dtype == torch.float32:
        return bound
    return bound + 0.5 * ulp(ref.abs() + bound, dtype) + smallest_subnormal(dtype)


# ---- The inverse frequencies --------------------------------------------------------------

@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("head_dim, theta", CONFIGS)
def test_inverse_frequencies_are_hf_formula_correctly_rounded(backend, head_dim, theta):
    ours = inverse_frequencies(head_dim, theta, backend=backend)
    assert_bitwise_equal(ours, torch.from_numpy(correctly_rounded_inv_freq(head_dim, theta)), "table")


@pytest.mark.parametrize("head_dim, theta", CONFIGS)
def test_inverse_frequencies_near_torch_hf(head_dim, theta):
    """HF computes the table with torch's fp32 pow, which is not always correctly
    rounded (on this CPU Qwen3's entry 37 is 1 ulp off); ours differs by at most
    1 ulp in a handful of entries."""
    ours = inverse_frequencies(head_dim, theta)
    hf = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    distance = (ours.view(torch.int32) - hf.view(torch.int32)).abs()
    assert int(distance.max()) <= 1 and int((distance > 0).sum()) <= max(2, head_dim // 32)


# ---- Axis-C: every CPU path gives the reference's bits ---------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("head_dim", (2, 6, 128, 200, 256))
@pytest.mark.parametrize("pos_dtype", (torch.int32, torch.int64), ids=dtype_id)
def test_cpu_paths_equal_reference(cpu_isa, threads, dtype, head_dim, pos_dtype, gen):
    x = rows(37, 3, head_dim, dtype, gen)
    positions = torch.randint(0, 200000, (37,), generator=gen, dtype=pos_dtype)
    positions[:3] = torch.tensor([0, 1, 2**24 + 1])
    threads(2)
    fast, ref = gk.get_op("rope", "cpu"), gk.get_op("rope", "reference")
    assert_bitwise_equal(fast.forward(x, positions), ref.forward(x, positions), "forward")
    assert_bitwise_equal(fast.forward_fp32(x, positions), ref.forward_fp32(x, positions), "forward_fp32")
    assert_bitwise_equal(fast.backward(x, positions), ref.backward(x, positions), "backward")
    assert_bitwise_equal(fast.backward(x, positions, fp32=True), ref.backward(x, positions, fp32=True), "bwd fp32")


# ---- Axis-A: a token's bits depend only on itself and its position -----------------------

def forward_and_backward(op):
    return lambda x, positions: (op.forward(x, positions), op.backward(x, positions))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_batch_invariance_T1_T2_T3(backend, gen):
    x = torch.randn(8, 16, 4, 128, generator=gen).to(torch.bfloat16)
    positions = torch.arange(16).repeat(8, 1)
    fn = forward_and_backward(gk.get_op("rope", backend))
    check_batch_invariance(fn, x, positions, batched=(0, 1), rows=(0, 3, 4, 7))
    check_position_invariance(fn, x, positions, batched=(0, 1))
    check_neighbour_invariance(fn, x, positions, batched=(0, 1), row=3)  # fresh values and shuffled positions
    louder = torch.randn(8, 16, 4, 128, generator=gen).to(torch.bfloat16) * 100
    check_neighbour_invariance(fn, x, positions, batched=(0, 1), row=3, neighbours=(louder, None))


def two_sequences(gen):
    """(x [n, 8, 128], positions [n]) of lengths 5 and 9 at explicit positions."""
    return [(torch.randn(n, 8, 128, generator=gen).to(torch.bfloat16), torch.arange(n) + 100 * k)
            for k, n in enumerate((5, 9))]


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_padding_invariance_T4(backend, gen):
    """NaN tokens to the left and/or right, their positions 0 or garbage (-1)."""
    fn = forward_and_backward(gk.get_op("rope", backend))
    for x, positions in two_sequences(gen):
        for pad_position in (0, -1):
            check_padding_invariance(fn, x[None], positions[None], padded=(0, 1), dim=1,
                                     pads=((0, 4), (4, 0), (2, 7)), int_pad_value=pad_position)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_chunked_prefill_and_decode_T5(backend, gen):
    fn = forward_and_backward(gk.get_op("rope", backend))
    for x, positions in two_sequences(gen):
        check_chunk_invariance(fn, x, positions, chunked=(0, 1), dim=0, chunk_sizes=(1, 3, 4))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_packing_T6(backend, gen):
    check_packing_invariance(forward_and_backward(gk.get_op("rope", backend)), two_sequences(gen))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_ragged_padded_batch_equals_packed_T4_T6(backend, gen):
    """One batch holding both sequences, padded to a common length on the right
    (pad positions 0) or on the left (pad positions -1): each sequence's tokens
    keep their packed bits. (The library's T4 pads every row alike.)"""
    op = gk.get_op("rope", backend)
    seqs = two_sequences(gen)
    lengths = [len(positions) for _, positions in seqs]
    expected = torch.split(op.forward(torch.cat([x for x, _ in seqs]), torch.cat([p for _, p in seqs])), lengths)
    width = max(lengths)
    right = torch.full((2, width, 8, 128), float("nan"), dtype=torch.bfloat16)
    left = right.clone()
    right_pos = torch.zeros(2, width, dtype=torch.int64)
    left_pos = torch.full((2, width), -1, dtype=torch.int64)
    for k, ((x, positions), n) in enumerate(zip(seqs, lengths)):
        right[k, :n], right_pos[k, :n] = x, positions
        left[k, width - n:], left_pos[k, width - n:] = x, positions
    out_right, out_left = op.forward(right, right_pos), op.forward(left, left_pos)
    for k, n in enumerate(lengths):
        assert_bitwise_equal(out_right[k, :n], expected[k], f"right padding, seq {k}")
        assert_bitwise_equal(out_left[k, width - n:], expected[k], f"left padding, seq {k}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
def test_thread_count_invariance_T7(dtype, gen):
    x = rows(301, 5, 128, dtype, gen)
    positions = torch.randint(0, 40000, (301,), generator=gen)
    check_thread_invariance(forward_and_backward(gk.get_op("rope", "cpu")), x, positions,
                            thread_counts=(1, 2, 3, 8))


# ---- Axis-B: accuracy against float64 ------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_forward_within_bound_at_hf_fp32_angles(dtype, gen):
    x = rows(256, 4, HEAD_DIM, dtype, gen)
    positions = torch.cat([torch.arange(128), torch.randint(0, 40960, (128,), generator=gen)])
    inv_freq = inverse_frequencies(HEAD_DIM, THETA)
    ref = reference.rope_at_fp32_angles(x, positions, inv_freq)
    bound = fp32_bound(x, positions, inv_freq)
    assert_within(gk.get_op("rope").forward_fp32(x, positions), ref, bound, "forward_fp32")
    out = gk.rope(x, positions)
    assert out.dtype == dtype
    assert_within(out, ref, rounded(bound, ref, dtype), "forward")
    assert_peer_floor(out, ref, "elementwise", dtype, "peer floor")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_backward_within_bound_at_hf_fp32_angles(dtype, gen):
    g = rows(128, 4, HEAD_DIM, dtype, gen)
    positions = torch.randint(0, 40960, (128,), generator=gen)
    inv_freq = inverse_frequencies(HEAD_DIM, THETA)
    x64 = torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
    reference.rope_at_fp32_angles(x64, positions, inv_freq).backward(g.double())
    bound = fp32_bound(g, positions, inv_freq)
    op = gk.get_op("rope")
    assert_within(op.backward(g, positions, fp32=True), x64.grad, bound, "dx fp32")
    dx = op.backward(g, positions)
    assert_bitwise_equal(dx, op.backward(g, positions, fp32=True).to(dtype), "dx rounded once")
    assert_peer_floor(dx, x64.grad, "elementwise", dtype, "peer floor")


def float64_truth_bound(x, positions):
    """Bound against HF's rotary code entirely in float64: the fp32 bound plus
    the fp32 angle's own error (as HF computes it), |x partner| * |angle64 - angle32|."""
    inv_freq = inverse_frequencies(HEAD_DIM, THETA)
    inv64 = 1.0 / (THETA ** (torch.arange(0, HEAD_DIM, 2, dtype=torch.float64) / HEAD_DIM))
    angle32 = (positions.float()[..., None] * inv_freq).double()
    angle_error = (positions.double()[..., None] * inv64 - angle32).abs()
    angle_error = torch.cat((angle_error, angle_error), -1).unsqueeze(-2)
    x64 = x.double().abs()
    half = HEAD_DIM // 2
    magnitude = x64 + torch.cat((x64[..., half:], x64[..., :half]), -1)
    return fp32_bound(x, positions, inv_freq) + magnitude * angle_error


def test_against_hf_entirely_in_float64(gen):
    x = rows(512, 2, HEAD_DIM, torch.float32, gen)
    positions = torch.randint(0, 32768, (512,), generator=gen)
    ref = reference.rope_hf_float64(x, positions, THETA)
    bound = float64_truth_bound(x, positions)
    assert_within(gk.get_op("rope").forward_fp32(x, positions), ref, bound, "fp32 vs float64 HF")


def test_bf16_rounded_once_from_near_truth_and_beats_hf_eager(gen):
    """bf16 output within half a bf16 ulp of a value within the float64 bound
    of HF's rotary code in float64, and never further from it than HF's own
    bf16 eager path (cos/sin and every op rounded to bf16) is at its worst."""
    x = torch.randn(2, 1024, 8, HEAD_DIM, generator=gen).to(torch.bfloat16)
    positions = torch.stack([torch.arange(1024), torch.arange(3072, 4096)])
    ref = reference.rope_hf_float64(x, positions, THETA)
    ours = gk.rope(x, positions)
    assert_within(ours, ref, rounded(float64_truth_bound(x, positions), ref, torch.bfloat16), "bf16")
    hf_error = (reference.rope_hf_eager(x, positions, THETA).double() - ref).abs()
    assert float((ours.double() - ref).abs().max()) <= float(hf_error.max())


# ---- API, bad input and no mutation ----------------------------------------------------

def test_inputs_are_not_mutated(gen):
    x = rows(6, 2, 8, torch.bfloat16, gen)
    positions = torch.arange(6, dtype=torch.int32)
    copies = [t.clone() for t in (x, positions)]
    gk.rope(x, positions)
    gk.get_op("rope").backward(x, positions)
    for before, after in zip(copies, (x, positions)):
        assert_bitwise_equal(after, before, "input changed")


def test_numpy_empty_and_position_zero(gen):
    x = rows(4, 2, 8, torch.float32, gen)
    positions = torch.tensor([0, 1, 2, 3])
    y = gk.rope(x.numpy(), positions.numpy())
    assert type(y).__name__ == "ndarray"
    assert_bitwise_equal(torch.from_numpy(y), gk.rope(x, positions), "numpy")
    assert_bitwise_equal(gk.rope(x[:1], positions[:1]), x[:1], "position 0 is the identity")
    assert gk.rope(torch.zeros(0, 2, 8), torch.zeros(0, dtype=torch.int64)).shape == (0, 2, 8)


def test_nan_stays_in_its_pair(gen):
    x = rows(2, 1, 8, torch.float32, gen)
    x[0, 0, 1] = float("nan")
    y = gk.rope(x, torch.tensor([5, 5]))
    assert bool(y[0, 0, [1, 5]].isnan().all()) and not bool(y[0, 0, [0, 2, 3, 4, 6, 7]].isnan().any())
    assert_bitwise_equal(y[1], gk.rope(x[1:], torch.tensor([5]))[0], "other token")


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_nan_bits_follow_the_policy_in_full_heads(backend, dtype, backward, gen):
    """The CPU rotates a head without the NaN policy first and again with it
    only when a result is a NaN; the reference runs the same code, so the
    expectation here is the documented rule: both outputs of a pair take the
    first NaN of (x[i], x[i + D/2]), quieted; a NaN the arithmetic makes
    (inf * 0 at position 0, where cos = 1 and sin = 0) is the canonical one;
    every other element keeps its bits."""
    op = gk.get_op("rope", backend)
    rotate = op.backward if backward else op.forward
    x = rows(6, HEADS, HEAD_DIM, dtype, gen)
    positions = torch.tensor([0, 3, 4096, 5, 6, 7])
    clean = rotate(x, positions)
    half = HEAD_DIM // 2
    signaling, quieted = SIGNALING[dtype]
    for token, head, i, expected in [(1, 3, 10, quieted), (2, 31, half + 40, quieted), (4, 0, 0, quieted)]:
        poisoned = x.clone()
        set_bits(poisoned[token, head], i, signaling)
        if i == 0:  # both of the pair: the first, x[i], wins
            set_bits(poisoned[token, head], half, SIGNALING[dtype][0] ^ 0x1)
        got = rotate(poisoned, positions)
        pair = [i % half, i % half + half]
        assert unsigned_bits(got[token, head, pair]).tolist() == [expected, expected], (token, head, i)
        keep = torch.ones_like(got, dtype=torch.bool)
        keep[token, head, pair] = False
        assert_bitwise_equal(got[keep], clean[keep], f"NaN at {(token, head, i)}: other elements")
    made = x.clone()
    made[0, 7, 5] = float("inf")  # position 0: inf * 1 - x2 * 0, and x2 * 1 + inf * 0 = NaN
    got = rotate(made, positions)
    assert unsigned_bits(got[0, 7, 5 + half]).item() == CANONICAL[dtype], "inf * 0"
    assert unsigned_bits(got[0, 7, 5]).item() == unsigned_bits(torch.tensor(float("inf"), dtype=dtype)).item()


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: (torch.zeros(4, 8), torch.zeros(4, dtype=torch.int64)), ValueError, "expected \\[batch, seq, heads, head_dim\\]"),
        (lambda: (torch.zeros(4, 2, 7), torch.zeros(4, dtype=torch.int64)), ValueError, "head_dim .* must be even"),
        (lambda: (torch.zeros(4, 2, 0), torch.zeros(4, dtype=torch.int64)), ValueError, "head_dim .* must be even"),
        (lambda: (torch.zeros(4, 2, 8), torch.zeros(4)), TypeError, "positions: expected int32 or int64"),
        (lambda: (torch.zeros(4, 2, 8), torch.zeros(5, dtype=torch.int64)), ValueError, r"positions: expected shape \(4,\)"),
        (lambda: (torch.zeros(2, 4, 2, 8), torch.zeros(4, 2, dtype=torch.int64)), ValueError, r"positions: expected shape \(2, 4\)"),
        (lambda: (torch.zeros(2, 4, 2, 8), torch.zeros(8, dtype=torch.int64)), ValueError, r"positions: expected shape \(2, 4\)"),
        (lambda: (torch.zeros(4, 2, 8, dtype=torch.int32), torch.zeros(4, dtype=torch.int64)), TypeError, "x: expected float32"),
        (lambda: (torch.zeros(4, 2, 8, dtype=torch.float64), torch.zeros(4, dtype=torch.int64)), TypeError, "unsupported dtype"),
        (lambda: (torch.zeros(8, 2, 4).transpose(0, 2), torch.zeros(4, dtype=torch.int64)), ValueError, "contiguous"),
        (lambda: (torch.zeros(4, 2, 8), torch.zeros(8, dtype=torch.int64)[::2]), ValueError, "positions: expected a contiguous"),
        (lambda: (torch.zeros(4, 2, 8), [0, 1, 2, 3]), TypeError, "torch.Tensor or numpy.ndarray"),
    ],
)
def test_bad_input_raises_clearly(make, error, match):
    x, positions = make()
    with pytest.raises(error, match=match):
        gk.rope(x, positions)


@pytest.mark.parametrize("theta", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_theta_is_rejected(theta):
    with pytest.raises(ValueError, match="theta"):
        gk.rope(torch.zeros(1, 1, 8), torch.zeros(1, dtype=torch.int64), theta=theta)


# ---- out= -------------------------------------------------------------------------------

def test_out_receives_the_same_bits_and_is_returned(gen):
    x = rows(6, 4, 64, torch.bfloat16, gen)
    positions = torch.tensor([0, 7, 100, 4095, 40000, 3], dtype=torch.int32)
    copies = [t.clone() for t in (x, positions)]
    out = torch.full_like(x, float("nan"))  # stale contents must not leak through
    assert gk.rope(x, positions, out=out) is out
    assert_bitwise_equal(out, gk.rope(x, positions), "out=")
    out32 = torch.full(x.shape, float("nan"))
    assert gk.get_op("rope").forward(x, positions, out=out32) is out32
    assert_bitwise_equal(out32, gk.get_op("rope").forward_fp32(x, positions), "float32 out=")
    out_np = gk.rope(x.float().numpy(), positions.numpy(), out=torch.empty(x.shape).numpy())
    assert_bitwise_equal(torch.from_numpy(out_np), gk.rope(x.float(), positions), "numpy out=")
    for before, after in zip(copies, (x, positions)):
        assert_bitwise_equal(after, before, "input changed")


@pytest.mark.parametrize(
    "make_out, error, match",
    [
        (lambda x, p: torch.empty(6, 4, 62, dtype=x.dtype), ValueError, "out must have the shape of x"),
        (lambda x, p: torch.empty(x.shape, dtype=torch.float16), TypeError, "out: expected bfloat16 or float32"),
        (lambda x, p: torch.empty(64, 4, 6, dtype=x.dtype).transpose(0, 2), ValueError, "contiguous"),
        (lambda x, p: torch.empty(x.shape, dtype=x.dtype, device="meta"), ValueError, "one device"),
        (lambda x, p: torch.empty(x.shape).numpy(), ValueError, "one device"),
        (lambda x, p: x, ValueError, "out overlaps x"),
    ],
)
def test_bad_out_is_rejected(make_out, error, match, gen):
    x = rows(6, 4, 64, torch.bfloat16, gen)
    positions = torch.arange(6, dtype=torch.int64)
    copies = [t.clone() for t in (x, positions)]
    with pytest.raises(error, match=match):
        gk.rope(x, positions, out=make_out(x, positions))
    for before, after in zip(copies, (x, positions)):
        assert_bitwise_equal(after, before, "input changed")


def test_out_overlapping_positions_is_rejected():
    # positions [1] int64 and out [1, 1, 4] float16: the same 8 bytes
    buffer = torch.zeros(4, dtype=torch.float16)
    positions = buffer.view(torch.int64)
    with pytest.raises(ValueError, match="out overlaps positions"):
        gk.rope(torch.zeros(1, 1, 4, dtype=torch.float16), positions, out=buffer.view(1, 1, 4))


def test_backward_out_receives_the_same_bits_and_is_returned(gen):
    grad = rows(6, 4, 64, torch.bfloat16, gen)
    positions = torch.tensor([0, 7, 100, 4095, 40000, 3], dtype=torch.int64)
    copies = [t.clone() for t in (grad, positions)]
    op = gk.get_op("rope")
    out = torch.full_like(grad, float("nan"))  # stale contents must not leak through
    assert op.backward(grad, positions, out=out) is out
    assert_bitwise_equal(out, op.backward(grad, positions), "backward out=")
    out32 = torch.full(grad.shape, float("nan"))
    assert op.backward(grad, positions, fp32=True, out=out32) is out32
    assert_bitwise_equal(out32, op.backward(grad, positions, fp32=True), "backward float32 out=")
    for before, after in zip(copies, (grad, positions)):
        assert_bitwise_equal(after, before, "input changed")


@pytest.mark.parametrize(
    "make_out, fp32, error, match",
    [
        (lambda g: torch.empty(6, 4, 62, dtype=g.dtype), False, ValueError, "out must have the shape of grad_out"),
        (lambda g: torch.empty(g.shape, dtype=torch.float16), False, TypeError, "out: expected bfloat16 or float32"),
        (lambda g: torch.empty(g.shape, dtype=g.dtype), True, TypeError, "out: fp32=True writes float32"),
        (lambda g: g, False, ValueError, "out overlaps grad_out"),
        (lambda g: [0.0], False, TypeError, "torch.Tensor or numpy.ndarray"),
    ],
)
def test_bad_backward_out_is_rejected(make_out, fp32, error, match, gen):
    grad = rows(6, 4, 64, torch.bfloat16, gen)
    positions = torch.arange(6, dtype=torch.int64)
    copy = grad.clone()
    with pytest.raises(error, match=match):
        gk.get_op("rope").backward(grad, positions, fp32=fp32, out=make_out(grad))
    assert_bitwise_equal(grad, copy, "input changed")
