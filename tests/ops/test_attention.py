"""attention against the contract: Axis-C every CPU path equal to the scalar
reference on raw bits; Axis-A T1-T7 on raw bits (batch, position, neighbours,
left/right padding with NaN garbage, chunked prefill and KV-cache decode,
packing, threads), forward and backward; Axis-B against float64 with a
first-order rigorous bound and the peer floor; bad input; no mutation."""

from __future__ import annotations

import math

import pytest
import torch

import golden_kernels as gk
from golden_kernels.ops import attention as attention_ops
from golden_kernels.testing import assert_bitwise_equal, assert_peer_floor, assert_within, gamma, ulp, unit_roundoff
from golden_kernels.testing.bounds import smallest_subnormal
from golden_kernels.testing.invariance import (check_batch_invariance, check_position_invariance,
                                               check_thread_invariance)

from .. import reference
from ..conftest import FLOAT_DTYPES, dtype_id
from ..gpu_target import AVAILABLE, GPU, SKIP_REASON, on_gpu

BLOCK = 64  # csrc/core/ops/attention.h kAttentionKeyBlock


def rand(shape, dtype, gen, scale=1.0):
    return (torch.randn(*shape, generator=gen) * scale).to(dtype)


def make_qkv(b, hq, hkv, sq, skv, d, dtype, gen, scale=1.0):
    return (rand((b, hq, sq, d), dtype, gen, scale), rand((b, hkv, skv, d), dtype, gen, scale),
            rand((b, hkv, skv, d), dtype, gen))


def op(backend=None):
    return gk.get_op("attention", backend=backend)


def everything(backend, q, k, v, g, **kw):
    """(out, lse, out_fp32, dq, dk, dv) of one call each."""
    o = op(backend)
    out, lse = o.forward(q, k, v, return_lse=True, **kw)
    return (out, lse, o.forward_fp32(q, k, v, **kw), *o.backward(g, q, k, v, **kw))


NAMES = ("out", "lse", "out_fp32", "dq", "dk", "dv")


def assert_all_equal(got, want, what):
    for a, b, name in zip(got, want, NAMES):
        assert_bitwise_equal(a, b, f"{what} {name}")


def holes_mask(b, skv, gen):
    mask = torch.rand(b, skv, generator=gen) > 0.3
    mask[:, -1] = True  # every causal row's own token kept somewhere
    return mask


# ---- Axis-C: every CPU path gives the reference's bits -----------------------------------

SHAPES = [  # (B, Hq, Hkv, Sq, Skv, D)
    (2, 4, 2, 70, 70, 16),     # prefill across a block boundary, GQA 2
    (1, 8, 2, 1, 130, 128),    # decode
    (2, 6, 3, 33, 100, 7),     # chunk (Skv > Sq), odd head_dim
    (1, 32, 8, 20, 20, 128),   # qwen3-8b heads
    (1, 8, 2, 150, 150, 71),   # full 64-row tasks past the first block: whole-block path, D tails
    (1, 8, 2, 80, 80, 128),    # the whole-block path at qwen3's head_dim
]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_cpu_paths_equal_reference(cpu_isa, threads, dtype, shape, masked, gen):
    b, hq, hkv, sq, skv, d = shape
    q, k, v = make_qkv(b, hq, hkv, sq, skv, d, dtype, gen)
    g = rand(q.shape, dtype, gen)
    kw = {"key_padding_mask": holes_mask(b, skv, gen)} if masked else {}
    threads(3)
    for causal in (True, False):
        assert_all_equal(everything("cpu", q, k, v, g, causal=causal, **kw),
                         everything("reference", q, k, v, g, causal=causal, **kw), f"causal={causal}")


def test_zero_scores_of_both_signs_equal_reference(cpu_isa, gen):
    """Whole key blocks whose scores are +0 and -0 (tiny dots rounded to signed
    zeros) and a NaN key: of equal zero maxima the core keeps the first, and
    every CPU path gives the reference's bits."""
    q = torch.zeros(1, 4, 3, 8)
    q[..., 0] = 1e-38
    k = torch.full((1, 1, 2 * BLOCK, 8), -0.0)  # q[d] * -0 = -0 keeps a -0 dot's sign
    k[..., 0] = torch.where(torch.rand(2 * BLOCK, generator=gen) > 0.5, 1e-8, -1e-8)
    k[0, 0, 5, 0] = float("nan")
    v = torch.randn(1, 1, 2 * BLOCK, 8, generator=gen)
    g = torch.randn(q.shape, generator=gen)
    for causal in (True, False):
        got, want = everything("cpu", q, k, v, g, causal=causal), everything("reference", q, k, v, g, causal=causal)
        assert_all_equal(got, want, f"signed zero scores, causal={causal}")


