"""Axis-B for the whole model: the golden Qwen3's logits against Hugging Face's
Qwen3 forward on the same weights computed in float64 (the reference).

No rigorous bound exists for a whole network (it depends on the weights'
conditioning), so two rules from the contract compose the tolerance: the peer
floor of the op that produces the logits (lm_head, class "reduction":
fp32 1e-4 / 1e-4, bf16 5e-2 / 2e-2), and flash-attention's rule from
STYLE.md: the error may be at most twice that of PyTorch's own computation in
the same dtype (HF eager against the same float64 reference)."""

from __future__ import annotations

import copy

import torch

from golden_kernels.models import Qwen3ForCausalLM
from golden_kernels.models.consistency import random_hf_qwen3
from golden_kernels.testing import assert_peer_floor

from .conftest import pad, ragged_ids

PYTORCH_ERROR_FACTOR = 2.0


def real_tokens(logits, mask):
    return logits[mask.bool()].double()


def test_logits_against_hf_float64(pair, gen):
    hf, golden = pair
    ids, mask = pad(ragged_ids((17, 9, 24, 3), golden.dims.vocab_size, gen), "right")
    with torch.no_grad():
        reference = real_tokens(copy.deepcopy(hf).double()(input_ids=ids, attention_mask=mask).logits, mask)
        ours = real_tokens(golden(ids, mask), mask)
        theirs = real_tokens(hf(input_ids=ids, attention_mask=mask).logits, mask)
    assert_peer_floor(ours, reference, "reduction", golden.dtype, "logits")
    our_error = float((ours - reference).abs().max())
    their_error = float((theirs - reference).abs().max())
    assert our_error <= PYTORCH_ERROR_FACTOR * their_error, (our_error, their_error)


def test_attention_bias_checkpoint_against_hf_float64(gen):
    """Qwen3's optional q/k/v/o bias (attention_bias=True) is loaded and applied."""
    hf = random_hf_qwen3(seed=5, attention_bias=True)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1, generator=gen)
    golden = Qwen3ForCausalLM.from_hf(hf)
    ids, mask = pad(ragged_ids((7, 4), golden.dims.vocab_size, gen), "right")
    with torch.no_grad():
        reference = real_tokens(copy.deepcopy(hf).double()(input_ids=ids, attention_mask=mask).logits, mask)
        ours = real_tokens(golden(ids, mask), mask)
        theirs = real_tokens(hf(input_ids=ids, attention_mask=mask).logits, mask)
    assert_peer_floor(ours, reference, "reduction", torch.float32, "logits")
    assert float((ours - reference).abs().max()) <= PYTORCH_ERROR_FACTOR * float((theirs - reference).abs().max())
