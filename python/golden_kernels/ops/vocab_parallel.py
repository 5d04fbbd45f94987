"""Vocabulary parallelism (contract T8) for token log-probabilities.

Each rank holds the logits of one vocabulary shard. A shard must be a whole
subtree of the canonical chunk tree (csrc/core/ops/logprob.h): take the bounds
from vocab_shard_bounds(). Then, with any collective library:

    partial = logsumexp_partials(shard_logits)                    # [..., 2] fp32
    gathered = all_gather(partial) stacked in shard order         # [shards, ..., 2]
    merged = merge_logsumexp_partials(gathered)                   # [..., 2]
    picked = target_logits(shard_logits, ids, vocab_start=start, vocab_size=V)
    picked = all_reduce(picked, SUM)   # non-owners give -0.0, so the sum is exact
    logprob = logprob_from_partials(picked, merged, ids)

gives the single-device token_logprob bits exactly. The entropy goes the same
way with (max, sum, shifted) partials:

    partial = entropy_partials(shard_logits)                      # [..., 3] fp32
    merged = merge_entropy_partials(all_gather(partial) stacked)  # [..., 3]
    entropy = entropy_from_partials(merged)                       # [...], single-device bits
"""

from __future__ import annotations

from typing import Any

from .. import _C, _arrays
from ..registry import resolve_backend
from .log_softmax import check_logits
from .token_logprob import DEFAULT_IGNORE_INDEX, check_target_ids, leading_shape

VOCAB_CHUNK = _C.LOGPROB_VOCAB_CHUNK


def _split_chunks(chunks: int, shards: int) -> list[int]:
    """Chunk counts of `shards` consecutive subtrees of the balanced tree over
    `chunks` (the tree splits n into ceil(n/2) | floor(n/2))."""
    if shards == 1:
        return [chunks]
    return _split_chunks((chunks + 1) // 2, (shards + 1) // 2) + _split_chunks(chunks // 2, shards // 2)


def vocab_shard_bounds(vocab_size: int, num_shards: int) -> list[tuple[int, int]]:
    """[start, end) of each shard: whole subtrees of the canonical chunk tree, so
    merging the shard partials by the balanced tree over shards reproduces the
    single-device reduction bit for bit. Needs 1 <= num_shards <= number of chunks."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    chunks = -(-vocab_size // VOCAB_CHUNK)
    if not 1 <= num_shards <= chunks:
        raise ValueError(
            f"num_shards must be in [1, {chunks}] (the vocabulary has {chunks} chunks of {VOCAB_CHUNK}), "
            f"got {num_shards}"
        )
    bounds, start = [], 0
    for count in _split_chunks(chunks, num_shards):
        end = min(start + count * VOCAB_CHUNK, vocab_size)
        bounds.append((start, end))
        start = end
    return bounds


def logsumexp_partials(logits: Any, *, backend: str | None = None) -> Any:
    """The canonical (max, sum of exp(x - max)) of each row of this shard, float32 [..., 2]."""
    check_logits(logits)
    backend = resolve_backend(backend, logits)
    out = _arrays.empty(logits, leading_shape(logits) + (2,), "float32")
    _C.lse_partials(backend, _arrays.stream(logits), _arrays.capsule(logits), _arrays.capsule(out))
    return out


def merge_logsumexp_partials(partials: Any, *, backend: str | None = None) -> Any:
    """Shard partials [shards, ..., 2] (shards in vocabulary order) merged by the
    balanced tree over shards: float32 [..., 2]."""
    _arrays.check_array(partials, "partials")
    backend = resolve_backend(backend, partials)
    if len(partials.shape) < 2:
        raise ValueError(f"partials: expected [shards, ..., 2], got shape {_arrays.shape(partials)}")
    out = _arrays.empty(partials, _arrays.shape(partials)[1:], "float32")
    _C.merge_lse_partials(backend, _arrays.stream(partials), _arrays.capsule(partials), _arrays.capsule(out))
    return out


def target_logits(logits: Any, target_ids: Any, *, vocab_start: int, vocab_size: int,
                  ignore_index: int = DEFAULT_IGNORE_INDEX, backend: str | None = None) -> Any:
    """float32 logit of each target held by this shard, -0.0 elsewhere (the
    additive identity, so a SUM all-reduce returns the owner's value exactly).
    Ids outside [0, vocab_size) other than ignore_index raise ValueError."""
    check_target_ids(logits, target_ids)
    backend = resolve_backend(backend, logits, target_ids)
    out = _arrays.empty(logits, leading_shape(logits), "float32")
    _C.target_logits(
        backend, _arrays.stream(logits), _arrays.capsule(logits), _arrays.capsule(target_ids),
        _arrays.capsule(out), int(vocab_start), int(vocab_size), int(ignore_index),
    )
    return out


def logprob_from_partials(target_logits: Any, partials: Any, target_ids: Any, *,
                          ignore_index: int = DEFAULT_IGNORE_INDEX, backend: str | None = None) -> Any:
    """float32 log p(target) = target_logit - (max + log(sum)); 0 for ignored targets."""
    for x, name in ((target_logits, "target_logits"), (partials, "partials"), (target_ids, "target_ids")):
        _arrays.check_array(x, name)
    backend = resolve_backend(backend, target_logits, partials, target_ids)
    out = _arrays.empty(target_logits, _arrays.shape(target_logits), "float32")
    _C.logprob_from_partials(
        backend, _arrays.stream(target_logits), _arrays.capsule(target_logits), _arrays.capsule(partials),
        _arrays.capsule(target_ids), _arrays.capsule(out), int(ignore_index),
    )
    return out


def entropy_partials(logits: Any, *, backend: str | None = None) -> Any:
    """The canonical (max, sum of exp(x - max), sum of exp(x - max) (x - max)) of
    each row of this shard, float32 [..., 3]."""
    check_logits(logits)
    backend = resolve_backend(backend, logits)
    out = _arrays.empty(logits, leading_shape(logits) + (3,), "float32")
    _C.entropy_partials(backend, _arrays.stream(logits), _arrays.capsule(logits), _arrays.capsule(out))
    return out


def _merge_entropy(partials: Any, backend: str | None, want_merged: bool) -> Any:
    _arrays.check_array(partials, "partials")
    backend = resolve_backend(backend, partials)
    if len(partials.shape) < 2:
        raise ValueError(f"partials: expected [shards, ..., 3], got shape {_arrays.shape(partials)}")
    merged_shape = _arrays.shape(partials)[1:]
    merged = _arrays.empty(partials, merged_shape, "float32") if want_merged else None
    entropy = None if want_merged else _arrays.empty(partials, merged_shape[:-1], "float32")
    _C.merge_entropy_partials(backend, _arrays.stream(partials), _arrays.capsule(partials),
                              None if merged is None else _arrays.capsule(merged),
                              None if entropy is None else _arrays.capsule(entropy))
    return merged if want_merged else entropy


def merge_entropy_partials(partials: Any, *, backend: str | None = None) -> Any:
    """Shard entropy partials [shards, ..., 3] (vocabulary order) merged by the
    balanced tree over shards: float32 [..., 3]."""
    return _merge_entropy(partials, backend, want_merged=True)


def entropy_from_partials(merged: Any, *, backend: str | None = None) -> Any:
    """float32 entropy log(sum) - shifted / sum of merged partials [..., 3]."""
    _arrays.check_array(merged, "merged")
    return _merge_entropy(merged.reshape((1,) + tuple(merged.shape)), backend, want_merged=False)
