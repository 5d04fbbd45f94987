"""gt.linear_logprob saves the forward's per-row lse for its backward (op
golden::linear_logprob_with_lse): the gradients keep the raw bits of the op that
recomputes it (golden::linear_logprob), eagerly and through torch.library."""

from __future__ import annotations

import pytest
import torch

import golden_kernels.torch as gt
from golden_kernels.ops import linear_logprob as linear_logprob_op
from golden_kernels.testing import assert_bitwise_equal

from ..conftest import dtype_id


def inputs(gen, dtype):
    """Every fifth target ignored, row 2 NaN."""
    hidden = torch.randn(11, 24, generator=gen)
    hidden[2, 0] = float("nan")
    weight = torch.randn(300, 24, generator=gen) / 5
    ids = torch.randint(0, 300, (11,), generator=gen)
    ids[::5] = -100
    return hidden.to(dtype).requires_grad_(), weight.to(dtype).requires_grad_(), ids


def grads(fn, hidden, weight, ids, grad_out):
    hidden, weight = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    out = fn(hidden, weight, ids)
    out.backward(grad_out)
    return out, hidden.grad, weight.grad


class PassThrough(torch.utils._python_dispatch.TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def recomputing_op(hidden, weight, ids):
    return torch.ops.golden.linear_logprob(hidden, weight, ids, -100)


@pytest.mark.parametrize("via_custom_op", (False, True), ids=("eager", "custom_op"))
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=dtype_id)
def test_saved_lse_gradients_equal_recomputed(dtype, via_custom_op, gen, monkeypatch):
    hidden, weight, ids = inputs(gen, dtype)
    grad_out = torch.randn(11, generator=gen)
    seen = []
    backward = linear_logprob_op.backward
    monkeypatch.setattr(linear_logprob_op, "backward",
                        lambda *args, **kwargs: seen.append(kwargs["lse"]) or backward(*args, **kwargs))
    want = grads(recomputing_op, hidden, weight, ids, grad_out)
    assert seen == [None]
    if via_custom_op:
        with PassThrough():  # golden calls then go through the custom op and torch.library's autograd
            got = grads(gt.linear_logprob, hidden, weight, ids, grad_out)
    else:
        got = grads(gt.linear_logprob, hidden, weight, ids, grad_out)
    assert seen[1] is not None and seen[1].shape == (11,) and torch.isnan(seen[1][2])
    for name, g, w in zip(("logprob", "grad_hidden", "grad_weight"), got, want):
        assert_bitwise_equal(g, w, name)


def test_lse_output_is_not_differentiable(gen):
    hidden, weight, ids = inputs(gen, torch.float32)
    logprob, lse = torch.ops.golden.linear_logprob_with_lse(hidden, weight, ids, -100)
    assert logprob.requires_grad and not lse.requires_grad


def test_opcheck(gen):
    hidden, weight, ids = inputs(gen, torch.float32)
    hidden = hidden.detach().nan_to_num().requires_grad_()
    torch.library.opcheck(torch.ops.golden.linear_logprob_with_lse, (hidden, weight, ids, -100))
