"""The array adapter every op call goes through (golden_kernels/_arrays.py,
registry.resolve_backend): tensors it cannot view raise ValueError, tensors
that require grad are read without a copy, NumPy and torch give the same
bits, and mixed frameworks or devices are refused."""

from __future__ import annotations

import numpy
import pytest
import torch

import golden_kernels as gk
from golden_kernels.testing import assert_bitwise_equal


def test_negative_bit_view_is_refused_not_read_with_the_wrong_sign():
    negated = torch.randn(4, 8, dtype=torch.complex64).conj().imag
    assert negated.is_neg()
    with pytest.raises(ValueError, match="negative bit"):
        gk.silu(negated)
    materialized = torch.tensor(negated.tolist())
    assert_bitwise_equal(gk.silu(negated.resolve_neg()), gk.silu(materialized))


@pytest.mark.parametrize("make", [lambda: torch.randn(4, 8).to_sparse(), lambda: torch.empty(4, 8, device="meta")],
                         ids=["sparse", "meta"])
def test_tensors_without_viewable_memory_raise_value_error(make):
    with pytest.raises(ValueError):
        gk.silu(make())


def test_tensors_requiring_grad_are_read_as_they_are():
    x = torch.randn(3, 32).requires_grad_()
    before = x.detach().clone()
    out = gk.silu(x)
    assert_bitwise_equal(out, gk.silu(x.detach()))
    assert_bitwise_equal(x.detach(), before)
    assert out.grad_fn is None and not out.requires_grad


def test_numpy_and_torch_give_the_same_bits():
    x = torch.randn(5, 48)
    assert_bitwise_equal(torch.from_numpy(gk.silu(x.numpy())), gk.silu(x))


def test_mixed_frameworks_are_refused():
    x = torch.randn(2, 16)
    with pytest.raises(ValueError, match="one framework"):
        gk.swiglu(x, x.numpy())
    with pytest.raises(ValueError, match="one framework"):
        gk.swiglu(x.numpy(), x)


def test_backend_choices_are_checked():
    assert {"reference", "cpu"} <= set(gk.available_backends())
    gk.available_backends().clear()  # a copy: the cached list cannot be altered by callers
    assert "cpu" in gk.available_backends()
    x = numpy.ones((2, 4), dtype=numpy.float32)
    with pytest.raises(ValueError, match="unknown backend"):
        gk.silu(x, backend="tpu")
    if "cuda" not in gk.available_backends():
        with pytest.raises(ValueError, match="not available"):
            gk.silu(x, backend="cuda")
