"""golden_kernels.torch modules: state_dicts interchange with torch.nn and
Hugging Face modules (same keys, same shapes), the forward is the golden op's
bits, and swap_modules puts the golden modules into a model sharing its
parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import golden_kernels as gk
import golden_kernels.torch as gt
from golden_kernels.testing import assert_bitwise_equal


def hf_qwen3():
    qwen3 = pytest.importorskip("transformers.models.qwen3.modeling_qwen3")
    config = pytest.importorskip("transformers").Qwen3Config(hidden_size=64, intermediate_size=96,
                                                             hidden_act="silu", rms_norm_eps=1e-6)
    return qwen3, config


def randomised(module: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return module


def test_linear_loads_torch_linear_state_dict():
    source = randomised(nn.Linear(32, 16, bias=True))
    golden = gt.Linear(32, 16, bias=True)
    golden.load_state_dict(source.state_dict())
    x = torch.randn(5, 32)
    assert_bitwise_equal(golden(x), gk.linear(x, source.weight.detach(), source.bias.detach()))
    assert list(golden.state_dict()) == ["weight", "bias"]


def test_linear_defaults_to_no_bias_like_qwen3_projections():
    assert gt.Linear(8, 4).bias is None
    assert list(gt.Linear(8, 4).state_dict()) == ["weight"]


def test_embedding_loads_torch_embedding_state_dict():
    source = randomised(nn.Embedding(50, 12))
    golden = gt.Embedding(50, 12)
    golden.load_state_dict(source.state_dict())
    ids = torch.tensor([[1, 49, 0], [7, 7, 3]])
    assert_bitwise_equal(golden(ids), source(ids).detach())


def test_embedding_refuses_options_it_cannot_honour():
    with pytest.raises(ValueError, match="max_norm"):
        gt.Embedding(10, 4, max_norm=1.0)


def test_rms_norm_loads_hf_qwen3_rms_norm():
    qwen3, _ = hf_qwen3()
    source = randomised(qwen3.Qwen3RMSNorm(64, eps=1e-6)).to(torch.bfloat16)
    golden = gt.RMSNorm(64, eps=1e-6, rounding="hf", dtype=torch.bfloat16)
    golden.load_state_dict(source.state_dict())
    x = torch.randn(3, 64).to(torch.bfloat16)
    assert_bitwise_equal(golden(x), gk.rms_norm(x, source.weight.detach(), 1e-6, rounding="hf"))


def test_mlp_loads_hf_qwen3_mlp_and_matches_it_closely():
    qwen3, config = hf_qwen3()
    source = randomised(qwen3.Qwen3MLP(config))
    golden = gt.SwiGLUMLP(config.hidden_size, config.intermediate_size)
    golden.load_state_dict(source.state_dict())
    assert sorted(golden.state_dict()) == sorted(source.state_dict())
    x = torch.randn(4, 64)
    with torch.no_grad():
        want = source(x)
    torch.testing.assert_close(golden(x), want, atol=1e-5, rtol=1e-5)


def test_swap_modules_shares_parameters_and_uses_golden_ops():
    qwen3, config = hf_qwen3()
    model = nn.Sequential(nn.Embedding(40, 64), qwen3.Qwen3RMSNorm(64), qwen3.Qwen3MLP(config),
                          nn.RMSNorm(64, eps=1e-5), nn.Linear(64, 40, bias=False))
    model = randomised(model)
    before = {name: p for name, p in model.named_parameters()}
    keys = list(model.state_dict())
    gt.swap_modules(model)
    assert isinstance(model[0], gt.Embedding) and isinstance(model[1], gt.RMSNorm)
    assert isinstance(model[2], gt.SwiGLUMLP) and isinstance(model[3], gt.RMSNorm)
    assert all(p is before[name] for name, p in model.named_parameters())
    assert list(model.state_dict()) == keys
    ids = torch.tensor([[3, 9, 27]])
    h = gk.embedding(ids, model[0].weight.detach())
    h = gk.rms_norm(h, model[1].weight.detach(), 1e-6)
    mlp = model[2]
    gate, up = gk.linear(h, mlp.gate_proj.weight.detach()), gk.linear(h, mlp.up_proj.weight.detach())
    h = gk.linear(gk.swiglu(gate, up), mlp.down_proj.weight.detach())
    h = gk.rms_norm(h, model[3].weight.detach(), 1e-5)
    assert_bitwise_equal(model(ids).detach(), gk.linear(h, model[4].weight.detach()))


def test_swap_modules_refuses_what_it_cannot_honour():
    with pytest.raises(ValueError, match="max_norm"):
        gt.swap_modules(nn.Sequential(nn.Embedding(10, 4, max_norm=1.0)))
    with pytest.raises(ValueError, match="eps"):
        gt.swap_modules(nn.Sequential(nn.RMSNorm(4)))


def test_swap_modules_turns_an_hf_qwen3_causal_lm_golden():
    """Every Linear, Embedding, RMSNorm and MLP of HF's Qwen3ForCausalLM becomes
    golden; logits stay close to HF's (attention remains PyTorch's) and it trains."""
    transformers = pytest.importorskip("transformers")
    config = transformers.Qwen3Config(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(config).eval()
    ids = torch.randint(0, 300, (2, 7))
    with torch.no_grad():
        want = model(ids).logits
    replaced = (nn.Linear, nn.Embedding, type(model.model.norm), type(model.model.layers[0].mlp))
    gt.swap_modules(model)
    leftovers = [name for name, m in model.named_modules() if type(m) in replaced]
    assert leftovers == []
    assert isinstance(model.lm_head, gt.LMHead)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, want, atol=1e-5, rtol=1e-5)
    model(ids, labels=ids).loss.backward()
    assert all(p.grad is not None for p in model.parameters())
