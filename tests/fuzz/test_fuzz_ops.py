"""Property-based fuzzing of every op: random shapes (empty, 1, primes, either
side of the lane width 32, the linear K-block 256 and tile widths, the row
block 4096, long rows), dtypes, layouts and values (denormals, +-inf, NaN with
payloads, huge magnitudes). Each example either raises a clean TypeError or
ValueError on both backends (a strided input: a ValueError saying so, or the
dense input's result) or gives the reference's bits on the fast CPU path
(any ISA, any thread count) and keeps Axis-A under a random row permutation
and batch split; where a GPU backend runs (a GPU, or the emulating build),
it too gives the reference's bits or the same clean error. A crash would
kill the run: none may happen."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import golden_kernels as gk
from golden_kernels.testing import assert_bitwise_equal

from ..cases import CASES, OpCase, run_case
from ..conftest import FLOAT_DTYPES, SUPPORTED_ISAS
from ..gpu_target import AVAILABLE, DEVICE, EMULATED, GPU, SKIP_REASON

ROWS = (0, 1, 2, 3, 5, 6, 7, 8, 9, 13, 17)
# Lane width 32, linear K-block 256 and panel 16, row block 4096, primes, a vocabulary.
SIZES = (0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 255, 256, 257, 509, 1021, 4095, 4096,
         4097, 8191, 8193, 65537, 151936)
AUX = (1, 2, 5, 8, 16, 17, 33)
KINDS = ("normal", "special", "huge")
CLEAN_ERRORS = (TypeError, ValueError)


@st.composite
def problems(draw):
    case = CASES[draw(st.sampled_from(sorted(CASES)))]
    n = case.n_rule(draw(st.sampled_from([s for s in SIZES if s <= case.max_n])))
    rows = draw(st.sampled_from(ROWS))
    rows = min(rows, max(1, (1 << 17) // max(n, 1)))  # a long row comes in a short batch
    return dict(case=case, rows=rows, n=n, aux=draw(st.sampled_from(AUX)),
                dtype=draw(st.sampled_from(FLOAT_DTYPES)), kind=draw(st.sampled_from(KINDS)),
                seed=draw(st.integers(0, 2**31 - 1)))


def build(p):
    gen = torch.Generator().manual_seed(p["seed"])
    return p["case"].build(p["rows"], p["n"], p["aux"], p["dtype"], gen, p["kind"])


def outcome(case: OpCase, backend: str, inputs):
    """The op's outputs, or the clean exception it raised."""
    try:
        return run_case(case, backend, inputs).all()
    except CLEAN_ERRORS as error:
        return error


def assert_same_outcome(fast, ref, what):
    if isinstance(ref, Exception) or isinstance(fast, Exception):
        assert type(fast) is type(ref), f"{what}: the fast backend gave {fast!r}, reference gave {ref!r}"
        return
    assert len(fast) == len(ref)
    for i, (a, b) in enumerate(zip(fast, ref)):
        assert_bitwise_equal(a, b, f"{what} output {i}")


@contextmanager
def cpu_settings(isa: str, threads: int):
    previous = gk.cpu_isa()
    gk.set_cpu_isa(isa)
    gk.set_num_threads(threads)
    try:
        yield
    finally:
        gk.set_cpu_isa(previous)
        gk.set_num_threads(0)


@given(p=problems(), isa=st.sampled_from(SUPPORTED_ISAS), threads=st.sampled_from((1, 2, 3, 8)))
def test_fast_cpu_equals_reference(p, isa, threads):
    inputs = build(p)
    snapshot = {k: v.clone() for k, v in inputs.tensors.items()}
    ref = outcome(p["case"], "reference", inputs)
    with cpu_settings(isa, threads):
        fast = outcome(p["case"], "cpu", inputs)
    assert_same_outcome(fast, ref, p["case"].name)
    for k, v in snapshot.items():
        assert_bitwise_equal(inputs.tensors[k], v, f"input {k} mutated")


@given(p=problems(), data=st.data())
def test_axis_a_permutation_and_split(p, data):
    case, inputs = p["case"], build(p)
    rows = p["rows"]
    try:
        whole = run_case(case, "cpu", inputs).row_local()
    except CLEAN_ERRORS:
        return  # the rejection itself is checked against the reference above
    order = torch.tensor(data.draw(st.permutations(range(rows))), dtype=torch.int64)
    permuted = run_case(case, "cpu", inputs.take(order)).row_local()
    for i, (a, b) in enumerate(zip(permuted, whole)):
        assert_bitwise_equal(a, b.index_select(0, order), f"{case.name} output {i} under a permutation")
    cut = data.draw(st.integers(0, rows))
    head = run_case(case, "cpu", inputs.take(torch.arange(cut))).row_local()
    tail = run_case(case, "cpu", inputs.take(torch.arange(cut, rows))).row_local()
    for i, (a, b, c) in enumerate(zip(head, tail, whole)):
        assert_bitwise_equal(torch.cat([a, b]), c, f"{case.name} output {i} split at row {cut}")


def strided(t: torch.Tensor, how: str) -> torch.Tensor:
    """A non-contiguous view holding t's values (or t itself when that cannot be)."""
    if how == "step" and t.dim() >= 1:
        wide = torch.stack([t, t], dim=-1)
        return wide[..., 0]
    if how == "transpose" and t.dim() >= 2:
        return t.transpose(0, -1).contiguous().transpose(0, -1)
    return t


@given(p=problems(), data=st.data())
def test_strided_inputs_raise_or_match(p, data):
    case, inputs = p["case"], build(p)
    name = data.draw(st.sampled_from(sorted(inputs.tensors)))
    view = strided(inputs.tensors[name], data.draw(st.sampled_from(("step", "transpose"))))
    changed = type(inputs)({**inputs.tensors, name: view}, inputs.batched, inputs.options)
    expected = outcome(case, "reference", inputs)
    got = outcome(case, "cpu", changed)
    if isinstance(got, ValueError) and "contiguous" in str(got) and not view.is_contiguous():
        return  # the op requires dense input and said so
    assert_same_outcome(got, expected, f"{case.name} with {name} strided")  # or it took the view correctly


# The emulation runs every GPU thread as a fiber on the CPU: problems past
# this many elements (rows x n x aux) are left to the fixed-size GPU tests.
EMULATED_ELEMENTS = 1 << 16


@pytest.mark.gpu
@pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)
@given(p=problems())
def test_gpu_equals_reference(p):
    """Axis-C on random problems: the GPU backend (or the emulation of its
    sources) gives the reference's bits or raises the same clean error."""
    if EMULATED:
        assume(max(p["rows"], 1) * max(p["n"], 1) * p["aux"] <= EMULATED_ELEMENTS)
    inputs = build(p)
    ref = outcome(p["case"], "reference", inputs)
    got = outcome(p["case"], GPU, inputs.to(DEVICE))
    if not isinstance(got, Exception):
        got = [t.cpu() for t in got]
    assert_same_outcome(got, ref, f"{p['case'].name} on {GPU}")
