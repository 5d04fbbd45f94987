"""GPU backend (CUDA, or HIP on ROCm) against the CPU reference, bit for bit
(Axis-C), plus GPU launch-shape / batch invariance (Axis-A, T1-T3, T7).
Without a GPU visible to torch (or the GPU-emulating build, tests/gpu_target.py)
every test here is skipped, never passed."""

from __future__ import annotations

import pytest
import torch

import golden_kernels as gk
from golden_kernels import _C
from golden_kernels.testing import assert_bitwise_equal

from .conftest import FLOAT_DTYPES, dtype_id
from .gpu_target import AVAILABLE, DEVICE, EMULATED, GPU, SKIP_REASON
from .gpu_target import on_gpu as to_gpu

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)]

EPS = 1e-6
# Qwen3 hidden, a large batch, QK-norm heads, and odd widths around the
# 32-lane width and the 4096-element block.
SHAPES = [(1, 4096), pytest.param((8192, 4096), marks=pytest.mark.slow), (3, 5, 7, 128), (4, 1), (4, 31), (4, 33),
          (5, 4097), (3, 10000)]
# Backward: row counts around the 64-row weight-gradient block.
GRAD_SHAPES = SHAPES + [(0, 64), (1, 33), (63, 128), (65, 128), (130, 4097)]


def shape_id(shape) -> str:
    return "x".join(str(d) for d in shape)


def on_gpu(*tensors):
    return tuple(to_gpu(t) for t in tensors)


def random(shape, dtype, gen, scale=1.0):
    return (torch.randn(shape, generator=gen) * scale).to(dtype)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(20261123)


def test_gpu_backend_is_available():
    """A GPU that torch can see must be usable by the module: no silent CPU-only build."""
    assert GPU in gk.available_backends(), (
        f"torch sees a GPU but golden_kernels offers {gk.available_backends()}: "
        f"rebuild with the {GPU} backend (compiled: {_C.compiled_backends()})"
    )


# ---- convert -----------------------------------------------------------------------------

def special_values(dtype):
    """Every bit pattern of a 16-bit type; for fp32, random patterns plus the edges
    of both rounding rules (ties, overflow to inf, subnormals, NaN payloads)."""
    if dtype != torch.float32:
        return torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    patterns = torch.randint(-(2**31), 2**31, (1 << 20,), generator=torch.Generator().manual_seed(7),
                             dtype=torch.int64).to(torch.int32)
    edges = torch.tensor([0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00001, 0xFF812345,
                          0x7F800001, 0x477FEFFF, 0x477FF000, 0x38800000, 0x387FFFFF, 0x33800000,
                          0x33000000, 0x33000001, 0x3F808000, 0x3F818000, 0x00000001, 0x007FFFFF],
                         dtype=torch.int64).to(torch.int32)
    return torch.cat([patterns, edges]).view(torch.float32)