def test_whole_blocks_with_nonfinite_scores_equal_reference(cpu_isa, gen):
    """Full 64-row tasks whose rows all see whole key blocks (the path that
    keeps rows in vector lanes) with, per query head: a row with a NaN score
    for every key; rows of equal +0 scores; rows with +-inf and huge scores;
    rows whose every score is -inf. Every CPU path gives the reference's bits."""
    s, d = 200, 24
    q = torch.randn(1, 4, s, d, generator=gen)
    k = torch.randn(1, 1, s, d, generator=gen)
    v = torch.randn(1, 1, s, d, generator=gen)
    q[0, 0, 170, 1] = float("nan")
    q[0, 1, 100:140] = 0.0
    q[0, 2, 120:180, 0] = 3e38
    k[0, 0, ::7, 0] = 1e10
    k[0, 0, 3::9, 0] = -1e10
    q[0, 3, 150:160] = 0.0
    q[0, 3, 150:160, 2] = -3e38
    k[0, 0, :, 2] = k[0, 0, :, 2].abs() + 2.0  # so q[2] * k[2] overflows to -inf for every key
    v[0, 0, 77, 5] = float("inf")
    g = torch.randn(q.shape, generator=gen)
    for causal in (True, False):
        got, want = everything("cpu", q, k, v, g, causal=causal), everything("reference", q, k, v, g, causal=causal)
        assert_all_equal(got, want, f"non-finite whole blocks, causal={causal}")
    out = everything("reference", q, k, v, g, causal=True)[0]
    assert torch.isnan(out[0, 0, 170]).all() and not torch.isnan(out[0, 0, 169]).any()
    assert torch.isnan(out[0, 3, 150:160]).all()  # 0 / 0: every probability exp(-inf)


def test_attention_sink_whole_blocks_equal_reference(cpu_isa, gen):
    """An attention sink, as in trained LLMs: key 0 outscores every other key
    for every query, so from the first block on no row's max moves and the
    fast path skips its rescale of the accumulators (alpha == 1 exactly);
    key 260 outscores the sink for every row, moving all maxes at once. Full
    64-row tasks with rows in vector lanes; every CPU path gives the
    reference's bits."""
    s, d = 400, 32
    q = torch.randn(1, 4, s, d, generator=gen)
    k = torch.randn(1, 1, s, d, generator=gen)
    v = torch.randn(1, 1, s, d, generator=gen)
    q[..., 0] = 4.0
    k[..., 0] = 0.0
    k[0, 0, 0, 0] = 30.0
    k[0, 0, 260, 0] = 40.0
    g = torch.randn(q.shape, generator=gen)
    for causal in (True, False):
        got, want = everything("cpu", q, k, v, g, causal=causal), everything("reference", q, k, v, g, causal=causal)
        assert_all_equal(got, want, f"attention sink, causal={causal}")


def test_float16_edge_values_equal_reference(cpu_isa, gen):
    """fp16 inputs that the fast paths widen by F16C (csrc/cpu/rows.h) and
    outputs they narrow there: subnormal and signalling-NaN inputs (F16C
    quiets the NaN; the reference keeps it signalling until arithmetic does),
    outputs in fp16's subnormal range, and gradients that overflow to inf."""
    s, d = 150, 24
    q, k, v = make_qkv(1, 4, 2, s, s, d, torch.float16, gen)
    g = rand(q.shape, torch.float16, gen)
    signalling_nan = torch.tensor(0x7C01, dtype=torch.int16).view(torch.float16)
    q[0, 0, 100:110, :3] = torch.tensor([2.0**-24, -(2.0**-20), 6e-5], dtype=torch.float16)
    k[0, 0, 40, 2] = signalling_nan  # every later row of heads 0 and 1 reads a NaN score
    v[0, 1, 90, 7] = signalling_nan
    v[0, 1, :, 9] = 2.0**-24 * torch.randint(-3, 4, (s,), generator=gen).to(torch.float16)  # subnormal outputs
    g[0, 2, :, :4] = 60000.0  # dv sums many of these: overflow to inf in fp16
    for causal in (True, False):
        got, want = everything("cpu", q, k, v, g, causal=causal), everything("reference", q, k, v, g, causal=causal)
        assert_all_equal(got, want, f"fp16 edge values, causal={causal}")
    out, _, _, dq, dk, dv = everything("reference", q, k, v, g, causal=True)
    assert torch.isnan(out[0, 0, 40:]).all() and torch.isnan(out[0, 2, 90:, 7]).all()
    assert (out[0, 2, :, 9].abs() < 2.0**-14).all() and (out[0, 2, :, 9] != 0).any()
    assert torch.isinf(dv[0, 1, :, :4]).any()


# ---- Axis-A --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_batch_invariance_T1_T2_T3(backend, dtype, gen):
    """T1, T2 through golden_kernels.testing.invariance (every output, dq, dk
    and dv included, carries the batch in dim 0); T3 with neighbours of 30x
    the row's magnitude."""
    q, k, v = make_qkv(6, 4, 2, 90, 90, 32, dtype, gen)
    g = rand(q.shape, dtype, gen)
    mask = holes_mask(6, 90, gen)

    def fn(q, k, v, g, mask):
        return everything(backend, q, k, v, g, key_padding_mask=mask)

    check_batch_invariance(fn, q, k, v, g, mask, batched=range(5))
    check_position_invariance(fn, q, k, v, g, mask, batched=range(5))
    full = fn(q, k, v, g, mask)
    row = 3
    q2, k2, v2 = make_qkv(6, 4, 2, 90, 90, 32, dtype, gen, scale=30.0)
    g2, mask2 = rand(q.shape, dtype, gen), holes_mask(6, 90, gen)
    for new, old in ((q2, q), (k2, k), (v2, v), (g2, g), (mask2, mask)):
        new[row] = old[row]
    others = fn(q2, k2, v2, g2, mask2)
    assert_all_equal([t[row] for t in others], [t[row] for t in full], "T3")


def pad(x, left, right, value, dim=2):
    shape = list(x.shape)
    before, after = shape.copy(), shape.copy()
    before[dim], after[dim] = left, right
    return torch.cat([torch.full(before, value, dtype=x.dtype), x, torch.full(after, value, dtype=x.dtype)], dim)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("left,right", [(0, 5), (1, 0), (63, 2), (64, 64), (65, 0), (130, 1)])
