"""Contract T8 for token log-probabilities and entropy: the vocabulary split
over 2 and 4 torch.distributed ranks (gloo, one process per rank on this
machine) on the shard bounds of vocab_shard_bounds(); gathering the shard
partials and merging them by the canonical tree gives the single-device bits."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import golden_kernels as gk
from golden_kernels.testing import assert_bitwise_equal, check_sharding_invariance

VOCAB = 151936  # Qwen3: 38 chunks of 4096, the last one ragged
ROWS = 6


def problem():
    """The same logits and targets on every rank (seeded)."""
    gen = torch.Generator().manual_seed(7)
    logits = (torch.randn(ROWS, VOCAB, generator=gen) * 4).to(torch.bfloat16)
    logits[1, 100_000:] = float("-inf")  # a masked tail spanning shards
    ids = torch.randint(0, VOCAB, (ROWS,), generator=gen)
    ids[2] = -100  # ignored
    ids[3] = VOCAB - 1  # in the ragged last chunk
    logits[4, 5] = -0.0  # a -0.0 target logit survives the SUM all-reduce
    ids[4] = 5
    return logits, ids


def sharded_logprob(logits, ids, shard_index: int, shards: int, group) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's part of the vocab-parallel token logprob over `group`."""
    start, end = gk.vocab_shard_bounds(VOCAB, shards)[shard_index]
    shard = logits[:, start:end].contiguous()
    partial = gk.logsumexp_partials(shard)
    gathered = [torch.empty_like(partial) for _ in range(shards)]
    dist.all_gather(gathered, partial, group=group)
    merged = gk.merge_logsumexp_partials(torch.stack(gathered))
    picked = gk.target_logits(shard, ids, vocab_start=start, vocab_size=VOCAB)
    dist.all_reduce(picked, op=dist.ReduceOp.SUM, group=group)
    return gk.logprob_from_partials(picked, merged, ids), merged


def sharded_entropy(logits, shard_index: int, shards: int, group) -> torch.Tensor:
    """This rank's part of the vocab-parallel entropy over `group`."""
    start, end = gk.vocab_shard_bounds(VOCAB, shards)[shard_index]
    partial = gk.entropy_partials(logits[:, start:end].contiguous())
    gathered = [torch.empty_like(partial) for _ in range(shards)]
    dist.all_gather(gathered, partial, group=group)
    return gk.entropy_from_partials(gk.merge_entropy_partials(torch.stack(gathered)))


def check_on_rank(rank: int, world: int, init_file: str) -> None:
    """4 ranks: all four as one 4-way split, then ranks {0, 1} and {2, 3} as
    two 2-way splits (one spawn serves both, keeping the test fast)."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        gk.set_num_threads(1)
        logits, ids = problem()
        want, want_partials = gk.token_logprob(logits, ids), gk.logsumexp_partials(logits)
        want_entropy = gk.entropy(logits)
        pairs = [dist.new_group([0, 1]), dist.new_group([2, 3])]
        for shards, group, index in ((4, None, rank), (2, pairs[rank // 2], rank % 2)):
            logprob, merged = sharded_logprob(logits, ids, index, shards, group)
            assert_bitwise_equal(logprob, want, f"{shards}-way, rank {rank}")
            assert_bitwise_equal(merged, want_partials, f"{shards}-way merged partials, rank {rank}")
            entropy = sharded_entropy(logits, index, shards, group)
            assert_bitwise_equal(entropy, want_entropy, f"{shards}-way entropy, rank {rank}")
    finally:
        dist.destroy_process_group()


def test_vocab_parallel_matches_single_device_T8(tmp_path):
    mp.spawn(check_on_rank, args=(4, str(tmp_path / "init")), nprocs=4, join=True)


def entropy_and_lse_partials(logits):
    return {"entropy": gk.entropy(logits), "(max, sum)": gk.logsumexp_partials(logits)}


def entropy_from_shards(logits, *, num_shards):
    """Merged (max, sum, shifted) shard partials: the entropy, and their (max, sum)."""
    parts = [gk.entropy_partials(logits[:, a:b].contiguous()) for a, b in gk.vocab_shard_bounds(VOCAB, num_shards)]
    merged = gk.merge_entropy_partials(torch.stack(parts))
    return {"entropy": gk.entropy_from_partials(merged), "(max, sum)": merged[..., :2].contiguous()}


def test_entropy_shards_in_process_T8():
    """Any shard count: merged (max, sum, shifted) partials give the entropy's bits,
    and their (max, sum) are those of the logsumexp partials."""
    logits, _ = problem()
    check_sharding_invariance(entropy_and_lse_partials, entropy_from_shards, logits, num_shards=(1, 2, 3, 4, 8, 11))


def test_entropy_partials_bad_input_raises_clearly():
    with pytest.raises(ValueError, match="last dimension of 3"):
        gk.merge_entropy_partials(torch.zeros(2, 3, 2))
    with pytest.raises(ValueError, match="expected \\[shards"):
        gk.merge_entropy_partials(torch.zeros(3))
