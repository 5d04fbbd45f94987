"""golden_kernels.torch autograd: for every op, the forward is the op's own
bits, the gradients autograd computes are bitwise the op's own backward, and
(fp32) they agree with float64 PyTorch autograd of the independent reference
within the peer floor of the op's class (which catches any mis-wired gradient)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch

import golden_kernels as gk
import golden_kernels.torch as gt
from golden_kernels.ops.rope import inverse_frequencies
from golden_kernels.testing import assert_bitwise_equal, assert_peer_floor

from .. import reference
from ..conftest import dtype_id
from .dispatch_log import RecordOps

EPS = 1e-5
IGNORE = -100


@dataclass(frozen=True)
class Case:
    """make(gen, dtype) -> inputs; differentiable: which inputs get gradients;
    golden(*inputs) calls golden_kernels.torch; op_backward(grad, *inputs) the
    op's own backward (tuple in `differentiable` order); reference(*inputs) the
    float64 forward, differentiated by PyTorch in float64."""

    make: Callable
    differentiable: tuple[int, ...]
    golden: Callable
    op_forward: Callable
    op_backward: Callable
    reference: Callable
    op_class: str


def randn(gen, dtype, *shape, scale=1.0):
    return (torch.randn(*shape, generator=gen) * scale).to(dtype)


def targets(gen, rows, vocab):
    ids = torch.randint(0, vocab, (rows,), generator=gen)
    ids[1] = IGNORE
    return ids


def op(name):
    return gk.get_op(name)


def as_tuple(value):
    return value if isinstance(value, tuple) else (value,)


CASES = {
    "rms_norm": Case(
        lambda g, d: (randn(g, d, 6, 96), randn(g, d, 96)), (0, 1),
        lambda x, w: gt.rms_norm(x, w, EPS), lambda x, w: op("rms_norm").forward(x, w, EPS),
        lambda gy, x, w: op("rms_norm").backward(gy, x, w, EPS),
        lambda x, w: reference.rms_norm(x, w, EPS), "reduction"),
    "embedding": Case(
        lambda g, d: (torch.tensor([3, 0, 3, 7, 9, 3]), randn(g, d, 10, 24)), (1,),
        gt.embedding, op("embedding").forward, op("embedding").backward,
        lambda ids, w: w.to(torch.float64)[ids], "elementwise"),
    "silu": Case(
        lambda g, d: (randn(g, d, 5, 40, scale=4),), (0,),
        gt.silu, op("silu").forward, op("silu").backward, reference.silu, "elementwise"),
    "swiglu": Case(
        lambda g, d: (randn(g, d, 5, 40, scale=4), randn(g, d, 5, 40)), (0, 1),
        gt.swiglu, op("swiglu").forward, op("swiglu").backward, reference.swiglu, "elementwise"),
    "rope": Case(
        lambda g, d: (randn(g, d, 2, 5, 3, 16), torch.randint(0, 4096, (2, 5), generator=g)), (0,),
        gt.rope, op("rope").forward, lambda gy, x, positions: op("rope").backward(gy, positions),
        lambda x, positions: reference.rope_at_fp32_angles(x, positions, inverse_frequencies(16)),
        "elementwise"),
    "linear": Case(
        lambda g, d: (randn(g, d, 2, 3, 80), randn(g, d, 24, 80, scale=0.1), randn(g, d, 24)), (0, 1, 2),
        gt.linear, op("linear").forward, op("linear").backward, reference.linear, "reduction"),
    "linear_no_bias": Case(
        lambda g, d: (randn(g, d, 7, 80), randn(g, d, 24, 80, scale=0.1)), (0, 1),
        gt.linear, op("linear").forward, op("linear").backward, reference.linear, "reduction"),
    "lm_head": Case(
        lambda g, d: (randn(g, d, 7, 64), randn(g, d, 300, 64, scale=0.1)), (0, 1),
        gt.lm_head, op("lm_head").forward, op("lm_head").backward, reference.linear, "reduction"),
    "log_softmax": Case(
        lambda g, d: (randn(g, d, 4, 500, scale=3),), (0,),
        gt.log_softmax, op("log_softmax").forward, op("log_softmax").backward, reference.log_softmax, "logprob"),
    "token_logprob": Case(
        lambda g, d: (randn(g, d, 6, 500, scale=3), targets(g, 6, 500)), (0,),
        gt.token_logprob, op("token_logprob").forward, op("token_logprob").backward, reference.token_logprob,
        "logprob"),
    "entropy": Case(
        lambda g, d: (randn(g, d, 6, 500, scale=3),), (0,),
        gt.entropy, op("entropy").forward, op("entropy").backward, reference.entropy, "logprob"),
    "attention": Case(
        lambda g, d: (randn(g, d, 2, 4, 7, 16), randn(g, d, 2, 2, 7, 16), randn(g, d, 2, 2, 7, 16)), (0, 1, 2),
        gt.attention, op("attention").forward, op("attention").backward, reference.attention, "attention"),
    "attention_keeping_fp32": Case(  # float32 inputs: the flag changes nothing; 16-bit: the fp32 output is kept
        lambda g, d: (randn(g, d, 2, 4, 7, 16), randn(g, d, 2, 2, 7, 16), randn(g, d, 2, 2, 7, 16)), (0, 1, 2),
        lambda q, k, v: gt.attention(q, k, v, keep_fp32_output=True), op("attention").forward,
        op("attention").backward, reference.attention, "attention"),
}


def autograd_grads(fn, inputs, differentiable, grad_out):
    leaves = [t.clone().requires_grad_(i in differentiable) for i, t in enumerate(inputs)]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, [leaves[i] for i in differentiable], grad_out)
    return out, grads


def grad_like(out, gen):
    return randn(gen, out.dtype, *out.shape)


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=dtype_id)
@pytest.mark.parametrize("name", CASES)
def test_autograd_is_the_ops_own_backward(name, dtype, gen):
    case = CASES[name]
    inputs = case.make(gen, dtype)
    out = case.golden(*inputs)
    assert_bitwise_equal(out, case.op_forward(*inputs), f"{name} forward")
    grad_out = grad_like(out, gen)
    out, grads = autograd_grads(case.golden, inputs, case.differentiable, grad_out)
    expected = [g for g in as_tuple(case.op_backward(grad_out, *inputs)) if g is not None]
    assert len(grads) == len(expected)
    for i, (got, want) in enumerate(zip(grads, expected)):
        assert_bitwise_equal(got, want, f"{name} gradient of input {case.differentiable[i]}")


@pytest.mark.parametrize("name", CASES)
def test_autograd_matches_float64_reference_autograd(name, gen):
    case = CASES[name]
    inputs = case.make(gen, torch.float32)
    out = case.golden(*inputs)
    grad_out = grad_like(out, gen)
    _, grads = autograd_grads(case.golden, inputs, case.differentiable, grad_out)
    wide = [t.to(torch.float64) if t.is_floating_point() else t for t in inputs]
    _, want = autograd_grads(case.reference, wide, case.differentiable, grad_out.to(torch.float64))
    for i, (got, ref) in enumerate(zip(grads, want)):
        assert_peer_floor(got, ref, case.op_class, torch.float32, f"{name} gradient of input {case.differentiable[i]}")


# ---- linear_logprob: the fused forward and its streaming backward ---------------------------

def linear_logprob_inputs(gen, dtype, rows=6, vocab=700, hidden=48):
    return randn(gen, dtype, rows, hidden), randn(gen, dtype, vocab, hidden, scale=0.2), targets(gen, rows, vocab)


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=dtype_id)
def test_linear_logprob_forward_is_the_fused_ops_bits(dtype, gen):
    hidden, weight, ids = linear_logprob_inputs(gen, dtype)
    logprob, ent = gt.linear_logprob(hidden, weight, ids, return_entropy=True)
    want_logprob, want_entropy = gk.linear_logprob(hidden, weight, ids, return_entropy=True)
    assert_bitwise_equal(logprob, want_logprob, "logprob")
    assert_bitwise_equal(ent, want_entropy, "entropy")
    assert_bitwise_equal(gt.linear_logprob(hidden, weight, ids), want_logprob, "logprob alone")


def test_linear_logprob_fp32_gradient_is_lm_head_then_token_logprob(gen):
    """In fp32 the fused op equals lm_head + token_logprob (+ entropy) bit for bit,
    forward and backward."""
    inputs = linear_logprob_inputs(gen, torch.float32)
    g_logprob, g_entropy = randn(gen, torch.float32, 6), randn(gen, torch.float32, 6)

    def fused(hidden, weight, ids):
        logprob, ent = gt.linear_logprob(hidden, weight, ids, return_entropy=True)
        return torch.stack((logprob, ent))

    def separate(hidden, weight, ids):
        logits = gt.lm_head(hidden, weight)
        return torch.stack((gt.token_logprob(logits, ids), gt.entropy(logits)))

    grad_out = torch.stack((g_logprob, g_entropy))
    out, grads = autograd_grads(fused, inputs, (0, 1), grad_out)
    want_out, want_grads = autograd_grads(separate, inputs, (0, 1), grad_out)
    assert_bitwise_equal(out, want_out, "forward")
    for got, want, what in zip(grads, want_grads, ("dhidden", "dweight")):
        assert_bitwise_equal(got, want, what)


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=dtype_id)
def test_linear_logprob_gradient_matches_float64_reference(dtype, gen):
    hidden, weight, ids = linear_logprob_inputs(gen, dtype)
    grad_out = randn(gen, torch.float32, 6)
    _, grads = autograd_grads(lambda h, w, t: gt.linear_logprob(h, w, t), (hidden, weight, ids), (0, 1), grad_out)
    ref = lambda h, w, t: reference.token_logprob(reference.linear(h, w), t)  # noqa: E731
    wide = (hidden.double(), weight.double(), ids)
    _, want = autograd_grads(ref, wide, (0, 1), grad_out.double())
    for got, expected, what in zip(grads, want, ("dhidden", "dweight")):
        assert got.dtype == dtype
        assert_peer_floor(got, expected, "reduction", dtype, what)


# ---- the eager autograd path and the custom op's registered autograd agree ------------------

def linear_logprob_with_entropy(hidden, weight, ids):
    return torch.stack(gt.linear_logprob(hidden, weight, ids, return_entropy=True))


def packed_attention(q, k, v):
    cu_seqlens = torch.tensor([0, 3, 7], dtype=torch.int32)
    return gt.attention_varlen(q, k, v, cu_seqlens, cu_seqlens)


def graph_node_names(out):
    """The class names of the autograd nodes behind out."""
    names, todo = [], [out.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None:
            names.append(type(node).__name__)
            todo.extend(next_node for next_node, _ in node.next_functions)
    return names


# name: (make(gen, dtype) -> inputs, differentiable inputs, differentiable golden call)
EVERY_AUTOGRAD_OP = {
    **{name: (case.make, case.differentiable, case.golden) for name, case in CASES.items()},
    "linear_logprob": (linear_logprob_inputs, (0, 1), lambda h, w, ids: gt.linear_logprob(h, w, ids)),
    "linear_logprob_entropy": (linear_logprob_inputs, (0, 1), linear_logprob_with_entropy),
    "attention_varlen": (lambda g, d: (randn(g, d, 7, 4, 16), randn(g, d, 7, 2, 16), randn(g, d, 7, 2, 16)),
                         (0, 1, 2), packed_attention),
}


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=dtype_id)
@pytest.mark.parametrize("name", EVERY_AUTOGRAD_OP)
def test_eager_autograd_path_equals_the_custom_ops_autograd(name, dtype, gen):
    make, differentiable, golden = EVERY_AUTOGRAD_OP[name]
    inputs = make(gen, dtype)
    out = golden(*inputs)
    grad_out = randn(gen, out.dtype, *out.shape)
    eager_out, eager_grads = autograd_grads(golden, inputs, differentiable, grad_out)
    assert any(n.startswith("golden_") for n in graph_node_names(eager_out)), "the eager autograd path"
    with RecordOps() as recorder:
        op_out, op_grads = autograd_grads(golden, inputs, differentiable, grad_out)
    assert any(n.startswith("GeneratedBackwardFor_golden") for n in graph_node_names(op_out)), "torch.library's"
    assert any(op_name.startswith("golden.") and "_backward" in op_name for op_name in recorder.names)
    assert_bitwise_equal(eager_out, op_out, f"{name} forward")
    for i, (got, want) in enumerate(zip(eager_grads, op_grads)):
        assert_bitwise_equal(got, want, f"{name} gradient of input {differentiable[i]}")


# ---- inputs autograd hands over: non-contiguous gradients and views ----------------------

def test_strided_inputs_and_expanded_gradients(gen):
    """x.T views and a sum's stride-0 gradient reach the kernels densely, with the same bits."""
    x = randn(gen, torch.float32, 96, 6).T
    w = randn(gen, torch.float32, 96)
    leaf = x.clone().requires_grad_()
    gt.rms_norm(leaf, w, EPS).sum().backward()
    dx, _ = op("rms_norm").backward(torch.ones(6, 96), x.contiguous(), w, EPS)
    assert_bitwise_equal(leaf.grad, dx)


def test_inputs_not_mutated(gen):
    inputs = (randn(gen, torch.float32, 4, 32), randn(gen, torch.float32, 32), randn(gen, torch.float32, 16, 32))
    before = [t.clone() for t in inputs]
    x, w, proj = (t.requires_grad_() for t in inputs)
    gt.linear(gt.rms_norm(x, w), proj).sum().backward()
    for got, want in zip(inputs, before):
        assert_bitwise_equal(got.detach(), want)


def test_bad_input_raises_clear_errors(gen):
    with pytest.raises(TypeError):
        gt.rms_norm(torch.ones(4, 8), torch.ones(8, dtype=torch.float64))
    with pytest.raises(ValueError):
        gt.linear(torch.ones(4, 8), torch.ones(3, 7))
    with pytest.raises(ValueError):
        gt.token_logprob(torch.ones(2, 10), torch.tensor([1, 10]))