def test_padding_T4_nan_garbage(left, right, dtype, gen):
    """Left and right padding of any length, NaN in every padded q/k/v/grad
    element: the real rows' bits are those of the unpadded sequence; padding
    rows give out 0, LSE -inf, dq 0; padded keys get dk = dv = 0."""
    length = 70
    q, k, v = make_qkv(1, 4, 2, length, length, 16, dtype, gen)
    g = rand(q.shape, dtype, gen)
    alone = everything("cpu", q, k, v, g)
    nan = float("nan")
    padded = [pad(t, left, right, nan) for t in (q, k, v, g)]
    mask = pad(torch.ones(1, length, dtype=torch.bool), left, right, False, dim=1)
    got = everything("cpu", *padded, key_padding_mask=mask)
    real = slice(left, left + length)
    for name, a, b in zip(NAMES, got, alone):
        assert_bitwise_equal(a[:, :, real], b, f"T4 {name}")
    out, lse, out32, dq, dk, dv = got
    pads = torch.cat([torch.arange(left), torch.arange(left + length, left + length + right)])
    for name, t in (("out", out), ("out_fp32", out32), ("dq", dq), ("dk", dk), ("dv", dv)):
        assert_bitwise_equal(t[:, :, pads], torch.zeros_like(t[:, :, pads]), f"padding rows {name}")
    assert bool((lse[:, :, pads] == -math.inf).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("left,right", [(0, 5), (1, 0), (63, 2), (64, 64), (130, 1)])
def test_padding_T4_nan_garbage_not_causal(left, right, dtype, gen):
    """Without causal every query row attends, so only the keys are padded:
    NaN in every padded k/v element, and the output, LSE, dq and the real
    keys' dk, dv are the bits of the unpadded keys; padded keys get dk = dv = 0."""
    length = 70
    q, k, v = make_qkv(1, 4, 2, length, length, 16, dtype, gen)
    g = rand(q.shape, dtype, gen)
    alone = everything("cpu", q, k, v, g, causal=False)
    nan = float("nan")
    k_pad, v_pad = (pad(t, left, right, nan) for t in (k, v))
    mask = pad(torch.ones(1, length, dtype=torch.bool), left, right, False, dim=1)
    out, lse, out32, dq, dk, dv = everything("cpu", q, k_pad, v_pad, g, causal=False, key_padding_mask=mask)
    for name, a, b in zip(NAMES[:4], (out, lse, out32, dq), alone[:4]):
        assert_bitwise_equal(a, b, f"T4 {name}")
    real = slice(left, left + length)
    pads = torch.cat([torch.arange(left), torch.arange(left + length, left + length + right)])
    for name, t, want in (("dk", dk, alone[4]), ("dv", dv, alone[5])):
        assert_bitwise_equal(t[:, :, real], want, f"T4 {name}")
        assert_bitwise_equal(t[:, :, pads], torch.zeros_like(t[:, :, pads]), f"padded keys {name}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
def test_prefill_chunks_decode_T5(dtype, gen):
    """One prefill == chunked prefill (several chunk sizes) == token by token
    through the KV cache, on raw bits, LSE included."""
    length, hq, hkv, d = 150, 8, 2, 32
    q, k, v = make_qkv(2, hq, hkv, length, length, d, dtype, gen)
    want, want_lse = gk.attention(q, k, v, return_lse=True)
    for chunk in (1, 7, 64, 100, 150):
        cache = gk.KVCache(2, hkv, d, length + 3, dtype=dtype)
        outs, lses = [], []
        for start in range(0, length, chunk):
            part = slice(start, min(start + chunk, length))
            cache.append(k[:, :, part], v[:, :, part])
            out, lse = cache.attend(q[:, :, part], return_lse=True)
            outs.append(out)
            lses.append(lse)
        assert_bitwise_equal(torch.cat(outs, 2), want, f"chunk {chunk} out")
        assert_bitwise_equal(torch.cat(lses, 2), want_lse, f"chunk {chunk} lse")


def test_ragged_prompts_left_padded_in_cache_T4_T5(gen):
    """Ragged prompts left-padded into one cache, then decode: every real row
    equals the sequence's own unpadded attention."""
    lengths, steps, hq, hkv, d = (5, 67), 4, 4, 2, 16
    prompt = max(lengths)
    total = prompt + steps
    seqs = [make_qkv(1, hq, hkv, n + steps, n + steps, d, torch.bfloat16, gen) for n in lengths]
    cache = gk.KVCache(2, hkv, d, total, dtype=torch.bfloat16)
    nan = float("nan")
    left = [prompt - n for n in lengths]
    batch = [torch.cat([pad(s[i][:, :, :n], p, 0, nan) for s, n, p in zip(seqs, lengths, left)]) for i in range(3)]
    mask = torch.stack([torch.arange(prompt) >= p for p in left])
    cache.append(batch[1], batch[2], key_padding_mask=mask)
    outs = [cache.attend(batch[0])]
    for t in range(steps):
        step = [torch.cat([s[i][:, :, n + t:n + t + 1] for s, n in zip(seqs, lengths)]) for i in range(3)]
        cache.append(step[1], step[2])
        outs.append(cache.attend(step[0]))
    for b, (s, n, p) in enumerate(zip(seqs, lengths, left)):
        alone = gk.attention(*s)
        assert_bitwise_equal(outs[0][b:b + 1, :, p:], alone[:, :, :n], f"prefill of sequence {b}")
        for t in range(steps):
            assert_bitwise_equal(outs[t + 1][b:b + 1], alone[:, :, n + t:n + t + 1], f"decode {t} of {b}")


def test_cache_with_holes_in_every_append_T4_T5(gen):
    """Masked tokens in every append (prefill, chunks, single steps), with NaN
    in their k/v: each attend has the bits of one masked attention over the
    whole sequence, padding rows included."""
    batch, hq, hkv, d, length = 3, 4, 2, 16, 90
    q, k, v = make_qkv(batch, hq, hkv, length, length, d, torch.float32, gen)
    mask = holes_mask(batch, length, gen)
    mask[1, 40:45] = False  # a run of dropped tokens inside one append
    k, v = (t.masked_fill(~mask[:, None, :, None], float("nan")) for t in (k, v))
    want, want_lse = gk.attention(q, k, v, key_padding_mask=mask, return_lse=True)
    cache = gk.KVCache(batch, hkv, d, length)
    start = 0
    for size in (30, 1, 7, 1, 1, 50):
        part = slice(start, start + size)
        cache.append(k[:, :, part], v[:, :, part], key_padding_mask=mask[:, part])
        out, lse = cache.attend(q[:, :, part], return_lse=True)
        assert_bitwise_equal(out, want[:, :, part], f"append at {start} out")
        assert_bitwise_equal(lse, want_lse[:, :, part], f"append at {start} lse")
        start += size
    assert start == length
    for b in range(batch):
        kept = mask[b].nonzero().flatten()
        assert torch.equal(cache.key_index[b, :kept.numel()], kept.to(torch.int32)), f"key_index of {b}"
    assert torch.equal(cache.key_count, mask.sum(1).to(torch.int32))


def pack(tensors):
    """[1, H, L, D] sequences -> packed [T, H, D] and cu_seqlens."""
    packed = torch.cat([t[0].transpose(0, 1) for t in tensors])
    cu = torch.tensor([0] + [t.shape[2] for t in tensors]).cumsum(0)
    return packed, cu


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=dtype_id)
def test_packed_equals_alone_and_padded_T6(dtype, gen):
    q_lens, k_lens = (5, 70, 1, 33), (5, 130, 40, 33)  # prefill, chunk, decode, prefill
    seqs = [make_qkv(1, 4, 2, lq, lk, 16, dtype, gen) for lq, lk in zip(q_lens, k_lens)]
    grads = [rand(s[0].shape, dtype, gen) for s in seqs]
    q, cu_q = pack([s[0] for s in seqs])
    k, cu_k = pack([s[1] for s in seqs])
    v, _ = pack([s[2] for s in seqs])
    g, _ = pack(grads)
    out, lse = gk.attention_varlen(q, k, v, cu_q, cu_k, return_lse=True)
    dq, dk, dv = gk.attention_varlen_backward(g, q, k, v, cu_q, cu_k)
    for i, (s, grad) in enumerate(zip(seqs, grads)):
        qs, ks = slice(int(cu_q[i]), int(cu_q[i + 1])), slice(int(cu_k[i]), int(cu_k[i + 1]))
        a_out, a_lse = gk.attention(*s, return_lse=True)
        a_dq, a_dk, a_dv = op().backward(grad, *s)
        unpack = lambda t: t[0].transpose(0, 1)  # noqa: E731
        assert_bitwise_equal(out[qs], unpack(a_out), f"T6 out {i}")
        assert_bitwise_equal(lse[:, qs], a_lse[0], f"T6 lse {i}")
        assert_bitwise_equal(dq[qs], unpack(a_dq), f"T6 dq {i}")
        assert_bitwise_equal(dk[ks], unpack(a_dk), f"T6 dk {i}")
        assert_bitwise_equal(dv[ks], unpack(a_dv), f"T6 dv {i}")


def test_packed_equals_right_padded_batch_T6(gen):
    lengths = (9, 70, 33)
    seqs = [make_qkv(1, 4, 4, n, n, 16, torch.bfloat16, gen) for n in lengths]
    grads = [rand(s[0].shape, torch.bfloat16, gen) for s in seqs]
    longest = max(lengths)
    padded = [torch.cat([pad(s[i], 0, longest - s[i].shape[2], float("nan")) for s in seqs]) for i in range(3)]
    g_pad = torch.cat([pad(t, 0, longest - t.shape[2], float("nan")) for t in grads])
    mask = torch.stack([torch.arange(longest) < n for n in lengths])
    want = everything("cpu", *padded, g_pad, key_padding_mask=mask)
    q, cu = pack([s[0] for s in seqs])
    k, _ = pack([s[1] for s in seqs])
    v, _ = pack([s[2] for s in seqs])
    g, _ = pack(grads)
    out = gk.attention_varlen(q, k, v, cu, cu)
    dq, dk, dv = gk.attention_varlen_backward(g, q, k, v, cu, cu)
    for i, n in enumerate(lengths):
        rows = slice(int(cu[i]), int(cu[i + 1]))
        for name, packed_t, padded_t in (("out", out, want[0]), ("dq", dq, want[3]), ("dk", dk, want[4]),
                                         ("dv", dv, want[5])):
            assert_bitwise_equal(packed_t[rows], padded_t[i, :, :n].transpose(0, 1), f"T6 {name} {i}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
def test_thread_count_invariance_T7(dtype, gen):
    q, k, v = make_qkv(2, 8, 2, 100, 100, 64, dtype, gen)
    g = rand(q.shape, dtype, gen)
    mask = holes_mask(2, 100, gen)
    check_thread_invariance(lambda *args: everything("cpu", *args, key_padding_mask=mask), q, k, v, g,
                            thread_counts=(1, 2, 3, 8))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("causal", [True, False])
def test_backward_dq_in_either_pass_T7(cpu_isa, threads, dtype, causal, gen):
    """The CPU backward computes dq alongside dk and dv in its second pass when
    its (sequence, kv head) pairs keep the threads busy, else in its first
    (csrc/cpu/attention.cpp, dq_in_key_pass): the same bits, padded with holes
    (and decode-like Sq < Skv) and packed."""
    q, k, v = make_qkv(2, 4, 1, 70, 150, 16, dtype, gen)  # 2 (sequence, kv head) pairs
    g = rand(q.shape, dtype, gen)
    mask = holes_mask(2, 150, gen)
    packed = [t.transpose(1, 2).reshape(-1, t.shape[1], 16) for t in (q, k, v, g)]
    cu_q, cu_k = torch.tensor([0, 70, 140]), torch.tensor([0, 150, 300])
    grads = {}
    for n in (1, 4):  # 1 thread: dq with dk, dv; 4 threads, 2 pairs: dq in pass 1
        threads(n)
        grads[n] = (*op("cpu").backward(g, q, k, v, causal=causal, key_padding_mask=mask),
                    *gk.attention_varlen_backward(packed[3], *packed[:3], cu_q, cu_k, causal=causal, backend="cpu"))
    for a, b, name in zip(grads[1], grads[4], ("dq", "dk", "dv") * 2):
        assert_bitwise_equal(a, b, f"{name}: dq in pass 2 vs pass 1")


# ---- Axis-B: accuracy against float64 ------------------------------------------------------

def allowed_scores(q, k, causal, scale, mask):
    """Float64 scores, |q|.|k| * scale, and the allowed-key mask, [B, Hq, Sq, Skv]."""
    group = q.shape[1] // k.shape[1]
    q64, k64 = q.double(), k.double().repeat_interleave(group, 1)
    s = reference.fp32_scalar(scale)
    weights = reference.attention_weights(q, k, causal, scale, mask)
    allowed = weights > 0  # exp never underflows to 0 at these magnitudes
    return (torch.einsum("bhid,bhjd->bhij", q64, k64) * s,
            torch.einsum("bhid,bhjd->bhij", q64.abs(), k64.abs()) * s, allowed, weights)


def forward_bounds(q, k, v, causal, scale, mask):
    """First-order bounds for out (fp32) and LSE. Each weight's relative error
    E_j: the score's fma chain and scale multiply, the shift s - m, exp (< 2u)
    and the block rescales (3u each plus u times the max's total rise). The
    ratio sum p v / sum p cancels common factors, leaving sum_j w_j E_j
    |v_j - out|, plus the n-term accumulations and the final division."""
    u = unit_roundoff()
    d, skv = q.shape[-1], k.shape[2]
    scores, absdot, allowed, w = allowed_scores(q, k, causal, scale, mask)
    masked = scores.masked_fill(~allowed, -math.inf)
    top = masked.amax(-1, keepdim=True)
    low = scores.masked_fill(~allowed, math.inf).amin(-1, keepdim=True)
    n = allowed.sum(-1, keepdim=True).double()
    blocks = math.ceil(skv / BLOCK)
    spread = torch.nan_to_num((top - low).abs(), posinf=0.0)
    e = (gamma(d + 1) * absdot + u * torch.nan_to_num((scores - top).abs(), posinf=0.0)
         + 2 * u + blocks * 3 * u + u * spread)
    v64 = v.double().repeat_interleave(q.shape[1] // k.shape[1], 1)
    out = w @ v64
    deviation = (v64.unsqueeze(2) - out.unsqueeze(3)).abs()  # [B,H,Sq,Skv,D]
    acc_gamma = gamma(skv + blocks + 2)
    out_bound = (torch.einsum("bhij,bhijd->bhid", w * e, deviation) + acc_gamma * (w @ v64.abs() + out.abs())
                 + u * out.abs())
    lse_ref = torch.logsumexp(masked, -1)
    lse_bound = (w * e).sum(-1) + acc_gamma + 4 * u * lse_ref.abs().nan_to_num(posinf=0.0) + 4 * u * torch.log(n.squeeze(-1).clamp_min(1))
    return 1.05 * out_bound + 1e-37, 1.05 * lse_bound + 1e-37, lse_ref


AXIS_B_SHAPES = [
    pytest.param((1, 32, 8, 24, 24, 128), marks=pytest.mark.slow, id="qwen3-prefill"),
    pytest.param((1, 32, 8, 1, 130, 128), marks=pytest.mark.slow, id="qwen3-decode"),
    (1, 3, 1, 5, 9, 7),       # odd
    (3, 2, 2, 1, 1, 1),       # single key, head_dim 1
    (2, 4, 2, 17, 150, 33),   # chunk over three blocks
]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", AXIS_B_SHAPES, ids=str)
@pytest.mark.parametrize("causal,masked", [(True, False), (False, True), (True, True)])
def test_forward_within_rigorous_bound(dtype, shape, causal, masked, gen):
    b, hq, hkv, sq, skv, d = shape
    q, k, v = make_qkv(b, hq, hkv, sq, skv, d, dtype, gen, scale=2.0)
    mask = holes_mask(b, skv, gen) if masked else None
    scale = 1 / math.sqrt(d)
    ref = reference.attention(q, k, v, causal, scale, mask)
    out_bound, lse_bound, lse_ref = forward_bounds(q, k, v, causal, scale, mask)
    fp32, lse = op().forward_fp32(q, k, v, causal=causal, key_padding_mask=mask, return_lse=True)
    assert_within(fp32, ref, out_bound, "forward_fp32")
    assert_within(lse, lse_ref, lse_bound, "lse")
    rounded = gk.attention(q, k, v, causal=causal, key_padding_mask=mask)
    u_out = 0.5 * ulp(ref.abs() + out_bound, dtype) if dtype != torch.float32 else 0.0
    assert_within(rounded, ref, out_bound + u_out + smallest_subnormal(dtype), f"forward {dtype}")
    assert_peer_floor(rounded, ref, "attention", dtype, "peer floor")


def test_reference_agrees_with_torch_sdpa(gen):
    """The float64 reference itself against PyTorch's SDPA (float64, GQA
    expanded), so the bound tests above check against the right function."""
    q, k, v = make_qkv(2, 8, 2, 30, 30, 16, torch.float64, gen)
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1), is_causal=True)
    assert torch.allclose(reference.attention(q, k, v, True), sdpa, rtol=1e-12, atol=1e-12)


def backward_bounds(g, q, k, v, causal, scale, mask):
    """First-order bounds of dq, dk, dv from dS = P (dP - Di): errors of P
    (as in forward_bounds, against the fp32 LSE), dP and Di (fma chains over
    d; Di also carries O's error), two roundings in dS, then the sums."""
    u = unit_roundoff()
    d, skv, sq = q.shape[-1], k.shape[2], q.shape[2]
    group = q.shape[1] // k.shape[1]
    scores, absdot, allowed, w = allowed_scores(q, k, causal, scale, mask)
    out_bound, lse_bound, lse_ref = forward_bounds(q, k, v, causal, scale, mask)
    g64 = g.double()
    k64, v64 = (t.double().repeat_interleave(group, 1) for t in (k, v))
    out = w @ v64
    dp = g64 @ v64.transpose(-1, -2)
    di = (g64 * out).sum(-1, keepdim=True)
    ds = w * (dp - di)
    lse_fin = lse_ref.nan_to_num(neginf=0.0).unsqueeze(-1)
    e = (gamma(d + 1) * absdot + u * (scores - lse_fin).abs() + 2 * u + lse_bound.unsqueeze(-1)) * allowed
    dp_err = gamma(d) * (g64.abs() @ v64.abs().transpose(-1, -2))
    di_err = gamma(d) * (g64 * out).abs().sum(-1, keepdim=True) + (g64.abs() * out_bound).sum(-1, keepdim=True)
    ds_err = w * e * (dp - di).abs() + w * (dp_err + di_err) + 2 * u * w * (dp - di).abs()
    s = reference.fp32_scalar(scale)
    dq_bound = s * (ds_err @ k64.abs() + gamma(skv) * (ds.abs() @ k64.abs()))
    fold = lambda t: t.reshape(t.shape[0], -1, group, *t.shape[2:]).sum(2)  # noqa: E731
    terms = group * sq
    dk_bound = s * fold(ds_err.transpose(-1, -2) @ q.double().abs() + gamma(terms) * (ds.abs().transpose(-1, -2) @ q.double().abs()))
    dv_bound = fold((w * e).transpose(-1, -2) @ g64.abs() + gamma(terms) * (w.transpose(-1, -2) @ g64.abs()))
    tiny = 8 * smallest_subnormal(torch.float32)
    return [1.1 * b + tiny for b in (dq_bound, dk_bound, dv_bound)]


@pytest.mark.parametrize("shape", AXIS_B_SHAPES, ids=str)
@pytest.mark.parametrize("causal,masked", [(True, False), (False, True), (True, True)])
def test_backward_within_rigorous_bound(shape, causal, masked, gen):
    b, hq, hkv, sq, skv, d = shape
    q, k, v = make_qkv(b, hq, hkv, sq, skv, d, torch.float32, gen)
    g = rand(q.shape, torch.float32, gen)
    mask = holes_mask(b, skv, gen) if masked else None
    scale = 1 / math.sqrt(d)
    grads = op().backward(g, q, k, v, causal=causal, key_padding_mask=mask)
    refs = reference.attention_backward(g, q, k, v, causal, scale, mask)
    bounds = backward_bounds(g, q, k, v, causal, scale, mask)
    for got, want, bound, name in zip(grads, refs, bounds, ("dq", "dk", "dv")):
        assert_within(got, want, bound, name)
        assert_peer_floor(got, want, "attention", torch.float32, f"{name} peer floor")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=dtype_id)
