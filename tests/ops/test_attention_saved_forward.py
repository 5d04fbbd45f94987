"""attention's backward given the forward's float32 output and LSE
(saved_out=, saved_lse=): it then skips recomputing the forward, and dq, dk,
dv keep the raw bits of the recomputing backward on every CPU path, padded
(NaN in masked keys, causal or not, prefill, chunk and decode shapes) and
packed; the saved values are really read (perturbing them changes the
gradients); the torch autograd path uses them for float32; bad saved inputs
raise."""

from __future__ import annotations

import numpy
import pytest
import torch

import golden_kernels as gk
import golden_kernels.torch as gt
from golden_kernels.testing import assert_bitwise_equal

from ..conftest import FLOAT_DTYPES, dtype_id
from ..gpu_target import AVAILABLE, GPU, SKIP_REASON, on_gpu

SHAPES = [  # (B, Hq, Hkv, Sq, Skv, D)
    (2, 4, 2, 70, 70, 16),     # prefill across a key-block boundary, GQA 2
    (1, 8, 2, 1, 130, 128),    # decode
    (2, 6, 3, 33, 100, 7),     # chunk (Skv > Sq), odd head_dim
    (1, 32, 8, 20, 20, 128),   # qwen3-8b heads
]


def rand(shape, dtype, gen):
    return torch.randn(*shape, generator=gen).to(dtype)


def padded_problem(shape, dtype, masked, gen):
    """q, k, v, grad and a key mask (None or with holes) whose masked k, v hold NaN."""
    b, hq, hkv, sq, skv, d = shape
    q, k, v = rand((b, hq, sq, d), dtype, gen), rand((b, hkv, skv, d), dtype, gen), rand((b, hkv, skv, d), dtype, gen)
    mask = None
    if masked:
        mask = torch.rand(b, skv, generator=gen) > 0.3
        mask[:, -1] = True
        hidden = ~mask[:, None, :, None].expand(k.shape)
        k[hidden], v[hidden] = float("nan"), float("nan")
    return q, k, v, rand(q.shape, dtype, gen), mask


def saved_forward(o, q, k, v, **kw):
    """The float32 output and the LSE that the backward may take."""
    out, lse = o.forward_fp32(q, k, v, return_lse=True, **kw)
    assert out.dtype == torch.float32 and lse.dtype == torch.float32
    return out, lse


