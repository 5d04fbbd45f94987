"""linear_logprob (fused lm_head + token logprob): bitwise equal to the unfused
token_logprob(lm_head.forward_fp32(hidden, weight)) and entropy, on every CPU
path; batch and thread invariant; bad input rejected clearly."""

from __future__ import annotations

import pytest
import torch

import golden_kernels as gk
from golden_kernels.testing import assert_bitwise_equal

from ..conftest import FLOAT_DTYPES, dtype_id
from ..gpu_target import AVAILABLE, GPU, SKIP_REASON, on_gpu


def problem(rows, hidden, vocab, dtype, gen):
    h = torch.randn(rows, hidden, generator=gen).to(dtype)
    w = (torch.randn(vocab, hidden, generator=gen) / hidden**0.5 * 4).to(dtype)
    ids = torch.randint(0, vocab, (rows,), generator=gen)
    ids[::5] = -100
    return h, w, ids


def unfused(h, w, ids, backend=None):
    logits = gk.get_op("lm_head", backend).forward_fp32(h, w)
    return gk.get_op("token_logprob", backend).forward(logits, ids), gk.get_op("entropy", backend).forward(logits)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("vocab", (1, 33, 4096, 2 * 4096 + 77))
def test_equals_unfused_on_every_cpu_path(cpu_isa, threads, dtype, vocab, gen):
    h, w, ids = problem(19, 96, vocab, dtype, gen)
    threads(2)
    want_logprob, want_entropy = unfused(h, w, ids, "reference")
    for backend in ("cpu", "reference"):
        op = gk.get_op("linear_logprob", backend)
        logprob, entropy = op.forward(h, w, ids, return_entropy=True)
        assert_bitwise_equal(logprob, want_logprob, f"{backend} logprob")
        assert_bitwise_equal(entropy, want_entropy, f"{backend} entropy")
        assert_bitwise_equal(op.forward(h, w, ids), want_logprob, f"{backend} logprob without entropy")


def test_qwen3_vocab_and_many_token_tiles(gen):
    """Real vocabulary (38 chunks, ragged last) and more rows than one token tile (256)."""
    h, w, ids = problem(300, 64, 151936, torch.bfloat16, gen)
    want_logprob, want_entropy = unfused(h, w, ids)
    logprob, entropy = gk.linear_logprob(h, w, ids, return_entropy=True)
    assert_bitwise_equal(logprob, want_logprob, "logprob")
    assert_bitwise_equal(entropy, want_entropy, "entropy")


def test_batch_and_thread_invariance_T1_T2_T3_T7(threads, gen):
    h, w, ids = problem(40, 128, 9000, torch.bfloat16, gen)
    threads(1)
    want = gk.linear_logprob(h, w, ids)
    row = 7
    assert_bitwise_equal(gk.linear_logprob(h[row:row + 1], w, ids[row:row + 1])[0], want[row], "T1")
    perm = torch.randperm(40, generator=gen)
    assert_bitwise_equal(gk.linear_logprob(h[perm], w, ids[perm]), want[perm], "T2")
    others = torch.randn(40, 128, generator=gen).to(torch.bfloat16) * 30
    others[row] = h[row]
    assert_bitwise_equal(gk.linear_logprob(others, w, ids)[row], want[row], "T3")
    for n in (2, 3):
        threads(n)
        assert_bitwise_equal(gk.linear_logprob(h, w, ids), want, f"T7 {n} threads")


def test_leading_dimensions_are_rows(gen):
    h, w, ids = problem(6, 32, 500, torch.float32, gen)
    out = gk.linear_logprob(h.reshape(2, 3, 32), w, ids.reshape(2, 3))
    assert out.shape == (2, 3) and out.dtype == torch.float32
    assert_bitwise_equal(out.reshape(6), gk.linear_logprob(h, w, ids), "layout")


def test_inputs_are_not_mutated(gen):
    h, w, ids = problem(5, 32, 700, torch.bfloat16, gen)
    copies = [t.clone() for t in (h, w, ids)]
    gk.linear_logprob(h, w, ids, return_entropy=True)
    for before, after in zip(copies, (h, w, ids)):
        assert_bitwise_equal(after, before, "input changed")


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: (torch.zeros(2, 8), torch.zeros(10, 7), torch.tensor([0, 1])), ValueError, "weight: expected shape"),
        (lambda: (torch.zeros(2, 8), torch.zeros(10, 8), torch.tensor([0, 10])), ValueError, r"outside \[0, 10\)"),
        (lambda: (torch.zeros(2, 8), torch.zeros(10, 8), torch.tensor([0])), ValueError, "target_ids: expected shape"),
        (lambda: (torch.zeros(2, 8), torch.zeros(10, 8, dtype=torch.bfloat16), torch.tensor([0, 1])), TypeError,
         "must have the dtype of hidden"),
        (lambda: (torch.zeros(2, 8), torch.zeros(10, 8), torch.tensor([True, False])), TypeError,
         "expected int64 or int32"),
        (lambda: (torch.zeros(2, 8), torch.zeros(10, 8), torch.tensor([0, -1], dtype=torch.int32)), ValueError,
         r"id -1 at flat index 1 is outside \[0, 10\)"),
    ],
)
def test_bad_input_raises_clearly(make, error, match):
    h, w, ids = make()
    with pytest.raises(error, match=match):
        gk.linear_logprob(h, w, ids)


def test_chunk_size_is_a_constant_of_the_op():
    h, w, ids = torch.zeros(2, 8), torch.zeros(10, 8), torch.tensor([0, 1])
    assert_bitwise_equal(gk.linear_logprob(h, w, ids, chunk_size=4096), gk.linear_logprob(h, w, ids), "4096")
    with pytest.raises(ValueError, match="constant of the op"):
        gk.linear_logprob(h, w, ids, chunk_size=1024)


@pytest.mark.gpu
@pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("rows, vocab", [(19, 33), (19, 2 * 4096 + 77), (1100, 5000)])
def test_gpu_forward_equals_reference(dtype, rows, vocab, gen):
    """The GPU forward (tiles of 1024 rows, one warp per row) gives the CPU reference's bits."""
    h, w, ids = problem(rows, 96, vocab, dtype, gen)
    want_logprob, want_entropy = gk.get_op("linear_logprob", "reference").forward(h, w, ids, return_entropy=True)
    logprob, entropy = gk.get_op("linear_logprob", GPU).forward(on_gpu(h), on_gpu(w), on_gpu(ids.int()),
                                                                return_entropy=True)
    assert_bitwise_equal(logprob.cpu(), want_logprob, "gpu logprob")
    assert_bitwise_equal(entropy.cpu(), want_entropy, "gpu entropy")
    with pytest.raises(ValueError, match="outside"):
        gk.get_op("linear_logprob", GPU).forward(on_gpu(h), on_gpu(w), on_gpu(torch.full_like(ids, vocab)))
