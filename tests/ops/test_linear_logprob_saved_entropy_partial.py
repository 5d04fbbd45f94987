"""linear_logprob's forward entropy partial (return_entropy_partial=True: each
row's (max, sum, shifted), entropy_partials' format) handed to its backward
(entropy_partial=...): the backward then skips its row statistics pass, with or
without the entropy gradient, and its gradients keep the same raw bits on every
CPU path, with ignored targets and NaN rows; bad partials raise."""

from __future__ import annotations

import pytest
import torch

import golden_kernels as gk
from golden_kernels import _arrays
from golden_kernels.testing import assert_bitwise_equal

from ..conftest import dtype_id
from ..gpu_target import AVAILABLE, GPU, SKIP_REASON, on_gpu as to_gpu
from .test_linear_logprob_saved_lse import IGNORE, assert_grads_equal, backward, problem


def forward_partial(h, w, ids, backend=None, **kwargs):
    return gk.get_op("linear_logprob", backend).forward(h, w, ids, return_entropy_partial=True, **kwargs)[-1]


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=dtype_id)
@pytest.mark.parametrize("rows, vocab", [(19, 1), (19, 4096 + 77), (300, 700)])
def test_backward_with_forward_partial_equals_recomputed_on_every_cpu_path(cpu_isa, threads, dtype, rows, vocab,
                                                                           gen):
    h, w, ids, g = problem(rows, 24, vocab, dtype, gen)
    g_entropy = torch.randn(rows, generator=gen)
    threads(2)
    for backend in ("cpu", "reference"):
        partial = forward_partial(h, w, ids, backend)
        assert torch.isnan(partial[3]).any() and not torch.isnan(partial[torch.arange(rows) != 3]).any()
        for grad_entropy in (None, g_entropy):
            for fp32 in (True, False):
                for needs in ((True, True), (True, False), (False, True)):
                    kwargs = dict(grad_entropy=grad_entropy, fp32=fp32, needs=needs)
                    want = backward(g, h, w, ids, backend, **kwargs)
                    got = backward(g, h, w, ids, backend, entropy_partial=partial, **kwargs)
                    what = f"{backend} entropy={grad_entropy is not None} fp32={fp32} needs={needs}"
                    assert_grads_equal(got, want, what)


def test_partial_with_the_forward_logits(gen):
    """Both taken back: no lm_head pass over the vocabulary before the gradients."""
    h, w, ids, g = problem(19, 16, 4096 + 77, torch.bfloat16, gen)
    g_entropy = torch.randn(19, generator=gen)
    _, _, logits, partial = gk.get_op("linear_logprob").forward(h, w, ids, return_entropy=True, return_logits=True,
                                                                return_entropy_partial=True)
    got = backward(g, h, w, ids, grad_entropy=g_entropy, logits=logits, entropy_partial=partial)
    assert_grads_equal(got, backward(g, h, w, ids, grad_entropy=g_entropy), "logits + partial")


@pytest.mark.parametrize("backend", ("cpu", "reference"))
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=dtype_id)
def test_forward_partial_is_entropy_partials_of_the_logits(backend, dtype, gen):
    """The fused forward's partial is bitwise the unfused entropy_partials of
    lm_head's fp32 logits (one shard: the whole vocabulary), and asking for it
    leaves logprob, entropy and lse unchanged."""
    h, w, ids, _ = problem(19, 24, 2 * 4096 + 5, dtype, gen)
    op = gk.get_op("linear_logprob", backend)
    logprob, entropy, lse = op.forward(h, w, ids, return_entropy=True, return_lse=True)
    logprob_p, entropy_p, lse_p, partial = op.forward(h, w, ids, return_entropy=True, return_lse=True,
                                                      return_entropy_partial=True)
    logits = gk.get_op("lm_head", backend).forward_fp32(h, w)
    assert_bitwise_equal(partial, gk.entropy_partials(logits, backend=backend), "partial vs entropy_partials")
    assert_bitwise_equal(forward_partial(h, w, ids, backend), partial, "partial without the entropy output")
    for name, got, want in (("logprob", logprob_p, logprob), ("entropy", entropy_p, entropy), ("lse", lse_p, lse)):
        assert_bitwise_equal(got, want, name)


def test_leading_dimensions_are_rows(gen):
    h, w, ids, g = problem(12, 16, 300, torch.float32, gen)
    shape = (3, 4)
    h3, ids3, g3 = h.reshape(*shape, 16), ids.reshape(shape), g.reshape(shape)
    partial = forward_partial(h3, w, ids3)
    assert partial.shape == (*shape, 3)
    ge = torch.ones(shape)
    assert_grads_equal(backward(g3, h3, w, ids3, grad_entropy=ge, entropy_partial=partial),
                       backward(g3, h3, w, ids3, grad_entropy=ge), "[3, 4] rows")


