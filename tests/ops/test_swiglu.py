"""silu and swiglu against the contract: Axis-C every CPU path equal to the
scalar reference on raw bits; Axis-A invariance; Axis-B accuracy against
float64 with a rigorous bound and the peer floor; bad input; no mutation."""

from __future__ import annotations

import pytest
import torch

import golden_kernels as gk
from golden_kernels.testing import assert_bitwise_equal, assert_peer_floor, assert_within, ulp, unit_roundoff
from golden_kernels.testing.bounds import smallest_subnormal
from golden_kernels.testing import (
    check_batch_invariance,
    check_neighbour_invariance,
    check_position_invariance,
    check_thread_invariance,
)

from .. import reference
from ..nan_bits import CANONICAL, SIGNALING, set_bits, unsigned_bits
from ..conftest import FLOAT_DTYPES, dtype_id

INTERMEDIATE = 12288  # Qwen3-8B MLP intermediate size
# csrc/core/math.h's sigmoid_f32 error, measured by tests/core/math_ulp.cpp,
# rounded up: 1.5 ulp, i.e. at most 3u relative for a normal result.
SIGMOID_RELATIVE = 3 * unit_roundoff()
TINY = 256 * smallest_subnormal(torch.float32)  # subnormal intermediates


def sample(shape, dtype, gen, scale=4.0, edges=True):
    """Values over the whole interesting range of sigmoid, edges included."""
    x = torch.randn(shape, generator=gen) * scale
    if not edges:
        return x.to(dtype)
    flat = x.view(-1)
    edges = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 17.0, -17.0, 88.0, -88.0, 90.0, -90.0, 104.0, -104.0,
                          -1.2784645, 1e4, -1e4])
    flat[: min(len(edges), flat.numel())] = edges[: flat.numel()]
    return x.to(dtype)


def rounded_bound(ref, fp32_error, dtype):
    """fp32 error plus the final rounding to dtype (half an ulp at the worst place)."""
    if dtype == torch.float32:
        return fp32_error
    return fp32_error + 0.5 * ulp(ref.abs() + fp32_error, dtype) + smallest_subnormal(dtype)


def silu_fp32_error(x):
    """y = x * s: s within 3u relative, one rounding for the product."""
    u = unit_roundoff()
    return (SIGMOID_RELATIVE + 2 * u) * reference.silu(x).abs() + TINY


def silu_derivative_error(x):
    """|g| * bound of s * fma(x, sigmoid(-x), 1) * g: sigmoid(x) and
    sigmoid(-x) within 3u, one rounding each for the fma and two products;
    first order over the terms' magnitudes s * (1 + |x| sigmoid(-x))."""
    u = unit_roundoff()
    x64 = x.double()
    s = torch.sigmoid(x64)
    return (2 * SIGMOID_RELATIVE + 5 * u) * s * (1 + x64.abs() * torch.sigmoid(-x64)) + TINY


# ---- Axis-C: every CPU path gives the reference's bits ---------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("count", (1, 7, 33, 1000, 70001))
def test_cpu_paths_equal_reference(cpu_isa, threads, dtype, count, gen):
    gate, up, g = (sample((count,), dtype, gen) for _ in range(3))
    threads(2)
    fast_silu, ref_silu = gk.get_op("silu", "cpu"), gk.get_op("silu", "reference")
    fast, ref = gk.get_op("swiglu", "cpu"), gk.get_op("swiglu", "reference")
    assert_bitwise_equal(fast_silu.forward(gate), ref_silu.forward(gate), "silu forward")
    assert_bitwise_equal(fast_silu.forward_fp32(gate), ref_silu.forward_fp32(gate), "silu forward_fp32")
    assert_bitwise_equal(fast_silu.backward(g, gate), ref_silu.backward(g, gate), "silu backward")
    assert_bitwise_equal(fast.forward(gate, up), ref.forward(gate, up), "swiglu forward")
    assert_bitwise_equal(fast.forward_fp32(gate, up), ref.forward_fp32(gate, up), "swiglu forward_fp32")
    for got, want, what in zip(fast.backward(g, gate, up), ref.backward(g, gate, up), ("dgate", "dup")):
        assert_bitwise_equal(got, want, what)


