"""int32 target ids: every logprob entry point that takes ids gives the bits of
int64 ids, and checks int32 ids for range just as strictly."""

from __future__ import annotations

import pytest
import torch

import golden_kernels as gk
from golden_kernels.testing import assert_bitwise_equal


@pytest.fixture
def case(gen):
    logits = torch.randn(9, 5000, generator=gen) * 3
    ids = torch.randint(0, 5000, (9,), generator=gen)
    ids[2] = -100
    return logits, ids


def test_token_logprob_forward_and_backward(case):
    logits, ids = case
    g = torch.randn(9)
    for backend in ("cpu", "reference"):
        op = gk.get_op("token_logprob", backend)
        assert_bitwise_equal(op.forward(logits, ids.int()), op.forward(logits, ids), f"{backend} forward")
        assert_bitwise_equal(op.backward(g, logits, ids.int()), op.backward(g, logits, ids), f"{backend} backward")


def test_vocab_parallel_pieces(case):
    logits, ids = case
    shard = logits[:, 4096:].contiguous()
    picked = gk.target_logits(shard, ids.int(), vocab_start=4096, vocab_size=5000)
    assert_bitwise_equal(picked, gk.target_logits(shard, ids, vocab_start=4096, vocab_size=5000), "target_logits")
    partials = gk.logsumexp_partials(logits)
    assert_bitwise_equal(gk.logprob_from_partials(picked, partials, ids.int()),
                         gk.logprob_from_partials(picked, partials, ids), "logprob_from_partials")


def test_linear_logprob_forward_and_backward(gen):
    h = torch.randn(7, 32, generator=gen).bfloat16()
    w = torch.randn(900, 32, generator=gen).bfloat16()
    ids = torch.randint(0, 900, (7,), generator=gen)
    ids[0] = -100
    g = torch.randn(7, generator=gen)
    op = gk.get_op("linear_logprob")
    assert_bitwise_equal(gk.linear_logprob(h, w, ids.int()), gk.linear_logprob(h, w, ids), "forward")
    for got, want in zip(op.backward(g, h, w, ids.int()), op.backward(g, h, w, ids)):
        assert_bitwise_equal(got, want, "backward")


@pytest.mark.parametrize("bad_id", (5000, -1, 2**31 - 1, -(2**31)))
def test_out_of_range_int32_ids_raise(case, bad_id):
    logits, ids = case
    ids = ids.int()
    ids[4] = bad_id
    with pytest.raises(ValueError, match=f"id {bad_id} at flat index 4"):
        gk.token_logprob(logits, ids)
    with pytest.raises(ValueError, match=f"id {bad_id} at flat index 4"):
        gk.target_logits(logits, ids, vocab_start=0, vocab_size=5000)
