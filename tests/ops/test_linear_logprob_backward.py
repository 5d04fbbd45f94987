"""linear_logprob backward (grad_hidden, grad_weight): bitwise equal to the
unfused fp32 chain token_logprob (+ entropy) backward then lm_head backward on
every CPU path; row-local grad_hidden (T1-T3), deterministic grad_weight (T7);
ignored targets contribute nothing; accurate against float64 autograd."""

from __future__ import annotations

import pytest
import torch

import golden_kernels as gk
from golden_kernels.testing import assert_bitwise_equal, reference
from golden_kernels.testing.bounds import assert_within, gamma, unit_roundoff
from golden_kernels.testing.tolerances import assert_peer_floor

from ..conftest import FLOAT_DTYPES, dtype_id
from ..gpu_target import AVAILABLE, GPU, SKIP_REASON, on_gpu


def problem(rows, hidden, vocab, dtype, gen):
    h = torch.randn(rows, hidden, generator=gen).to(dtype)
    w = (torch.randn(vocab, hidden, generator=gen) / hidden**0.5 * 4).to(dtype)
    ids = torch.randint(0, vocab, (rows,), generator=gen)
    ids[::5] = -100
    g = torch.randn(rows, generator=gen)
    return h, w, ids, g


def unfused_backward(g, h, w, ids, grad_entropy=None, backend=None):
    """token_logprob (+ entropy) backward in fp32, then lm_head backward on fp32 operands."""
    logits = gk.get_op("lm_head", backend).forward_fp32(h, w)
    d = gk.get_op("token_logprob", backend).backward(g, logits, ids, fp32=True)
    if grad_entropy is not None:
        d = d + gk.get_op("entropy", backend).backward(grad_entropy, logits, fp32=True)
    return gk.get_op("lm_head", backend).backward(d, h.float(), w.float(), fp32=True)


def fused_backward(g, h, w, ids, backend=None, **kwargs):
    return gk.get_op("linear_logprob", backend).backward(g, h, w, ids, **kwargs)


def assert_grads_equal(got, want, what):
    assert_bitwise_equal(got[0], want[0], f"{what} grad_hidden")
    assert_bitwise_equal(got[1], want[1], f"{what} grad_weight")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("vocab", (1, 33, 300, 4096 + 77))
def test_equals_unfused_chain_on_every_cpu_path(cpu_isa, threads, dtype, vocab, gen):
    h, w, ids, g = problem(19, 48, vocab, dtype, gen)
    threads(2)
    want = unfused_backward(g, h, w, ids, backend="reference")
    for backend in ("cpu", "reference"):
        got = fused_backward(g, h, w, ids, backend, fp32=True)
        assert_grads_equal(got, want, backend)
        rounded = fused_backward(g, h, w, ids, backend)
        assert rounded[0].dtype == dtype and rounded[1].dtype == dtype
        assert_grads_equal(rounded, (want[0].to(dtype), want[1].to(dtype)), f"{backend} rounded once")


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=dtype_id)
def test_entropy_gradient_added_in_the_same_pass(dtype, gen):
    h, w, ids, g = problem(23, 40, 5000, dtype, gen)
    grad_entropy = torch.randn(23, generator=gen)
    want = unfused_backward(g, h, w, ids, grad_entropy)
    assert_grads_equal(fused_backward(g, h, w, ids, grad_entropy=grad_entropy, fp32=True), want, "with entropy")


def test_many_token_tiles_and_the_qwen3_vocabulary(gen):
    """More rows than one tile (the weight gradient's own pass, a tree over tiles)
    and the real vocabulary (594 K-blocks of the hidden gradient's tree)."""
    h, w, ids, g = problem(300, 32, 151936, torch.bfloat16, gen)
    assert_grads_equal(fused_backward(g, h, w, ids, fp32=True), unfused_backward(g, h, w, ids), "V=151936")


def test_multi_tile_reference_path(gen):
    h, w, ids, g = problem(530, 16, 700, torch.float32, gen)
    want = unfused_backward(g, h, w, ids)
    assert_grads_equal(fused_backward(g, h, w, ids, "reference", fp32=True), want, "reference")
    assert_grads_equal(fused_backward(g, h, w, ids, "cpu", fp32=True), want, "cpu")