def test_every_bf16_input_fast_equals_reference(cpu_isa):
    """All 65536 bf16 bit patterns (NaNs, infinities, subnormals) through silu."""
    x = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    for fp32 in (False, True):
        fast = gk.get_op("silu", "cpu")
        ref = gk.get_op("silu", "reference")
        pick = (lambda op: op.forward_fp32) if fp32 else (lambda op: op.forward)
        assert_bitwise_equal(pick(fast)(x), pick(ref)(x), f"fp32={fp32}")
    assert_bitwise_equal(gk.get_op("silu", "cpu").backward(x, x), gk.get_op("silu", "reference").backward(x, x))


def every_16bit_value(dtype):
    return torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=dtype_id)
def test_16bit_silu_equals_the_fp32_path_on_every_input(cpu_isa, dtype):
    """16-bit inputs take silu from a table built once per type by the core's
    element functions; float32 inputs compute it in steps over chunks
    (exponent reductions, exponentials, quotients). Every 16-bit value widened
    exactly to float32 must give the same bits through both paths."""
    x = every_16bit_value(dtype)
    for backend in ("cpu", "reference"):
        op = gk.get_op("silu", backend)
        direct = op.forward_fp32(x.float())
        assert_bitwise_equal(op.forward_fp32(x), direct, f"{backend} forward_fp32")
        rounded, want = op.forward(x), direct.to(dtype)
        nan = direct.isnan()
        # NaN policy: a NaN input comes out quieted with its sign and payload; a
        # NaN made by the arithmetic (silu(-inf) = -inf * 0) is the positive quiet NaN.
        quiet_bit, made_nan = (0x0040, 0x7FC0) if dtype == torch.bfloat16 else (0x0200, 0x7E00)
        nan_in = x.isnan()
        assert_bitwise_equal(rounded[nan_in].view(torch.int16), x[nan_in].view(torch.int16) | quiet_bit,
                             f"{backend} forward of NaN inputs")
        assert (rounded[nan & ~nan_in].view(torch.int16) == made_nan).all(), f"{backend} NaN made by silu"
        assert_bitwise_equal(rounded[~nan], want[~nan], f"{backend} forward")


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=dtype_id)
def test_16bit_swiglu_equals_the_fp32_path_on_every_gate(cpu_isa, dtype, gen):
    """Every 16-bit gate value against ups with NaN, infinities, zeros and
    random values: the tabled 16-bit path gives the float32 path's bits."""
    gate = every_16bit_value(dtype)
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1.0])
    for up_value in (*special, *torch.randn(3, generator=gen)):
        up = torch.full_like(gate, float(up_value))
        for backend in ("cpu", "reference"):
            op = gk.get_op("swiglu", backend)
            assert_bitwise_equal(op.forward_fp32(gate, up), op.forward_fp32(gate.float(), up.float()),
                                 f"{backend} up={float(up_value)}")


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=dtype_id)
def test_16bit_backward_equals_the_fp32_path_on_every_input(cpu_isa, dtype, gen):
    """The backward's silu and silu' come from tables for 16-bit inputs and are
    computed in steps for float32 inputs: fp32 gradients of every 16-bit value
    (as x and as gate, with special and random incoming gradients and ups)
    are the same bits both ways."""
    x = every_16bit_value(dtype)
    special = (float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1.0)
    for value in (*special, *torch.randn(3, generator=gen).tolist()):
        other = torch.full_like(x, value)
        for backend in ("cpu", "reference"):
            silu, swiglu = gk.get_op("silu", backend), gk.get_op("swiglu", backend)
            assert_bitwise_equal(silu.backward(other, x, fp32=True),
                                 silu.backward(other.float(), x.float(), fp32=True), f"{backend} silu g={value}")
            for got, want, what in zip(swiglu.backward(other, x, other, fp32=True),
                                       swiglu.backward(other.float(), x.float(), other.float(), fp32=True),
                                       ("dgate", "dup")):
                assert_bitwise_equal(got, want, f"{backend} swiglu {what} g=up={value}")


