"""gt.linear_logprob keeps the forward's fp32 logits for its backward (op
golden::linear_logprob_with_logits) when a gradient is wanted and rows x vocab
<= MAX_SAVED_LOGITS: the gradients keep the raw bits of the op that recomputes
them (golden::linear_logprob) under and over the budget, eagerly, through
torch.library and compiled; opcheck passes."""

from __future__ import annotations

import pytest
import torch

import golden_kernels.torch as gt
from golden_kernels.ops import linear_logprob as linear_logprob_op
from golden_kernels.testing import assert_bitwise_equal

from ..conftest import dtype_id
from .test_linear_logprob_lse import PassThrough, grads, recomputing_op

ROWS, VOCAB = 11, 300


def inputs(gen, dtype, rows=ROWS, vocab=VOCAB, hidden=24):
    """Every fifth target ignored, row 2 NaN."""
    h = torch.randn(rows, hidden, generator=gen)
    h[2, 0] = float("nan")
    weight = torch.randn(vocab, hidden, generator=gen) / 5
    ids = torch.randint(0, vocab, (rows,), generator=gen)
    ids[::5] = -100
    return h.to(dtype).requires_grad_(), weight.to(dtype).requires_grad_(), ids




def saving_op(max_saved_logits):
    return lambda hidden, weight, ids: gt._library.linear_logprob_with_logits(hidden, weight, ids, -100,
                                                                             max_saved_logits)[0]


@pytest.fixture
def seen_logits(monkeypatch):
    """The logits each backward call of the op layer got (None: it recomputed them)."""
    seen = []
    backward = linear_logprob_op.backward
    monkeypatch.setattr(linear_logprob_op, "backward",
                        lambda *args, **kwargs: seen.append(kwargs.get("logits")) or backward(*args, **kwargs))
    return seen


@pytest.mark.parametrize("via_custom_op", (False, True), ids=("eager", "custom_op"))
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=dtype_id)
@pytest.mark.parametrize("budget", (ROWS * VOCAB, ROWS * VOCAB - 1), ids=("at_budget", "over_budget"))
def test_saved_logits_gradients_equal_recomputed(budget, dtype, via_custom_op, gen, seen_logits):
    hidden, weight, ids = inputs(gen, dtype)
    grad_out = torch.randn(ROWS, generator=gen)
    want = grads(recomputing_op, hidden, weight, ids, grad_out)
    if via_custom_op:
        with PassThrough():  # golden calls then go through the custom op and torch.library's autograd
            got = grads(saving_op(budget), hidden, weight, ids, grad_out)
    else:
        got = grads(saving_op(budget), hidden, weight, ids, grad_out)
    assert seen_logits[0] is None
    if budget >= ROWS * VOCAB:
        assert seen_logits[1].shape == (ROWS, VOCAB) and torch.isnan(seen_logits[1][2]).all()
    else:
        assert seen_logits[1] is None
    for name, g, w in zip(("logprob", "grad_hidden", "grad_weight"), got, want):
        assert_bitwise_equal(g, w, name)


def test_op_outputs(gen):
    hidden, weight, ids = inputs(gen, torch.float32, rows=12)
    h3, ids3 = hidden.reshape(3, 4, -1), ids.reshape(3, 4)
    logprob, lse, logits = gt._library.linear_logprob_with_logits(h3, weight, ids3, -100, 12 * VOCAB)
    want_logprob, want_lse = torch.ops.golden.linear_logprob_with_lse(h3, weight, ids3, -100)
    assert_bitwise_equal(logprob, want_logprob, "logprob")
    assert_bitwise_equal(lse, want_lse, "lse")
    assert_bitwise_equal(logits, gt.lm_head(h3, weight).float(), "logits")  # fp32: lm_head's bits
    assert logprob.requires_grad and not lse.requires_grad and not logits.requires_grad
    _, _, empty = gt._library.linear_logprob_with_logits(h3, weight, ids3, -100, 12 * VOCAB - 1)
    assert empty.shape == (0,) and empty.dtype == torch.float32


def test_gt_linear_logprob_saves_logits_only_for_a_gradient_under_max_saved_logits(gen, seen_logits, monkeypatch):
    hidden, weight, ids = inputs(gen, torch.float32)
    asked = []
    forward = linear_logprob_op.forward
    monkeypatch.setattr(linear_logprob_op, "forward",
                        lambda *args, **kwargs: asked.append(kwargs.get("return_logits", False))
                        or forward(*args, **kwargs))
    with torch.no_grad():
        gt.linear_logprob(hidden, weight, ids)
    gt.linear_logprob(hidden.detach(), weight.detach(), ids)
    assert asked == [False, False], "no gradient wanted: no logits kept"
    gt.linear_logprob(hidden, weight, ids).sum().backward()
    assert asked[2] and seen_logits[0].shape == (ROWS, VOCAB)
    assert linear_logprob_op.MAX_SAVED_LOGITS == 1 << 23  # 32 MiB of fp32, as documented


def test_gt_linear_logprob_over_max_saved_logits_recomputes(gen, seen_logits):
    """rows x vocab = MAX_SAVED_LOGITS + 2: nothing kept; the gradient is still the recomputing op's."""
    vocab = linear_logprob_op.MAX_SAVED_LOGITS // 2 + 1
    hidden, weight, ids = inputs(gen, torch.float32, rows=4, vocab=vocab, hidden=2)
    grad_out = torch.randn(4, generator=gen)
    got = grads(gt.linear_logprob, hidden, weight, ids, grad_out)
    assert seen_logits == [None]
    want = grads(recomputing_op, hidden, weight, ids, grad_out)
    for name, g, w in zip(("logprob", "grad_hidden", "grad_weight"), got, want):
        assert_bitwise_equal(g, w, name)


@pytest.mark.parametrize("budget", (ROWS * VOCAB, 0), ids=("saved", "not_saved"))
def test_opcheck(budget, gen):
    hidden, weight, ids = inputs(gen, torch.float32)
    hidden = hidden.detach().nan_to_num().requires_grad_()
    torch.library.opcheck(torch.ops.golden.linear_logprob_with_logits, (hidden, weight, ids, -100, budget))


def test_fullgraph_compile_forward_and_backward_equal_eager(gen, seen_logits):
    hidden, weight, ids = inputs(gen, torch.float32)
    hidden = hidden.detach().nan_to_num().requires_grad_()
    grad_out = torch.randn(ROWS, generator=gen)
    want = grads(recomputing_op, hidden, weight, ids, grad_out)
    compiled = torch.compile(lambda h, w, t: gt.linear_logprob(h, w, t), fullgraph=True, backend="aot_eager")
    got = grads(compiled, hidden, weight, ids, grad_out)
    assert seen_logits[0] is None and seen_logits[-1].shape == (ROWS, VOCAB)  # the compiled graph kept them
    for name, g, w in zip(("logprob", "grad_hidden", "grad_weight"), got, want):
        assert_bitwise_equal(g, w, name)