def test_partial_is_not_mutated(gen):
    h, w, ids, g = problem(19, 16, 300, torch.float32, gen)
    partial = forward_partial(h, w, ids)
    before = partial.clone()
    backward(g, h, w, ids, grad_entropy=torch.ones(19), entropy_partial=partial)
    assert_bitwise_equal(partial, before, "entropy_partial changed")


@pytest.mark.parametrize(
    "make_partial, error",
    [
        (lambda p: p[:-1].clone(), ValueError),
        (lambda p: p[:, :2].clone(), ValueError),
        (lambda p: p.reshape(-1).clone(), ValueError),
        (lambda p: p.double(), TypeError),
        (lambda p: p.bfloat16(), TypeError),
        (lambda p: p.t().contiguous().t(), ValueError),
    ],
    ids=("short", "two-columns", "flat", "float64", "bfloat16", "strided"),
)
def test_bad_partial_raises_clearly(make_partial, error, gen):
    h, w, ids, g = problem(6, 16, 300, torch.float32, gen)
    partial = make_partial(forward_partial(h, w, ids))
    with pytest.raises(error, match="entropy_partial"):
        backward(g, h, w, ids, grad_entropy=torch.ones(6), entropy_partial=partial)


def test_lse_and_partial_together_raise(gen):
    h, w, ids, g = problem(6, 16, 300, torch.float32, gen)
    _, lse, partial = gk.get_op("linear_logprob").forward(h, w, ids, return_lse=True, return_entropy_partial=True)
    with pytest.raises(ValueError, match="not both"):
        backward(g, h, w, ids, lse=lse, entropy_partial=partial)


def test_bad_forward_partial_output_raises(gen):
    h, w, ids, _ = problem(6, 16, 300, torch.float32, gen)
    h, w, ids, logprob, partial = (_arrays.capsule(x) for x in (h, w, ids, torch.empty(6), torch.empty(6, 2)))
    with pytest.raises(ValueError, match="entropy_partial"):
        gk._C.linear_logprob_forward("cpu", 0, h, w, ids, logprob, None, IGNORE, entropy_partial=partial)


@pytest.mark.parametrize("backend", ("cpu", "reference"))
def test_the_given_partial_is_the_one_used(backend, gen):
    """A changed partial changes the gradients: the backward read it instead of
    recomputing (shifting the max moves the lse; scaling `shifted` moves the
    entropy gradient's mean)."""
    h, w, ids, g = problem(3, 16, 300, torch.float32, gen)  # no NaN row
    g_entropy = torch.randn(3, generator=gen)
    partial = forward_partial(h, w, ids, backend)
    want = backward(g, h, w, ids, backend, grad_entropy=g_entropy)
    for column, change in ((0, lambda c: c + 1.0), (2, lambda c: c * 2.0)):
        changed = partial.clone()
        changed[:, column] = change(changed[:, column])
        got = backward(g, h, w, ids, backend, grad_entropy=g_entropy, entropy_partial=changed)
        assert not torch.equal(got[0], want[0]) and not torch.equal(got[1], want[1]), f"column {column}"


@pytest.mark.gpu
@pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=dtype_id)
@pytest.mark.parametrize("rows, vocab", [(19, 33), (19, 4096 + 77), (530, 1500)])
def test_gpu_partial_and_backward_equal_reference(dtype, rows, vocab, gen):
    h, w, ids, g = problem(rows, 48, vocab, dtype, gen)
    g_entropy = torch.randn(rows, generator=gen)
    want_partial = forward_partial(h, w, ids, "reference", return_entropy=True)
    on_gpu = [to_gpu(t) for t in (g, h, w, ids, g_entropy)]
    partial = forward_partial(*on_gpu[1:4], GPU, return_entropy=True)
    assert_bitwise_equal(partial.cpu(), want_partial, "gpu entropy_partial")
    for grad_entropy in (None, g_entropy):
        want = backward(g, h, w, ids, "reference", grad_entropy=grad_entropy)
        got = backward(*on_gpu[:4], GPU, grad_entropy=None if grad_entropy is None else on_gpu[4],
                       entropy_partial=partial)
        assert_grads_equal([t.cpu() for t in got], want, f"gpu entropy={grad_entropy is not None}")