def test_backward_low_precision_peer_floor(dtype, gen):
    q, k, v = make_qkv(1, 32, 8, 24, 24, 128, dtype, gen)
    g = rand(q.shape, dtype, gen)
    for got, want, name in zip(op().backward(g, q, k, v), reference.attention_backward(g, q, k, v), "qkv"):
        assert got.dtype == dtype
        assert_peer_floor(got, want, "attention", dtype, f"d{name}")


def test_row_without_keys_is_zero_with_lse_minus_inf(gen):
    q, k, v = make_qkv(2, 2, 1, 4, 6, 8, torch.float32, gen)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1] = False
    out, lse = gk.attention(q, k, v, causal=False, key_padding_mask=mask, return_lse=True)
    assert_bitwise_equal(out[1], torch.zeros_like(out[1]), "no valid key")
    assert bool((lse[1] == -math.inf).all()) and bool(torch.isfinite(lse[0]).all())
    # causal with Sq > Skv: the first rows see no key at all
    q2 = rand((1, 2, 8, 8), torch.float32, gen)
    out2, lse2 = gk.attention(q2, k[:1], v[:1], return_lse=True)
    assert_bitwise_equal(out2[:, :, :2], torch.zeros_like(out2[:, :, :2]), "before the first key")
    assert bool((lse2[:, :, :2] == -math.inf).all())


