"""linear_logprob's forward logits (return_logits=True) handed to its backward
(logits=...): the forward's logits are lm_head.forward_fp32's bits and leave
every other output unchanged; the backward then recomputes no logit, and its
gradients keep the same raw bits on every CPU path and thread count, with and
without the forward's lse and the entropy gradient, with ignored targets and
NaN rows; the given logits are the ones read; bad logits raise clearly."""

from __future__ import annotations

import pytest
import torch

import golden_kernels as gk
from golden_kernels import _arrays
from golden_kernels.testing import assert_bitwise_equal

from ..conftest import dtype_id
from ..gpu_target import AVAILABLE, GPU, SKIP_REASON, on_gpu as to_gpu
from .test_linear_logprob_saved_lse import IGNORE, assert_grads_equal, problem



def op(backend=None):
    return gk.get_op("linear_logprob", backend)


def forward_lse_logits(h, w, ids, backend=None):
    _, lse, logits = op(backend).forward(h, w, ids, return_lse=True, return_logits=True)
    return lse, logits


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=dtype_id)
@pytest.mark.parametrize("num_threads", (1, 3))
def test_forward_logits_are_lm_head_bits_and_change_no_output(cpu_isa, threads, num_threads, dtype, gen):
    h, w, ids, _ = problem(19, 24, 4096 + 77, dtype, gen)
    threads(num_threads)
    want_logits = gk.get_op("lm_head", "reference").forward_fp32(h, w)
    for backend in ("cpu", "reference"):
        for entropy in (False, True):
            want = op(backend).forward(h, w, ids, return_entropy=entropy, return_lse=True)
            *got, logits = op(backend).forward(h, w, ids, return_entropy=entropy, return_lse=True,
                                               return_logits=True)
            assert logits.dtype == torch.float32 and logits.shape == (19, 4096 + 77)
            assert_bitwise_equal(logits, want_logits, f"{backend} logits")
            for name, g, x in zip(("logprob", "entropy/lse", "lse"), got, want):
                assert_bitwise_equal(g, x, f"{backend} {name} with return_logits")
    logprob, logits = op().forward(h, w, ids, return_logits=True)  # without lse
    assert_bitwise_equal(logits, want_logits, "logits without lse")
    assert_bitwise_equal(logprob, op().forward(h, w, ids), "logprob without lse")


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=dtype_id)
@pytest.mark.parametrize("num_threads", (1, 3))
@pytest.mark.parametrize("rows, vocab", [(19, 1), (19, 4096 + 77), (300, 700)])
def test_backward_with_forward_logits_equals_recomputed_on_every_cpu_path(cpu_isa, threads, num_threads, dtype, rows,
                                                                          vocab, gen):
    """300 rows are two token tiles (the weight gradient's tree over tiles)."""
    h, w, ids, g = problem(rows, 24, vocab, dtype, gen)
    grad_entropy = torch.randn(rows, generator=gen)
    threads(num_threads)
    for backend in ("cpu", "reference"):
        lse, logits = forward_lse_logits(h, w, ids, backend)
        for fp32 in (True, False):
            for kwargs in ({}, {"lse": lse}, {"grad_entropy": grad_entropy}):
                want = op(backend).backward(g, h, w, ids, fp32=fp32, **kwargs)
                got = op(backend).backward(g, h, w, ids, fp32=fp32, logits=logits, **kwargs)
                assert_grads_equal(got, want, f"{backend} fp32={fp32} {sorted(kwargs)}")
        for needs in ((True, False), (False, True)):
            want = op(backend).backward(g, h, w, ids, needs=needs, lse=lse)
            got = op(backend).backward(g, h, w, ids, needs=needs, lse=lse, logits=logits)
            assert_grads_equal(got, want, f"{backend} needs={needs}")


def test_logits_beyond_the_backward_cache(gen):
    """rows x vocab over the backward's own 32 MiB logit cache (it then recomputes
    every logit twice without the forward's lse): the given logits give the same bits."""
    h, w, ids, g = problem(300, 8, 30000, torch.bfloat16, gen)
    lse, logits = forward_lse_logits(h, w, ids)
    want = op().backward(g, h, w, ids, fp32=True)
    assert_grads_equal(op().backward(g, h, w, ids, fp32=True, logits=logits, lse=lse), want, "V=30000 lse")
    assert_grads_equal(op().backward(g, h, w, ids, fp32=True, logits=logits), want, "V=30000")


def test_leading_dimensions_are_rows(gen):
    h, w, ids, g = problem(12, 16, 300, torch.float32, gen)
    h3, ids3, g3 = h.reshape(3, 4, 16), ids.reshape(3, 4), g.reshape(3, 4)
    lse, logits = forward_lse_logits(h3, w, ids3)
    assert logits.shape == (3, 4, 300)
    assert_grads_equal(op().backward(g3, h3, w, ids3, lse=lse, logits=logits), op().backward(g3, h3, w, ids3),
                       "[3, 4] rows")


def test_no_rows(gen):
    h, w, ids, g = problem(0, 16, 300, torch.float32, gen)
    lse, logits = forward_lse_logits(h, w, ids)
    assert logits.shape == (0, 300)
    dh, dw = op().backward(g, h, w, ids, logits=logits)
    assert dh.shape == (0, 16) and torch.equal(dw, torch.zeros_like(dw))