@pytest.mark.parametrize("rows, hidden, vocab", [(257, 8, 33000), (257, 1100, 4100)],
                         ids=["logits-recomputed", "weight-own-pass"])
def test_multi_tile_memory_paths(rows, hidden, vocab, gen):
    """Two token tiles where the CPU backward's memory budgets (2^23 floats each)
    change its plan: rows x vocab over the logit cache (the logits are recomputed;
    grad_weight still folds in the hidden pass), and grad_weight's tree stacks
    over the hidden pass's budget (its own pass, from the cached logits). Every
    plan gives the unfused chain's bits."""
    h, w, ids, g = problem(rows, hidden, vocab, torch.float32, gen)
    want = unfused_backward(g, h, w, ids)
    assert_grads_equal(fused_backward(g, h, w, ids, "cpu", fp32=True), want, f"{rows}x{hidden}x{vocab}")


def test_one_gradient_at_a_time(gen):
    h, w, ids, g = problem(270, 24, 1000, torch.bfloat16, gen)
    both = fused_backward(g, h, w, ids)
    only_hidden = fused_backward(g, h, w, ids, needs=(True, False))
    only_weight = fused_backward(g, h, w, ids, needs=(False, True))
    assert only_hidden[1] is None and only_weight[0] is None
    assert_bitwise_equal(only_hidden[0], both[0], "grad_hidden alone")
    assert_bitwise_equal(only_weight[1], both[1], "grad_weight alone")


def test_row_invariance_T1_T2_T3_and_threads_T7(threads, gen):
    h, w, ids, g = problem(40, 64, 9000, torch.bfloat16, gen)
    threads(1)
    dh, dw = fused_backward(g, h, w, ids)
    row = 7
    assert_bitwise_equal(fused_backward(g[row:row + 1], h[row:row + 1], w, ids[row:row + 1])[0][0], dh[row], "T1")
    perm = torch.randperm(40, generator=gen)
    assert_bitwise_equal(fused_backward(g[perm], h[perm], w, ids[perm])[0], dh[perm], "T2")
    others = torch.randn(40, 64, generator=gen).to(torch.bfloat16) * 30
    others[row] = h[row]
    assert_bitwise_equal(fused_backward(g, others, w, ids)[0][row], dh[row], "T3")
    for n in (2, 3):
        threads(n)
        assert_grads_equal(fused_backward(g, h, w, ids), (dh, dw), f"T7 {n} threads")


def test_ignored_targets_contribute_nothing(gen):
    h, w, ids, g = problem(30, 32, 600, torch.float32, gen)
    ignored = ids == -100
    dh, dw = fused_backward(g, h, w, ids)
    assert_bitwise_equal(dh[ignored], torch.zeros_like(dh[ignored]), "ignored rows' grad_hidden is +0")
    garbage = h.clone()
    garbage[ignored] = torch.randn(int(ignored.sum()), 32, generator=gen) * 1e3
    assert_bitwise_equal(fused_backward(g, garbage, w, ids)[1], dw, "grad_weight ignores ignored rows")
    all_ignored = torch.full_like(ids, -100)
    dh0, dw0 = fused_backward(g, h, w, all_ignored)
    assert_bitwise_equal(dw0, torch.zeros_like(dw0), "all ignored: zero grad_weight")


