"""The GPU attention forward's two kernel sets, the query tiles and the decode
kernels (at most 16 query rows per kv head: scores of every key in parallel,
then each row's chains over its keys; csrc/cuda/attention.cu), each forced by
GOLDEN_KERNELS_GPU_ATTENTION and compared with the CPU reference on raw bits:
decode steps, short chunks, masks with NaN behind them, head_dim up to 256,
packed sequences of different lengths, a cache past 1024 key blocks, the KV
cache's token-by-token decode, and sequences split over several launches
when the scratch budget is small. Skipped without a GPU or the
GPU-emulating build (tests/gpu_target.py), never passed."""

from __future__ import annotations

import pytest
import torch

import golden_kernels as gk
from golden_kernels.testing import assert_bitwise_equal

from .conftest import FLOAT_DTYPES, dtype_id
from .gpu_target import AVAILABLE, DEVICE, GPU, SKIP_REASON, on_gpu
from .ops.test_attention import make_qkv, pack

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)]

PATHS = ["tiles", "decode"]

CASES = [  # (B, Hq, Hkv, Sq, Skv, D, causal, mask)
    (3, 8, 2, 1, 200, 24, True, "holes"),      # decode steps, keys of a cache with holes
    (2, 4, 1, 4, 130, 32, True, "left"),      # 16 rows per kv head (the most), chunk after a left-padded prompt
    (2, 4, 1, 4, 130, 32, False, "right"),    # not causal: every row sees every valid key
    (2, 8, 2, 1, 64, 128, True, None),        # one whole key block at qwen3's head_dim
    (1, 4, 2, 1, 1, 256, True, None),         # one key, the largest head_dim
    (1, 4, 4, 3, 70, 129, True, "holes"),     # no GQA, head_dim past a warp multiple
    (1, 8, 2, 2, 600, 64, True, "holes"),     # many steps of 128 keys through the double buffer
    (2, 4, 2, 1, 0, 8, False, None),          # no keys at all: out 0, LSE -inf
]


def case_id(case) -> str:
    b, hq, hkv, sq, skv, d, causal, mask = case
    return f"{b}x{hq}/{hkv}x{sq}/{skv}x{d}{'' if causal else '-full'}{'-' + mask if mask else ''}"


def make_mask(kind, b, skv, gen):
    if kind is None:
        return None
    if kind == "holes":
        mask = torch.rand(b, skv, generator=gen) > 0.3
        mask[:, -1] = True  # the last query row's own token
        return mask
    # A different amount of padding per sequence, on the left or on the right.
    mask = torch.stack([torch.arange(skv) < skv - 3 - 11 * i for i in range(b)])
    return mask.flip(1) if kind == "left" else mask


def with_nan_behind(k, v, mask):
    """k, v with NaN in every masked-out key: it must never reach a result."""
    if mask is None:
        return k, v
    hidden = ~mask[:, None, :, None]
    return k.masked_fill(hidden, float("nan")), v.masked_fill(hidden, float("nan"))


def forward_all(backend, q, k, v, mask, causal):
    out, lse = gk.attention(q, k, v, causal=causal, key_padding_mask=mask, return_lse=True, backend=backend)
    out32 = gk.get_op("attention", backend).forward_fp32(q, k, v, causal=causal, key_padding_mask=mask)
    return out, lse, out32


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("path", PATHS)
def test_forward_kernels_equal_reference(path, dtype, case, monkeypatch):
    b, hq, hkv, sq, skv, d, causal, mask_kind = case
    gen = torch.Generator().manual_seed(sq * 1000 + skv)
    q, k, v = make_qkv(b, hq, hkv, sq, skv, d, dtype, gen)
    mask = make_mask(mask_kind, b, skv, gen)
    k, v = with_nan_behind(k, v, mask)
    want = forward_all("reference", q, k, v, mask, causal)
    monkeypatch.setenv("GOLDEN_KERNELS_GPU_ATTENTION", path)
    got = forward_all(GPU, *(on_gpu(t) for t in (q, k, v)), None if mask is None else on_gpu(mask), causal)
    for name, a, w in zip(("out", "lse", "out_fp32"), got, want):
        assert a.device.type == DEVICE
        assert_bitwise_equal(a.cpu(), w, f"{path} {name}")


