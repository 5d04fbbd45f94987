"""Models built only from golden ops. `Qwen3ForCausalLM` loads Hugging Face
Qwen3 weights and serves both RL paths: the trainer's full-sequence forward
(padded or packed) and the sampler's KV-cache decode, bit for bit alike."""

from .config import Qwen3Dims, qwen3_dims
from .loading import StateDictMismatch, check_state_dict, from_hf, from_safetensors, from_state_dict
from .qwen3 import (
    IGNORE_INDEX,
    DecodeState,
    Qwen3ForCausalLM,
    next_token_targets,
    positions_from_cu_seqlens,
    positions_from_mask,
)
from .sampling import Generation, generate, left_pad

__all__ = [
    "IGNORE_INDEX",
    "DecodeState",
    "Generation",
    "Qwen3Dims",
    "Qwen3ForCausalLM",
    "StateDictMismatch",
    "check_state_dict",
    "from_hf",
    "from_safetensors",
    "from_state_dict",
    "generate",
    "left_pad",
    "next_token_targets",
    "positions_from_cu_seqlens",
    "positions_from_mask",
    "qwen3_dims",
]
