"""The non-finite policy of docs/contract.md, op by op: a NaN or infinity in
one row never changes another row's bits; ignored (masked) rows stay exactly
zero whatever garbage they hold; NaN outputs have the documented bits (the
canonical quiet NaN for anything a reduction produced, the first input NaN
quieted for elementwise ops), so every backend gives the same bits."""

from __future__ import annotations

import pytest
import torch

import golden_kernels as gk
from golden_kernels.testing import assert_bitwise_equal

from .cases import CASES, run_case
from .nan_bits import CANONICAL, unsigned_bits
from .conftest import dtype_id
from .gpu_target import AVAILABLE, DEVICE, GPU, SKIP_REASON

PAYLOAD_NAN = torch.tensor([0x7FC01234], dtype=torch.int32).view(torch.float32)[0].item()
ROWS, N, AUX, POISONED_ROW = 5, 37, 17, 1  # N and AUX straddle the lane width and tile widths
BACKENDS = ("reference", "cpu")


def payload_nan(dtype: torch.dtype) -> torch.Tensor:
    """A quiet NaN with a payload, in dtype (built from raw bits: no rounding involved)."""
    raw = {torch.float32: (0x7FC01234, torch.int32), torch.bfloat16: (0x7FC5, torch.int16),
           torch.float16: (0x7E15, torch.int16)}[dtype]
    return torch.tensor([raw[0]], dtype=raw[1]).view(dtype)[0]


def poisoned_inputs(name, dtype, value):
    """(clean, poisoned, input names): each float row-batched input gets `value` in one row."""
    case = CASES[name]
    clean = case.build(ROWS, case.n_rule(N), AUX, dtype, torch.Generator().manual_seed(11), "normal")
    for arg in clean.float_batched():
        tensors = {k: v.clone() for k, v in clean.tensors.items()}
        row = tensors[arg][POISONED_ROW].view(-1)
        row[min(3, row.numel() - 1)] = value
        yield clean, type(clean)(tensors, clean.batched), arg


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_non_finite_row_touches_no_other_row(name, backend, dtype, value):
    case = CASES[name]
    others = torch.tensor([r for r in range(ROWS) if r != POISONED_ROW])
    for clean, poisoned, arg in poisoned_inputs(name, dtype, value):
        expected = run_case(case, backend, clean).row_local()
        got = run_case(case, backend, poisoned).row_local()
        for i, (a, b) in enumerate(zip(got, expected)):
            assert_bitwise_equal(a.index_select(0, others), b.index_select(0, others),
                                 f"{name}: {value} in {arg}, output {i}")


REDUCTIONS = ("rms_norm", "linear", "lm_head", "log_softmax", "token_logprob", "entropy", "linear_logprob",
              "attention")
# Reductions where a +inf input must make a NaN: rms_norm (inf * rsqrt(inf) = inf * 0) and the softmax
# family (inf - max = inf - inf). Elsewhere an infinity may just pass through (linear: one inf term).
INF_MAKES_NAN = ("rms_norm", "log_softmax", "token_logprob", "entropy")


@pytest.mark.parametrize("poison", ["payload-nan", "inf"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=dtype_id)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", REDUCTIONS)
def test_reductions_emit_only_the_canonical_nan(name, backend, dtype, poison):
    """A payload NaN in an input must not survive a reduction, nor may an
    infinity surface as the hardware's own NaN (x86: 0xFFC00000, NVIDIA:
    0x7FFFFFFF): the only NaN a reduction may return is the canonical one
    (fp32 0x7FC00000, bf16 0x7FC0, fp16 0x7E00)."""
    value = payload_nan(dtype) if poison == "payload-nan" else torch.tensor(float("inf"), dtype=dtype)
    seen_nan = False
    for _, poisoned, arg in poisoned_inputs(name, dtype, value):
        for i, out in enumerate(run_case(CASES[name], backend, poisoned).all()):
            nans = unsigned_bits(out)[out.isnan()]
            seen_nan |= nans.numel() > 0
            assert bool((nans == CANONICAL[out.dtype]).all()), \
                f"{name}: {poison} in {arg}, output {i} has NaN bits {sorted({hex(v) for v in nans.tolist()})}"
    if poison == "payload-nan" or name in INF_MAKES_NAN:
        assert seen_nan, "the poisoned inputs produced no NaN at all"


@pytest.mark.parametrize("backend", BACKENDS)
def test_rms_norm_nan_row_is_canonical_in_every_output(backend):
    """The rms_norm fix: a payload NaN reaches the whole row as 0x7FC00000."""
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(5))
    x[1, 9] = PAYLOAD_NAN
    w, g = torch.ones(64), torch.ones(3, 64)
    op = gk.get_op("rms_norm", backend)
    for out in (op.forward(x, w), op.forward(x, w, rounding="hf"), op.forward_fp32(x, w), op.backward(g, x, w)[0]):
        assert bool((unsigned_bits(out[1]) == 0x7FC00000).all())
        assert not bool(out[[0, 2]].isnan().any())
    assert bool((unsigned_bits(op.backward(g, x, w)[1]) == 0x7FC00000).all())


