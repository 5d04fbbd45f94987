"""Every registry op on the GPU (CUDA, or HIP on ROCm) against the CPU, bit for
bit (Axis-C), at odd sizes and at Qwen3-8B sizes, plus the GPU's own
invariance (a row alone == the row inside a permuted batch: T1-T3) and the
embedding's id check raised from the device. tests/test_gpu.py holds the
deeper rms_norm and convert checks. Without a GPU visible to torch (or the
GPU-emulating build, tests/gpu_target.py) every test here is skipped, never
passed."""

from __future__ import annotations

import pytest
import torch

import golden_kernels as gk
from golden_kernels.testing import assert_bitwise_equal

from .cases import CASES, run_case
from .conftest import FLOAT_DTYPES, dtype_id
from .gpu_target import AVAILABLE, DEVICE, EMULATED, GPU, SKIP_REASON, on_gpu
from .ops.test_attention import make_qkv, pack, rand

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)]

# (rows, n, aux): one element, odd sizes around a warp and a 4096-wide block,
# and a wide row. aux is the second size of the op (out_features, vocabulary,
# sequence length through the case's rule).
SIZES = [(1, 1, 1), (5, 33, 17), (37, 300, 1000), (64, 4097, 129)]


def size_id(size) -> str:
    return "x".join(str(d) for d in size)


def assert_same_outputs(got, want, what: str) -> None:
    assert len(got) == len(want), what
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.device.type == DEVICE, f"{what} output {i} is on {a.device}"
        assert_bitwise_equal(a.cpu(), b, f"{what} output {i}")


