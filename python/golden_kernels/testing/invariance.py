"""The contract's invariance transforms T1-T8 (docs/contract.md) as checks on
any callable: each runs the callable on the original and the transformed input
and compares the rows that should not change on raw bits, raising
AssertionError with a readable diff when they differ.

Conventions: fn takes tensors (and anything else) positionally and returns a
tensor, a tuple/list of tensors, or a dict of them (failures name its keys).
`batched` names the positional arguments that carry rows in dim 0; every
output carries the same rows in dim 0 (wrap fn to return only row-local
outputs: a weight gradient sums over rows)."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

import torch

from .bits import assert_bitwise_equal

Fn = Callable[..., Any]


def _outputs(result: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(result, dict):
        return tuple(result.values())
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


def _output_names(*results: Any) -> list[str] | None:
    return next((list(r) for r in results if isinstance(r, dict)), None)


def _assert_outputs_equal(got: Any, want: Any, what: str) -> None:
    names = _output_names(got, want)
    got, want = _outputs(got), _outputs(want)
    assert len(got) == len(want), f"{what}: {len(got)} outputs vs {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        label = names[i] if names else f"output {i}"
        assert_bitwise_equal(g, w, what if len(got) == 1 else f"{what}, {label}")


def _select(result: Any, index: Any, dim: int = 0) -> Any:
    """Each output indexed along dim (a slice or an index tensor); a dict keeps its names."""
    if isinstance(index, slice):
        selected = tuple(out[(slice(None),) * dim + (index,)] for out in _outputs(result))
    else:
        selected = tuple(out.index_select(dim, index.to(out.device)) for out in _outputs(result))
    return dict(zip(result, selected)) if isinstance(result, dict) else selected


def _map_batched(args: Sequence[Any], batched: Iterable[int], transform: Callable[[torch.Tensor], Any]) -> list:
    """args with `transform` applied to the batched ones, made dense (row-major) as
    a caller would pass them: strided views are not what is being tested."""
    batched = set(batched)
    return [transform(a).contiguous() if i in batched else a for i, a in enumerate(args)]


def _rows(args: Sequence[Any], batched: Sequence[int]) -> int:
    sizes = {int(args[i].shape[0]) for i in batched}
    if len(sizes) != 1:
        raise ValueError(f"the batched arguments {tuple(batched)} must share dim 0, got sizes {sorted(sizes)}")
    return sizes.pop()


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- T1, T2, T3: batch size, position in batch, neighbour content -------------------------

def check_batch_invariance(fn: Fn, *args: Any, batched: Sequence[int] = (0,), rows: Sequence[int] | None = None,
                           ) -> None:
    """T1: row r computed alone (a batch of 1) and in the first half of the batch
    gives the bits it has in the full batch. rows: default first, middle, last."""
    n = _rows(args, batched)
    full = fn(*args)
    for r in rows if rows is not None else sorted({0, n // 2, n - 1}):
        alone = fn(*_map_batched(args, batched, lambda a: a[r:r + 1]))
        _assert_outputs_equal(alone, _select(full, slice(r, r + 1)), f"T1 batch size: row {r} alone vs in {n} rows")
    half = math.ceil(n / 2)
    first_half = fn(*_map_batched(args, batched, lambda a: a[:half]))
    _assert_outputs_equal(first_half, _select(full, slice(0, half)), f"T1 batch size: {half} rows vs {n} rows")


def check_position_invariance(fn: Fn, *args: Any, batched: Sequence[int] = (0,), seed: int = 0) -> None:
    """T2: the batch reversed and randomly permuted; each row keeps its bits."""
    n = _rows(args, batched)
    full = fn(*args)
    orders = {"reversed": torch.arange(n - 1, -1, -1), "permuted": torch.randperm(n, generator=_generator(seed))}
    for name, order in orders.items():
        moved = fn(*_map_batched(args, batched, lambda a: a.index_select(0, order.to(a.device))))
        _assert_outputs_equal(moved, _select(full, order), f"T2 position in batch: batch {name}")


def _fresh_like(a: torch.Tensor, keep: int, gen: torch.Generator) -> torch.Tensor:
    """a with every row but `keep` replaced: floats by new random values of a's
    scale, integers (ids, positions) by a's own values shuffled, so they stay valid."""
    if a.is_floating_point():
        scale = float(a.float().std()) if a.numel() > 1 else 1.0
        fresh = (torch.randn(a.shape, generator=gen) * (scale if math.isfinite(scale) and scale > 0 else 1.0))
        fresh = fresh.to(device=a.device, dtype=a.dtype)
    else:
        flat = a.reshape(-1)
        fresh = flat[torch.randperm(flat.numel(), generator=gen).to(a.device)].reshape(a.shape)
    fresh[keep] = a[keep]
    return fresh


