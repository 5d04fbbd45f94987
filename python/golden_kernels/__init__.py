"""golden_kernels: batch-invariant, device-invariant kernels for Qwen3-style LLMs.

Every op computes in fp32 in one canonical order fixed by the problem shape,
so a row's result never depends on its batch, its neighbours, the thread
count or the device. See docs/contract.md.
"""

from . import _C
from .ops.attention import attention, attention_varlen, attention_varlen_backward
from .ops.convert import cast
from .ops.embedding import embedding
from .ops.kv_cache import KVCache
from .ops.rms_norm import rms_norm
from .ops.rope import rope
from .ops.silu import silu
from .ops.swiglu import swiglu
from .ops.linear import linear, linear_partials, linear_shard_bounds, merge_linear_partials
from .ops.linear_logprob import linear_logprob
from .ops.lm_head import lm_head
from .ops.entropy import entropy
from .ops.log_softmax import log_softmax
from .ops.token_logprob import token_logprob
from .ops.vocab_parallel import (
    entropy_from_partials,
    entropy_partials,
    logprob_from_partials,
    logsumexp_partials,
    merge_entropy_partials,
    merge_logsumexp_partials,
    target_logits,
    vocab_shard_bounds,
)
from ._arrays import huge_page_advice, set_huge_page_advice
from .registry import OPS, available_backends, get_op, list_ops

__version__ = "0.1.0"


def cpu_isa() -> str:
    """The instruction set the 'cpu' backend runs: scalar, avx2 or avx512."""
    return _C.cpu_isa()


def set_cpu_isa(name: str) -> None:
    """Force the 'cpu' backend's instruction set (also: GOLDEN_KERNELS_CPU_ISA)."""
    _C.set_cpu_isa(name)


def num_threads() -> int:
    return _C.num_threads()


def set_num_threads(n: int) -> None:
    """Threads for the 'cpu' backend; 0 restores the default (also: GOLDEN_KERNELS_NUM_THREADS)."""
    _C.set_num_threads(n)


def thread_pool() -> str:
    """Whose threads the 'cpu' backend's next multi-threaded call runs on: 'openmp'
    (the team of the OpenMP runtime PyTorch loaded) or 'golden' (the library's own)."""
    return _C.thread_pool()


def set_thread_pool(name: str) -> None:
    """Choose the 'cpu' backend's threads: 'auto' (the default: 'openmp' when an
    OpenMP runtime is loaded in the process, else 'golden'; 'golden' for a second
    after an OpenMP team member could not get a core in time), 'golden' or
    'openmp'. Sharing PyTorch's OpenMP threads keeps the two libraries from
    competing for cores; results are the same bits on either."""
    _C.set_thread_pool(name)


__all__ = [
    "KVCache",
    "OPS",
    "attention",
    "attention_varlen",
    "attention_varlen_backward",
    "available_backends",
    "cast",
    "cpu_isa",
    "embedding",
    "entropy",
    "get_op",
    "huge_page_advice",
    "linear",
    "linear_logprob",
    "linear_partials",
    "linear_shard_bounds",
    "lm_head",
    "list_ops",
    "log_softmax",
    "logprob_from_partials",
    "logsumexp_partials",
    "entropy_partials",
    "entropy_from_partials",
    "merge_entropy_partials",
    "merge_logsumexp_partials",
    "merge_linear_partials",
    "num_threads",
    "rms_norm",
    "rope",
    "set_cpu_isa",
    "set_huge_page_advice",
    "set_num_threads",
    "set_thread_pool",
    "silu",
    "swiglu",
    "target_logits",
    "thread_pool",
    "token_logprob",
    "vocab_shard_bounds",
]
