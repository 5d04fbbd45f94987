"""A tiny random Qwen3 (2 layers, hidden 128, 4 query / 2 kv heads of 32,
vocab 2048) built locally from a Qwen3Config, as a transformers model and as
the golden model on the same weights, in float32 and bfloat16."""

from __future__ import annotations

import copy

import pytest
import torch

from golden_kernels.models import Qwen3ForCausalLM
from golden_kernels.models.consistency import random_hf_qwen3


@pytest.fixture(scope="package")
def hf_fp32():
    return random_hf_qwen3(seed=0)


@pytest.fixture(scope="package", params=(torch.float32, torch.bfloat16), ids=("float32", "bfloat16"))
def pair(request, hf_fp32):
    """(hf model, golden model) in one dtype, same weights."""
    hf = copy.deepcopy(hf_fp32).to(request.param)
    return hf, Qwen3ForCausalLM.from_hf(hf)


def ragged_ids(lengths, vocab, gen):
    return [torch.randint(1, vocab, (n,), generator=gen).tolist() for n in lengths]


def pad(rows, side):
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.int64)
    mask = torch.zeros(len(rows), width, dtype=torch.int64)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(row)
        mask[i, span] = 1
    return ids, mask
