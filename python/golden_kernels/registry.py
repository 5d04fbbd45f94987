"""The table of ops and how callers reach them.

One frozen record per op says its name, its op class (which picks its row of
the contract's tolerance table), and the module that implements it. get_op()
binds an op to a backend; an explicit choice that cannot be met raises, never
falls back silently.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any, Callable

from . import _C, _arrays

OP_CLASSES = ("elementwise", "reduction", "attention", "logprob")


@dataclass(frozen=True)
class OpSpec:
    name: str
    op_class: str
    module: str  # golden_kernels.ops.<module> defines forward/forward_fp32/backward
    summary: str


OPS: tuple[OpSpec, ...] = (
    OpSpec("rms_norm", "reduction", "rms_norm", "x / sqrt(mean(x^2) + eps) * weight over the last dim"),
    OpSpec("embedding", "elementwise", "embedding", "weight[token_ids]; deterministic segmented-sum backward"),
    OpSpec("silu", "elementwise", "silu", "x * sigmoid(x)"),
    OpSpec("swiglu", "elementwise", "swiglu", "silu(gate) * up"),
    OpSpec("rope", "elementwise", "rope", "rotate-half rotary embedding with explicit position ids"),
    OpSpec("attention", "attention", "attention", "softmax(q k^T * scale + masks) v, GQA, causal, padded/packed/KV cache"),
    OpSpec("linear", "reduction", "linear", "x @ weight.T (+ bias), weight [out_features, in_features]"),
    OpSpec("lm_head", "reduction", "lm_head", "hidden @ weight.T: logits over the vocabulary"),
    OpSpec("log_softmax", "logprob", "log_softmax", "x - logsumexp(x) over the last dim (the vocabulary)"),
    OpSpec("token_logprob", "logprob", "token_logprob", "log_softmax(logits)[target] per row, fp32, ignore_index"),
    OpSpec("entropy", "logprob", "entropy", "-sum p log p of softmax(logits) per row, fp32"),
    OpSpec("linear_logprob", "logprob", "linear_logprob", "token_logprob(hidden @ weight.T) without the full logits"),
)

_BY_NAME = {spec.name: spec for spec in OPS}


def list_ops() -> list[str]:
    return [spec.name for spec in OPS]


def op_spec(name: str) -> OpSpec:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown op {name!r}; valid ops: {', '.join(list_ops())}") from None


# "emulated": the GPU sources run on the CPU, in testing builds only (docs/gpu.md).
KNOWN_BACKENDS = ("reference", "cpu", "cuda", "hip", "emulated")
ALWAYS_AVAILABLE = ("reference", "cpu")  # built into every module, whatever the hardware


@functools.cache
def _available_backends() -> tuple[str, ...]:
    # Asked once: the GPU count cannot change within a process, and every op
    # call on a GPU array checks its backend.
    return tuple(_C.available_backends())


def available_backends() -> list[str]:
    """Backends usable in this process: reference, cpu, and cuda/hip where a GPU is present."""
    return list(_available_backends())


def check_backend(backend: str) -> str:
    if backend in ALWAYS_AVAILABLE:
        return backend
    if backend not in KNOWN_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid choices: {', '.join(KNOWN_BACKENDS)}")
    available = _available_backends()
    if backend not in available:
        raise ValueError(f"backend {backend!r} is not available here; available: {', '.join(available)}")
    return backend


def resolve_backend(backend: str | None, *arrays: Any) -> str:
    """The backend a call runs on: the explicit choice, else the arrays' device."""
    if not _arrays.same_device(*arrays):
        raise ValueError("all array arguments must be of one framework and on one device")
    if backend is None:
        return check_backend(_arrays.device_backend(arrays[0]))
    return check_backend(backend)


class BoundOp:
    """An op bound to a backend (None: follow the arrays' device)."""

    def __init__(self, spec: OpSpec, backend: str | None):
        self.spec = spec
        self.backend = backend
        module = importlib.import_module(f"{__package__}.ops.{spec.module}")
        self._forward: Callable[..., Any] = module.forward
        self._forward_fp32: Callable[..., Any] = module.forward_fp32
        self._backward: Callable[..., Any] = module.backward

    @property
    def name(self) -> str:
        return self.spec.name

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The op in fp32, rounded once to the input dtype."""
        return self._forward(*args, backend=self.backend, **kwargs)

    def forward_fp32(self, *args: Any, **kwargs: Any) -> Any:
        """The op in fp32, not rounded: the golden value."""
        return self._forward_fp32(*args, backend=self.backend, **kwargs)

    def backward(self, *args: Any, **kwargs: Any) -> Any:
        """Input (and weight) gradients, rounded once to the inputs' dtypes."""
        return self._backward(*args, backend=self.backend, **kwargs)

    def __repr__(self) -> str:
        return f"<golden_kernels op {self.name!r} backend={self.backend or 'auto'}>"


def get_op(name: str, backend: str | None = None) -> BoundOp:
    spec = op_spec(name)
    if backend is not None:
        check_backend(backend)
    return BoundOp(spec, backend)
