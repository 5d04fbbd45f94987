"""Builds the golden Qwen3 model from Hugging Face weights: a Qwen3Config plus a
state dict, a transformers model object, or safetensors files. Keys and shapes
are checked against the config first; any mismatch raises one ValueError that
names every missing, unexpected and misshapen key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from .qwen3 import Qwen3ForCausalLM

TIED_KEY = "lm_head.weight"
# HF checkpoints before transformers 4.3x stored RoPE's table; the core computes its own.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class StateDictMismatch(ValueError):
    """The state dict does not fit the config; the message names the keys."""


def _describe(missing: list[str], unexpected: list[str], misshapen: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {', '.join(unexpected)}")
    if misshapen:
        parts.append(f"wrong shapes: {'; '.join(misshapen)}")
    return "state dict does not match the Qwen3 config: " + " | ".join(parts)


def _wanted(model: Qwen3ForCausalLM) -> dict[str, torch.Size]:
    return {key: value.shape for key, value in model.state_dict().items()}


def check_state_dict(model: Qwen3ForCausalLM, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raises StateDictMismatch naming every key that is missing, unexpected or of the wrong shape."""
    wanted = _wanted(model)
    given = {k: v for k, v in state_dict.items() if not k.endswith(_IGNORED_SUFFIXES)}
    optional = {TIED_KEY} if model.dims.tie_word_embeddings else set()
    missing = sorted(k for k in wanted if k not in given and k not in optional)
    unexpected = sorted(k for k in given if k not in wanted)
    misshapen = sorted(f"{k}: expected {tuple(wanted[k])}, got {tuple(given[k].shape)}"
                       for k in given if k in wanted and given[k].shape != wanted[k])
    if missing or unexpected or misshapen:
        raise StateDictMismatch(_describe(missing, unexpected, misshapen))
    if TIED_KEY in optional and TIED_KEY in given:
        embed = given["model.embed_tokens.weight"]
        if not torch.equal(given[TIED_KEY].to(embed.dtype), embed):
            raise StateDictMismatch("tie_word_embeddings is set but lm_head.weight differs from "
                                    "model.embed_tokens.weight")


def _checkpoint_dtype(state_dict: Mapping[str, torch.Tensor]) -> torch.dtype:
    dtypes = {v.dtype for v in state_dict.values() if v.is_floating_point()}
    if len(dtypes) != 1:
        raise ValueError(f"the state dict mixes dtypes {sorted(map(str, dtypes))}; pass dtype= to pick one")
    return dtypes.pop()


def from_state_dict(config: Any, state_dict: Mapping[str, torch.Tensor], *, dtype: torch.dtype | None = None,
                    device: Any = "cpu") -> Qwen3ForCausalLM:
    """The golden model with `state_dict`'s weights (HF keys), cast to `dtype`
    (default: the checkpoint's own dtype). The inputs are not modified."""
    dtype = dtype or _checkpoint_dtype(state_dict)
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"dtype: the golden ops run float32, bfloat16 or float16, got {dtype}")
    check_state_dict(Qwen3ForCausalLM(config, dtype=dtype, device="meta"), state_dict)
    model = Qwen3ForCausalLM(config, dtype=dtype, device=device)
    with torch.no_grad():
        for key, param in model.state_dict(keep_vars=True).items():
            if key in state_dict:
                param.copy_(state_dict[key])
    return model


def from_hf(hf_model: Any, *, dtype: torch.dtype | None = None) -> Qwen3ForCausalLM:
    """The golden model with a transformers Qwen3ForCausalLM's config and weights (same device)."""
    state_dict = hf_model.state_dict()
    device = next(iter(state_dict.values())).device
    return from_state_dict(hf_model.config, state_dict, dtype=dtype, device=device)


def _safetensors_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [path / shard for shard in shards]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors files in {path}")
    return files


def _read_config(path: Path) -> dict[str, Any]:
    config_file = (path if path.is_dir() else path.parent) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no config.json next to {path}; pass config=")
    return json.loads(config_file.read_text())


def from_safetensors(path: str | Path, config: Any = None, *, dtype: torch.dtype | None = None,
                     device: Any = "cpu") -> Qwen3ForCausalLM:
    """The golden model from a .safetensors file, or a directory of them (sharded
    with model.safetensors.index.json, as HF saves). config: a Qwen3Config or a
    dict; default: the config.json beside the weights."""
    from safetensors.torch import load_file

    path = Path(path)
    state_dict: dict[str, torch.Tensor] = {}
    for file in _safetensors_files(path):
        state_dict.update(load_file(str(file), device=str(device)))
    return from_state_dict(config if config is not None else _read_config(path), state_dict, dtype=dtype,
                           device=device)