def test_default_scale_and_explicit_scale(gen):
    q, k, v = make_qkv(1, 2, 2, 9, 9, 24, torch.float32, gen)
    assert_bitwise_equal(gk.attention(q, k, v), gk.attention(q, k, v, scale=1 / math.sqrt(24)), "default scale")
    ref = reference.attention(q, k, v, True, 0.3)
    assert_peer_floor(gk.attention(q, k, v, scale=0.3), ref, "attention", torch.float32, "scale 0.3")


@pytest.fixture
def head_major_copies(monkeypatch):
    """The token axes of the k / v arrays the CPU forward copied head-major."""
    copies = []
    real = attention_ops._head_major

    def spy(x, token_axis):
        result = real(x, token_axis)
        if result is not x:
            copies.append(token_axis)
        return result

    monkeypatch.setattr(attention_ops, "_head_major", spy)
    return copies


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("q_len, kv_heads, head_dim, copied", [(20, 8, 128, False), (150, 2, 16, False),
                                                               (150, 8, 128, True)],
                         ids=["few_rows", "rows_close", "copied"])
def test_strided_views_equal_contiguous(dtype, q_len, kv_heads, head_dim, copied, head_major_copies, gen):
    """[B, S, H, D] tensors viewed as [B, H, S, D] (the model's layout) give the
    same bits: read where they are with few query rows per kv head (80: the
    whole-block path reads strided fp32 key rows in place) or rows close
    together (a 128-byte stride), copied head-major first with many rows (600)
    2 KiB or more apart."""
    q = rand((2, q_len, 4 * kv_heads, head_dim), dtype, gen)
    k = rand((2, 150, kv_heads, head_dim), dtype, gen)
    v = rand((2, 150, kv_heads, head_dim), dtype, gen)
    views = [t.transpose(1, 2) for t in (q, k, v)]
    for causal in (True, False):
        assert_bitwise_equal(gk.attention(*views, causal=causal),
                             gk.attention(*(t.contiguous() for t in views), causal=causal), f"strided causal={causal}")
    assert bool(head_major_copies) == copied


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_empty_strided_views_work_as_contiguous(backend, gen):
    """An empty batch (or token list) of views whose last dimension is strided:
    torch calls such a tensor contiguous and .contiguous() keeps its strides,
    and nothing is read, so the call gives what the contiguous one gives
    (found by the fuzz test: the stride check used to refuse it)."""
    def strided(t):
        return torch.stack([t, t], dim=-1)[..., 0]  # last-dim stride 2, same values

    q, k, v = make_qkv(0, 4, 2, 3, 5, 8, torch.float32, gen)
    g = rand(q.shape, torch.float32, gen)
    views = [strided(t) for t in (q, k, v, g)]
    assert all(t.stride(-1) == 2 and t.is_contiguous() for t in views)
    assert_all_equal(everything(backend, *views), everything(backend, q, k, v, g), "empty strided")
    mask = torch.ones(0, 5, dtype=torch.bool)
    assert_all_equal(everything(backend, *views, key_padding_mask=mask),
                     everything(backend, q, k, v, g, key_padding_mask=mask), "empty strided, masked")
    packed = [t[0, :, :0].transpose(0, 1) for t in make_qkv(1, 4, 2, 3, 5, 8, torch.float32, gen)]  # [0, H, D]
    cu = torch.tensor([0])
    for t in packed:
        assert t.numel() == 0
    want = gk.attention_varlen(*packed, cu, cu, backend=backend)
    got = gk.attention_varlen(*(strided(t) for t in packed), cu, cu, backend=backend)
    assert_bitwise_equal(got, want, "empty packed strided")


