"""Framework adapter: the few things the ops need to know about an array.

Arrays reach the extension as DLPack capsules; outputs are allocated here by
the input's own framework (PyTorch or NumPy), on the input's device, so the
framework's allocator and stream are used. PyTorch is imported only if the
caller passes torch tensors.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

FLOAT_DTYPES = ("float32", "bfloat16", "float16")


def _is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _is_numpy(x: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(x, numpy.ndarray)


def check_array(x: Any, name: str) -> None:
    if not (_is_torch(x) or _is_numpy(x)):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def dtype_name(x: Any) -> str:
    if _is_torch(x):
        return str(x.dtype).removeprefix("torch.")
    return str(x.dtype)


def shape(x: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in x.shape)


def device_backend(x: Any) -> str:
    """The backend that runs on the array's device: cpu, cuda or hip."""
    if _is_numpy(x) or x.device.type == "cpu":
        return "cpu"
    if x.device.type == "cuda":
        import torch

        return "hip" if torch.version.hip else "cuda"
    raise ValueError(f"unsupported device {x.device}")


def same_device(*arrays: Any) -> bool:
    first = arrays[0]
    if _is_numpy(first):
        return all(_is_numpy(a) for a in arrays)
    return all(_is_torch(a) and a.device == first.device for a in arrays)


def check_writable(x: Any, name: str) -> None:
    if _is_numpy(x) and not x.flags.writeable:
        raise ValueError(f"{name}: the array is read-only")


def capsule(x: Any) -> Any:
    """A DLPack capsule viewing x (no copy), except for a read-only NumPy
    input: NumPy refuses to export one (DLPack 0.x has no read-only flag), and
    inputs are never written, so it crosses as a copy. Outputs are checked
    writable (check_writable) before they get here."""
    try:
        if _is_torch(x):
            return x.detach().__dlpack__()
        if not x.flags.writeable:
            x = x.copy(order="K")
        return x.__dlpack__()
    except BufferError as error:  # sparse or otherwise unexportable arrays
        raise TypeError(f"cannot pass this array to golden_kernels: {error}") from None


def stream(x: Any) -> int:
    """The current GPU stream of x's device (0 for CPU arrays)."""
    if _is_torch(x) and x.device.type == "cuda":
        import torch

        return int(torch.cuda.current_stream(x.device).cuda_stream)
    return 0


def empty(like: Any, shape: Sequence[int], dtype: str) -> Any:
    """An uninitialised array of like's framework and device."""
    if _is_torch(like):
        import torch

        return torch.empty(tuple(shape), dtype=getattr(torch, dtype), device=like.device)
    import numpy

    if dtype == "bfloat16":
        raise TypeError("numpy has no bfloat16; pass torch tensors for bfloat16")
    return numpy.empty(tuple(shape), dtype=dtype)
