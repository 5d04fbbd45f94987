"""torch.compile(fullgraph=True) traces the golden Qwen3 trainer forward and
backward (every op a golden custom op) and returns the eager bits."""

from __future__ import annotations

import torch

from golden_kernels.testing import assert_bitwise_equal


def test_fullgraph_compile_of_the_trainer_gives_eager_bits(pair):
    _, model = pair
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(1, model.dims.vocab_size, (2, 9), generator=gen)
    targets = ids.roll(-1, dims=1)

    def loss_and_grads(fn):
        model.zero_grad()
        logprobs = fn(ids, targets=targets)
        logprobs.sum().backward()
        return logprobs.detach(), [p.grad.clone() for p in model.parameters()]

    eager, eager_grads = loss_and_grads(model)
    compiled, compiled_grads = loss_and_grads(torch.compile(model, fullgraph=True, backend="aot_eager"))
    model.zero_grad()
    assert_bitwise_equal(compiled, eager, "logprobs")
    for i, (got, want) in enumerate(zip(compiled_grads, eager_grads)):
        assert_bitwise_equal(got, want, f"gradient of parameter {i}")