def test_head_major_copies_give_the_same_bits(head_major_copies, gen):
    """Packed [T, H, D] k / v (rows H * D = 2 KiB apart) copied head-major for
    a long sequence, torch and numpy: the padded call's bits (T6), inputs
    unchanged."""
    q, k, v = make_qkv(1, 32, 8, 150, 150, 64, torch.float32, gen)
    packed = [t[0].transpose(0, 1).contiguous() for t in (q, k, v)]
    before = [t.clone() for t in packed]
    cu = torch.tensor([0, 150])
    want = gk.attention(q, k, v)
    assert_bitwise_equal(gk.attention_varlen(*packed, cu, cu), want[0].transpose(0, 1), "torch varlen")
    got = gk.attention_varlen(*(t.numpy() for t in packed), cu.numpy(), cu.numpy())
    assert_bitwise_equal(torch.from_numpy(got), want[0].transpose(0, 1), "numpy varlen")
    views = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v)]  # [B, S, H, D] memory
    got = gk.attention(*(t.numpy() for t in views))
    assert_bitwise_equal(torch.from_numpy(got), want, "numpy [B, S, H, D] views")
    assert head_major_copies == [0, 0, 0, 0, 2, 2]
    for t, old in zip(packed, before):
        assert_bitwise_equal(t, old, "input changed")