@pytest.mark.parametrize("path", PATHS)
def test_kv_cache_decode_T5(path, monkeypatch):
    """A left-padded prompt prefilled into the cache, then decoded token by
    token on the GPU: every step has the bits of the CPU reference's cache."""
    monkeypatch.setenv("GOLDEN_KERNELS_GPU_ATTENTION", path)
    gen = torch.Generator().manual_seed(21)
    batch, hq, hkv, d, prompt, steps = 2, 8, 2, 32, 3, 70
    q, k, v = make_qkv(batch, hq, hkv, prompt + steps, prompt + steps, d, torch.bfloat16, gen)
    prompt_mask = torch.tensor([[True] * prompt, [False, True, True]])
    caches = {name: gk.KVCache(batch, hkv, d, prompt + steps, dtype=torch.bfloat16, device=device)
              for name, device in (("reference", "cpu"), (GPU, DEVICE))}
    for step in range(-1, steps):
        part = slice(0, prompt) if step < 0 else slice(prompt + step, prompt + step + 1)
        outs = {}
        for backend, cache in caches.items():
            place = (lambda t: t) if backend == "reference" else on_gpu
            cache.append(place(k[:, :, part]), place(v[:, :, part]),
                         key_padding_mask=place(prompt_mask) if step < 0 else None)
            outs[backend] = cache.attend(place(q[:, :, part]), return_lse=True, backend=backend)
        for name, a, w in zip(("out", "lse"), outs[GPU], outs["reference"]):
            assert_bitwise_equal(a.cpu(), w, f"{path} step {step} {name}")


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("path", PATHS)
def test_packed_decode_equals_reference(path, causal, monkeypatch):
    """Packed sequences of 1 to 4 query tokens (4 to the most, 16, rows per kv
    head) against caches of 0 to 300 keys: the decode kernels size their rows
    and key blocks by the longest sequence and leave the others' extra rows
    alone (their tokens belong to the next sequence)."""
    monkeypatch.setenv("GOLDEN_KERNELS_GPU_ATTENTION", path)
    gen = torch.Generator().manual_seed(25)
    q_lens, k_lens = (1, 4, 1, 3, 2, 1), (70, 300, 1, 3, 129, 0 if not causal else 1)
    seqs = [make_qkv(1, 8, 2, lq, lk, 40, torch.bfloat16, gen) for lq, lk in zip(q_lens, k_lens)]
    q, cu_q = pack([s[0] for s in seqs])
    k, cu_k = pack([s[1] for s in seqs])
    v, _ = pack([s[2] for s in seqs])

    def run(backend, *tensors):
        out, lse = gk.attention_varlen(*tensors, causal=causal, return_lse=True, backend=backend)
        return out, lse, gk.attention_varlen(*tensors, causal=causal, backend=backend, fp32=True)

    want = run("reference", q, k, v, cu_q, cu_k)
    got = run(GPU, *(on_gpu(t) for t in (q, k, v, cu_q, cu_k)))
    for name, a, w in zip(("out", "lse", "out_fp32"), got, want):
        assert_bitwise_equal(a.cpu(), w, f"packed {path} {name}")


def test_decode_sequences_split_over_launches(monkeypatch):
    """A scratch budget that holds one sequence at a time: five launches of
    each decode kernel, each sequence at its own offset."""
    gen = torch.Generator().manual_seed(22)
    q, k, v = make_qkv(5, 8, 2, 1, 150, 16, torch.float32, gen)
    mask = make_mask("holes", 5, 150, gen)
    k, v = with_nan_behind(k, v, mask)
    want = forward_all("reference", q, k, v, mask, True)
    one_sequence = 2 * 4 * (3 * 64 + 3 * 3) * 4  # kv heads x rows x (key slots + 3 per block) floats
    monkeypatch.setenv("GOLDEN_KERNELS_GPU_ATTENTION", "decode")
    monkeypatch.setenv("GOLDEN_KERNELS_GPU_DECODE_SCRATCH_BYTES", str(one_sequence + 4))
    got = forward_all(GPU, *(on_gpu(t) for t in (q, k, v, mask)), True)
    for name, a, w in zip(("out", "lse", "out_fp32"), got, want):
        assert_bitwise_equal(a.cpu(), w, f"split {name}")
    monkeypatch.setenv("GOLDEN_KERNELS_GPU_DECODE_SCRATCH_BYTES", str(one_sequence - 4))
    with pytest.raises(ValueError, match="GOLDEN_KERNELS_GPU_DECODE_SCRATCH_BYTES"):
        gk.attention(*(on_gpu(t) for t in (q, k, v)), backend=GPU)  # a sequence no longer fits


def test_forced_kernels_refuse_what_they_cannot_run(monkeypatch):
    gen = torch.Generator().manual_seed(23)
    q, k, v = (on_gpu(t) for t in make_qkv(1, 4, 1, 9, 20, 8, torch.float32, gen))  # 36 rows per kv head (at most 16)
    monkeypatch.setenv("GOLDEN_KERNELS_GPU_ATTENTION", "decode")
    with pytest.raises(ValueError, match="at most 16 query rows"):
        gk.attention(q, k, v, backend=GPU)
    packed = [t[0].transpose(0, 1).contiguous() for t in (q, k, v)]
    cu_q, cu_k = on_gpu(torch.tensor([0, 9])), on_gpu(torch.tensor([0, 20]))
    with pytest.raises(ValueError, match="at most 16 query rows"):
        gk.attention_varlen(*packed, cu_q, cu_k, backend=GPU)
    monkeypatch.setenv("GOLDEN_KERNELS_GPU_ATTENTION", "fast")
    with pytest.raises(ValueError, match="auto, tiles or decode"):
        gk.attention(q[:, :, :1], k, v, backend=GPU)
    monkeypatch.setenv("GOLDEN_KERNELS_GPU_ATTENTION", "auto")
    for bad in ("lots", "-1", "0", " 5", "5k"):
        monkeypatch.setenv("GOLDEN_KERNELS_GPU_DECODE_SCRATCH_BYTES", bad)
        with pytest.raises(ValueError, match="positive integer"):
            gk.attention(q[:, :, :1], k, v, backend=GPU)


def test_decode_past_a_thousand_key_blocks():
    """More than 1024 key blocks: the chain of the row's maxima runs over its
    staged chunks of 1024 in turn (decode_softmax_kernel)."""
    gen = torch.Generator().manual_seed(24)
    skv = 1024 * 64 + 100
    q, k, v = make_qkv(1, 2, 1, 1, skv, 8, torch.float32, gen, scale=3.0)
    want = forward_all("reference", q, k, v, None, True)  # no mask: every key has a rank
    got = forward_all(GPU, *(on_gpu(t) for t in (q, k, v)), None, True)
    for name, a, w in zip(("out", "lse", "out_fp32"), got, want):
        assert_bitwise_equal(a.cpu(), w, f"long cache {name}")
