"""The contract check behind `python -m golden_kernels`: for every op, on
small real-shaped inputs in fp32, bf16 and fp16,

- Axis-A: one row alone, the batch permuted, and 1 vs many threads give the
  same raw bits (forward and the row-local input gradients);
- Axis-B: the output against the float64 reference of
  golden_kernels.testing.reference: the peer floor, and the max error in ulps
  reported: of the largest |reference| value in the element's row, a normwise
  measure, so that an output that cancels to near zero (a dot product, a
  rotation) is judged against the size of its row rather than its own tiny
  ulp; for ops whose outputs cannot cancel (embedding, silu, swiglu), of each
  element's own reference value;
- Axis-C: every available backend gives the reference backend's bits
  (forward, forward_fp32, backward).

The full property suite (rigorous bounds, padding, packing, sharding, bad
input) is the pytest suite in tests/; this is its quick, installable digest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from . import available_backends, get_op, list_ops, set_num_threads
from .registry import op_spec
from .testing import bits_equal, peer_tolerance, ulp
from .testing import reference as ref

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class Case:
    """How to exercise one op: inputs (batched along dim 0 for the arrays named
    in `batched`), how many leading backward outputs are row-local, and the
    float64 reference of the forward."""

    make: Callable[[torch.Generator, torch.dtype], tuple]
    batched: tuple[int, ...]
    row_local_grads: int
    reference: Callable[..., torch.Tensor] | None
    # backward(grad_out, *backward_inputs(args)); most ops take the forward's arguments.
    backward_inputs: Callable[[tuple], tuple] = lambda args: args
    # Axis-B's ulps: of each element's own value (outputs that cannot cancel),
    # else of its row's largest |value|.
    ulp_per_element: bool = False


def _randn(gen, dtype, *shape, scale=1.0):
    return (torch.randn(*shape, generator=gen) * scale).to(dtype)


def _ids(gen, high, *shape):
    return torch.randint(0, high, shape, generator=gen)


CASES: dict[str, Case] = {
    "rms_norm": Case(lambda g, d: (_randn(g, d, 32, 4096), _randn(g, d, 4096)), (0,), 1,
                     lambda x, w: ref.rms_norm(x, w, 1e-6)),
    "embedding": Case(lambda g, d: (_ids(g, 1000, 32), _randn(g, d, 1000, 256)), (0,), 0,
                      lambda ids, w: w.double()[ids], ulp_per_element=True),
    "silu": Case(lambda g, d: (_randn(g, d, 32, 1024, scale=4),), (0,), 1, ref.silu, ulp_per_element=True),
    "swiglu": Case(lambda g, d: (_randn(g, d, 32, 1024, scale=4), _randn(g, d, 32, 1024)), (0, 1), 2, ref.swiglu,
                   ulp_per_element=True),
    "rope": Case(lambda g, d: (_randn(g, d, 32, 8, 128), _ids(g, 40000, 32)), (0, 1), 1,
                 lambda x, positions: ref.rope_at_fp32_angles(x, positions, _qwen3_inv_freq(x.shape[-1])),
                 backward_inputs=lambda args: args[1:]),
    "linear": Case(lambda g, d: (_randn(g, d, 32, 512), _randn(g, d, 256, 512, scale=0.05)), (0,), 1, ref.linear),
    "lm_head": Case(lambda g, d: (_randn(g, d, 16, 512), _randn(g, d, 2000, 512, scale=0.05)), (0,), 1, ref.linear),
    "log_softmax": Case(lambda g, d: (_randn(g, d, 16, 5000, scale=3),), (0,), 1, ref.log_softmax),
    "token_logprob": Case(lambda g, d: (_randn(g, d, 16, 5000, scale=3), _ids(g, 5000, 16)), (0, 1), 1,
                          ref.token_logprob),
    "entropy": Case(lambda g, d: (_randn(g, d, 16, 5000, scale=3),), (0,), 1, ref.entropy),
    "attention": Case(lambda g, d: (_randn(g, d, 8, 8, 70, 32), _randn(g, d, 8, 2, 70, 32), _randn(g, d, 8, 2, 70, 32)),
                      (0, 1, 2), 3, ref.attention),
}


def _qwen3_inv_freq(head_dim: int, theta: float = 1e6) -> torch.Tensor:
    """HF's inv_freq with each step rounded to fp32 (what the kernel computes)."""
    exponents = (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim).float().double()
    powers = (theta ** exponents).float().double()
    return (1.0 / powers).float()


def _as_tuple(result: Any) -> tuple:
    """Backward results as a tuple, without the None of an absent bias."""
    items = result if isinstance(result, tuple) else (result,)
    return tuple(item for item in items if item is not None)