# ---- Axis-A: an element's bits do not depend on anything else -------------------------

@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_batch_invariance_T1_T2_T3(backend, gen):
    gate, up, g = (sample((64, 512), torch.bfloat16, gen) for _ in range(3))
    op = gk.get_op("swiglu", backend)

    def y_and_grads(gate, up, g):
        return op.forward(gate, up), *op.backward(g, gate, up)

    for check in (check_batch_invariance, check_position_invariance):
        check(y_and_grads, gate, up, g, batched=(0, 1, 2))
    check_neighbour_invariance(y_and_grads, gate, up, g, batched=(0, 1, 2), row=3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
def test_thread_count_invariance_T7(dtype, gen):
    gate, up, g = (sample((300, 1001), dtype, gen) for _ in range(3))
    swiglu, silu = gk.get_op("swiglu", "cpu"), gk.get_op("silu", "cpu")

    def outputs(gate, up, g):
        return swiglu.forward(gate, up), *swiglu.backward(g, gate, up), silu.backward(g, gate)

    check_thread_invariance(outputs, gate, up, g, thread_counts=(1, 2, 3, 8))


# ---- Axis-B: accuracy against float64 ------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_silu_within_rigorous_bound(dtype, gen):
    x = sample((64, 1024), dtype, gen)
    ref = reference.silu(x)
    error = silu_fp32_error(x)
    assert_within(gk.get_op("silu").forward_fp32(x), ref, error, "forward_fp32")
    out = gk.silu(x)
    assert out.dtype == dtype
    assert_within(out, ref, rounded_bound(ref, error, dtype), "forward")
    assert_peer_floor(out, ref, "elementwise", dtype, "peer floor")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_swiglu_within_rigorous_bound(dtype, gen):
    gate, up = sample((16, INTERMEDIATE), dtype, gen), sample((16, INTERMEDIATE), dtype, gen, 1.0, edges=False)
    ref = reference.swiglu(gate, up)
    u = unit_roundoff()
    error = (SIGMOID_RELATIVE + 3 * u) * ref.abs() + TINY * (1 + up.double().abs())
    assert_within(gk.get_op("swiglu").forward_fp32(gate, up), ref, error, "forward_fp32")
    out = gk.swiglu(gate, up)
    assert_within(out, ref, rounded_bound(ref, error, dtype), "forward")
    assert_peer_floor(out, ref, "elementwise", dtype, "peer floor")


def test_bf16_swiglu_within_one_ulp_of_the_truth(gen):
    gate, up = sample((8, INTERMEDIATE), torch.bfloat16, gen), sample((8, INTERMEDIATE), torch.bfloat16, gen, 1.0, False)
    ref = reference.swiglu(gate, up)
    error = (gk.swiglu(gate, up).double() - ref).abs()
    assert bool((error <= ulp(ref, torch.bfloat16)).all())


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_silu_backward_within_bound(dtype, gen):
    x, g = sample((32, 1024), dtype, gen), sample((32, 1024), dtype, gen, 1.0, edges=False)
    ref = reference.silu_backward(g, x)
    error = g.double().abs() * silu_derivative_error(x)
    op = gk.get_op("silu")
    assert_within(op.backward(g, x, fp32=True), ref, error, "dx fp32")
    dx = op.backward(g, x)
    assert dx.dtype == dtype
    assert_within(dx, ref, rounded_bound(ref, error, dtype), "dx")
    assert_peer_floor(dx, ref, "elementwise", dtype, "peer floor")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_swiglu_backward_within_bound(dtype, gen):
    gate = sample((8, INTERMEDIATE), dtype, gen)
    up, g = (sample((8, INTERMEDIATE), dtype, gen, 1.0, edges=False) for _ in range(2))
    ref_dgate, ref_dup = reference.swiglu_backward(g, gate, up)
    u = unit_roundoff()
    dgate_error = (g.double() * up.double()).abs() * silu_derivative_error(gate) + u * ref_dgate.abs()
    dup_error = (SIGMOID_RELATIVE + 3 * u) * ref_dup.abs() + TINY * (1 + g.double().abs())
    op = gk.get_op("swiglu")
    dgate32, dup32 = op.backward(g, gate, up, fp32=True)
    assert_within(dgate32, ref_dgate, dgate_error, "dgate fp32")
    assert_within(dup32, ref_dup, dup_error, "dup fp32")
    dgate, dup = op.backward(g, gate, up)
    assert_bitwise_equal(dgate, dgate32.to(dtype), "dgate is the fp32 gradient rounded once")
    assert_bitwise_equal(dup, dup32.to(dtype), "dup is the fp32 gradient rounded once")
    assert_peer_floor(dgate, ref_dgate, "elementwise", dtype, "dgate peer floor")
    assert_peer_floor(dup, ref_dup, "elementwise", dtype, "dup peer floor")


def test_forward_is_fp32_rounded_once(gen):
    gate, up = sample((4, 4096), torch.bfloat16, gen), sample((4, 4096), torch.bfloat16, gen)
    assert_bitwise_equal(gk.swiglu(gate, up), gk.get_op("swiglu").forward_fp32(gate, up).to(torch.bfloat16))
    assert_bitwise_equal(gk.silu(gate), gk.get_op("silu").forward_fp32(gate).to(torch.bfloat16))


def test_special_values():
    x = torch.tensor([0.0, -0.0, float("inf"), float("nan"), -200.0, 200.0])
    y = gk.silu(x)
    assert_bitwise_equal(y[:2], torch.tensor([0.0, -0.0]), "signed zeros kept")
    assert y[2] == float("inf") and bool(y[3].isnan())
    assert y[4] == 0.0 and y[5] == 200.0
    assert bool((gk.get_op("silu").backward(torch.ones(1), torch.tensor([200.0])) == 1.0).all())


# ---- The NaN policy inside long spans -----------------------------------------------------
# The CPU kernels finish a span with a lean pass and fall back to the policy's
# loop only when a result is a NaN; the reference backend runs the same code,
# so these expectations come from the documented rule instead: the first NaN
# input of the formula, quieted, else the canonical NaN for one the arithmetic
# made, and every other element exactly as without the NaN.

SPAN, AT = 1000, 300  # several chunks; the NaN sits inside the second
# Which inputs each output reads, in the order of its NaN policy.
POLICY_INPUTS = {
    "silu": {"y": ("x",)},
    "swiglu": {"y": ("gate", "up")},
    "silu_backward": {"dx": ("g", "x")},
    "swiglu_backward": {"dgate": ("g", "gate", "up"), "dup": ("g", "gate")},
}


def run_elementwise(name, t, backend):
    """name's outputs as a dict, inputs taken from t by name."""
    if name == "silu":
        return {"y": gk.get_op("silu", backend).forward(t["x"])}
    if name == "swiglu":
        return {"y": gk.get_op("swiglu", backend).forward(t["gate"], t["up"])}
    if name == "silu_backward":
        return {"dx": gk.get_op("silu", backend).backward(t["g"], t["x"])}
    dgate, dup = gk.get_op("swiglu", backend).backward(t["g"], t["gate"], t["up"])
    return {"dgate": dgate, "dup": dup}


def with_value_at(t, value_bits):
    t = t.clone()
    set_bits(t, AT, value_bits)
    return t


def span_inputs(dtype, gen):
    return {k: (torch.randn(SPAN, generator=gen) * 3).to(dtype) for k in ("x", "gate", "up", "g")}


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("name", sorted(POLICY_INPUTS))
def test_one_nan_input_in_a_long_span_follows_the_policy(name, backend, dtype, gen):
    clean = span_inputs(dtype, gen)
    expected_clean = run_elementwise(name, clean, backend)
    signaling, quieted = SIGNALING[dtype]
    others = torch.arange(SPAN) != AT
    for poisoned_input in {i for inputs in POLICY_INPUTS[name].values() for i in inputs}:
        got = run_elementwise(name, {**clean, poisoned_input: with_value_at(clean[poisoned_input], signaling)}, backend)
        for out, inputs in POLICY_INPUTS[name].items():
            what = f"{name} {out}, NaN in {poisoned_input}"
            assert_bitwise_equal(got[out][others], expected_clean[out][others], what + ": other elements")
            if poisoned_input in inputs:
                assert unsigned_bits(got[out])[AT].item() == quieted, what
            else:
                assert_bitwise_equal(got[out][AT], expected_clean[out][AT], what)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_a_nan_made_inside_a_long_span_is_canonical(backend, dtype, gen):
    """inf * 0 and silu(-inf) = -inf * 0: the canonical NaN, whatever NaN the hardware made."""
    t = span_inputs(dtype, gen)
    inf, zero = float("inf"), 0.0
    t["x"][AT], t["gate"][AT], t["up"][AT], t["g"][AT] = -inf, inf, zero, inf
    made = {
        "silu(-inf) = -inf * 0": run_elementwise("silu", t, backend)["y"],
        "swiglu: silu(inf) * 0": run_elementwise("swiglu", t, backend)["y"],
        "silu backward: inf * silu'(-inf) = inf * (0 * -inf)": run_elementwise("silu_backward", t, backend)["dx"],
        "swiglu dgate: (inf * 0) * silu'(inf)": run_elementwise("swiglu_backward", t, backend)["dgate"],
    }
    for what, out in made.items():
        assert unsigned_bits(out)[AT].item() == CANONICAL[dtype], what


# ---- API, bad input and no mutation ----------------------------------------------------

def test_inputs_are_not_mutated(gen):
    gate, up, g = (sample((8, 100), torch.bfloat16, gen) for _ in range(3))
    copies = [t.clone() for t in (gate, up, g)]
    gk.swiglu(gate, up)
    gk.silu(gate)
    gk.get_op("swiglu").backward(g, gate, up)
    gk.get_op("silu").backward(g, gate)
    for before, after in zip(copies, (gate, up, g)):
        assert_bitwise_equal(after, before, "input changed")


def test_numpy_and_any_shape(gen):
    x = sample((2, 3, 5), torch.float32, gen)
    y = gk.silu(x.numpy())
    assert type(y).__name__ == "ndarray" and y.shape == (2, 3, 5)
    assert_bitwise_equal(torch.from_numpy(y), gk.silu(x), "numpy vs torch")
    assert gk.silu(torch.zeros(0, 4)).shape == (0, 4)
    assert_bitwise_equal(gk.silu(torch.tensor(2.0)), gk.silu(torch.tensor([2.0]))[0], "0-d")


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: (torch.zeros(4, 8), torch.ones(4, 7)), ValueError, "up must have the shape of gate"),
        (lambda: (torch.zeros(4, 8), torch.ones(8)), ValueError, "up must have the shape of gate"),
        (lambda: (torch.zeros(4, 8), torch.ones(4, 8, dtype=torch.bfloat16)), TypeError, "up must have the dtype"),
        (lambda: (torch.zeros(4, 8, dtype=torch.int32), torch.ones(4, 8, dtype=torch.int32)), TypeError, "expected float32"),
        (lambda: (torch.zeros(4, 8, dtype=torch.float64), torch.ones(4, 8, dtype=torch.float64)), TypeError, "unsupported dtype"),
        (lambda: (torch.zeros(8, 4).t(), torch.ones(4, 8)), ValueError, "contiguous"),
        (lambda: ([1.0], torch.ones(1)), TypeError, "torch.Tensor or numpy.ndarray"),
        (lambda: (torch.zeros(2), torch.ones(2).numpy()), ValueError, "one device"),
    ],
)
def test_bad_input_raises_clearly(make, error, match):
    gate, up = make()
    with pytest.raises(error, match=match):
        gk.swiglu(gate, up)


