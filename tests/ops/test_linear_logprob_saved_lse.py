"""linear_logprob's forward lse (return_lse=True) handed to its backward (lse=...):
the backward then skips its row statistics pass, and its gradients keep the same
raw bits on every CPU path, with ignored targets and NaN rows, whether the
logits fit the backward's cache or are recomputed; bad lse inputs raise."""

from __future__ import annotations

import pytest
import torch

import golden_kernels as gk
from golden_kernels import _arrays
from golden_kernels.testing import assert_bitwise_equal

from ..conftest import dtype_id

IGNORE = -100


def problem(rows, hidden, vocab, dtype, gen):
    """Every fifth target ignored, row 3 (when there is one) NaN."""
    h = torch.randn(rows, hidden, generator=gen)
    if rows > 3:
        h[3, 1] = float("nan")
    h = h.to(dtype)
    w = (torch.randn(vocab, hidden, generator=gen) / hidden**0.5 * 4).to(dtype)
    ids = torch.randint(0, vocab, (rows,), generator=gen)
    ids[::5] = IGNORE
    return h, w, ids, torch.randn(rows, generator=gen)


def forward_lse(h, w, ids, backend=None):
    return gk.get_op("linear_logprob", backend).forward(h, w, ids, return_lse=True)[1]


def backward(g, h, w, ids, backend=None, **kwargs):
    return gk.get_op("linear_logprob", backend).backward(g, h, w, ids, **kwargs)


def assert_grads_equal(got, want, what):
    for i, name in enumerate(("grad_hidden", "grad_weight")):
        if want[i] is None:
            assert got[i] is None, f"{what} {name}"
        else:
            assert_bitwise_equal(got[i], want[i], f"{what} {name}")


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=dtype_id)
@pytest.mark.parametrize("rows, vocab", [(19, 1), (19, 4096 + 77), (300, 700)])
def test_backward_with_forward_lse_equals_recomputed_on_every_cpu_path(cpu_isa, threads, dtype, rows, vocab, gen):
    h, w, ids, g = problem(rows, 24, vocab, dtype, gen)
    threads(2)
    for backend in ("cpu", "reference"):
        lse = forward_lse(h, w, ids, backend)
        assert torch.isnan(lse[3]) and not torch.isnan(lse[torch.arange(rows) != 3]).any()
        for fp32 in (True, False):
            for needs in ((True, True), (True, False), (False, True)):
                want = backward(g, h, w, ids, backend, fp32=fp32, needs=needs)
                got = backward(g, h, w, ids, backend, fp32=fp32, needs=needs, lse=lse)
                assert_grads_equal(got, want, f"{backend} fp32={fp32} needs={needs}")


def test_logits_beyond_the_backward_cache(gen):
    """rows x vocab over the backward's 32 MiB logit cache: the statistics pass
    caches nothing, so the forward's lse saves a whole lm_head recomputation."""
    h, w, ids, g = problem(300, 8, 30000, torch.bfloat16, gen)
    lse = forward_lse(h, w, ids)
    assert_grads_equal(backward(g, h, w, ids, lse=lse, fp32=True), backward(g, h, w, ids, fp32=True), "V=30000")


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=dtype_id)
def test_forward_lse_is_the_logprob_denominator(dtype, gen):
    """logprob == target logit - lse in fp32 for every kept row (the logprob itself
    is checked against float64 in test_linear_logprob.py); the entropy output
    leaves lse and logprob unchanged."""
    h, w, ids, _ = problem(19, 24, 4096 + 77, dtype, gen)
    logprob, lse = gk.get_op("linear_logprob").forward(h, w, ids, return_lse=True)
    logprob_e, entropy, lse_e = gk.get_op("linear_logprob").forward(h, w, ids, return_entropy=True, return_lse=True)
    assert_bitwise_equal(lse_e, lse, "lse with the entropy")
    assert_bitwise_equal(logprob_e, logprob, "logprob with the entropy")
    assert_bitwise_equal(logprob, gk.linear_logprob(h, w, ids), "logprob with return_lse")
    assert entropy.shape == lse.shape
    kept = ids != IGNORE
    logits = gk.get_op("lm_head").forward_fp32(h, w)
    target_logits = logits[kept].gather(1, ids[kept, None])[:, 0]
    assert_bitwise_equal(target_logits - lse[kept], logprob[kept], "target logit - lse")


def test_leading_dimensions_are_rows(gen):
    h, w, ids, g = problem(12, 16, 300, torch.float32, gen)
    shape = (3, 4)
    h3, ids3, g3 = h.reshape(*shape, 16), ids.reshape(shape), g.reshape(shape)
    lse = forward_lse(h3, w, ids3)
    assert lse.shape == shape
    assert_grads_equal(backward(g3, h3, w, ids3, lse=lse), backward(g3, h3, w, ids3), "[3, 4] rows")


def test_lse_is_not_mutated(gen):
    h, w, ids, g = problem(19, 16, 300, torch.float32, gen)
    lse = forward_lse(h, w, ids)
    before = lse.clone()
    backward(g, h, w, ids, lse=lse)
    assert_bitwise_equal(lse, before, "lse changed")


@pytest.mark.parametrize(
    "make_lse, error, match",
    [
        (lambda lse: lse[:-1].clone(), ValueError, "lse"),
        (lambda lse: lse.reshape(1, -1).clone(), ValueError, "lse"),
        (lambda lse: lse.double(), TypeError, "lse"),
        (lambda lse: lse.bfloat16(), TypeError, "lse"),
        (lambda lse: torch.stack((lse, lse), 1)[:, 0], ValueError, "lse"),
    ],
    ids=("short", "2-d", "float64", "bfloat16", "strided"),
)
def test_bad_lse_raises_clearly(make_lse, error, match, gen):
    h, w, ids, g = problem(6, 16, 300, torch.float32, gen)
    lse = make_lse(forward_lse(h, w, ids))
    with pytest.raises(error, match=match):
        backward(g, h, w, ids, lse=lse)


def test_lse_with_the_entropy_gradient_raises(gen):
    """The entropy gradient's row statistics need the statistics pass anyway."""
    h, w, ids, g = problem(6, 16, 300, torch.float32, gen)
    with pytest.raises(ValueError, match="grad_entropy"):
        backward(g, h, w, ids, grad_entropy=torch.ones(6), lse=forward_lse(h, w, ids))


def test_bad_forward_lse_output_raises(gen):
    h, w, ids, _ = problem(6, 16, 300, torch.float32, gen)
    h, w, ids, logprob, lse = (_arrays.capsule(x) for x in (h, w, ids, torch.empty(6), torch.empty(5)))
    with pytest.raises(ValueError, match="lse"):
        gk._C.linear_logprob_forward("cpu", 0, h, w, ids, logprob, None, IGNORE, lse)


@pytest.mark.parametrize("backend", ("cpu", "reference"))
def test_the_given_lse_is_the_one_used(backend, gen):
    """A shifted lse changes the gradients: the backward read it instead of recomputing."""
    h, w, ids, g = problem(3, 16, 300, torch.float32, gen)  # no NaN row
    shifted = forward_lse(h, w, ids, backend) + 1.0
    got = backward(g, h, w, ids, backend, lse=shifted)
    want = backward(g, h, w, ids, backend)
    assert not torch.equal(got[0], want[0]) and not torch.equal(got[1], want[1])
