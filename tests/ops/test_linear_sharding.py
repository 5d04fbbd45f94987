"""Contract T8 for linear: a contraction split over shards on tree nodes
(linear_shard_bounds), with the shard partials gathered and merged by the
balanced tree, gives the single-device bits. Checked in one process and for
real with torch.distributed (gloo, 2 and 4 processes)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import golden_kernels as gk
from golden_kernels.testing import assert_bitwise_equal, bits_equal

from ..conftest import dtype_id

K_BLOCK = 256


def make_problem(rows, out_features, in_features, dtype, seed=7):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, in_features, generator=gen).to(dtype)
    w = (torch.randn(out_features, in_features, generator=gen) * in_features**-0.5).to(dtype)
    b = torch.randn(out_features, generator=gen).to(dtype)
    g = torch.randn(rows, out_features, generator=gen).to(dtype)
    return x, w, b, g


def row_parallel(x, w, b, shards, dtype):
    """Each shard's partial over its contraction range, merged: the gather step of
    a row-parallel linear, done in one process."""
    in_features = x.shape[-1]
    partials = [
        gk.linear_partials(x[:, lo:hi].contiguous(), w[:, lo:hi].contiguous(), shard=s, num_shards=shards, in_features=in_features)
        for s, (lo, hi) in enumerate(gk.linear_shard_bounds(in_features, shards))
    ]
    return gk.merge_linear_partials(partials, b, dtype=dtype)


# ---- The rule, in one process ---------------------------------------------------------

def test_shard_bounds_follow_the_tree():
    assert gk.linear_shard_bounds(4096, 4) == [(0, 1024), (1024, 2048), (2048, 3072), (3072, 4096)]
    assert gk.linear_shard_bounds(12288, 8) == [(i * 1536, (i + 1) * 1536) for i in range(8)]
    # 43 blocks (Qwen2-7B's 11008): 22 | 21, then 11 | 11 | 11 | 10.
    assert gk.linear_shard_bounds(11008, 2) == [(0, 22 * K_BLOCK), (22 * K_BLOCK, 11008)]
    assert [hi - lo for lo, hi in gk.linear_shard_bounds(11008, 4)] == [11 * K_BLOCK] * 3 + [10 * K_BLOCK]
    # Three shards: shards and blocks split 2 | 1 and ceil | floor together.
    assert gk.linear_shard_bounds(1000, 3) == [(0, 256), (256, 512), (512, 1000)]
    with pytest.raises(ValueError, match="number of K-blocks"):
        gk.linear_shard_bounds(1000, 5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("in_features, shards", [(4096, 2), (4096, 4), (4096, 8), (11008, 2), (11008, 4),
                                                  (1000, 3), (3000, 5)])
def test_row_parallel_merge_equals_one_device(dtype, in_features, shards):
    x, w, b, _ = make_problem(9, 40, in_features, dtype)
    assert_bitwise_equal(row_parallel(x, w, b, shards, dtype), gk.linear(x, w, b), f"{shards} shards")


def test_a_split_off_the_tree_changes_bits():
    """Why the rule matters: cutting 16 blocks into 4 | 12 is not a node split of
    the tree ((8 | 8) at the root), and the merged bits differ."""
    x, w, _, _ = make_problem(16, 64, 4096, torch.float32)
    halves = [gk.get_op("linear").forward_fp32(x[:, lo:hi].contiguous(), w[:, lo:hi].contiguous()) for lo, hi in ((0, 1024), (1024, 4096))]
    assert not bits_equal(gk.merge_linear_partials(halves), gk.linear(x, w))


def test_merge_takes_a_stacked_array_and_rounds_once():
    x, w, b, _ = make_problem(5, 24, 2048, torch.bfloat16)
    partials = [gk.linear_partials(x[:, lo:hi].contiguous(), w[:, lo:hi].contiguous(), shard=s, num_shards=2, in_features=2048)
                for s, (lo, hi) in enumerate(gk.linear_shard_bounds(2048, 2))]
    stacked = gk.merge_linear_partials(torch.stack(partials), b, dtype=torch.bfloat16)
    assert_bitwise_equal(stacked, gk.merge_linear_partials(partials, b, dtype=torch.bfloat16), "stacked")
    fp32 = gk.merge_linear_partials(partials, b)
    assert_bitwise_equal(fp32, gk.get_op("linear").forward_fp32(x, w, b), "fp32 merge")
    assert_bitwise_equal(stacked, fp32.to(torch.bfloat16), "rounded once")


def test_bad_sharding_input_raises_clearly():
    x, w, _, _ = make_problem(2, 8, 1024, torch.float32)
    with pytest.raises(ValueError, match=r"must hold contraction indices \[512, 1024\)"):
        gk.linear_partials(x[:, :500], w[:, :500], shard=1, num_shards=2, in_features=1024)
    with pytest.raises(ValueError, match="shard must be in"):
        gk.linear_partials(x, w, shard=2, num_shards=2, in_features=1024)
    with pytest.raises(TypeError, match="partials: expected float32"):
        gk.merge_linear_partials([x.to(torch.bfloat16)])
    with pytest.raises(ValueError, match="bias: expected shape"):
        gk.merge_linear_partials([torch.zeros(2, 8)], torch.zeros(7))
    with pytest.raises(TypeError, match="expected the dtype of bias"):
        gk.merge_linear_partials([torch.zeros(2, 8)], torch.zeros(8, dtype=torch.bfloat16), dtype=torch.float16)


# ---- For real: torch.distributed with gloo ----------------------------------------------

def _gather(tensor, world):
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.contiguous())
    return parts


def _tensor_parallel_rank(rank, world, init_file):
    """One rank: row-parallel (K split), column-parallel (N split) and data-parallel
    (rows split) linear, forward and backward, each checked against one device."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    gk.set_num_threads(1)
    torch.set_num_threads(1)
    try:
        dtype = torch.bfloat16
        rows, out_features, in_features = 24, 1024, 4096
        x, w, b, g = make_problem(rows, out_features, in_features, dtype)
        y = gk.linear(x, w, b)
        dx, dw, db = gk.get_op("linear").backward(g, x, w, b)

        # Row-parallel: this rank owns x[:, K_r], w[:, K_r]; partials gathered and merged.
        lo, hi = gk.linear_shard_bounds(in_features, world)[rank]
        partial = gk.linear_partials(x[:, lo:hi].contiguous(), w[:, lo:hi].contiguous(), shard=rank, num_shards=world, in_features=in_features)
        merged = gk.merge_linear_partials(_gather(partial, world), b, dtype=dtype)
        assert_bitwise_equal(merged, y, f"rank {rank}: row-parallel forward")
        local_dx, local_dw = gk.get_op("linear").backward(g, x[:, lo:hi].contiguous(), w[:, lo:hi].contiguous())
        assert_bitwise_equal(local_dx, dx[:, lo:hi], f"rank {rank}: row-parallel dx")
        assert_bitwise_equal(local_dw, dw[:, lo:hi], f"rank {rank}: row-parallel dweight")

        # Column-parallel: this rank owns w[N_r]. Outputs are gathered as they are;
        # dx contracts over N, so its fp32 partials are merged.
        n_lo, n_hi = gk.linear_shard_bounds(out_features, world)[rank]
        y_cols = torch.cat(_gather(gk.linear(x, w[n_lo:n_hi], b[n_lo:n_hi]), world), dim=-1)
        assert_bitwise_equal(y_cols, y, f"rank {rank}: column-parallel forward")
        part_dx, part_dw, part_db = gk.get_op("linear").backward(g[:, n_lo:n_hi].contiguous(), x, w[n_lo:n_hi], b[n_lo:n_hi],
                                                                 fp32=True)
        assert_bitwise_equal(gk.merge_linear_partials(_gather(part_dx, world), dtype=dtype), dx,
                             f"rank {rank}: column-parallel dx")
        assert_bitwise_equal(part_dw.to(dtype), dw[n_lo:n_hi], f"rank {rank}: column-parallel dweight")
        assert_bitwise_equal(part_db.to(dtype), db[n_lo:n_hi], f"rank {rank}: column-parallel dbias")

        # Data-parallel weight gradients: rows split on tree nodes of the row blocks.
        big_rows = 2048
        xb, wb, bb, gb = make_problem(big_rows, 16, 32, dtype, seed=11)
        _, full_dw, full_db = gk.get_op("linear").backward(gb, xb, wb, bb)
        r_lo, r_hi = gk.linear_shard_bounds(big_rows, world)[rank]
        _, part_dw, part_db = gk.get_op("linear").backward(gb[r_lo:r_hi], xb[r_lo:r_hi], wb, bb, fp32=True)
        assert_bitwise_equal(gk.merge_linear_partials(_gather(part_dw, world), dtype=dtype), full_dw,
                             f"rank {rank}: data-parallel dweight")
        assert_bitwise_equal(gk.merge_linear_partials(_gather(part_db, world), dtype=dtype), full_db,
                             f"rank {rank}: data-parallel dbias")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 4])
def test_tensor_parallel_with_torch_distributed(world, tmp_path):
    # torch.multiprocessing's launcher with fork: the ranks inherit the imported
    # modules (spawn would re-import torch in each rank, ~100x slower to start).
    # The extension's thread pool is fork-safe and each rank runs single-threaded.
    mp.start_processes(_tensor_parallel_rank, args=(world, str(tmp_path / "rendezvous")), nprocs=world,
                       join=True, start_method="fork")
