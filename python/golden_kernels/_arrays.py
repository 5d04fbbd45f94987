"""Framework adapter: the few things the ops need to know about an array.

Arrays reach the extension as DLPack capsules; outputs are allocated here by
the input's own framework (PyTorch or NumPy), on the input's device, so the
framework's allocator and stream are used. PyTorch is imported only if the
caller passes torch tensors. Every op calls these helpers on every call, so
they avoid what costs microseconds: torch.device objects, dtype strings and
Tensor.__dlpack__'s Python-level protocol handling.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

from . import _C

FLOAT_DTYPES = ("float32", "bfloat16", "float16")

# Fresh CPU outputs at least this large are offered to _C.advise_huge_pages
# (csrc/cpu/pages.h); smaller ones skip the call.
HUGE_PAGE_MIN_BYTES = _C.HUGE_PAGE_ADVICE_MIN_BYTES


def _is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _is_numpy(x: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(x, numpy.ndarray)


def check_array(x: Any, name: str) -> None:
    if not (_is_torch(x) or _is_numpy(x)):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


_TORCH_DTYPE_NAMES: dict[Any, str] = {}


def dtype_name(x: Any) -> str:
    if _is_torch(x):
        name = _TORCH_DTYPE_NAMES.get(x.dtype)
        if name is None:
            name = _TORCH_DTYPE_NAMES[x.dtype] = str(x.dtype).removeprefix("torch.")
        return name
    return str(x.dtype)


def shape(x: Any) -> tuple[int, ...]:
    """x's shape as a plain tuple (torch.Size and NumPy shapes hold Python ints)."""
    return tuple(x.shape)


def device_backend(x: Any) -> str:
    """The backend that runs on the array's device: cpu, cuda or hip."""
    if _is_numpy(x) or x.is_cpu:
        return "cpu"
    if x.is_cuda:
        import torch

        return "hip" if torch.version.hip else "cuda"
    raise ValueError(f"unsupported device {x.device}")


def same_device(*arrays: Any) -> bool:
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(arrays[0], torch.Tensor):
        return all(_is_numpy(a) for a in arrays)
    for a in arrays:  # the common case, all on the CPU, without building torch.device objects
        if not (isinstance(a, torch.Tensor) and a.is_cpu):
            break
    else:
        return True
    device = arrays[0].device
    return all(isinstance(a, torch.Tensor) and a.device == device for a in arrays)


def check_writable(x: Any, name: str) -> None:
    if _is_numpy(x) and not x.flags.writeable:
        raise ValueError(f"{name}: the array is read-only")


def output(like: Any, shape: Sequence[int], dtype: str, out: Any = None) -> Any:
    """The array an op writes: a fresh empty(like, shape, dtype), or the
    caller's `out` checked to be an array and writable. Its shape, dtype
    (the op's or float32), density, device and overlap with the inputs are
    checked by the binding (csrc/bindings) and resolve_backend, once for every op."""
    if out is None:
        return empty(like, shape, dtype)
    check_array(out, "out")
    check_writable(out, "out")
    return out


def gradient_output(like: Any, shape: Sequence[int], dtype: str, fp32: bool, out: Any, name: str) -> Any:
    """output() for a backward's gradient: with fp32=True the gradient is
    float32, so a caller's `out` must be float32 too (without it, the binding
    accepts the input's dtype or float32 and out's dtype decides)."""
    out = output(like, shape, dtype, out)
    if fp32 and dtype_name(out) != "float32":
        raise TypeError(f"{name}: fp32=True writes float32, got {dtype_name(out)}")
    return out


