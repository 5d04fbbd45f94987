"""golden_kernels.torch on a GPU: every op's forward and autograd gradients on
CUDA (or HIP) equal the CPU bits, kernels run on the caller's current stream,
and a compiled model on the GPU equals eager. Without a GPU visible to torch
every test here is skipped, never passed."""

from __future__ import annotations

import pytest
import torch

import golden_kernels.torch as gt
from golden_kernels.testing import assert_bitwise_equal

from .test_autograd import CASES, autograd_grads, grad_like
from .test_compile import TinyBlock, forward_and_grads, inputs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU: torch.cuda.is_available() is False"),
]


def to_gpu(tensors):
    return tuple(t.cuda() for t in tensors)


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("name", CASES)
def test_gpu_forward_and_gradients_equal_cpu_bits(name, dtype, gen):
    case = CASES[name]
    inputs_cpu = case.make(gen, dtype)
    grad_out = grad_like(case.golden(*inputs_cpu), gen)
    out_cpu, grads_cpu = autograd_grads(case.golden, inputs_cpu, case.differentiable, grad_out)
    out_gpu, grads_gpu = autograd_grads(case.golden, to_gpu(inputs_cpu), case.differentiable, grad_out.cuda())
    assert_bitwise_equal(out_gpu, out_cpu, f"{name} forward")
    for got, want in zip(grads_gpu, grads_cpu):
        assert_bitwise_equal(got, want, f"{name} gradient")


def test_kernels_run_on_the_current_stream(gen):
    """Work queued on a side stream behind a long matmul: the golden op must wait
    for it (same stream), so its result is that of the finished input."""
    x = torch.randn(64, 4096, generator=gen).cuda()
    w = torch.randn(4096, generator=gen).cuda()
    big = torch.randn(4096, 4096, device="cuda")
    want = gt.rms_norm(x * 2, w)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(5):
            big = big @ big / 64  # keeps the stream busy
        y = x * 2
        got = gt.rms_norm(y, w)
    torch.cuda.current_stream().wait_stream(side)
    assert_bitwise_equal(got, want)


def test_compiled_model_on_gpu_equals_eager_cpu():
    torch.manual_seed(0)
    model = TinyBlock()
    ids, positions = inputs()
    cpu = forward_and_grads(model, ids, positions)
    compiled = torch.compile(model.cuda(), fullgraph=True, backend="aot_eager")
    out, grads = forward_and_grads(compiled, ids.cuda(), positions.cuda())
    assert_bitwise_equal(out, cpu[0], "output")
    for i, (g, w) in enumerate(zip(grads, cpu[1])):
        assert_bitwise_equal(g, w, f"gradient of parameter {i}")
