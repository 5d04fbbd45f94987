"""One table of every op, shared by the hardening tests (fuzzing, bad input,
non-finite policy, concurrency, resources): how to build a batch of inputs
for it and how to call its forward and backward. Adding an op is one entry;
tests/test_bad_input.py fails while an op of the registry has none."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

import golden_kernels as gk

IGNORE_INDEX = -100

# Values that break naive kernels: signed zeros, denormals of every dtype,
# infinities, NaN with and without a payload, the edges of each dtype's range.
SPECIAL_VALUES = (0.0, -0.0, 1e-45, -1e-40, 1e-39, 6e-8, 9.2e-41, float("inf"), float("-inf"), float("nan"),
                  3.0e38, -3.4e38, 65504.0, -70000.0, 1e-7, 88.7, -103.0)
NAN_WITH_PAYLOAD = torch.tensor([0x7FC01234, 0xFFA00001 - 2**32], dtype=torch.int32).view(torch.float32)


@dataclass
class Inputs:
    """Named arrays of one call; `batched` names have the row dimension first."""

    tensors: dict[str, torch.Tensor]
    batched: tuple[str, ...]
    options: dict[str, object] = field(default_factory=dict)

    def take(self, index: torch.Tensor) -> Inputs:
        """The same call on the rows `index` (in that order)."""
        picked = {k: (v.index_select(0, index) if k in self.batched else v) for k, v in self.tensors.items()}
        return Inputs(picked, self.batched, self.options)

    def to(self, device: str) -> Inputs:
        return Inputs({k: v.to(device) for k, v in self.tensors.items()}, self.batched, self.options)

    def float_batched(self) -> list[str]:
        return [k for k in self.batched if self.tensors[k].is_floating_point()]


def fill(shape, dtype, gen: torch.Generator, kind: str = "normal") -> torch.Tensor:
    """Random values of a kind: normal, special (SPECIAL_VALUES sprinkled in), huge."""
    values = torch.randn(shape, generator=gen)
    if kind == "huge":
        values = values * 1e30
    if kind == "special" and values.numel():
        specials = torch.cat([torch.tensor(SPECIAL_VALUES, dtype=torch.float32), NAN_WITH_PAYLOAD])
        mask = torch.rand(shape, generator=gen) < 0.2
        pick = torch.randint(len(specials), shape, generator=gen)
        values = torch.where(mask, specials[pick], values)
    return values.to(dtype)


def ids(shape, vocab: int, gen: torch.Generator, ignore_share: float = 0.0) -> torch.Tensor:
    """int64 ids in [0, vocab), a share of them IGNORE_INDEX."""
    out = torch.randint(max(vocab, 1), shape, generator=gen)
    if ignore_share:
        out = torch.where(torch.rand(shape, generator=gen) < ignore_share, torch.full_like(out, IGNORE_INDEX), out)
    return out


Build = Callable[[int, int, int, torch.dtype, torch.Generator, str], Inputs]
Call = Callable[[gk.registry.BoundOp, Inputs], tuple]


@dataclass(frozen=True)
class OpCase:
    """How to exercise one registry op.

    build(rows, n, aux, dtype, gen, kind): inputs with `rows` rows, last dim n
    (head_dim for rope), aux a second small size (out_features, vocab).
    forward / backward: the outputs of one call (forward outputs are all
    row-local; the first `row_local_grads` backward outputs are).
    """

    name: str
    build: Build
    forward: Call
    backward: Call | None
    row_local_grads: int = 0
    max_n: int = 1 << 18  # keeps a fuzz example fast
    n_rule: Callable[[int], int] = staticmethod(lambda n: n)  # the nearest legal n


def _rms_norm(rows, n, aux, dtype, gen, kind):
    t = {"x": fill((rows, n), dtype, gen, kind), "weight": fill((n,), dtype, gen, kind),
         "grad_out": fill((rows, n), dtype, gen, kind)}
    return Inputs(t, ("x", "grad_out"))


def _embedding(rows, n, aux, dtype, gen, kind):
    t = {"token_ids": ids((rows,), aux, gen), "weight": fill((aux, n), dtype, gen, kind),
         "grad_out": fill((rows, n), dtype, gen, kind)}
    return Inputs(t, ("token_ids", "grad_out"))


def _silu(rows, n, aux, dtype, gen, kind):
    return Inputs({"x": fill((rows, n), dtype, gen, kind), "grad_out": fill((rows, n), dtype, gen, kind)},
                  ("x", "grad_out"))


def _swiglu(rows, n, aux, dtype, gen, kind):
    t = {"gate": fill((rows, n), dtype, gen, kind), "up": fill((rows, n), dtype, gen, kind),
         "grad_out": fill((rows, n), dtype, gen, kind)}
    return Inputs(t, ("gate", "up", "grad_out"))


def _rope(rows, n, aux, dtype, gen, kind):
    heads = 1 + aux % 3
    positions = torch.randint(-5, 1 << 20, (rows,), generator=gen)
    t = {"x": fill((rows, heads, n), dtype, gen, kind), "positions": positions,
         "grad_out": fill((rows, heads, n), dtype, gen, kind)}
    return Inputs(t, ("x", "positions", "grad_out"))


def _linear(rows, n, aux, dtype, gen, kind, bias=True):
    t = {"x": fill((rows, n), dtype, gen, kind), "weight": fill((aux, n), dtype, gen, kind),
         "grad_out": fill((rows, aux), dtype, gen, kind)}
    if bias:
        t["bias"] = fill((aux,), dtype, gen, kind)
    return Inputs(t, ("x", "grad_out"))


def _lm_head(rows, n, aux, dtype, gen, kind):
    return _linear(rows, n, aux, dtype, gen, kind, bias=False)


def _log_softmax(rows, n, aux, dtype, gen, kind):
    t = {"logits": fill((rows, n), dtype, gen, kind), "grad_out": fill((rows, n), dtype, gen, kind)}
    return Inputs(t, ("logits", "grad_out"))


def _entropy(rows, n, aux, dtype, gen, kind):
    t = {"logits": fill((rows, n), dtype, gen, kind), "grad_out": fill((rows,), torch.float32, gen, kind)}
    return Inputs(t, ("logits", "grad_out"))


def _token_logprob(rows, n, aux, dtype, gen, kind):
    t = _entropy(rows, n, aux, dtype, gen, kind).tensors
    t["target_ids"] = ids((rows,), n, gen, ignore_share=0.2)
    return Inputs(t, ("logits", "target_ids", "grad_out"))


def _linear_logprob(rows, n, aux, dtype, gen, kind):
    t = {"hidden": fill((rows, n), dtype, gen, kind), "weight": fill((aux, n), dtype, gen, kind),
         "target_ids": ids((rows,), aux, gen, ignore_share=0.2), "grad_out": fill((rows,), torch.float32, gen, kind)}
    return Inputs(t, ("hidden", "target_ids", "grad_out"))


def _attention(rows, n, aux, dtype, gen, kind):
    seq, kv_seq = 1 + aux % 9, 1 + aux % 9 + aux % 4  # kv_seq >= seq: a prefill chunk after a cache
    t = {"q": fill((rows, 2, seq, n), dtype, gen, kind), "k": fill((rows, 1, kv_seq, n), dtype, gen, kind),
         "v": fill((rows, 1, kv_seq, n), dtype, gen, kind), "grad_out": fill((rows, 2, seq, n), dtype, gen, kind)}
    return Inputs(t, ("q", "k", "v", "grad_out"))


def _even(n: int) -> int:
    return max(2, n + n % 2)


def _t(i: Inputs, *names):
    return [i.tensors[k] for k in names]


CASES: dict[str, OpCase] = {c.name: c for c in (
    OpCase("rms_norm", _rms_norm,
           lambda op, i: (op.forward(*_t(i, "x", "weight")), op.forward(*_t(i, "x", "weight"), rounding="hf"),
                          op.forward_fp32(*_t(i, "x", "weight"))),
           lambda op, i: op.backward(*_t(i, "grad_out", "x", "weight")), row_local_grads=1),
    OpCase("embedding", _embedding,
           lambda op, i: (op.forward(*_t(i, "token_ids", "weight")), op.forward_fp32(*_t(i, "token_ids", "weight"))),
           lambda op, i: (op.backward(*_t(i, "grad_out", "token_ids", "weight")),)),
    OpCase("silu", _silu,
           lambda op, i: (op.forward(*_t(i, "x")), op.forward_fp32(*_t(i, "x"))),
           lambda op, i: (op.backward(*_t(i, "grad_out", "x")),), row_local_grads=1),
    OpCase("swiglu", _swiglu,
           lambda op, i: (op.forward(*_t(i, "gate", "up")), op.forward_fp32(*_t(i, "gate", "up"))),
           lambda op, i: op.backward(*_t(i, "grad_out", "gate", "up")), row_local_grads=2),
    OpCase("rope", _rope,
           lambda op, i: (op.forward(*_t(i, "x", "positions")), op.forward_fp32(*_t(i, "x", "positions"))),
           lambda op, i: (op.backward(*_t(i, "grad_out", "positions")),), row_local_grads=1,
           n_rule=_even),
    OpCase("linear", _linear,
           lambda op, i: (op.forward(*_t(i, "x", "weight", "bias")), op.forward_fp32(*_t(i, "x", "weight", "bias"))),
           lambda op, i: op.backward(*_t(i, "grad_out", "x", "weight", "bias")), row_local_grads=1, max_n=8193),
    OpCase("lm_head", _lm_head,
           lambda op, i: (op.forward(*_t(i, "x", "weight")), op.forward_fp32(*_t(i, "x", "weight"))),
           lambda op, i: op.backward(*_t(i, "grad_out", "x", "weight")), row_local_grads=1, max_n=8193),
    OpCase("log_softmax", _log_softmax,
           lambda op, i: (op.forward(*_t(i, "logits")), op.forward_fp32(*_t(i, "logits"))),
           lambda op, i: (op.backward(*_t(i, "grad_out", "logits")),), row_local_grads=1),
    OpCase("token_logprob", _token_logprob,
           lambda op, i: (op.forward(*_t(i, "logits", "target_ids")),),
           lambda op, i: (op.backward(*_t(i, "grad_out", "logits", "target_ids")),), row_local_grads=1),
    OpCase("entropy", _entropy,
           lambda op, i: (op.forward(*_t(i, "logits")),),
           lambda op, i: (op.backward(*_t(i, "grad_out", "logits")),), row_local_grads=1),
    OpCase("attention", _attention,
           lambda op, i: (op.forward(*_t(i, "q", "k", "v")), op.forward(*_t(i, "q", "k", "v"), causal=False),
                          *op.forward_fp32(*_t(i, "q", "k", "v"), return_lse=True)),
           lambda op, i: op.backward(*_t(i, "grad_out", "q", "k", "v")), row_local_grads=3, max_n=256,
           n_rule=lambda n: min(max(n, 1), 256)),  # head_dim in [1, ATTENTION_MAX_HEAD_DIM]
    OpCase("linear_logprob", _linear_logprob,
           lambda op, i: op.forward(*_t(i, "hidden", "weight", "target_ids"), return_entropy=True, return_lse=True,
                                    return_logits=True, return_entropy_partial=True),
           lambda op, i: op.backward(*_t(i, "grad_out", "hidden", "weight", "target_ids")), row_local_grads=1,
           max_n=8193),
)}


@dataclass(frozen=True)
class Outputs:
    forward: tuple
    backward: tuple
    row_local_grads: int

    def all(self) -> tuple:
        return self.forward + self.backward

    def row_local(self) -> tuple:
        """The outputs whose dimension 0 is the row dimension."""
        return self.forward + self.backward[:self.row_local_grads]


def run_case(case: OpCase, backend: str, inputs: Inputs, with_backward: bool = True) -> Outputs:
    """Every output of the op on `backend`."""
    op = gk.get_op(case.name, backend)
    forward = tuple(case.forward(op, inputs))
    backward = tuple(case.backward(op, inputs)) if with_backward and case.backward is not None else ()
    return Outputs(forward, backward, case.row_local_grads)
