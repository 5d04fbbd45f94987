"""The one rounding rule: fp32 -> bf16/fp16 round to nearest even, exact
widening, and the NaN policy, exhaustively over every 16-bit pattern and every
fp32 pattern, and on a large fp32 sample on every backend and instruction set."""

from __future__ import annotations

import pytest
import torch

import golden_kernels as gk
from golden_kernels.testing import assert_bitwise_equal, bits

HALF_TYPES = (torch.bfloat16, torch.float16)
ALL_16BIT = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)


def fp32_sample(count: int, gen: torch.Generator) -> torch.Tensor:
    """Random bit patterns (all exponents: NaN, inf, denormals) plus specials
    and the exact midpoints between neighbouring 16-bit values."""
    random_bits = torch.randint(-(2**31), 2**31, (count,), generator=gen, dtype=torch.int64).to(torch.int32)
    specials = torch.tensor(
        [0.0, -0.0, float("inf"), float("-inf"), float("nan"), 65504.0, 65519.99, 65520.0, 65536.0,
         2.0**-14, 2.0**-24, 2.0**-25, 2.0**-25 * 1.0000001, 2.0**-149, -(2.0**-149), 3.4028235e38, 1.17549435e-38],
        dtype=torch.float32,
    )
    return torch.cat([random_bits.view(torch.float32), specials])


def midpoints(dtype: torch.dtype) -> torch.Tensor:
    """fp32 values exactly halfway between consecutive finite `dtype` values
    (the ties that round-to-nearest-even must send to the even neighbour)."""
    values = ALL_16BIT.view(dtype).to(torch.float64)
    values = values[values.isfinite()].unique()
    mids = ((values[1:] + values[:-1]) / 2).to(torch.float32)
    return mids[mids.to(torch.float64) == (values[1:] + values[:-1]) / 2]


def is_quiet_nan_with_sign(result: torch.Tensor, source: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    sign_ok = (bits(result) < 0) == (bits(source) < 0)
    quiet_bit = 0x0040 if dtype == torch.bfloat16 else 0x0200
    return sign_ok & ((bits(result).to(torch.int32) & quiet_bit) != 0) & result.isnan()


def exact_nan_widening(source: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """NaN widening that keeps sign, payload and the quiet bit as they are,
    computed on the integer bits (PyTorch's F16C path quiets signaling NaNs)."""
    raw = bits(source).to(torch.int32) & 0xFFFF
    if dtype == torch.bfloat16:
        widened = raw << 16
    else:
        widened = ((raw & 0x8000) << 16) | 0x7F800000 | ((raw & 0x3FF) << 13)
    return widened.view(torch.float32)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("dtype", HALF_TYPES, ids=str)
def test_widening_is_exact_for_every_16bit_pattern(backend, dtype):
    source = ALL_16BIT.view(dtype)
    widened = gk.cast(source, "float32", backend=backend)
    numbers = ~source.isnan()
    assert_bitwise_equal(widened[numbers], source[numbers].to(torch.float32), f"{dtype} -> float32")
    assert_bitwise_equal(widened[~numbers], exact_nan_widening(source[~numbers], dtype), "NaN payloads")


@pytest.mark.parametrize("dtype", HALF_TYPES, ids=str)
def test_every_16bit_value_round_trips(dtype):
    source = ALL_16BIT.view(dtype)
    round_trip = gk.cast(gk.cast(source, "float32"), str(dtype).removeprefix("torch."))
    finite = source.isfinite() | source.isinf()
    assert_bitwise_equal(round_trip[finite], source[finite], "finite values and infinities")
    nans = source.isnan()
    assert bool(is_quiet_nan_with_sign(round_trip[nans], source[nans], dtype).all())


@pytest.mark.parametrize("dtype", HALF_TYPES, ids=str)
def test_narrowing_matches_pytorch_on_a_large_sample(dtype, gen):
    sample = torch.cat([fp32_sample(4_000_000, gen), midpoints(dtype)])
    ours = gk.cast(sample, str(dtype).removeprefix("torch."))
    theirs = sample.to(dtype)
    numbers = ~sample.isnan()
    assert_bitwise_equal(ours[numbers], theirs[numbers], f"float32 -> {dtype}")
    assert bool(is_quiet_nan_with_sign(ours[~numbers], sample[~numbers], dtype).all()), "NaN policy"


@pytest.mark.parametrize("dtype", HALF_TYPES, ids=str)
def test_ties_round_to_even(dtype):
    mids = midpoints(dtype)
    rounded = gk.cast(mids, str(dtype).removeprefix("torch."))
    assert bool(((bits(rounded).to(torch.int32) & 1) == 0).all()), "a tie did not round to the even neighbour"


@pytest.mark.parametrize("dtype", HALF_TYPES, ids=str)
def test_instruction_sets_agree_with_the_reference(cpu_isa, dtype, gen, threads):
    sample = fp32_sample(1_000_000, gen)
    threads(2)
    name = str(dtype).removeprefix("torch.")
    assert_bitwise_equal(gk.cast(sample, name, backend="cpu"), gk.cast(sample, name, backend="reference"), cpu_isa)


def test_numpy_arrays_are_accepted():
    np = pytest.importorskip("numpy")
    source = np.array([1.0, 65519.0, 2.0**-25, 2.0**-24 * 1.5, -0.0], dtype=np.float32)
    ours = gk.cast(source, "float16")
    assert isinstance(ours, np.ndarray)
    assert (ours.view(np.int16) == source.astype(np.float16).view(np.int16)).all()


def test_bad_dtype_name_is_rejected():
    with pytest.raises(ValueError, match="dtype must be one of"):
        gk.cast(torch.zeros(3), "float64")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", HALF_TYPES, ids=str)
def test_narrowing_matches_pytorch_on_every_fp32_pattern(dtype):
    """All 2^32 fp32 bit patterns, in chunks: numbers round as PyTorch rounds
    them (to nearest, ties to even); a NaN keeps its sign and leading payload
    bits with the quiet bit set (bf16: the top 7 payload bits, fp16: the top 10)."""
    name = str(dtype).removeprefix("torch.")
    chunk = 1 << 22  # 16 MiB of fp32: below glibc's mmap threshold, so the buffers are reused
    for first in range(-(2**31), 2**31, chunk):
        patterns = torch.arange(first, first + chunk, dtype=torch.int32)
        sample = patterns.view(torch.float32)
        if dtype == torch.bfloat16:
            nan_bits = (patterns >> 16) | 0x0040
        else:
            nan_bits = ((patterns >> 16) & 0x8000) | 0x7E00 | ((patterns >> 13) & 0x3FF)
        expected = torch.where(sample.isnan(), nan_bits.to(torch.int16), bits(sample.to(dtype)))
        ours = bits(gk.cast(sample, name))
        if not torch.equal(ours, expected):
            assert_bitwise_equal(ours, expected, f"float32 -> {dtype}, patterns from {first:#x}")