def test_bad_backward_input_raises_clearly():
    with pytest.raises(ValueError, match="grad_out must have the shape of gate"):
        gk.get_op("swiglu").backward(torch.ones(3), torch.ones(4), torch.ones(4))
    with pytest.raises(ValueError, match="grad_out must have the shape of x"):
        gk.get_op("silu").backward(torch.ones(3), torch.ones(4))
    with pytest.raises(TypeError, match="grad_out must have the dtype of x"):
        gk.get_op("silu").backward(torch.ones(4, dtype=torch.float16), torch.ones(4))
    with pytest.raises(ValueError, match="unknown backend"):
        gk.silu(torch.ones(4), backend="tpu")


# ---- out= -------------------------------------------------------------------------------

def test_out_receives_the_same_bits_and_is_returned(gen):
    gate, up = (sample((8, 300), torch.bfloat16, gen) for _ in range(2))
    copies = [t.clone() for t in (gate, up)]
    for name, args in (("swiglu", (gate, up)), ("silu", (gate,))):
        op = gk.get_op(name)
        out = torch.full_like(gate, float("nan"))  # stale contents must not leak through
        assert op.forward(*args, out=out) is out
        assert_bitwise_equal(out, op.forward(*args), f"{name} out=")
        out32 = torch.full((8, 300), float("nan"))
        assert op.forward(*args, out=out32) is out32
        assert_bitwise_equal(out32, op.forward_fp32(*args), f"{name} float32 out=")
    for before, after in zip(copies, (gate, up)):
        assert_bitwise_equal(after, before, "input changed")


