"""torch.compile(fullgraph=True) traces models built from golden_kernels.torch
(every op is a custom op with a fake implementation; a graph break would raise)
and the compiled model returns the eager golden bits, forward and backward."""

from __future__ import annotations

import torch
from torch import nn

import golden_kernels.torch as gt
from golden_kernels.testing import assert_bitwise_equal

VOCAB, HIDDEN, INTERMEDIATE = 300, 64, 128


class TinyBlock(nn.Module):
    """embedding -> RMSNorm -> SwiGLU MLP (residual) -> RoPE'd copy -> GQA
    attention (residual) -> lm_head,
    scored by token_logprob, entropy and the fused linear_logprob."""

    def __init__(self):
        super().__init__()
        self.embed_tokens = gt.Embedding(VOCAB, HIDDEN)
        self.norm = gt.RMSNorm(HIDDEN)
        self.mlp = gt.SwiGLUMLP(HIDDEN, INTERMEDIATE)
        self.lm_head = gt.LMHead(HIDDEN, VOCAB)

    def forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        h = self.embed_tokens(ids)
        h = h + self.mlp(self.norm(h))
        h = h + gt.rope(h.view(*ids.shape, 4, HIDDEN // 4), positions).view_as(h)
        heads = h.view(*ids.shape, 4, HIDDEN // 4).transpose(1, 2)
        h = h + gt.attention(heads, heads[:, :2], heads[:, 2:]).transpose(1, 2).reshape_as(h)
        logits = self.lm_head(h)
        targets = ids.roll(-1, dims=-1)
        fused = gt.linear_logprob(h, self.lm_head.weight, targets)
        return gt.token_logprob(logits, targets) + gt.entropy(logits) + fused + gt.log_softmax(logits)[..., 0]


def inputs():
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(0, VOCAB, (3, 9), generator=gen)
    return ids, torch.arange(9).expand(3, 9)


def forward_and_grads(model, ids, positions):
    model.zero_grad()
    out = model(ids, positions)
    out.sum().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


def assert_same(got, want):
    out, grads = got
    want_out, want_grads = want
    assert_bitwise_equal(out, want_out, "output")
    for i, (g, w) in enumerate(zip(grads, want_grads)):
        assert_bitwise_equal(g, w, f"gradient of parameter {i}")


def test_fullgraph_compile_traces_the_forward():
    torch.manual_seed(0)
    model = TinyBlock()
    ids, positions = inputs()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        assert_bitwise_equal(compiled(ids, positions), model(ids, positions))


def test_fullgraph_aot_compile_forward_and_backward_equal_eager():
    """aot_eager also traces the backward graph through the registered autograd."""
    torch.manual_seed(0)
    model = TinyBlock()
    ids, positions = inputs()
    eager = forward_and_grads(model, ids, positions)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    assert_same(forward_and_grads(compiled, ids, positions), eager)


def test_custom_ops_pass_torch_library_opcheck():
    """torch.library.opcheck: schema, fake implementation and autograd registration agree."""
    gen = torch.Generator().manual_seed(3)
    x, w = torch.randn(4, 32, generator=gen), torch.randn(32, generator=gen)
    proj = torch.randn(16, 32, generator=gen)
    ids = torch.randint(0, 16, (4,), generator=gen)
    q, kv = torch.randn(1, 4, 6, 8, generator=gen), torch.randn(1, 2, 6, 8, generator=gen)
    cu_seqlens = torch.tensor([0, 2, 6], dtype=torch.int32)
    cases = [
        (torch.ops.golden.rms_norm, (x, w, 1e-6, "once")),
        (torch.ops.golden.linear, (x, proj, None)),
        (torch.ops.golden.swiglu, (x, x * 0.5)),
        (torch.ops.golden.token_logprob, (torch.randn(4, 16, generator=gen), ids, -100)),
        (torch.ops.golden.linear_logprob_entropy, (x, proj, ids, -100)),
        (torch.ops.golden.embedding, (ids, proj, None)),
        (torch.ops.golden.attention, (q, kv, kv * 0.5, True, None, None)),
        (torch.ops.golden.attention_varlen, (q[0].transpose(0, 1), kv[0].transpose(0, 1),
                                             kv[0].transpose(0, 1) * 0.5, cu_seqlens, cu_seqlens, True, None)),
        (torch.ops.golden.attention_keeping_fp32, (q.bfloat16(), kv.bfloat16(), (kv * 0.5).bfloat16(), True, None,
                                                   None)),
        (torch.ops.golden.attention_varlen_keeping_fp32, (
            q[0].transpose(0, 1).bfloat16(), kv[0].transpose(0, 1).bfloat16(),
            (kv[0].transpose(0, 1) * 0.5).bfloat16(), cu_seqlens, cu_seqlens, True, None)),
    ]
    for op, args in cases:
        args = tuple(a.clone().requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                     for a in args)
        torch.library.opcheck(op, args)


def test_every_registered_op_is_a_custom_op_with_a_fake():
    """Each op of golden_kernels' registry exists as torch.ops.golden.<name> and
    runs on fake (meta) tensors, so torch.compile can trace it."""
    import golden_kernels as gk

    for name in gk.list_ops():
        assert name in gt.CUSTOM_OPS, f"{name} has no custom op in golden_kernels.torch"
    for name in gt.CUSTOM_OPS:
        assert isinstance(getattr(torch.ops.golden, name), torch._ops.OpOverloadPacket)
    with torch._subclasses.fake_tensor.FakeTensorMode():
        x, w = torch.empty(5, 32), torch.empty(32)
        assert gt.rms_norm(x, w).shape == (5, 32)
        assert gt.linear_logprob(x, torch.empty(100, 32), torch.zeros(5, dtype=torch.long)).dtype == torch.float32