def test_inputs_not_mutated(gen):
    q, k, v = make_qkv(2, 4, 2, 20, 20, 8, torch.bfloat16, gen)
    g = rand(q.shape, torch.bfloat16, gen)
    mask = holes_mask(2, 20, gen)
    before = [t.clone() for t in (q, k, v, g, mask)]
    everything("cpu", q, k, v, g, key_padding_mask=mask)
    for t, old in zip((q, k, v, g, mask), before):
        assert_bitwise_equal(t, old, "input changed")


# ---- Bad input -----------------------------------------------------------------------------

def test_bad_input_raises(gen):
    q, k, v = make_qkv(2, 4, 2, 5, 5, 8, torch.float32, gen)
    with pytest.raises(ValueError, match="multiple"):
        gk.attention(q, k[:, :1].repeat(1, 3, 1, 1), v[:, :1].repeat(1, 3, 1, 1))
    with pytest.raises(ValueError, match="head_dim"):
        gk.attention(q, k[..., :4], v[..., :4])
    with pytest.raises(ValueError):
        gk.attention(q, k, v[:, :, :4])
    with pytest.raises(ValueError, match="B, H, S, D"):
        gk.attention(q[0], k, v)
    with pytest.raises(TypeError):
        gk.attention(q.to(torch.int32), k, v)
    with pytest.raises(TypeError):
        gk.attention(q, k.double(), v)
    with pytest.raises(TypeError, match="bool"):
        gk.attention(q, k, v, key_padding_mask=torch.ones(2, 5, dtype=torch.int32))
    with pytest.raises(ValueError, match="shape"):
        gk.attention(q, k, v, key_padding_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="finite"):
        gk.attention(q, k, v, scale=float("inf"))
    big = rand((1, 1, 2, 300), torch.float32, gen)
    with pytest.raises(ValueError, match="head_dim"):
        gk.attention(big, big, big)