def test_inputs_are_not_mutated(gen):
    h, w, ids, g = problem(19, 16, 300, torch.float32, gen)
    lse, logits = forward_lse_logits(h, w, ids)
    grad_entropy = torch.randn(19, generator=gen)
    before = [x.clone() for x in (g, h, w, ids, lse, logits, grad_entropy)]
    op().backward(g, h, w, ids, lse=lse, logits=logits)
    op().backward(g, h, w, ids, grad_entropy=grad_entropy, logits=logits)
    for x, y in zip((g, h, w, ids, lse, logits, grad_entropy), before):
        assert_bitwise_equal(x, y, "an input changed")


@pytest.mark.parametrize("backend", ("cpu", "reference"))
@pytest.mark.parametrize("kwargs", ({}, {"lse": True}, {"grad_entropy": True}), ids=("alone", "lse", "entropy"))
def test_the_given_logits_are_the_ones_used(backend, kwargs, gen):
    """Shifted logits change the gradients: the backward read them instead of recomputing."""
    h, w, ids, g = problem(3, 16, 300, torch.float32, gen)  # no NaN row
    lse, logits = forward_lse_logits(h, w, ids, backend)
    extra = {"lse": lse} if "lse" in kwargs else {}
    if "grad_entropy" in kwargs:
        extra = {"grad_entropy": torch.randn(3, generator=gen)}
    got = op(backend).backward(g, h, w, ids, logits=logits * 1.5, **extra)
    want = op(backend).backward(g, h, w, ids, **extra)
    assert not torch.equal(got[0], want[0]) and not torch.equal(got[1], want[1])


@pytest.mark.parametrize(
    "make_logits, error",
    [
        (lambda x: x[:-1].clone(), ValueError),
        (lambda x: x[:, :-1].clone(), ValueError),
        (lambda x: x.reshape(-1).clone(), ValueError),
        (lambda x: x.double(), TypeError),
        (lambda x: x.bfloat16(), TypeError),
        (lambda x: torch.stack((x, x), 2)[:, :, 0], ValueError),
        (lambda x: x.t().contiguous().t(), ValueError),
    ],
    ids=("short", "narrow", "1-d", "float64", "bfloat16", "strided", "transposed"),
)
def test_bad_logits_raise_clearly(make_logits, error, gen):
    h, w, ids, g = problem(6, 16, 300, torch.float32, gen)
    logits = make_logits(forward_lse_logits(h, w, ids)[1])
    with pytest.raises(error, match="logits"):
        op().backward(g, h, w, ids, logits=logits)


def test_logits_on_another_device_raise(gen):
    h, w, ids, g = problem(6, 16, 300, torch.float32, gen)
    with pytest.raises((TypeError, ValueError), match="logits|device"):
        op().backward(g, h, w, ids, logits=torch.empty(6, 300, device="meta"))


def test_bad_forward_logits_output_raises(gen):
    h, w, ids, _ = problem(6, 16, 300, torch.float32, gen)
    for bad, error in ((torch.empty(6, 299), ValueError), (torch.empty(6, 300, dtype=torch.float64), TypeError)):
        capsules = [_arrays.capsule(x) for x in (h, w, ids, torch.empty(6))]
        with pytest.raises(error, match="logits"):
            gk._C.linear_logprob_forward("cpu", 0, *capsules, None, IGNORE, None, _arrays.capsule(bad))


def test_forward_logits_may_not_alias_an_output(gen):
    h, w, ids, _ = problem(6, 16, 300, torch.float32, gen)
    logits = torch.empty(6, 300)
    capsules = [_arrays.capsule(x) for x in (h, w, ids)]
    logprob_view = logits.view(-1)[:6]
    with pytest.raises(ValueError):
        gk._C.linear_logprob_forward("cpu", 0, *capsules, _arrays.capsule(logprob_view), None, IGNORE, None,
                                     _arrays.capsule(logits))


@pytest.mark.gpu
@pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=dtype_id)
@pytest.mark.parametrize("rows, vocab", [(19, 4096 + 77), (530, 1500)])
def test_gpu_logits_and_backward_with_them_equal_reference(dtype, rows, vocab, gen):
    h, w, ids, g = problem(rows, 48, vocab, dtype, gen)
    grad_entropy = torch.randn(rows, generator=gen)
    lse, logits = forward_lse_logits(h, w, ids, "reference")
    lse_gpu, logits_gpu = forward_lse_logits(to_gpu(h), to_gpu(w), to_gpu(ids), GPU)
    assert_bitwise_equal(logits_gpu.cpu(), logits, "gpu logits")
    assert_bitwise_equal(lse_gpu.cpu(), lse, "gpu lse")
    for kwargs in ({"lse": lse}, {"grad_entropy": grad_entropy}):
        want = op("reference").backward(g, h, w, ids, **kwargs)
        on_gpu = {k: to_gpu(v) for k, v in kwargs.items()}
        got = op(GPU).backward(to_gpu(g), to_gpu(h), to_gpu(w), to_gpu(ids), logits=logits_gpu, **on_gpu)
        assert_grads_equal([t.cpu() for t in got], want, f"gpu {sorted(kwargs)}")
