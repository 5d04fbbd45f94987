"""torch.compile(fullgraph=True) traces the golden Qwen3 trainer forward and
backward (every op a golden custom op), unpadded, with a padded
attention_mask and packed (cu_seqlens), and returns the eager bits (eager,
aot_eager and inductor backends); a bad mask or bad offsets raise in the
compiled graph as in eager calls."""

from __future__ import annotations

import contextlib

import pytest
import torch

from golden_kernels.models import Qwen3ForCausalLM, next_token_targets
from golden_kernels.models.qwen3 import packed_positions, padding_keep_mask
from golden_kernels.testing import assert_bitwise_equal


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles afresh: no cached graph or recompile count carries over."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def batch(model, padded: bool):
    """ids and next-token targets [2, 9]; padded: row 0 left-padded by 3, row 1
    right-padded by 2 (pad ids are garbage, pad targets ignored)."""
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(1, model.dims.vocab_size, (2, 9), generator=gen)
    targets = ids.roll(-1, dims=1)
    if not padded:
        return ids, None, targets
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    mask[1, 7:] = 0
    targets = torch.where(mask.bool() & mask.roll(-1, dims=1).bool(), targets, torch.full_like(targets, -100))
    return ids, mask, targets


def logprobs_and_grads(model, fn, ids, mask, targets):
    model.zero_grad()
    logprobs = fn(ids, mask, targets=targets)
    logprobs.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    return logprobs.detach(), grads


def assert_bad_mask_raises(fn, ids, mask, targets):
    holey = mask.clone()
    holey[1, 4] = 0  # real tokens in two runs
    with pytest.raises(ValueError, match="contiguous run"):
        fn(ids, holey, targets=targets)


# Inductor compiles the torch ops between the golden ones (the residual adds, the
# autograd's gradient sums, the mask's arithmetic) into C++ kernels of its own.
# In bf16 these keep fused intermediates in fp32 unless told to round like eager
# (emulate_precision_casts): without it the bf16 gradients differ from eager's.
# Torch 2.13's inductor warns about its own use of torch.jit while importing.
INDUCTOR = pytest.param("inductor", True, id="inductor-padded",
                        marks=[pytest.mark.slow,
                               pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")])


def eager_rounding(backend: str):
    if backend != "inductor":
        return contextlib.nullcontext()
    import torch._inductor.config

    return torch._inductor.config.patch(emulate_precision_casts=True)


@pytest.mark.parametrize("backend, padded", [("aot_eager", False), ("aot_eager", True), ("eager", True), INDUCTOR],
                         ids=["aot_eager-unpadded", "aot_eager-padded", "eager-padded", "inductor-padded"])
def test_fullgraph_compile_of_the_trainer_gives_eager_bits(pair, backend, padded):
    _, model = pair
    ids, mask, targets = batch(model, padded)
    eager, eager_grads = logprobs_and_grads(model, model, ids, mask, targets)
    compiled_model = torch.compile(model, fullgraph=True, backend=backend)
    with eager_rounding(backend):
        compiled, compiled_grads = logprobs_and_grads(model, compiled_model, ids, mask, targets)
    assert_bitwise_equal(compiled, eager, "logprobs")
    for i, (got, want) in enumerate(zip(compiled_grads, eager_grads)):
        assert_bitwise_equal(got, want, f"gradient of parameter {i}")
    if padded:
        assert bool((eager[mask == 0] == 0).all()), "padding scores 0"
        # The mask check reads the data, so it lives in a custom op: the compiled graph runs it too.
        assert_bad_mask_raises(model, ids, mask, targets)
        assert_bad_mask_raises(compiled_model, ids, mask, targets)


def test_fullgraph_compile_of_the_packed_trainer_gives_eager_bits(hf_fp32):
    """Sequences of 4, 1 and 6 tokens packed end to end (cu_seqlens); float32."""
    model = Qwen3ForCausalLM.from_hf(hf_fp32)
    gen = torch.Generator().manual_seed(6)
    ids = torch.randint(1, model.dims.vocab_size, (11,), generator=gen)
    cu_seqlens = torch.tensor([0, 4, 5, 11], dtype=torch.int32)
    targets = next_token_targets(ids, cu_seqlens=cu_seqlens)

    def packed(fn):
        return lambda ids, _, targets: fn(ids, cu_seqlens=cu_seqlens, targets=targets)

    eager, eager_grads = logprobs_and_grads(model, packed(model), ids, None, targets)
    compiled_model = torch.compile(model, fullgraph=True, backend="aot_eager")
    compiled, compiled_grads = logprobs_and_grads(model, packed(compiled_model), ids, None, targets)
    assert_bitwise_equal(compiled, eager, "logprobs")
    for i, (got, want) in enumerate(zip(compiled_grads, eager_grads)):
        assert_bitwise_equal(got, want, f"gradient of parameter {i}")
    with pytest.raises(ValueError, match="cu_seqlens: expected non-decreasing offsets"):
        compiled_model(ids, cu_seqlens=torch.tensor([0, 6, 5, 11], dtype=torch.int32), targets=targets)


def test_the_mask_and_offset_ops_pass_opcheck():
    """Schema, fake implementation and dispatch of the two data-reading custom ops."""
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])
    torch.library.opcheck(padding_keep_mask, (mask,))
    torch.library.opcheck(packed_positions, (torch.tensor([0, 4, 5, 11], dtype=torch.int32), 11))
    assert padding_keep_mask(mask).tolist() == [[False, False, True, True], [True, True, True, False]]
    assert packed_positions(torch.tensor([0, 2, 2, 5]), 5).tolist() == [0, 1, 0, 1, 2]