@pytest.mark.parametrize("src_dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("dst_dtype", FLOAT_DTYPES, ids=dtype_id)
def test_convert_matches_reference(src_dtype, dst_dtype):
    src = special_values(src_dtype)
    dst_name = dtype_id(dst_dtype)
    expected = gk.cast(src, dst_name, backend="reference")
    actual = gk.cast(to_gpu(src), dst_name, backend=GPU)
    assert actual.device.type == DEVICE
    assert_bitwise_equal(actual, expected, f"convert {dtype_id(src_dtype)} -> {dst_name}")


@pytest.mark.parametrize("count", [0, 1, 255, 257, pytest.param((1 << 24) + 3, marks=pytest.mark.slow)])
def test_convert_sizes(count, gen):
    src = torch.randn(count, generator=gen)
    expected = gk.cast(src, "bfloat16", backend="reference")
    assert_bitwise_equal(gk.cast(to_gpu(src), "bfloat16", backend=GPU), expected, f"convert {count} elements")


# ---- rms_norm forward --------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_rms_norm_forward_matches_reference(shape, dtype, gen):
    x, weight = random(shape, dtype, gen), random(shape[-1:], dtype, gen, 0.5) + 1
    ref, gpu = gk.get_op("rms_norm", backend="reference"), gk.get_op("rms_norm", backend=GPU)
    x_gpu, weight_gpu = on_gpu(x, weight)
    for rounding in ("once", "hf"):
        assert_bitwise_equal(gpu.forward(x_gpu, weight_gpu, EPS, rounding=rounding),
                             ref.forward(x, weight, EPS, rounding=rounding), f"forward rounding={rounding}")
    assert_bitwise_equal(gpu.forward_fp32(x_gpu, weight_gpu, EPS), ref.forward_fp32(x, weight, EPS),
                         "forward_fp32")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
def test_rms_norm_forward_extreme_scales(dtype, gen):
    """Tiny (subnormal squares: no flush to zero) and huge inputs, zero rows."""
    scales = {torch.float32: (1e-30, 1e30), torch.bfloat16: (1e-30, 1e30), torch.float16: (1e-4, 1e4)}[dtype]
    x = torch.cat([random((2, 333), dtype, gen, s) for s in scales] + [torch.zeros(1, 333, dtype=dtype)])
    weight = random((333,), dtype, gen)
    ref, gpu = gk.get_op("rms_norm", backend="reference"), gk.get_op("rms_norm", backend=GPU)
    assert_bitwise_equal(gpu.forward_fp32(*on_gpu(x, weight), EPS), ref.forward_fp32(x, weight, EPS))


# ---- rms_norm backward -------------------------------------------------------------------

@pytest.mark.parametrize("fp32", [False, True], ids=["grad-dtype", "grad-fp32"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", GRAD_SHAPES, ids=shape_id)
def test_rms_norm_backward_matches_reference(shape, dtype, fp32, gen):
    x, grad = random(shape, dtype, gen), random(shape, dtype, gen)
    weight = random(shape[-1:], dtype, gen, 0.5) + 1
    ref, gpu = gk.get_op("rms_norm", backend="reference"), gk.get_op("rms_norm", backend=GPU)
    dx, dweight = gpu.backward(*on_gpu(grad, x, weight), EPS, fp32=fp32)
    dx_ref, dweight_ref = ref.backward(grad, x, weight, EPS, fp32=fp32)
    assert_bitwise_equal(dx, dx_ref, "dx")
    assert_bitwise_equal(dweight, dweight_ref, "dweight")


# ---- invariance on the GPU: grid size, position, neighbours, stream, run to run -----------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("cols", [33, 128, 4096, 10000])
def test_rms_norm_row_independent_of_batch(cols, dtype, gen):
    """A row alone (grid of one block), inside a batch, permuted, and beside
    other data gives the same bits: the launch shape never changes a row."""
    x, weight = on_gpu(random((67, cols), dtype, gen), random((cols,), dtype, gen))
    gpu = gk.get_op("rms_norm", backend=GPU)
    full = gpu.forward(x, weight, EPS)
    for row in (0, 3, 66):
        assert_bitwise_equal(gpu.forward(x[row:row + 1].contiguous(), weight, EPS), full[row:row + 1], f"row {row}")
    perm = to_gpu(torch.randperm(67, generator=gen))
    assert_bitwise_equal(gpu.forward(x[perm].contiguous(), weight, EPS), full[perm], "permuted batch")
    neighbours = torch.randn(67, cols, device=DEVICE).to(dtype)
    neighbours[5] = x[5]
    assert_bitwise_equal(gpu.forward(neighbours, weight, EPS)[5], full[5], "other neighbours")

    grad = torch.randn(67, cols, device=DEVICE).to(dtype)
    dx_full, _ = gpu.backward(grad, x, weight, EPS)
    dx_row, _ = gpu.backward(grad[9:10].contiguous(), x[9:10].contiguous(), weight, EPS)
    assert_bitwise_equal(dx_row, dx_full[9:10], "backward dx of one row")


@pytest.mark.skipif(EMULATED, reason="streams are the GPU's own: the emulated backend runs on CPU arrays")
def test_rms_norm_stream_and_repeat(gen):
    """Same bits on a side stream as on the default stream, and run to run
    (the weight gradient sums 8192 rows with no atomics)."""
    x, grad = on_gpu(random((8192, 4096), torch.bfloat16, gen), random((8192, 4096), torch.bfloat16, gen))
    weight = random((4096,), torch.bfloat16, gen).cuda()
    gpu = gk.get_op("rms_norm", backend=GPU)
    y, (dx, dweight) = gpu.forward(x, weight, EPS), gpu.backward(grad, x, weight, EPS)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        y_side, (dx_side, dweight_side) = gpu.forward(x, weight, EPS), gpu.backward(grad, x, weight, EPS)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    for actual, expected, what in ((y_side, y, "y"), (dx_side, dx, "dx"), (dweight_side, dweight, "dweight")):
        assert_bitwise_equal(actual, expected, f"{what} on a side stream")
    for _ in range(3):
        assert_bitwise_equal(gpu.backward(grad, x, weight, EPS)[1], dweight, "dweight run to run")


def test_gpu_does_not_mutate_inputs(gen):
    x, grad, weight = on_gpu(random((70, 130), torch.float16, gen), random((70, 130), torch.float16, gen),
                             random((130,), torch.float16, gen))
    before = [t.clone() for t in (x, grad, weight)]
    gpu = gk.get_op("rms_norm", backend=GPU)
    gpu.forward(x, weight, EPS)
    gpu.backward(grad, x, weight, EPS)
    for t, saved in zip((x, grad, weight), before):
        assert_bitwise_equal(t, saved, "input after the call")