# ---- Elementwise ops: the first NaN input, quieted, payload kept ----------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_silu_and_swiglu_nan_bits(backend):
    quiet = torch.tensor([0x7FC01234], dtype=torch.int32).view(torch.float32)
    signaling = torch.tensor([0x7F800021], dtype=torch.int32).view(torch.float32)
    other = torch.tensor([0xFFC0ABCD - 2**32], dtype=torch.int32).view(torch.float32)
    silu, swiglu = gk.get_op("silu", backend), gk.get_op("swiglu", backend)
    assert unsigned_bits(silu.forward(quiet)).item() == 0x7FC01234
    assert unsigned_bits(silu.forward(signaling)).item() == 0x7FC00021  # quieted, payload kept
    assert unsigned_bits(swiglu.forward(quiet, other)).item() == 0x7FC01234  # gate first
    assert unsigned_bits(swiglu.forward(torch.ones(1), other)).item() == 0xFFC0ABCD
    # A NaN the arithmetic makes is the canonical one: inf * 0 and silu(-inf) = -inf * 0.
    assert unsigned_bits(swiglu.forward(torch.tensor([float("inf")]), torch.zeros(1))).item() == 0x7FC00000
    assert unsigned_bits(silu.forward(torch.tensor([float("-inf")]))).item() == 0x7FC00000


@pytest.mark.parametrize("backend", BACKENDS)
def test_rope_pair_takes_the_first_nan(backend):
    x = torch.randn(1, 1, 8, generator=torch.Generator().manual_seed(6))
    x[0, 0, 1] = torch.tensor([0x7FC00001], dtype=torch.int32).view(torch.float32)  # pair (1, 5)
    x[0, 0, 5] = torch.tensor([0x7FC00005], dtype=torch.int32).view(torch.float32)
    x[0, 0, 6] = torch.tensor([0x7FC00006], dtype=torch.int32).view(torch.float32)  # pair (2, 6)
    out = unsigned_bits(gk.get_op("rope", backend).forward(x, torch.tensor([3]))[0, 0])
    assert out[1].item() == out[5].item() == 0x7FC00001
    assert out[2].item() == out[6].item() == 0x7FC00006
    assert not bool(gk.get_op("rope", backend).forward(x, torch.tensor([3]))[0, 0, [0, 3, 4, 7]].isnan().any())


@pytest.mark.parametrize("backend", BACKENDS)
def test_embedding_copies_nan_bits(backend):
    weight = torch.randn(4, 3, generator=torch.Generator().manual_seed(7)).to(torch.bfloat16)
    weight[2, 1] = torch.tensor([0x7F81], dtype=torch.int16).view(torch.bfloat16)[0]  # signaling
    out = gk.get_op("embedding", backend).forward(torch.tensor([2, 0]), weight)
    assert unsigned_bits(out[0, 1]).item() == 0x7F81


# ---- Masked and padded garbage never leaks ----------------------------------------------

@pytest.mark.parametrize("garbage", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_ignored_targets_are_exact_zeros_whatever_their_logits(backend, garbage):
    logits = torch.randn(4, 33, generator=torch.Generator().manual_seed(8))
    logits[1] = garbage
    targets = torch.tensor([3, -100, 5, -100])
    logprob = gk.get_op("token_logprob", backend).forward(logits, targets)
    grad = gk.get_op("token_logprob", backend).backward(torch.ones(4), logits, targets)
    assert unsigned_bits(logprob[[1, 3]]).tolist() == [0, 0]
    assert not bool(unsigned_bits(grad[[1, 3]]).any())
    assert bool(logprob[[0, 2]].isfinite().all())
    hidden = torch.randn(4, 16, generator=torch.Generator().manual_seed(9))
    hidden[1] = garbage
    fused = gk.get_op("linear_logprob", backend).forward(hidden, torch.randn(33, 16), targets)
    assert unsigned_bits(fused[[1, 3]]).tolist() == [0, 0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_embedding_gradient_nan_stays_in_its_id_row(backend):
    ids = torch.tensor([0, 3, 3, 1, 5])
    grad = torch.randn(5, 7, generator=torch.Generator().manual_seed(10))
    clean = gk.get_op("embedding", backend).backward(grad, ids, torch.empty(6, 7))
    grad[3, 2] = float("nan")  # token 3 has id 1
    dirty = gk.get_op("embedding", backend).backward(grad, ids, torch.empty(6, 7))
    untouched = torch.tensor([0, 2, 3, 4, 5])
    assert_bitwise_equal(dirty.index_select(0, untouched), clean.index_select(0, untouched))
    assert bool(dirty[1, 2].isnan()) and not bool(dirty[1, [0, 1, 3, 4, 5, 6]].isnan().any())


# ---- The same bits on a GPU ----------------------------------------------------------------

GPU_OPS = sorted(CASES)


@pytest.mark.gpu
@pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("name", GPU_OPS)
def test_gpu_gives_reference_bits_on_non_finite_inputs(name, dtype):
    """Payload NaNs, infinities, denormals and huge values: the GPU writes the
    reference's bits, NaN payloads included (the point of the NaN policy)."""
    case = CASES[name]
    inputs = case.build(9, case.n_rule(300), 17, dtype, torch.Generator().manual_seed(12), "special")
    expected = run_case(case, "reference", inputs).all()
    got = run_case(case, GPU, inputs.to(DEVICE)).all()
    for i, (a, b) in enumerate(zip(got, expected)):
        assert_bitwise_equal(a.cpu(), b, f"{name} output {i}")