def _with_row_kept(replacement: torch.Tensor, original: torch.Tensor, keep: int) -> torch.Tensor:
    if replacement.shape != original.shape or replacement.dtype != original.dtype:
        raise ValueError(f"neighbours: expected shape {tuple(original.shape)} and dtype {original.dtype}, "
                         f"got {tuple(replacement.shape)} and {replacement.dtype}")
    replaced = replacement.to(original.device).clone()
    replaced[keep] = original[keep]
    return replaced


def check_neighbour_invariance(fn: Fn, *args: Any, batched: Sequence[int] = (0,), row: int = 0, seed: int = 0,
                               neighbours: Sequence[torch.Tensor | None] | None = None) -> None:
    """T3: every other row replaced by different data; `row` keeps its bits.
    neighbours: the replacement data, one tensor (the argument's shape and dtype;
    its own `row` is ignored) or None per batched argument, in `batched`'s
    order, for neighbours a generic draw would not produce (NaN or -inf rows,
    extreme scales); None: fresh data as described in _fresh_like."""
    n = _rows(args, batched)
    if not 0 <= row < n:
        raise ValueError(f"row must be in [0, {n}), got {row}")
    if neighbours is not None and len(neighbours) != len(batched):
        raise ValueError(f"neighbours: expected one entry per batched argument ({len(batched)}), got {len(neighbours)}")
    gen = _generator(seed)
    given = dict(zip(batched, neighbours)) if neighbours is not None else {}

    def replace(index: int, a: torch.Tensor) -> torch.Tensor:
        if given.get(index) is not None:
            return _with_row_kept(given[index], a, row)
        return _fresh_like(a, row, gen)

    changed_args = [replace(i, a).contiguous() if i in batched else a for i, a in enumerate(args)]
    full = fn(*args)
    changed = fn(*changed_args)
    _assert_outputs_equal(_select(changed, slice(row, row + 1)), _select(full, slice(row, row + 1)),
                          f"T3 neighbour content: row {row} with its {n - 1} neighbours replaced")


# ---- T4, T5, T6: padding, chunking / decode, packing --------------------------------------

def _pad(a: torch.Tensor, dim: int, left: int, right: int, pad_value: float, int_pad_value: int) -> torch.Tensor:
    value = pad_value if a.is_floating_point() else int_pad_value
    shape = list(a.shape)
    pieces = []
    for length in (left, right):
        shape[dim] = length
        pieces.append(torch.full(shape, value, dtype=a.dtype, device=a.device))
    return torch.cat((pieces[0], a, pieces[1]), dim=dim)


def _mask(batch: int, length: int, left: int, right: int, device: torch.device) -> torch.Tensor:
    mask = torch.zeros(batch, left + length + right, dtype=torch.long, device=device)
    mask[:, left:left + length] = 1
    return mask


def check_padding_invariance(fn: Fn, *args: Any, padded: Sequence[int] = (0,), dim: int = 1,
                             pads: Sequence[tuple[int, int]] = ((0, 3), (5, 0), (2, 7)),
                             pad_value: float = float("nan"), int_pad_value: int = 0,
                             mask_kwarg: str | None = None) -> None:
    """T4: the arguments in `padded` padded along `dim` by (left, right) elements
    of garbage (pad_value, NaN by default; int_pad_value, 0 by default, for
    integer arguments such as ids, positions or ignored targets); the outputs
    over the real elements (same dim) keep their bits.
    With mask_kwarg, fn also receives a [batch, length] 0/1 long mask by that
    keyword (all ones for the unpadded call), as an attention mask."""
    length = int(args[padded[0]].shape[dim])
    batch = int(args[padded[0]].shape[0])
    device = args[padded[0]].device

    def call(call_args, left, right):
        extra = {mask_kwarg: _mask(batch, length, left, right, device)} if mask_kwarg else {}
        return fn(*call_args, **extra)

    full = call(args, 0, 0)
    for left, right in pads:
        padded_args = _map_batched(args, padded, lambda a: _pad(a, dim, left, right, pad_value, int_pad_value))
        got = _select(call(padded_args, left, right), slice(left, left + length), dim)
        _assert_outputs_equal(got, full, f"T4 padding: {left} left, {right} right along dim {dim}")


def _chunks(length: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, length)) for start in range(0, length, size)]