def test_functional_and_numpy_out(gen):
    gate, up = (sample((4, 33), torch.float32, gen) for _ in range(2))
    out = gk.swiglu(gate.numpy(), up.numpy(), out=torch.empty(4, 33).numpy())
    assert_bitwise_equal(torch.from_numpy(out), gk.swiglu(gate, up), "numpy out=")
    out = torch.empty(4, 33)
    assert gk.silu(gate, out=out) is out
    assert_bitwise_equal(out, gk.silu(gate), "gk.silu out=")


BAD_OUT = [
    (lambda x: torch.empty(8, 299, dtype=x.dtype), ValueError, "out must have the shape of"),
    (lambda x: torch.empty(8, 300, dtype=torch.float16), TypeError, "out: expected bfloat16 or float32"),
    (lambda x: torch.empty(300, 8, dtype=x.dtype).t(), ValueError, "contiguous"),
    (lambda x: torch.empty(8, 300, dtype=x.dtype, device="meta"), ValueError, "one device"),
    (lambda x: torch.empty(8, 300).numpy(), ValueError, "one device"),
    (lambda x: x, ValueError, "out overlaps"),
    (lambda x: [0.0] * 300, TypeError, "torch.Tensor or numpy.ndarray"),
]


@pytest.mark.parametrize("name", ["silu", "swiglu"])
@pytest.mark.parametrize("make_out, error, match", BAD_OUT)
def test_bad_out_is_rejected(name, make_out, error, match, gen):
    gate, up = (sample((8, 300), torch.bfloat16, gen) for _ in range(2))
    args = (gate, up) if name == "swiglu" else (gate,)
    copies = [t.clone() for t in args]
    with pytest.raises(error, match=match):
        gk.get_op(name).forward(*args, out=make_out(gate))
    for before, after in zip(copies, args):
        assert_bitwise_equal(after, before, "input changed")


