"""Loading HF Qwen3 weights: the golden model's state_dict keys and shapes are
HF's; weights arrive bit for bit from a model object, a state dict or
safetensors files; every mismatch raises one error naming the keys; configs
with features the decoder lacks are refused."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import Qwen3Config

from golden_kernels.models import Qwen3ForCausalLM, StateDictMismatch, qwen3_dims
from golden_kernels.models.consistency import TINY, random_hf_qwen3
from golden_kernels.testing import assert_bitwise_equal


def assert_same_weights(golden, state_dict):
    for key, value in state_dict.items():
        assert_bitwise_equal(golden.state_dict()[key], value, key)


def test_keys_and_shapes_are_hf(hf_fp32):
    golden = Qwen3ForCausalLM(hf_fp32.config, device="meta")
    want = {k: tuple(v.shape) for k, v in hf_fp32.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in golden.state_dict().items()} == want


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16, torch.float16))
def test_from_hf_copies_every_weight(hf_fp32, dtype):
    golden = Qwen3ForCausalLM.from_hf(hf_fp32, dtype=dtype)
    assert golden.dtype == dtype
    assert_same_weights(golden, {k: v.to(dtype) for k, v in hf_fp32.state_dict().items()})


def test_inputs_are_not_modified(hf_fp32):
    before = {k: v.clone() for k, v in hf_fp32.state_dict().items()}
    golden = Qwen3ForCausalLM.from_hf(hf_fp32)
    with torch.no_grad():
        golden.model.norm.weight.add_(1.0)
    for key, value in hf_fp32.state_dict().items():
        assert_bitwise_equal(value, before[key], key)


def test_safetensors_directory_with_config(tmp_path, hf_fp32):
    state = {k: v.contiguous() for k, v in hf_fp32.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(hf_fp32.config.to_dict()))
    assert_same_weights(Qwen3ForCausalLM.from_safetensors(tmp_path), state)
    assert_same_weights(Qwen3ForCausalLM.from_safetensors(tmp_path / "model.safetensors",
                                                          config=hf_fp32.config), state)


def test_tied_embeddings_share_one_table(tmp_path):
    hf = random_hf_qwen3(seed=3, tie_word_embeddings=True)
    state = {k: v.contiguous() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(tmp_path / "model.safetensors"))  # HF saves tied checkpoints without lm_head
    golden = Qwen3ForCausalLM.from_safetensors(tmp_path / "model.safetensors", config=hf.config)
    assert golden.lm_head.weight is golden.model.embed_tokens.weight
    assert_same_weights(golden, state)
    untied = dict(state, **{"lm_head.weight": state["model.embed_tokens.weight"] + 1})
    with pytest.raises(StateDictMismatch, match="lm_head.weight differs"):
        Qwen3ForCausalLM.from_state_dict(hf.config, untied)


def test_mismatches_name_every_key(hf_fp32):
    state = dict(hf_fp32.state_dict())
    del state["model.layers.1.self_attn.k_norm.weight"]
    state["model.layers.2.mlp.up_proj.weight"] = torch.zeros(3)
    state["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(64, 128)
    with pytest.raises(StateDictMismatch) as error:
        Qwen3ForCausalLM.from_state_dict(hf_fp32.config, state)
    message = str(error.value)
    assert "missing keys: model.layers.1.self_attn.k_norm.weight" in message
    assert "unexpected keys: model.layers.2.mlp.up_proj.weight" in message
    assert "model.layers.0.self_attn.q_proj.weight: expected (128, 128), got (64, 128)" in message


def test_config_with_other_dimensions_is_caught(hf_fp32):
    config = Qwen3Config(**{**TINY, "num_key_value_heads": 4})
    with pytest.raises(StateDictMismatch, match="k_proj.weight: expected"):
        Qwen3ForCausalLM.from_state_dict(config, hf_fp32.state_dict())


@pytest.mark.parametrize("field, value, message", [
    ("use_sliding_window", True, "sliding-window"),
    ("hidden_act", "gelu", "hidden_act"),
    ("rope_parameters", {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6}, "rope_type"),
    ("num_key_value_heads", 3, "not a multiple"),
])
def test_unsupported_config_is_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        qwen3_dims({**Qwen3Config(**TINY).to_dict(), field: value})


def test_config_fields_are_read():
    dims = qwen3_dims(Qwen3Config(**{**TINY, "rope_parameters": {"rope_type": "default", "rope_theta": 5e5},
                                     "rms_norm_eps": 1e-5}))
    assert (dims.rope_theta, dims.rms_norm_eps, dims.head_dim, dims.num_key_value_heads) == (5e5, 1e-5, 32, 2)
    assert qwen3_dims({**TINY, "rope_theta": 123.0}).rope_theta == 123.0  # transformers 4.x layout


def test_mixed_dtype_checkpoint_needs_a_dtype(hf_fp32):
    state = dict(hf_fp32.state_dict())
    state["model.norm.weight"] = state["model.norm.weight"].to(torch.bfloat16)
    with pytest.raises(ValueError, match="mixes dtypes"):
        Qwen3ForCausalLM.from_state_dict(hf_fp32.config, state)
    assert Qwen3ForCausalLM.from_state_dict(hf_fp32.config, state, dtype=torch.float32).dtype == torch.float32