def logit_gradient_error_bound(g, h64, w64, logits64, lse64, d64):
    """First-order rigorous bound on |d_computed - d| per logit (Higham style):
    a logit is an fp32 fma contraction (gamma(H) sum|h w|); the lse is off by at
    most the largest logit error plus its own reduction (gamma(4096/32 + 11) in the
    sum, 0.52 ulp log, 2 roundings); p = exp(x - lse) then carries the relative
    error of its argument plus exp_f32's (2 u) and its subtraction; d = g (1 - p)
    or -g p adds two roundings."""
    u = unit_roundoff(torch.float32)
    logit_err = gamma(h64.shape[-1]) * (h64.abs() @ w64.abs().T)
    lse_err = logit_err.max(-1, keepdim=True).values + gamma(4096 // 32 + 11) + 2 * u * lse64.abs()
    arg_err = logit_err + lse_err + u * (logits64 - lse64).abs() + 2 * u
    p = torch.exp(logits64 - lse64)
    return g.abs().unsqueeze(-1) * p * torch.expm1(arg_err) + 2 * u * d64.abs()


def test_accuracy_against_float64_autograd(gen):
    h, w, ids, g = problem(24, 64, 3000, torch.float32, gen)
    h64 = h.double().requires_grad_()
    w64 = w.double().requires_grad_()
    logits64 = h64 @ w64.T
    reference.token_logprob(logits64, ids).backward(g.double())
    dh, dw = fused_backward(g, h, w, ids, fp32=True)
    logits64 = logits64.detach()
    d64 = reference.token_logprob_backward(g, logits64, ids)
    with torch.no_grad():
        lse64 = torch.logsumexp(logits64, -1, keepdim=True)
        d_err = logit_gradient_error_bound(g.double(), h.double(), w.double(), logits64, lse64, d64)
        d_bound = d64.abs() + d_err
        vocab_chain = 256 + 10  # K-block chain + balanced-tree depth over 12 blocks (< 2^10)
        dh_bound = d_err @ w.double().abs() + gamma(vocab_chain) * (d_bound @ w.double().abs())
        dw_bound = d_err.T @ h.double().abs() + gamma(24) * (d_bound.T @ h.double().abs())
    assert_within(dh, h64.grad, dh_bound, "grad_hidden vs float64")
    assert_within(dw, w64.grad, dw_bound, "grad_weight vs float64")
    assert_peer_floor(dh, h64.grad, "reduction", torch.float32, "grad_hidden")
    assert_peer_floor(dw, w64.grad, "reduction", torch.float32, "grad_weight")


def test_inputs_are_not_mutated(gen):
    h, w, ids, g = problem(5, 32, 700, torch.bfloat16, gen)
    grad_entropy = torch.randn(5, generator=gen)
    inputs = (g, h, w, ids, grad_entropy)
    copies = [t.clone() for t in inputs]
    fused_backward(g, h, w, ids, grad_entropy=grad_entropy)
    for before, after in zip(copies, inputs):
        assert_bitwise_equal(after, before, "input changed")


def test_no_rows_gives_a_zero_weight_gradient():
    h, w, ids, g = torch.zeros(0, 8), torch.ones(10, 8), torch.zeros(0, dtype=torch.int64), torch.zeros(0)
    dh, dw = fused_backward(g, h, w, ids)
    assert dh.shape == (0, 8)
    assert_bitwise_equal(dw, torch.zeros(10, 8), "no rows")


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: (torch.zeros(3), torch.zeros(2, 8), torch.zeros(10, 8), torch.tensor([0, 1])), ValueError,
         "grad_logprob: expected shape"),
        (lambda: (torch.zeros(2, dtype=torch.bfloat16), torch.zeros(2, 8), torch.zeros(10, 8), torch.tensor([0, 1])),
         TypeError, "grad_logprob"),
        (lambda: (torch.zeros(2), torch.zeros(2, 8), torch.zeros(10, 8), torch.tensor([0, 10])), ValueError,
         r"outside \[0, 10\)"),
        (lambda: (torch.zeros(2), torch.zeros(2, 8), torch.zeros(10, 7), torch.tensor([0, 1])), ValueError,
         "weight: expected shape"),
    ],
)
def test_bad_input_raises_clearly(make, error, match):
    g, h, w, ids = make()
    with pytest.raises(error, match=match):
        fused_backward(g, h, w, ids)


def test_bad_entropy_gradient_raises_clearly():
    g, h, w, ids = torch.zeros(2), torch.zeros(2, 8), torch.zeros(10, 8), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="grad_entropy: expected shape"):
        fused_backward(g, h, w, ids, grad_entropy=torch.zeros(3))


@pytest.mark.gpu
@pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("rows, vocab", [(19, 33), (19, 4096 + 77), (530, 1500)])
def test_gpu_backward_equals_reference(dtype, rows, vocab, gen):
    h, w, ids, g = problem(rows, 48, vocab, dtype, gen)
    grad_entropy = torch.randn(rows, generator=gen)
    want = fused_backward(g, h, w, ids, "reference", grad_entropy=grad_entropy)
    got = fused_backward(*(on_gpu(t) for t in (g, h, w, ids)), GPU, grad_entropy=on_gpu(grad_entropy))
    assert_grads_equal([t.cpu() for t in got], want, "gpu")
