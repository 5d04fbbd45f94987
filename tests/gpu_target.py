"""Where the GPU tests run: on a GPU that torch sees (backend cuda or hip, CUDA
arrays), or, in a module built with GOLDEN_GPU_EMULATION, on the GPU sources
emulated on the CPU (backend "emulated", CPU arrays; scripts/emulate-gpu.sh).
Otherwise the GPU tests are skipped, never passed."""

from __future__ import annotations

import torch

import golden_kernels as gk

EMULATED = "emulated" in gk.available_backends()
AVAILABLE = EMULATED or torch.cuda.is_available()
SKIP_REASON = ("no GPU: torch.cuda.is_available() is False and the module is not the GPU-emulating build, "
               "so GPU == CPU checks cannot run")
GPU = "emulated" if EMULATED else ("hip" if torch.version.hip else "cuda")
DEVICE = "cpu" if EMULATED else "cuda"


def on_gpu(t: torch.Tensor) -> torch.Tensor:
    """t where the GPU backend reads its arrays."""
    return t.to(DEVICE)