def check_chunk_invariance(fn: Fn, *args: Any, chunked: Sequence[int] = (0,), dim: int = 1,
                           chunk_sizes: Sequence[int] = (1, 3, 8), init_state: Callable[[], Any] | None = None,
                           ) -> None:
    """T5: the arguments in `chunked` split along `dim` into chunks of each size
    (size 1 is token-by-token decode), outputs concatenated along dim, equal the
    one-call bits. Stateless fn by default; with init_state, fn(*args, state)
    returns (outputs, new_state) and the state (a KV cache) carries between chunks."""
    length = int(args[chunked[0]].shape[dim])

    def run(call_args, state):
        return fn(*call_args, state) if init_state else (fn(*call_args), None)

    full, _ = run(args, init_state() if init_state else None)
    for size in chunk_sizes:
        state = init_state() if init_state else None
        pieces = []
        for part in _chunks(length, size):
            index = (slice(None),) * dim + (part,)
            out, state = run(_map_batched(args, chunked, lambda a: a[index]), state)
            pieces.append(_outputs(out))
        joined = tuple(torch.cat(outs, dim=dim) for outs in zip(*pieces))
        _assert_outputs_equal(joined, full, f"T5 chunking: chunks of {size} along dim {dim} vs one call")


def check_packing_invariance(fn: Fn, sequences: Sequence[Sequence[Any]], *, shared: Sequence[Any] = (),
                             cu_seqlens_kwarg: str | None = None) -> None:
    """T6: sequences packed end to end along dim 0 (varlen) give, over each
    sequence's tokens, the bits of that sequence computed alone. sequences:
    one tuple of arguments per sequence (tokens in dim 0), followed in each call
    by the `shared` arguments (weights). With cu_seqlens_kwarg, fn also receives
    the int32 cumulative sequence lengths [0, len0, len0+len1, ...] by that keyword."""
    lengths = [int(seq[0].shape[0]) for seq in sequences]
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    device = sequences[0][0].device

    def call(call_args, cu):
        extra = {cu_seqlens_kwarg: torch.tensor(cu, dtype=torch.int32, device=device)} if cu_seqlens_kwarg else {}
        return fn(*call_args, *shared, **extra)

    packed = call([torch.cat(parts, dim=0) for parts in zip(*sequences)], offsets)
    for i, seq in enumerate(sequences):
        alone = call(list(seq), [0, lengths[i]])
        _assert_outputs_equal(_select(packed, slice(offsets[i], offsets[i + 1])), alone,
                              f"T6 packing: sequence {i} (tokens {offsets[i]}:{offsets[i + 1]} of {offsets[-1]}) "
                              "packed vs alone")


# ---- T7, T8: threads, sharding ------------------------------------------------------------

def set_threads_everywhere(n: int) -> None:
    """Sets both golden_kernels' and PyTorch's CPU thread counts (0: golden's default)."""
    from .. import set_num_threads

    set_num_threads(n)
    if n > 0:
        torch.set_num_threads(n)


def check_thread_invariance(fn: Fn, *args: Any, thread_counts: Sequence[int] = (1, 2, 3, 4),
                            set_threads: Callable[[int], None] | None = None) -> None:
    """T7: the outputs with each CPU thread count equal those with the first.
    set_threads: default sets golden_kernels' and PyTorch's thread counts; both
    are restored afterwards. (On a GPU, vary the launch shape inside fn instead.)"""
    from .. import num_threads, set_num_threads

    set_threads = set_threads or set_threads_everywhere
    saved = (num_threads(), torch.get_num_threads())
    try:
        set_threads(thread_counts[0])
        first = fn(*args)
        for n in thread_counts[1:]:
            set_threads(n)
            _assert_outputs_equal(fn(*args), first, f"T7 threads: {n} threads vs {thread_counts[0]}")
    finally:
        set_num_threads(saved[0])
        torch.set_num_threads(saved[1])


def check_sharding_invariance(fn: Fn, sharded_fn: Fn, *args: Any, num_shards: Sequence[int] = (2, 4, 8)) -> None:
    """T8: sharded_fn(*args, num_shards=s), which splits a reduction over s shards
    and merges their partials, gives fn(*args)'s bits for every s."""
    full = fn(*args)
    for shards in num_shards:
        _assert_outputs_equal(sharded_fn(*args, num_shards=shards), full, f"T8 sharding: {shards} shards vs one")


# ---- A digest: which row-wise invariances a callable keeps --------------------------------

ROW_CHECKS: dict[str, Callable[..., None]] = {
    "T1 batch size": check_batch_invariance,
    "T2 position in batch": check_position_invariance,
    "T3 neighbour content": check_neighbour_invariance,
}


def invariance_report(fn: Fn, *args: Any, batched: Sequence[int] = (0,), threads: bool = True) -> dict[str, str]:
    """Runs T1, T2, T3 (and T7 with threads=True) on fn and returns, per
    transform, "kept" or the first line of the failure."""
    report = {}
    checks = [(name, lambda check=check: check(fn, *args, batched=batched)) for name, check in ROW_CHECKS.items()]
    if threads:
        checks.append(("T7 threads", lambda: check_thread_invariance(fn, *args)))
    for name, run in checks:
        try:
            run()
            report[name] = "kept"
        except AssertionError as error:
            report[name] = "BROKEN: " + str(error).splitlines()[0]
    return report