def _take(args: tuple, batched: tuple[int, ...], index) -> tuple:
    return tuple(a[index] if i in batched else a for i, a in enumerate(args))


def _grad_like(out: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(out.shape, generator=gen).to(out.dtype)


def check_invariance(name: str, case: Case, dtype: torch.dtype, gen: torch.Generator) -> tuple[bool, str]:
    op = get_op(name, "cpu")
    args = case.make(gen, dtype)
    out = op.forward(*args)
    grad = _grad_like(out, gen)
    grads = _as_tuple(op.backward(grad, *case.backward_inputs(args)))[: case.row_local_grads]
    row = slice(3, 4)
    alone = op.forward(*_take(args, case.batched, row))
    if not bits_equal(alone, out[row]):
        return False, "T1 forward differs"
    perm = torch.randperm(out.shape[0], generator=gen)
    if not bits_equal(op.forward(*_take(args, case.batched, perm)), out[perm]):
        return False, "T2 forward differs"
    alone_args = case.backward_inputs(_take(args, case.batched, row))
    alone_grads = _as_tuple(op.backward(grad[row], *alone_args))[: case.row_local_grads]
    if not all(bits_equal(a, g[row]) for a, g in zip(alone_grads, grads)):
        return False, "T1 backward differs"
    set_num_threads(1)
    try:
        single = op.forward(*args)
    finally:
        set_num_threads(0)
    if not bits_equal(single, out):
        return False, "T7 threads differ"
    return True, "T1 T2 T7" + (" fwd+bwd" if case.row_local_grads else " fwd")


def check_accuracy(name: str, case: Case, dtype: torch.dtype, gen: torch.Generator) -> tuple[bool, str]:
    if case.reference is None:
        return True, "see tests/ (no quick reference)"
    args = case.make(gen, dtype)
    op_class = op_spec(name).op_class
    op = get_op(name, "cpu")
    # The logprob row of the peer table is for fp32 outputs.
    out = op.forward_fp32(*args) if op_class == "logprob" else op.forward(*args)
    expected = case.reference(*args)
    error = (out.double() - expected).abs()
    finite = expected.isfinite()
    atol, rtol = peer_tolerance(op_class, dtype)
    used = (error / (atol + rtol * expected.abs()))[finite].max()
    dtype_name = str(out.dtype).removeprefix("torch.")
    if case.ulp_per_element:
        spacing, of = ulp(expected, out.dtype), dtype_name
    else:
        row_scale = expected.where(finite, 0.0).abs().amax(dim=-1, keepdim=True)
        spacing, of = ulp(row_scale, out.dtype).expand_as(expected), f"{dtype_name} at the row's largest |value|"
    max_ulp = float((error / spacing)[finite].max())
    detail = f"max {max_ulp:.2f} ulp of {of}, {float(used):.1%} of peer floor"
    return bool(used <= 1), detail


def check_backends(name: str, case: Case, dtype: torch.dtype, gen: torch.Generator) -> tuple[bool, str]:
    args = case.make(gen, dtype)
    golden = get_op(name, "reference")
    out = golden.forward(*args)
    grad = _grad_like(out, gen)
    expected = [out, golden.forward_fp32(*args), *_as_tuple(golden.backward(grad, *case.backward_inputs(args)))]
    others = [b for b in available_backends() if b != "reference"]
    for backend in others:
        op = get_op(name, backend)
        device = "cuda" if backend in ("cuda", "hip") else "cpu"
        moved = tuple(a.to(device) for a in args)
        got = [op.forward(*moved), op.forward_fp32(*moved),
               *_as_tuple(op.backward(grad.to(device), *case.backward_inputs(moved)))]
        if not all(bits_equal(a, b) for a, b in zip(got, expected)):
            return False, f"{backend} differs from reference"
    return True, " == ".join(["reference", *others])


CHECKS = (("Axis-A", check_invariance), ("Axis-B", check_accuracy), ("Axis-C", check_backends))


def planned_checks() -> list[tuple[str, str, Callable[[], tuple[bool, str]]]]:
    plan = []
    for name in list_ops():
        case = CASES.get(name)
        if case is None:
            continue
        for dtype in DTYPES:
            dtype_name = str(dtype).removeprefix("torch.")
            for axis, check in CHECKS:
                gen = torch.Generator().manual_seed(hash((name, axis, dtype_name)) & 0xFFFF)
                plan.append((name, f"{axis} {dtype_name}",
                             lambda check=check, name=name, case=case, dtype=dtype, gen=gen: check(name, case, dtype, gen)))
    return plan
