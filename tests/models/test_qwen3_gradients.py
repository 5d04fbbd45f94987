"""Gradients through the golden Qwen3 (golden_kernels.torch autograd ops and the
attention backward): a policy-gradient-style loss sum(w_t * logp_t) against
Hugging Face's Qwen3 in float64 on the same weights, by the rule of
test_qwen3_parity.py (at most twice PyTorch's own error in the same dtype,
plus a floor of a few units of the dtype's rounding of the largest gradient);
and the gradients are deterministic (same bits run to run, any thread count)."""

from __future__ import annotations

import copy

import pytest
import torch

from golden_kernels.models import next_token_targets
from golden_kernels.testing import assert_bitwise_equal, unit_roundoff

from .conftest import pad, ragged_ids

PYTORCH_ERROR_FACTOR = 2.0
FLOOR_UNITS = 4  # a few roundings of the largest gradient, for tensors where PyTorch happens to be exact


def problem(vocab, gen):
    ids, mask = pad(ragged_ids((12, 5, 9), vocab, gen), "right")
    targets = next_token_targets(ids, mask)
    weights = torch.randn(ids.shape, generator=gen, dtype=torch.float64) * (targets >= 0)
    return ids, mask, targets, weights


def hf_gradients(hf, ids, mask, targets, weights):
    hf.zero_grad()
    logits = hf(input_ids=ids, attention_mask=mask).logits
    logits = logits if logits.dtype == torch.float64 else logits.float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    (logp * weights.to(logp.dtype)).sum().backward()
    return {name: p.grad.double() for name, p in hf.named_parameters()}


def golden_gradients(golden, ids, mask, targets, weights):
    golden.zero_grad()
    logp = golden(ids, mask, targets=targets)
    (logp * weights.float()).sum().backward()
    return {name: p.grad for name, p in golden.named_parameters()}


def test_gradients_against_hf_float64(pair, gen):
    hf, golden = pair
    golden = copy.deepcopy(golden)
    data = problem(golden.dims.vocab_size, gen)
    reference = hf_gradients(copy.deepcopy(hf).double(), *data)
    theirs = hf_gradients(copy.deepcopy(hf), *data)
    ours = golden_gradients(golden, *data)
    assert set(ours) == set(reference)
    floor_unit = FLOOR_UNITS * unit_roundoff(golden.dtype)
    for name, want in reference.items():
        assert ours[name].dtype == golden.dtype
        scale = float(want.abs().max())
        assert scale > 0, name
        our_error = float((ours[name].double() - want).abs().max())
        their_error = float((theirs[name] - want).abs().max())
        assert our_error <= PYTORCH_ERROR_FACTOR * their_error + floor_unit * scale, (name, our_error, their_error)


def test_gradients_are_deterministic_for_any_thread_count(pair, gen, threads):
    _, golden = pair
    golden = copy.deepcopy(golden)
    data = problem(golden.dims.vocab_size, gen)
    threads(1)
    first = {k: v.clone() for k, v in golden_gradients(golden, *data).items()}
    threads(2)
    for name, grad in golden_gradients(golden, *data).items():
        assert_bitwise_equal(grad, first[name], name)


def test_inference_needs_no_autograd(pair, gen):
    """Without a gradient the plain ops run; with one the autograd ops: same bits."""
    _, golden = pair
    ids, mask, targets, _ = problem(golden.dims.vocab_size, gen)
    with torch.no_grad():
        plain = golden(ids, mask, targets=targets)
    with_grad = golden(ids, mask, targets=targets)
    assert with_grad.requires_grad
    assert_bitwise_equal(with_grad.detach(), plain, "logprobs")
    with torch.no_grad():
        assert_bitwise_equal(golden(ids, mask), golden(ids, mask).detach(), "logits")


def weighted_logprob_backward(golden, ids, mask, targets, weights, packed):
    """The loss sum(w_t * logp_t) through the padded or the packed (cu_seqlens)
    entry, backward run; returns the logprobs."""
    if packed:
        keep = mask.bool()
        cu = torch.tensor([0, *mask.sum(1).cumsum(0).tolist()], dtype=torch.int32)
        logp, weights = golden(ids[keep], cu_seqlens=cu, targets=targets[keep]), weights[keep]
    else:
        logp = golden(ids, mask, targets=targets)
    logp.mul(weights.float()).sum().backward()
    return logp.detach()


@pytest.mark.parametrize("packed", (False, True), ids=("padded", "packed"))
def test_gradient_reaches_every_parameter(pair, gen, packed):
    _, golden = pair
    golden = copy.deepcopy(golden)
    weighted_logprob_backward(golden, *problem(golden.dims.vocab_size, gen), packed)
    for name, p in golden.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


@pytest.mark.parametrize("packed", (False, True), ids=("padded", "packed"))
def test_keeping_fp32_attention_output_gives_the_same_bits(pair, gen, packed):
    """keep_fp32_attention_output only changes what the attention backward reads
    (its saved forward instead of a recomputed one): the same logprobs and
    gradients, bit for bit."""
    _, golden = pair
    golden = copy.deepcopy(golden)
    data = problem(golden.dims.vocab_size, gen)
    runs = []
    for keep_fp32 in (False, True):
        golden.keep_fp32_attention_output = keep_fp32
        golden.zero_grad()
        logp = weighted_logprob_backward(golden, *data, packed)
        runs.append((logp, {name: p.grad.clone() for name, p in golden.named_parameters()}))
    (logp_plain, grads_plain), (logp_kept, grads_kept) = runs
    assert_bitwise_equal(logp_kept, logp_plain, "logprobs")
    for name, grad in grads_plain.items():
        assert_bitwise_equal(grads_kept[name], grad, name)
