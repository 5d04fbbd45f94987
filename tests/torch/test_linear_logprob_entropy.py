"""gt.linear_logprob(return_entropy=True) saves each row's entropy partial (and
its fp32 logits when they fit) for its backward (op
golden::linear_logprob_entropy_with_logits): the gradients keep the raw bits of
the op that recomputes them (golden::linear_logprob_entropy), eagerly and
through torch.library, whichever outputs the loss uses."""

from __future__ import annotations

import pytest
import torch

import golden_kernels.torch as gt
from golden_kernels.ops import linear_logprob as linear_logprob_op
from golden_kernels.testing import assert_bitwise_equal

from ..conftest import dtype_id
from .test_linear_logprob_lse import PassThrough, inputs

LOSSES = {
    "both": lambda logprob, entropy, g: (logprob * g).sum() + (entropy * g.flip(0)).sum(),
    "entropy-only": lambda logprob, entropy, g: (entropy * g).sum(),
}


def grads(fn, hidden, weight, ids, loss, g):
    hidden, weight = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    logprob, entropy = fn(hidden, weight, ids)
    loss(logprob, entropy, g).backward()
    return logprob, entropy, hidden.grad, weight.grad


def recomputing_op(hidden, weight, ids):
    return torch.ops.golden.linear_logprob_entropy(hidden, weight, ids, -100)


def saving(hidden, weight, ids):
    return gt.linear_logprob(hidden, weight, ids, return_entropy=True)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("max_saved_logits", (0, 1 << 23), ids=("recomputed-logits", "saved-logits"))
@pytest.mark.parametrize("via_custom_op", (False, True), ids=("eager", "custom_op"))
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=dtype_id)
def test_saved_partial_gradients_equal_recomputed(dtype, via_custom_op, max_saved_logits, loss, gen, monkeypatch):
    hidden, weight, ids = inputs(gen, dtype)
    g = torch.randn(11, generator=gen)
    monkeypatch.setattr(gt.functional, "MAX_SAVED_LOGITS", max_saved_logits)
    seen = []
    backward = linear_logprob_op.backward
    monkeypatch.setattr(linear_logprob_op, "backward", lambda *args, **kwargs: seen.append(kwargs) or
                        backward(*args, **kwargs))
    want = grads(recomputing_op, hidden, weight, ids, LOSSES[loss], g)
    assert seen[0]["entropy_partial"] is None
    if via_custom_op:
        with PassThrough():  # golden calls then go through the custom op and torch.library's autograd
            got = grads(saving, hidden, weight, ids, LOSSES[loss], g)
    else:
        got = grads(saving, hidden, weight, ids, LOSSES[loss], g)
    partial = seen[1]["entropy_partial"]
    assert partial is not None and partial.shape == (11, 3) and torch.isnan(partial[2]).any()
    assert (seen[1]["logits"] is not None) == (max_saved_logits > 0)
    for name, got_x, want_x in zip(("logprob", "entropy", "grad_hidden", "grad_weight"), got, want):
        assert_bitwise_equal(got_x, want_x, name)


def test_partial_and_logits_are_not_differentiable(gen):
    hidden, weight, ids = inputs(gen, torch.float32)
    logprob, entropy, partial, logits = torch.ops.golden.linear_logprob_entropy_with_logits(
        hidden, weight, ids, -100, 1 << 23)
    assert logprob.requires_grad and entropy.requires_grad
    assert not partial.requires_grad and not logits.requires_grad
    assert logits.shape == (11, 300)


@pytest.mark.parametrize("max_saved_logits", (0, 1 << 23))
def test_opcheck(max_saved_logits, gen):
    hidden, weight, ids = inputs(gen, torch.float32)
    hidden = hidden.detach().nan_to_num().requires_grad_()
    torch.library.opcheck(torch.ops.golden.linear_logprob_entropy_with_logits,
                          (hidden, weight, ids, -100, max_saved_logits))