def test_out_overlapping_up_is_rejected(gen):
    gate, up = (sample((8, 300), torch.bfloat16, gen) for _ in range(2))
    with pytest.raises(ValueError, match="out overlaps up"):
        gk.swiglu(gate, up, out=up)


def test_read_only_numpy_out_is_rejected():
    out = torch.empty(4).numpy()
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out: the array is read-only"):
        gk.silu(torch.ones(4).numpy(), out=out)


# ---- backward out= ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=dtype_id)
def test_backward_out_receives_the_same_bits_and_is_returned(dtype, gen):
    gate, up, grad = (sample((8, 300), dtype, gen) for _ in range(3))
    copies = [t.clone() for t in (gate, up, grad)]
    silu, swiglu = gk.get_op("silu"), gk.get_op("swiglu")
    for fp32 in (False, True):
        out_dtype = torch.float32 if fp32 else dtype
        dx = torch.full((8, 300), float("nan"), dtype=out_dtype)  # stale contents must not leak through
        assert silu.backward(grad, gate, fp32=fp32, out=dx) is dx
        assert_bitwise_equal(dx, silu.backward(grad, gate, fp32=fp32), f"silu backward out=, fp32={fp32}")
        pair = tuple(torch.full((8, 300), float("nan"), dtype=out_dtype) for _ in range(2))
        dgate, dup = swiglu.backward(grad, gate, up, fp32=fp32, out=pair)
        assert dgate is pair[0] and dup is pair[1]
        for got, want, name in zip(pair, swiglu.backward(grad, gate, up, fp32=fp32), ("dgate", "dup")):
            assert_bitwise_equal(got, want, f"swiglu backward {name} out=, fp32={fp32}")
    for before, after in zip(copies, (gate, up, grad)):
        assert_bitwise_equal(after, before, "input changed")