def capsule(x: Any) -> Any:
    """A DLPack capsule viewing x (no copy), except for a read-only NumPy
    input: NumPy refuses to export one (DLPack 0.x has no read-only flag), and
    inputs are never written, so it crosses as a copy. Outputs are checked
    writable (check_writable) before they get here.

    For torch tensors, torch.utils.dlpack.to_dlpack exports the tensor as it
    is: unlike Tensor.__dlpack__ it needs no detach() for tensors that require
    grad (the kernels only read inputs and write fresh outputs) and does no
    stream handshake (the kernels run on the current stream, see stream()).
    Of __dlpack__'s checks, the current CUDA device is kept (the GPU launchers
    do not switch devices); a negative-bit view (the .imag of a conjugate),
    which neither export resolves, is refused rather than read with the wrong sign."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(x, torch.Tensor):
        return (x if x.flags.writeable else x.copy(order="K")).__dlpack__()
    if x.is_cuda:
        _require_current_cuda_device(x, torch)
    if x.is_neg():
        raise ValueError("cannot read a tensor with the negative bit set; call .resolve_neg() first")
    try:
        return torch.utils.dlpack.to_dlpack(x)
    except (BufferError, RuntimeError) as error:  # sparse, meta, ...: no strided memory to view
        raise ValueError(f"cannot view a {x.layout} tensor on {x.device} as an array: {error}") from None


def _require_current_cuda_device(x: Any, torch: Any) -> None:
    if x.get_device() != torch.cuda.current_device():
        raise ValueError(f"tensor on {x.device} but the current CUDA device is {torch.cuda.current_device()}; "
                         f"call torch.cuda.set_device() first")


def stream(x: Any) -> int:
    """The current GPU stream of x's device (0 for CPU arrays)."""
    if _is_torch(x) and x.is_cuda:
        import torch

        return int(torch.cuda.current_stream(x.device).cuda_stream)
    return 0


def huge_page_advice() -> bool:
    """Whether fresh CPU outputs and scratch buffers of 8 MiB or more are advised
    transparent huge pages."""
    return _C.huge_page_advice()


def set_huge_page_advice(enabled: bool) -> None:
    """Turn huge-page advice for fresh large CPU outputs and scratch buffers on
    (the default) or off (also: GOLDEN_KERNELS_HUGE_PAGES=0). It saves the page
    faults of writing fresh memory; on a machine short of free 2 MiB pages the
    kernel may spend time compacting memory for them instead. Results are the
    same bits."""
    _C.set_huge_page_advice(bool(enabled))


def _advise_fresh_torch(out: Any) -> None:
    """Huge-page advice for a fresh, still untouched, large CPU torch tensor."""
    if out.is_cpu:
        nbytes = out.numel() * out.element_size()
        if nbytes >= HUGE_PAGE_MIN_BYTES:
            _C.advise_huge_pages(out.data_ptr(), nbytes)


def torch_zeros(shape: Sequence[int], dtype: Any, device: Any = None) -> Any:
    """torch.zeros, with a large CPU tensor advised huge pages before the fill
    faults it in (one fault per 2 MiB instead of per 4 KiB)."""
    import torch

    out = torch.empty(tuple(shape), dtype=dtype, device=device)
    _advise_fresh_torch(out)
    return out.zero_()


def empty(like: Any, shape: Sequence[int], dtype: str, *, huge_pages: bool = True) -> Any:
    """An uninitialised row-major array of like's framework and device. A large
    CPU one is advised huge pages before the op's first write faults it in,
    unless huge_pages is False (ops that compute long per output byte, where
    the faults cost little and the huge pages measured slower)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(like, torch.Tensor):
        torch_dtype = getattr(torch, dtype)
        if torch_dtype == like.dtype and like.shape == tuple(shape):  # the common case, half the cost
            out = torch.empty_like(like, layout=torch.strided, memory_format=torch.contiguous_format)
        else:
            out = torch.empty(tuple(shape), dtype=torch_dtype, device=like.device)
        if huge_pages:
            _advise_fresh_torch(out)
        return out
    import numpy

    if dtype == "bfloat16":
        raise TypeError("numpy has no bfloat16; pass torch tensors for bfloat16")
    out = numpy.empty(tuple(shape), dtype=dtype)
    if huge_pages and out.nbytes >= HUGE_PAGE_MIN_BYTES:
        _C.advise_huge_pages(out.ctypes.data, out.nbytes)
    return out