@pytest.mark.parametrize("kind", ["normal", "huge"])
@pytest.mark.parametrize("size", SIZES, ids=size_id)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name", sorted(CASES))
def test_gpu_equals_reference(name, dtype, size, kind):
    case = CASES[name]
    rows, n, aux = size
    inputs = case.build(rows, case.n_rule(n), aux, dtype, torch.Generator().manual_seed(rows * 7919 + n), kind)
    want = run_case(case, "reference", inputs).all()
    got = run_case(case, GPU, inputs.to(DEVICE)).all()
    assert_same_outputs(got, want, f"{name} {size}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("name", sorted(CASES))
def test_gpu_row_is_independent_of_its_batch(name, dtype):
    """T1-T3 on the GPU: each row alone, and the batch permuted, give the bits
    the rows had in the whole batch (launch shape and neighbours change nothing)."""
    case = CASES[name]
    inputs = case.build(29, case.n_rule(520), 40, dtype, torch.Generator().manual_seed(3), "normal").to(DEVICE)
    whole = run_case(case, GPU, inputs).row_local()
    perm = on_gpu(torch.randperm(29, generator=torch.Generator().manual_seed(4)))
    permuted = run_case(case, GPU, inputs.take(perm)).row_local()
    for i, (a, b) in enumerate(zip(permuted, whole)):
        assert_bitwise_equal(a, b.index_select(0, perm), f"{name} output {i}, permuted batch")
    for row in (0, 17, 28):
        alone = run_case(case, GPU, inputs.take(torch.tensor([row], device=DEVICE))).row_local()
        for i, (a, b) in enumerate(zip(alone, whole)):
            assert_bitwise_equal(a, b[row:row + 1], f"{name} output {i}, row {row} alone")


# ---- Qwen3-8B sizes (issue 3's ops), against the CPU fast path ---------------------------

def both(fn, *tensors):
    """fn(backend, *tensors) on the CPU and on the GPU's copies."""
    return fn("cpu", *tensors), fn(GPU, *(on_gpu(t) for t in tensors))


def every_value(dtype: torch.dtype) -> torch.Tensor:
    """Every bit pattern of a 16-bit type (NaNs, infinities, subnormals), or
    random fp32 values with the special ones."""
    if dtype == torch.float32:
        special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e-40, -1e-40, 88.7, -104.0])
        return torch.cat([special, 30 * torch.randn(40000, generator=torch.Generator().manual_seed(17))])
    return torch.arange(-32768, 32768, dtype=torch.int16).view(dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("offset", [0, 1], ids=["aligned", "offset"])
def test_silu_swiglu_every_value(dtype, offset):
    """silu and swiglu, forward and backward, of every input value: on the GPU
    16-bit inputs look their silu values up in a table built on the device,
    and aligned arrays go in packs of 16 bytes (the last one partial here);
    arrays starting one element in take the one-element kernels."""
    values = every_value(dtype)
    gen = torch.Generator().manual_seed(18)
    grad, up = (torch.randn(values.numel(), generator=gen).to(dtype) for _ in range(2))
    padded = [torch.cat([t[:1], t, t[:3]]) for t in (grad, values, up)]  # 3 more: a partial pack

    def run(backend, g, x, u):
        g, x, u = (t[offset:] for t in (g, x, u))
        silu, swiglu = gk.get_op("silu", backend), gk.get_op("swiglu", backend)
        return (silu.forward(x), silu.forward_fp32(x), silu.backward(g, x),
                swiglu.forward(x, u), swiglu.forward_fp32(x, u), *swiglu.backward(g, x, u))

    want, got = both(run, *padded)
    assert_same_outputs(got, want, f"silu / swiglu, every {dtype} value")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_silu_swiglu_at_qwen3_intermediate_size(dtype):
    gen = torch.Generator().manual_seed(11)
    grad, gate, up = (torch.randn(512, 12288, generator=gen).to(dtype) for _ in range(3))

    def silu(backend, g, x):
        op = gk.get_op("silu", backend)
        return op.forward(x), op.forward_fp32(x), op.backward(g, x)

    def swiglu(backend, g, x, u):
        op = gk.get_op("swiglu", backend)
        return op.forward(x, u), op.forward_fp32(x, u), *op.backward(g, x, u)

    want, got = both(silu, grad, gate)
    assert_same_outputs(got, want, "silu")
    want, got = both(swiglu, grad, gate, up)
    assert_same_outputs(got, want, "swiglu")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_rope_at_qwen3_head_shape(dtype):
    """[B, S, H, D] with left-padding-style offsets and positions far out."""
    gen = torch.Generator().manual_seed(12)
    x, grad = (torch.randn(2, 300, 32, 128, generator=gen).to(dtype) for _ in range(2))
    positions = torch.stack([torch.arange(300), torch.arange(300) + 40_000 - 7])
    want, got = both(lambda b, t, p: (gk.get_op("rope", b).forward(t, p), gk.get_op("rope", b).forward_fp32(t, p)),
                     x, positions)
    assert_same_outputs(got, want, "rope forward")
    want, got = both(lambda b, g, p: (gk.get_op("rope", b).backward(g, p),), grad, positions)
    assert_same_outputs(got, want, "rope backward")


@pytest.mark.parametrize("heads, head_dim", [(5, 128), (37, 128), (70, 6)])
def test_rope_head_counts_across_load_groups(heads, head_dim):
    """A GPU thread loads 8 of its heads' pairs at a time, 4 heads apart: head
    counts that leave its last group partial, span several groups, or come
    with fewer frequencies than a chunk."""
    gen = torch.Generator().manual_seed(19)
    x, grad = (torch.randn(2, 9, heads, head_dim, generator=gen).to(torch.bfloat16) for _ in range(2))
    positions = torch.randint(0, 1 << 20, (2, 9), generator=gen)

    def run(backend, t, g, p):
        op = gk.get_op("rope", backend)
        return op.forward(t, p), op.forward_fp32(t, p), op.backward(g, p)

    want, got = both(run, x, grad, positions)
    assert_same_outputs(got, want, f"rope, {heads} heads of {head_dim}")


@pytest.mark.skipif(EMULATED, reason="a 151936-block launch is too slow to emulate; the small cases run emulated")
@pytest.mark.slow
def test_embedding_at_qwen3_table_size():
    """The real [151936, 4096] bf16 table: forward gathers, and the weight
    gradient (with repeated ids, so rows sum several tokens in order) equals
    the CPU's, untouched rows +0."""
    gen = torch.Generator().manual_seed(13)
    weight = torch.randn(151936, 4096, generator=gen).to(torch.bfloat16)
    token_ids = torch.cat([torch.randint(151936, (4000,), generator=gen), torch.full((96,), 151935),
                           torch.randint(50, (4096,), generator=gen)])
    grad = torch.randn(token_ids.numel(), 4096, generator=gen).to(torch.bfloat16)
    op = gk.get_op("embedding")
    weight_gpu, ids_gpu = on_gpu(weight), on_gpu(token_ids)
    assert_bitwise_equal(op.forward(ids_gpu, weight_gpu).cpu(), op.forward(token_ids, weight), "forward")
    for fp32 in (False, True):
        want = op.backward(grad, token_ids, weight, fp32=fp32)
        got = op.backward(on_gpu(grad), ids_gpu, weight_gpu, fp32=fp32)
        assert_bitwise_equal(got.cpu(), want, f"dweight fp32={fp32}")


@pytest.mark.parametrize("id_dtype", [torch.int32, torch.int64], ids=dtype_id)
@pytest.mark.parametrize("bad_id", [-1, 1000, 2**31 - 1])
def test_embedding_bad_id_raises_from_the_gpu(bad_id, id_dtype):
    """An out-of-range id is a Python error naming the first bad position,
    never a device fault; the device keeps working afterwards."""
    weight = torch.randn(1000, 64, device=DEVICE)
    token_ids = torch.randint(1000, (3, 50), generator=torch.Generator().manual_seed(14)).to(id_dtype)
    token_ids[1, 7] = bad_id
    token_ids[2, 0] = bad_id
    with pytest.raises(ValueError, match=f"id {bad_id} at flat position 57 is out of range"):
        gk.embedding(on_gpu(token_ids), weight, backend=GPU)
    with pytest.raises(ValueError, match=f"id {bad_id} at flat position 57"):
        gk.get_op("embedding", GPU).backward(torch.randn(3, 50, 64, device=DEVICE), on_gpu(token_ids), weight)
    token_ids[1, 7] = token_ids[2, 0] = 5
    assert_bitwise_equal(gk.embedding(on_gpu(token_ids), weight, backend=GPU).cpu(),
                         gk.embedding(token_ids, weight.cpu(), backend="cpu"))


# ---- Packed attention: tiles of query rows and of keys that straddle sequences -------------

@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
def test_gpu_packed_attention_equals_reference(dtype, causal):
    """Sequences of mixed lengths packed back to back (a prefill, a chunk after
    a cache, a decode step, one longer than a GPU tile of 128 query rows), so
    the GPU's row and key tiles hold rows of several sequences."""
    gen = torch.Generator().manual_seed(15)
    q_lens, k_lens = (5, 70, 1, 150, 33), (5, 130, 40, 150, 33)
    seqs = [make_qkv(1, 4, 2, lq, lk, 24, dtype, gen) for lq, lk in zip(q_lens, k_lens)]
    q, cu_q = pack([s[0] for s in seqs])
    k, cu_k = pack([s[1] for s in seqs])
    v, _ = pack([s[2] for s in seqs])
    g = rand(q.shape, dtype, gen)

    def run(backend, *tensors):
        out, lse = gk.attention_varlen(*tensors[:5], causal=causal, return_lse=True, backend=backend)
        return (out, lse, *gk.attention_varlen_backward(tensors[5], *tensors[:5], causal=causal, backend=backend))

    want = run("reference", q, k, v, cu_q, cu_k, g)
    got = run(GPU, *(on_gpu(t) for t in (q, k, v, cu_q, cu_k, g)))
    assert_same_outputs(got, want, f"packed attention causal={causal}")



@pytest.mark.parametrize("head_dim", [128, 129, 256])
def test_gpu_attention_head_dims_of_both_kernel_builds(head_dim):
    """The attention kernels are built for head_dim <= 128 and for up to 256
    (csrc/cuda/attention.cu, kDims): both builds and the boundary between
    them, causal with a cache offset, forward and backward."""
    gen = torch.Generator().manual_seed(16)
    q, k, v = make_qkv(2, 4, 2, 37, 70, head_dim, torch.float32, gen)
    g = rand(q.shape, torch.float32, gen)

    def run(backend, *tensors):
        out, lse = gk.attention(*tensors[:3], return_lse=True, backend=backend)
        return (out, lse, *gk.get_op("attention", backend).backward(tensors[3], *tensors[:3]))

    assert_same_outputs(run(GPU, *(on_gpu(t) for t in (q, k, v, g))), run("reference", q, k, v, g),
                        f"attention head_dim {head_dim}")