def assert_grads_equal(got, want, what):
    for a, b, name in zip(got, want, ("dq", "dk", "dv")):
        assert_bitwise_equal(a, b, f"{what} {name}")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_saved_forward_gives_the_recomputed_bits(cpu_isa, threads, dtype, shape, masked, gen):
    q, k, v, g, mask = padded_problem(shape, dtype, masked, gen)
    threads(3)
    for backend in ("cpu", "reference"):
        o = gk.get_op("attention", backend=backend)
        for causal in (True, False):
            kw = {"causal": causal, "key_padding_mask": mask}
            out, lse = saved_forward(o, q, k, v, **kw)
            for fp32 in (False, True):
                assert_grads_equal(o.backward(g, q, k, v, fp32=fp32, saved_out=out, saved_lse=lse, **kw),
                                   o.backward(g, q, k, v, fp32=fp32, **kw),
                                   f"{backend} causal={causal} fp32={fp32}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
def test_saved_forward_packed_gives_the_recomputed_bits(cpu_isa, dtype, gen):
    q_lens, k_lens = (5, 70, 1, 33), (5, 130, 40, 33)  # prefill, chunk, decode, prefill
    q, k, v = (rand((sum(lens), h, 16), dtype, gen) for lens, h in ((q_lens, 4), (k_lens, 2), (k_lens, 2)))
    g = rand(q.shape, dtype, gen)
    cu_q = torch.tensor((0, *q_lens)).cumsum(0)
    cu_k = torch.tensor((0, *k_lens)).cumsum(0)
    for backend in ("cpu", "reference"):
        out, lse = gk.attention_varlen(q, k, v, cu_q, cu_k, return_lse=True, fp32=True, backend=backend)
        assert_grads_equal(
            gk.attention_varlen_backward(g, q, k, v, cu_q, cu_k, saved_out=out, saved_lse=lse, backend=backend),
            gk.attention_varlen_backward(g, q, k, v, cu_q, cu_k, backend=backend), f"packed {backend}")


def test_saved_forward_is_read(gen):
    """Another output or LSE gives other gradients, so the path does not recompute them."""
    q, k, v, g, _ = padded_problem((1, 4, 2, 40, 40, 16), torch.float32, False, gen)
    o = gk.get_op("attention", backend="cpu")
    out, lse = saved_forward(o, q, k, v)
    want = o.backward(g, q, k, v)
    for other_out, other_lse, what in ((out * 1.5, lse, "output"), (out, lse + 0.5, "lse")):
        got = o.backward(g, q, k, v, saved_out=other_out, saved_lse=other_lse)
        assert not torch.equal(got[0], want[0]), f"a changed saved {what} left dq unchanged"


def test_saved_forward_from_strided_views(gen):
    """saved_out may be any view whose last dim is dense (the [B, S, H, D] model layout)."""
    q, k, v, g, _ = padded_problem((2, 4, 2, 30, 30, 16), torch.float32, False, gen)
    out, lse = gk.attention(q, k, v, return_lse=True)
    view = out.transpose(1, 2).contiguous().transpose(1, 2)
    assert not view.is_contiguous()
    assert_grads_equal(gk.get_op("attention").backward(g, q, k, v, saved_out=view, saved_lse=lse),
                       gk.get_op("attention").backward(g, q, k, v), "strided saved_out")


def test_torch_autograd_uses_the_saved_forward(gen):
    """gk.torch.attention keeps the forward's float32 output and LSE for the
    backward (16-bit outputs are rounded: it recomputes); the gradients are the
    op's bits either way, and the LSE it keeps is not differentiable."""
    for dtype in FLOAT_DTYPES:
        q, k, v, g, mask = padded_problem((2, 4, 2, 30, 50, 16), dtype, True, gen)
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        out = gt.attention(*leaves, key_padding_mask=mask)
        saved = {t.data_ptr() for t in out.grad_fn.saved_tensors if t is not None}
        assert (out.data_ptr() in saved) == (dtype == torch.float32), dtype
        grads = torch.autograd.grad(out, leaves, g)
        assert_grads_equal(grads, gk.get_op("attention").backward(g, q, k, v, key_padding_mask=mask),
                           f"autograd {dtype_id(dtype)}")
    q, k, v, _, _ = padded_problem((1, 2, 1, 9, 9, 8), torch.float32, False, gen)
    _out, lse = torch.ops.golden.attention_with_lse(q.requires_grad_(), k, v, True, None, None)
    assert not lse.requires_grad


def test_torch_autograd_varlen_uses_the_saved_forward(gen):
    """gt.attention_varlen likewise: float32 keeps the output, gradients are the op's bits."""
    cu_q, cu_k = torch.tensor([0, 5, 45, 46]), torch.tensor([0, 5, 70, 110])
    for dtype in (torch.float32, torch.bfloat16):
        q, k, v = rand((46, 4, 16), dtype, gen), rand((110, 2, 16), dtype, gen), rand((110, 2, 16), dtype, gen)
        g = rand(q.shape, dtype, gen)
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        out = gt.attention_varlen(*leaves, cu_q, cu_k)
        saved = {t.data_ptr() for t in out.grad_fn.saved_tensors if t is not None}
        assert (out.data_ptr() in saved) == (dtype == torch.float32), dtype
        assert_grads_equal(torch.autograd.grad(out, leaves, g),
                           gk.attention_varlen_backward(g, q, k, v, cu_q, cu_k), f"varlen autograd {dtype_id(dtype)}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=dtype_id)
def test_torch_autograd_keeping_fp32_output(dtype, gen):
    """keep_fp32_output=True on 16-bit inputs: the same output bits, a float32
    output kept for the backward (and nothing float32 kept without it), and
    gradients that are the op's bits, padded and packed."""
    q, k, v, g, mask = padded_problem((2, 4, 2, 30, 50, 16), dtype, True, gen)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = gt.attention(*leaves, key_padding_mask=mask, keep_fp32_output=True)
    assert_bitwise_equal(out, gk.attention(q, k, v, key_padding_mask=mask), "output")
    assert [t.dtype for t in out.grad_fn.saved_tensors if t is not None].count(torch.float32) == 2  # out32, lse
    assert_grads_equal(torch.autograd.grad(out, leaves, g),
                       gk.get_op("attention").backward(g, q, k, v, key_padding_mask=mask), "keeping fp32")
    plain = gt.attention(*leaves, key_padding_mask=mask)
    assert all(t.dtype != torch.float32 for t in plain.grad_fn.saved_tensors if t is not None)

    cu_q, cu_k = torch.tensor([0, 5, 45, 46]), torch.tensor([0, 5, 70, 110])
    q, k, v = rand((46, 4, 16), dtype, gen), rand((110, 2, 16), dtype, gen), rand((110, 2, 16), dtype, gen)
    g = rand(q.shape, dtype, gen)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = gt.attention_varlen(*leaves, cu_q, cu_k, keep_fp32_output=True)
    assert_bitwise_equal(out, gk.attention_varlen(q, k, v, cu_q, cu_k), "varlen output")
    assert_grads_equal(torch.autograd.grad(out, leaves, g),
                       gk.attention_varlen_backward(g, q, k, v, cu_q, cu_k), "varlen keeping fp32")


def test_keeping_fp32_output_of_float32_inputs(gen):
    """For float32 inputs keep_fp32_output changes nothing (the output is kept
    anyway); the op that keeps a copy refuses them (it would alias its outputs)."""
    q, k, v, g, _ = padded_problem((1, 2, 1, 9, 9, 8), torch.float32, False, gen)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = gt.attention(*leaves, keep_fp32_output=True)
    assert out.data_ptr() in {t.data_ptr() for t in out.grad_fn.saved_tensors if t is not None}
    assert_grads_equal(torch.autograd.grad(out, leaves, g), gk.get_op("attention").backward(g, q, k, v), "fp32")
    with pytest.raises(ValueError, match="for 16-bit inputs"):
        torch.ops.golden.attention_keeping_fp32(q, k, v, True, None, None)


def test_bad_saved_forward_raises(gen):
    q, k, v, g, _ = padded_problem((2, 4, 2, 6, 6, 8), torch.float32, False, gen)
    backward = gk.get_op("attention").backward
    out, lse = gk.attention(q, k, v, return_lse=True)
    with pytest.raises(ValueError, match="come together"):
        backward(g, q, k, v, saved_out=out)
    with pytest.raises(ValueError, match="come together"):
        backward(g, q, k, v, saved_lse=lse)
    with pytest.raises(TypeError, match="float32"):
        backward(g, q, k, v, saved_out=out.bfloat16(), saved_lse=lse)
    with pytest.raises(TypeError, match="float32"):
        backward(g, q, k, v, saved_out=out, saved_lse=lse.double())
    with pytest.raises(ValueError, match="shape"):
        backward(g, q, k, v, saved_out=out[:, :, :5], saved_lse=lse)
    with pytest.raises(ValueError, match="shape"):
        backward(g, q, k, v, saved_out=out, saved_lse=lse[:, :, :5].contiguous())
    with pytest.raises(ValueError, match="contiguous"):
        backward(g, q, k, v, saved_out=out, saved_lse=lse.transpose(1, 2).contiguous().transpose(1, 2))
    with pytest.raises(ValueError, match="dimensions"):
        backward(g, q, k, v, saved_out=out[0], saved_lse=lse)
    with pytest.raises(ValueError, match="one framework"):
        backward(g, q, k, v, saved_out=out.numpy(), saved_lse=lse)
    with pytest.raises(TypeError):
        backward(g, q, k, v, saved_out=[1.0], saved_lse=lse)
    packed = [t[0].transpose(0, 1).contiguous() for t in (q, k, v, g)]
    cu = torch.tensor([0, 6])
    p_out, p_lse = gk.attention_varlen(*packed[:3], cu, cu, return_lse=True)
    with pytest.raises(ValueError, match="shape"):
        gk.attention_varlen_backward(*packed, cu, cu, saved_out=p_out, saved_lse=p_lse.t().contiguous())


def test_saved_forward_numpy_equals_torch(gen):
    q, k, v, g, _ = padded_problem((1, 4, 2, 12, 12, 8), torch.float32, False, gen)
    out, lse = gk.attention(q, k, v, return_lse=True)
    got = gk.get_op("attention").backward(*(t.numpy() for t in (g, q, k, v)), saved_out=out.numpy(),
                                          saved_lse=lse.numpy())
    want = gk.get_op("attention").backward(g, q, k, v)
    assert_grads_equal([torch.from_numpy(numpy.asarray(t)) for t in got], want, "numpy")


@pytest.mark.gpu
@pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_gpu_saved_forward_equals_cpu_reference(dtype, gen):
    q, k, v, g, mask = padded_problem((2, 8, 2, 70, 130, 32), dtype, True, gen)
    ref = gk.get_op("attention", backend="reference")
    want = ref.backward(g, q, k, v, key_padding_mask=mask)
    dev = [on_gpu(t) for t in (q, k, v, g)]
    o = gk.get_op("attention", GPU)
    out, lse = o.forward_fp32(*dev[:3], key_padding_mask=on_gpu(mask), return_lse=True)
    got = o.backward(dev[3], *dev[:3], key_padding_mask=on_gpu(mask), saved_out=out, saved_lse=lse)
    assert_grads_equal([t.cpu() for t in got], want, "gpu saved")