def test_bad_cu_seqlens_raise(gen):
    q = rand((10, 4, 8), torch.float32, gen)
    k = rand((12, 2, 8), torch.float32, gen)
    good_q, good_k = torch.tensor([0, 4, 10]), torch.tensor([0, 5, 12])
    gk.attention_varlen(q, k, k, good_q, good_k)
    for bad, what in ((torch.tensor([0, 6, 4, 10]), "non-decreasing"), (torch.tensor([0, 4, 11]), "last offset"),
                      (torch.tensor([1, 4, 10]), "start at 0"), (torch.tensor([0, 4, 9]), "last offset")):
        with pytest.raises(ValueError, match=what):
            gk.attention_varlen(q, k, k, bad, good_k if len(bad) == 3 else torch.tensor([0, 5, 6, 12]))
    with pytest.raises(ValueError, match="same number"):
        gk.attention_varlen(q, k, k, good_q, torch.tensor([0, 12]))
    with pytest.raises(TypeError):
        gk.attention_varlen(q, k, k, good_q.float(), good_k)
    with pytest.raises(ValueError, match="T, H, D"):
        gk.attention_varlen(q[None], k, k, good_q, good_k)


def test_kv_cache_bad_input(gen):
    cache = gk.KVCache(1, 2, 8, 4)
    k = rand((1, 2, 3, 8), torch.float32, gen)
    cache.append(k, k)
    with pytest.raises(ValueError, match="full"):
        cache.append(k, k)
    with pytest.raises(ValueError, match="expected"):
        cache.append(k[:, :1], k[:, :1])
    with pytest.raises(TypeError):
        cache.append(k[:, :, :1].bfloat16(), k[:, :, :1].bfloat16())
    with pytest.raises(ValueError, match="holds only"):
        cache.attend(rand((1, 4, 5, 8), torch.float32, gen))


def test_numpy_inputs_equal_torch(gen):
    q, k, v = make_qkv(2, 4, 2, 9, 12, 8, torch.float32, gen)
    mask = holes_mask(2, 12, gen)
    got = gk.attention(q.numpy(), k.numpy(), v.numpy(), key_padding_mask=mask.numpy())
    assert_bitwise_equal(torch.from_numpy(got), gk.attention(q, k, v, key_padding_mask=mask), "numpy")
    packed = [t[0].transpose(0, 1).contiguous() for t in (q, k, v)]
    cu_q, cu_k = torch.tensor([0, 9]), torch.tensor([0, 12])
    got = gk.attention_varlen(*(t.numpy() for t in packed), cu_q.numpy(), cu_k.numpy())
    assert_bitwise_equal(torch.from_numpy(got), gk.attention_varlen(*packed, cu_q, cu_k), "numpy varlen")


@pytest.mark.gpu
@pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_gpu_equals_cpu_reference(dtype, gen):
    """Axis-C on a GPU: forward, LSE and backward, padded with a mask and packed."""
    q, k, v = make_qkv(2, 8, 2, 70, 130, 32, dtype, gen)
    g = rand(q.shape, dtype, gen)
    mask = holes_mask(2, 130, gen)
    want = everything("reference", q, k, v, g, key_padding_mask=mask)
    got = everything(GPU, *(on_gpu(t) for t in (q, k, v, g)), key_padding_mask=on_gpu(mask))
    assert_all_equal([t.cpu() for t in got], want, "gpu padded")
    packed = [t[0].transpose(0, 1).contiguous() for t in (q, k, v)]
    cu_q, cu_k = torch.tensor([0, 70]), torch.tensor([0, 130])
    want_out = gk.attention_varlen(*packed, cu_q, cu_k, backend="reference")
    got_out = gk.attention_varlen(*(on_gpu(t) for t in packed), on_gpu(cu_q), on_gpu(cu_k), backend=GPU)
    assert_bitwise_equal(got_out.cpu(), want_out, "gpu packed")
