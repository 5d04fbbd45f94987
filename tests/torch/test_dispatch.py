"""golden_kernels.torch's call paths: a plain eager call (no tracing, no mode)
runs the op's body directly, inside an autograd.Function made of the op's
registered setup_context and backward when an input requires grad; everything
else goes through the torch.library custom op. Every path must give the op's
bits (and gradients: tests/torch/test_autograd.py), and every situation
torch.library exists for (dispatch modes, fake tensors, tracing) must still
reach the custom op."""

from __future__ import annotations

import pytest
import torch

import golden_kernels.torch as gt
from golden_kernels.testing import assert_bitwise_equal
from golden_kernels.torch import _library

from .dispatch_log import RecordOps


def inputs(requires_grad: bool = False):
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(3, 64, generator=gen).bfloat16().requires_grad_(requires_grad)
    weight = torch.randn(64, generator=gen).bfloat16().requires_grad_(requires_grad)
    return x, weight


@pytest.fixture
def custom_op_refused(monkeypatch):
    """Replaces golden::rms_norm's custom op by one that fails: a call that
    still succeeds took the direct path."""
    def refuse(*args):
        raise AssertionError("went through the custom op")

    monkeypatch.setattr(_library.rms_norm, "op", refuse)


def test_plain_calls_skip_the_custom_op(custom_op_refused):
    x, weight = inputs()
    gt.rms_norm(x, weight)
    with torch.no_grad():
        gt.rms_norm(*inputs(requires_grad=True))
    with torch.inference_mode():
        gt.rms_norm(x, weight)


def test_eager_autograd_records_the_registered_backward_without_the_custom_op(custom_op_refused):
    x, weight = inputs(requires_grad=True)
    out = gt.rms_norm(x, weight)
    assert type(out.grad_fn).__name__ == "golden_rms_normBackward"
    out.sum().backward()
    assert x.grad is not None and weight.grad is not None


def test_autograd_under_a_mode_takes_the_custom_op(custom_op_refused):
    with pytest.raises(AssertionError, match="went through the custom op"), RecordOps():
        gt.rms_norm(*inputs(requires_grad=True))


def test_direct_path_and_custom_op_give_the_same_bits():
    x, weight = inputs()
    direct = gt.rms_norm(x, weight, rounding="hf")
    via_op = torch.ops.golden.rms_norm(x, weight, 1e-6, "hf")
    with_grad = gt.rms_norm(x.clone().requires_grad_(), weight, rounding="hf")
    assert_bitwise_equal(direct, via_op)
    assert_bitwise_equal(direct, with_grad.detach())
    assert with_grad.grad_fn is not None and direct.grad_fn is None




def test_without_the_private_torch_api_every_call_takes_the_custom_op(monkeypatch):
    """A torch lacking an internal the direct paths read: the same bits and
    gradients, all through torch.library."""
    x, weight = inputs(requires_grad=True)
    want = gt.rms_norm(x, weight)
    want.sum().backward()
    want_grads = x.grad.clone(), weight.grad.clone()
    x.grad = weight.grad = None
    monkeypatch.setattr(_library, "DIRECT_PATHS", False)
    with RecordOps() as recorder:
        got = gt.rms_norm(x, weight)
        got.sum().backward()
    assert "golden.rms_norm.default" in recorder.names and "golden.rms_norm_backward.default" in recorder.names
    assert type(got.grad_fn).__name__.startswith("GeneratedBackwardFor_golden")
    assert_bitwise_equal(got, want)
    assert_bitwise_equal(x.grad, want_grads[0])
    assert_bitwise_equal(weight.grad, want_grads[1])


def test_the_private_torch_api_is_all_there():
    """This torch (the pinned one) has every internal: the direct paths are on."""
    missing = [f"{owner}.{name}" for owner, name in _library._PRIVATE_TORCH_API if not hasattr(owner, name)]
    assert not missing and _library.DIRECT_PATHS


def test_dispatch_modes_still_see_golden_ops():
    x, weight = inputs()
    with RecordOps() as recorder:
        gt.rms_norm(x, weight)
        gt.silu(x)
    assert "golden.rms_norm.default" in recorder.names
    assert "golden.silu.default" in recorder.names


def test_meta_tensors_take_the_fake_implementation():
    x, weight = torch.empty(2, 64, device="meta"), torch.empty(64, device="meta")
    out = gt.rms_norm(x, weight)
    assert out.device.type == "meta" and out.shape == (2, 64)