def test_backward_numpy_out(gen):
    gate, up, grad = (sample((4, 33), torch.float32, gen).numpy() for _ in range(3))
    pair = (torch.empty(4, 33).numpy(), torch.empty(4, 33).numpy())
    gk.get_op("swiglu").backward(grad, gate, up, out=pair)
    for got, want in zip(pair, gk.get_op("swiglu").backward(grad, gate, up)):
        assert_bitwise_equal(torch.from_numpy(got), torch.from_numpy(want), "numpy backward out=")


BAD_BACKWARD_PAIR = [
    (lambda g, x: (torch.empty(8, 299, dtype=x.dtype), torch.empty_like(x)), False, ValueError,
     "dgate must have the shape of"),
    (lambda g, x: (torch.empty_like(x), torch.empty(8, 300, dtype=torch.float16)), False, TypeError,
     "dup: expected bfloat16 or float32"),
    (lambda g, x: (torch.empty_like(x), torch.empty(8, 300)), False, TypeError, "dup must have the dtype of dgate"),
    (lambda g, x: (torch.empty(8, 300), torch.empty_like(x)), True, TypeError, "dup: fp32=True writes float32"),
    (lambda g, x: (torch.empty(300, 8, dtype=x.dtype).t(), torch.empty_like(x)), False, ValueError, "contiguous"),
    (lambda g, x: (g, torch.empty_like(x)), False, ValueError, "dgate overlaps grad_out"),
    (lambda g, x: (x, torch.empty_like(x)), False, ValueError, "dgate overlaps gate"),
    (lambda g, x: 2 * (torch.empty_like(x),), False, ValueError, "dup overlaps dgate"),
    (lambda g, x: torch.empty_like(x), False, TypeError, "out: expected a pair"),
    (lambda g, x: (torch.empty_like(x),), False, TypeError, "out: expected a pair"),
]


@pytest.mark.parametrize("make_out, fp32, error, match", BAD_BACKWARD_PAIR)
def test_bad_swiglu_backward_out_is_rejected(make_out, fp32, error, match, gen):
    gate, up, grad = (sample((8, 300), torch.bfloat16, gen) for _ in range(3))
    copies = [t.clone() for t in (gate, up, grad)]
    with pytest.raises(error, match=match):
        gk.get_op("swiglu").backward(grad, gate, up, fp32=fp32, out=make_out(grad, gate))
    for before, after in zip(copies, (gate, up, grad)):
        assert_bitwise_equal(after, before, "input changed")


@pytest.mark.parametrize("make_out, fp32, error, match", [
    (lambda g, x: torch.empty(8, 299, dtype=x.dtype), False, ValueError, "dx must have the shape of"),
    (lambda g, x: torch.empty(8, 300, dtype=x.dtype), True, TypeError, "out: fp32=True writes float32"),
    (lambda g, x: g, False, ValueError, "dx overlaps grad_out"),
    (lambda g, x: x, False, ValueError, "dx overlaps x"),
])
def test_bad_silu_backward_out_is_rejected(make_out, fp32, error, match, gen):
    x, grad = (sample((8, 300), torch.bfloat16, gen) for _ in range(2))
    copies = [t.clone() for t in (x, grad)]
    with pytest.raises(error, match=match):
        gk.get_op("silu").backward(grad, x, fp32=fp32, out=make_out(grad, x))
    for before, after in zip(copies, (x, grad)):
        assert_bitwise_equal(after, before, "input changed")
