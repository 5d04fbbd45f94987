// Attention on the GPU (CUDA, and HIP through the same source). Forward and
// dq: a thread block per (tile of kTileRows consecutive query rows, query
// head), one thread per row running the core's block functions over its
// visible keys in rank order; each key block is staged once in shared memory
// for the whole tile (rows that see fewer keys of it ignore the rest: the
// core's functions use only a row's first `count` keys, so the bits are the
// per-row loop's). dk/dv: a thread block per (tile of keys, kv head), one
// thread per valid key summing over the group's heads and query rows in
// order, as the CPU does, each query row staged once for the tile. Exact,
// not yet tuned (no tensor cores). All arithmetic is in
// csrc/core/ops/attention.h.
#include "../core/ops/attention.h"
#include "gpu_runtime.h"
#include "kernels.h"

namespace golden::gpu {
namespace {

constexpr std::int64_t kBlock = kAttentionKeyBlock;
constexpr std::int64_t kMaxD = kAttentionMaxHeadDim;

template <class T>
__device__ const T* input_row(const AttentionInput& t, std::int64_t b, std::int64_t token, std::int64_t head) {
  return static_cast<const T*>(t.data) + b * t.seq_stride + token * t.token_stride + head * t.head_stride;
}

template <class T>
__device__ T* output_row(const AttentionOutput& t, std::int64_t b, std::int64_t token, std::int64_t head) {
  return static_cast<T*>(t.data) + b * t.seq_stride + token * t.token_stride + head * t.head_stride;
}

// The sequence that owns global row `row` of `per_seq` rows each (padded) or
// of the packed offsets `cu` (binary search).
__device__ std::int64_t owner(const std::int64_t* cu, std::int64_t num_seqs, std::int64_t per_seq,
                              std::int64_t row) {
  if (cu == nullptr) return row / per_seq;
  std::int64_t lo = 0, hi = num_seqs - 1;  // last b with cu[b] <= row
  while (lo < hi) {
    const std::int64_t mid = (lo + hi + 1) / 2;
    if (cu[mid] <= row) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

// Accessors of a key block in the core's two orientations.
template <class Block>
struct Transposed {
  Block block;
  __device__ float operator()(std::int64_t d, std::int64_t j) const { return block.at(j, d); }
};

template <class Block>
struct Rows {
  Block block;
  __device__ float operator()(std::int64_t j, std::int64_t d) const { return block.at(j, d); }
};

template <class T>
__device__ void load_row(const T* src, float* dst, std::int64_t n) {
  for (std::int64_t d = 0; d < n; ++d) dst[d] = core::to_float(src[d]);
}

constexpr int kTileRows = 128;  // query rows per thread block, one thread each

// A key block staged in shared memory: kBlock rows of head_dim floats,
// row_stride apart, zero past the block's last key.
struct StagedBlock {
  const float* data;
  std::int64_t row_stride;
  __device__ float at(std::int64_t j, std::int64_t d) const { return data[j * row_stride + d]; }
};

// The block's shared memory: one staged key block and its keys' tokens.
struct Staging {
  float* keys;           // kBlock * head_dim floats (dynamic shared memory)
  std::int64_t* tokens;  // kBlock
  unsigned long long* max_visible;
};

// Every thread of the block: stages key ranks [start, start + kBlock) of kv
// head g of sequence b (those below `keys`) from `src`, rows row_stride
// floats apart. The barriers on entry and exit keep it from overwriting a
// block still being read.
template <class T>
__device__ StagedBlock stage(const AttentionLayout& l, const AttentionInput& src, std::int64_t b,
                             std::int64_t k_begin, std::int64_t g, std::int64_t start, std::int64_t keys,
                             const Staging& s, std::int64_t row_stride) {
  const int d_len = static_cast<int>(l.head_dim);
  __syncthreads();
  for (int j = threadIdx.x; j < kBlock; j += blockDim.x) {
    s.tokens[j] = start + j < keys ? k_begin + core::attention_key_token(l, b, start + j) : -1;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < kBlock * d_len; e += blockDim.x) {
    const std::int64_t token = s.tokens[e / d_len];
    s.keys[e / d_len * row_stride + e % d_len] =
        token < 0 ? 0.0f : core::to_float(input_row<T>(src, b, token, g)[e % d_len]);
  }
  __syncthreads();
  return StagedBlock{s.keys, row_stride};
}

// The largest `visible` of the block's threads (a barrier for all of them).
__device__ std::int64_t block_max(std::int64_t visible, unsigned long long* slot) {
  __syncthreads();
  if (threadIdx.x == 0) *slot = 0;
  __syncthreads();
  if (visible > 0) atomicMax(slot, static_cast<unsigned long long>(visible));
  __syncthreads();
  return static_cast<std::int64_t>(*slot);
}

// This thread's query row in the sequence a tile is walking.
struct TileRow {
  std::int64_t b;
  core::AttentionSeq seq;
  bool mine;  // the thread has a row and it belongs to sequence b
  std::int64_t i;
  std::int64_t token;
  std::int64_t visible;
  std::int64_t keys;  // the most visible keys of any row of the tile in b
};

// Calls row_fn(TileRow&) for each sequence that rows of this block's tile
// belong to, in order (a tile of a packed batch can straddle sequences);
// every thread calls it, with or without a row of that sequence.
template <class RowFn>
__device__ void for_each_tile_sequence(const AttentionLayout& l, Staging s, RowFn row_fn) {
  const std::int64_t rows = core::attention_total_query_rows(l);
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * kTileRows;
  const std::int64_t last = (first + kTileRows < rows ? first + kTileRows : rows) - 1;
  const std::int64_t row = first + threadIdx.x;
  const std::int64_t row_seq = row <= last ? owner(l.cu_q, l.num_seqs, l.q_len, row) : -1;
  for (std::int64_t b = owner(l.cu_q, l.num_seqs, l.q_len, first);
       b <= owner(l.cu_q, l.num_seqs, l.q_len, last); ++b) {
    TileRow r{b, core::attention_seq(l, b), row_seq == b, 0, 0, 0, 0};
    if (r.mine) {
      r.i = row - r.seq.row_base;
      r.token = r.seq.q_begin + r.i;
      r.visible = core::attention_visible_keys(l, b, r.seq, r.i);
    }
    r.keys = block_max(r.visible, s.max_visible);
    row_fn(r);
  }
}

// The online softmax of this thread's row (if r.mine) over its visible keys;
// every thread stages the tile's key and value blocks.
template <class T>
__device__ void forward_rows(const AttentionLayout& l, const AttentionInput& k, const AttentionInput& v,
                             const TileRow& r, std::int64_t g, const Staging& s, const float* q, float* acc,
                             core::AttentionRowState& st) {
  float scores[kBlock];
  float probs[kBlock];
  st = core::attention_row_start(acc, l.head_dim);
  for (std::int64_t start = 0; start < r.keys; start += kBlock) {
    const std::int64_t count = r.visible - start < kBlock ? r.visible - start : kBlock;
    const StagedBlock keys = stage<T>(l, k, r.b, r.seq.k_begin, g, start, r.keys, s, l.head_dim);
    if (count > 0) core::attention_block_scores(q, l.head_dim, l.scale, Transposed<StagedBlock>{keys}, scores);
    const StagedBlock values = stage<T>(l, v, r.b, r.seq.k_begin, g, start, r.keys, s, l.head_dim);
    if (count > 0) core::attention_fold_block(st, acc, l.head_dim, scores, count, Rows<StagedBlock>{values}, probs);
  }
}

__device__ Staging block_staging(unsigned long long* max_visible, std::int64_t* tokens) {
  GOLDEN_DYNAMIC_SHARED(float, staged_keys);
  return Staging{staged_keys, tokens, max_visible};
}

// ---- Forward: the tile's threads share every step -----------------------------------------
// A thread block of kForwardThreads per (kForwardRows consecutive query rows,
// query head). For each key block, in the core's order for every row:
//  - scores: thread (group, lane) holds the dot chains of rows group + 8 i and
//    keys lane + 16 j (i, j < 4), each an fma chain over d from +0 on the rows
//    and the key block staged in shared memory (rows ld = D + 1 floats apart,
//    so the 16 keys a warp reads at one d fall in 16 banks);
//  - the block max, the row's new max, origin and rescale factor, and after
//    the probabilities their sum: thread r for row r, chains over the keys in
//    rank order;
//  - probabilities: each thread for its own 16 scores;
//  - P V: thread (group, lane) holds acc of rows group + 8 i, dims lane + 16 m
//    in registers, each rescaled and then an fma chain over the keys in rank
//    order.
// A row folds only its visible keys of a block (row_count) and skips a block
// it sees none of, as the core's per-row loop does.
constexpr int kForwardRows = 32;
constexpr int kForwardThreads = 128;
constexpr int kGroups = 8;           // rows group + 8 i
constexpr int kRowsPerThread = kForwardRows / kGroups;
constexpr int kLanes = 16;           // keys lane + 16 j, dims lane + 16 m
constexpr int kKeysPerThread = static_cast<int>(kBlock) / kLanes;
constexpr int kMaxDimsPerThread = static_cast<int>(kMaxD) / kLanes;
constexpr int kProbStride = static_cast<int>(kBlock) + 1;
static_assert(kGroups * kLanes == kForwardThreads, "one thread per (row group, lane)");
static_assert(kForwardRows <= kForwardThreads, "a thread per row for the row chains");

// Dynamic shared memory of the forward: the rows' q, the key (then value)
// block, the scores (then probabilities).
std::size_t forward_shared_floats(std::int64_t head_dim) {
  return static_cast<std::size_t>((kForwardRows + kBlock) * (head_dim + 1) + kForwardRows * kProbStride);
}

template <class T, class TOut>
__global__ void forward_kernel(AttentionForwardProblem p) {
  __shared__ std::int64_t tokens[kBlock];
  __shared__ std::int64_t row_token[kForwardRows];  // -1: no row of this sequence
  __shared__ std::int64_t row_visible[kForwardRows];
  __shared__ std::int64_t row_count[kForwardRows];  // keys of the block the row folds
  __shared__ float row_max[kForwardRows];
  __shared__ float row_sum[kForwardRows];
  __shared__ float row_origin[kForwardRows];
  __shared__ float row_alpha[kForwardRows];
  __shared__ unsigned long long most_visible;
  GOLDEN_DYNAMIC_SHARED(float, staged);
  const AttentionLayout& l = p.layout;
  const int d_len = static_cast<int>(l.head_dim);
  const int ld = d_len + 1;
  float* const q = staged;
  float* const kv = q + kForwardRows * ld;
  float* const sp = kv + kBlock * ld;
  const Staging s{kv, tokens, &most_visible};
  const std::int64_t h = blockIdx.y;
  const std::int64_t g = h / (l.num_q_heads / l.num_kv_heads);
  const int t = static_cast<int>(threadIdx.x);
  const int group = t / kLanes;
  const int lane = t % kLanes;
  const std::int64_t rows = core::attention_total_query_rows(l);
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * kForwardRows;
  const std::int64_t last = (first + kForwardRows < rows ? first + kForwardRows : rows) - 1;
  for (std::int64_t b = owner(l.cu_q, l.num_seqs, l.q_len, first); b <= owner(l.cu_q, l.num_seqs, l.q_len, last);
       ++b) {
    const core::AttentionSeq seq = core::attention_seq(l, b);
    if (t < kForwardRows) {
      const std::int64_t row = first + t;
      const bool mine = row <= last && owner(l.cu_q, l.num_seqs, l.q_len, row) == b;
      row_token[t] = mine ? seq.q_begin + (row - seq.row_base) : -1;
      row_visible[t] = mine ? core::attention_visible_keys(l, b, seq, row - seq.row_base) : 0;
      row_max[t] = -core::math_detail::inf();  // core::attention_row_start
      row_sum[t] = 0.0f;
    }
    const std::int64_t keys = block_max(t < kForwardRows ? row_visible[t] : 0, s.max_visible);
    for (int e = t; e < kForwardRows * d_len; e += kForwardThreads) {
      const std::int64_t token = row_token[e / d_len];
      q[e / d_len * ld + e % d_len] = token < 0 ? 0.0f : core::to_float(input_row<T>(p.q, b, token, h)[e % d_len]);
    }
    float acc[kRowsPerThread][kMaxDimsPerThread];
    for (auto& row_acc : acc) {
      for (float& a : row_acc) a = 0.0f;
    }
    for (std::int64_t start = 0; start < keys; start += kBlock) {
      stage<T>(l, p.k, b, seq.k_begin, g, start, keys, s, ld);
      float score[kRowsPerThread][kKeysPerThread];
      for (auto& row_scores : score) {
        for (float& v : row_scores) v = 0.0f;
      }
      for (int d = 0; d < d_len; ++d) {
        for (int i = 0; i < kRowsPerThread; ++i) {
          const float x = q[(group + kGroups * i) * ld + d];
          for (int j = 0; j < kKeysPerThread; ++j) {
            score[i][j] = core::attention_dot_step(score[i][j], x, kv[(lane + kLanes * j) * ld + d]);
          }
        }
      }
      for (int i = 0; i < kRowsPerThread; ++i) {
        for (int j = 0; j < kKeysPerThread; ++j) {
          score[i][j] = core::attention_score(score[i][j], l.scale);
          sp[(group + kGroups * i) * kProbStride + lane + kLanes * j] = score[i][j];
        }
      }
      stage<T>(l, p.v, b, seq.k_begin, g, start, keys, s, ld);  // its first barrier: the scores are in sp
      if (t < kForwardRows) {
        const std::int64_t count = row_visible[t] - start < kBlock ? row_visible[t] - start : kBlock;
        row_count[t] = count > 0 ? count : 0;
        if (count > 0) {
          const float new_max = core::attention_max(row_max[t], core::attention_block_max(sp + t * kProbStride, count));
          row_origin[t] = core::attention_origin(new_max);
          row_alpha[t] = core::attention_rescale_factor(row_max[t], row_origin[t]);
          row_sum[t] = core::attention_rescaled(row_sum[t], row_alpha[t]);
          row_max[t] = new_max;
        }
      }
      __syncthreads();
      for (int i = 0; i < kRowsPerThread; ++i) {
        const int r = group + kGroups * i;
        for (int j = 0; j < kKeysPerThread; ++j) {
          if (lane + kLanes * j < row_count[r]) {
            sp[r * kProbStride + lane + kLanes * j] = core::attention_block_prob(score[i][j], row_origin[r]);
          }
        }
      }
      __syncthreads();
      if (t < kForwardRows) {
        for (std::int64_t j = 0; j < row_count[t]; ++j) {
          row_sum[t] = core::attention_sum_step(row_sum[t], sp[t * kProbStride + j]);
        }
      }
      for (int i = 0; i < kRowsPerThread; ++i) {
        const int r = group + kGroups * i;
        const std::int64_t count = row_count[r];
        if (count == 0) continue;
        for (int m = 0; m < kMaxDimsPerThread; ++m) acc[i][m] = core::attention_rescaled(acc[i][m], row_alpha[r]);
        for (std::int64_t j = 0; j < count; ++j) {
          const float w = sp[r * kProbStride + j];
          for (int m = 0; m < kMaxDimsPerThread; ++m) {
            const int d = lane + kLanes * m;
            if (d < d_len) acc[i][m] = core::attention_accumulate_step(acc[i][m], w, kv[j * ld + d]);
          }
        }
      }
      __syncthreads();
    }
    for (int i = 0; i < kRowsPerThread; ++i) {
      const int r = group + kGroups * i;
      if (row_token[r] < 0) continue;
      TOut* out = output_row<TOut>(p.out, b, row_token[r], h);
      for (int m = 0; m < kMaxDimsPerThread; ++m) {
        const int d = lane + kLanes * m;
        if (d < d_len) {
          out[d] = core::from_float<TOut>(core::attention_normalized(acc[i][m], row_sum[r], row_visible[r]));
        }
      }
    }
    if (t < kForwardRows && row_token[t] >= 0 && p.lse.data != nullptr) {
      *output_row<float>(p.lse, b, row_token[t], h) =
          core::attention_lse(core::AttentionRowState{row_max[t], row_sum[t]}, row_visible[t]);
    }
    __syncthreads();  // the row arrays are read above before the next sequence rewrites them
  }
}

// Pass 1 of the backward: LSE and Di of the row (from the saved forward, or the
// forward recomputed), then dq over its visible keys.
template <class T, class TOut>
__global__ void backward_rows_kernel(AttentionBackwardProblem p) {
  __shared__ std::int64_t tokens[kBlock];
  __shared__ unsigned long long max_visible;
  const Staging s = block_staging(&max_visible, tokens);
  const AttentionLayout& l = p.layout;
  const std::int64_t h = blockIdx.y;
  const std::int64_t g = h / (l.num_q_heads / l.num_kv_heads);
  const std::int64_t d_len = l.head_dim;
  const std::int64_t rows = core::attention_total_query_rows(l);
  float q[kMaxD];
  float acc[kMaxD];
  float grad[kMaxD];
  for_each_tile_sequence(l, s, [&](const TileRow& r) {
    if (r.mine) {
      load_row(input_row<T>(p.q, r.b, r.token, h), q, d_len);
      load_row(input_row<T>(p.grad_out, r.b, r.token, h), grad, d_len);
    }
    float lse = 0.0f;
    if (p.saved_out.data != nullptr) {
      if (r.mine) {
        load_row(input_row<float>(p.saved_out, r.b, r.token, h), acc, d_len);
        lse = *input_row<float>(p.saved_lse, r.b, r.token, h);
      }
    } else {
      core::AttentionRowState st;
      forward_rows<T>(l, p.k, p.v, r, g, s, q, acc, st);
      for (std::int64_t d = 0; d < d_len; ++d) acc[d] = core::attention_output(st, acc, d, r.visible);
      lse = core::attention_lse(st, r.visible);
    }
    const float delta = r.mine ? core::attention_delta(grad, acc, d_len) : 0.0f;
    if (r.mine) {
      p.workspace[(r.seq.row_base + r.i) * l.num_q_heads + h] = lse;
      p.workspace[(rows + r.seq.row_base + r.i) * l.num_q_heads + h] = delta;
    }
    for (std::int64_t d = 0; d < d_len; ++d) acc[d] = 0.0f;
    float scores[kBlock];
    float dps[kBlock];
    for (std::int64_t start = 0; start < r.keys; start += kBlock) {
      const std::int64_t count = r.visible - start < kBlock ? r.visible - start : kBlock;
      const StagedBlock keys = stage<T>(l, p.k, r.b, r.seq.k_begin, g, start, r.keys, s, l.head_dim);
      if (count > 0) core::attention_block_scores(q, d_len, l.scale, Transposed<StagedBlock>{keys}, scores);
      const StagedBlock values = stage<T>(l, p.v, r.b, r.seq.k_begin, g, start, r.keys, s, l.head_dim);
      if (count > 0) {
        core::attention_block_dots(grad, d_len, Transposed<StagedBlock>{values}, dps);
        for (std::int64_t j = 0; j < count; ++j) {
          dps[j] = core::attention_score_grad(core::attention_probability(scores[j], lse), dps[j], delta);
        }
      }
      const StagedBlock keys_again = stage<T>(l, p.k, r.b, r.seq.k_begin, g, start, r.keys, s, l.head_dim);
      if (count > 0) core::attention_block_accumulate(acc, d_len, dps, count, Rows<StagedBlock>{keys_again});
    }
    if (!r.mine) return;
    TOut* dq = output_row<TOut>(p.dq, r.b, r.token, h);
    for (std::int64_t d = 0; d < d_len; ++d) {
      dq[d] = core::from_float<TOut>(core::attention_grad_output(acc[d], l.scale));
    }
  });
}

// The smallest `rank` of the block's threads, ~0 if none has a key (a barrier for all of them).
__device__ unsigned long long block_min(unsigned long long rank, unsigned long long* slot) {
  __syncthreads();
  if (threadIdx.x == 0) *slot = ~0ull;
  __syncthreads();
  atomicMin(slot, rank);
  __syncthreads();
  return *slot;
}

// Pass 2: a thread block of kKeyThreads per (kKeyTile consecutive key rows,
// kv head). The tile's keys and values are staged once; then for each query
// head of the group and each tile of kQueryTile consecutive query rows, in
// order (tiles no row of which sees a key of the block are skipped):
//  - thread (group, lane) takes row lane of the query tile and keys
//    group + 8 k (k < 4): the score and dP chains over d, then P and dS, as
//    the CPU's key lanes compute them;
//  - then, for the same keys and dims lane + 16 m, it adds the tile's rows in
//    order, dv += P dO and dk += dS q in registers, a key skipping the rows
//    that do not see it.
// Each key's dk and dv are thus the chains over (head, row) in order that
// the CPU sums.
constexpr int kKeyTile = 32;
constexpr int kKeyThreads = 128;
constexpr int kQueryTile = 16;
constexpr int kKeyGroups = kKeyThreads / kQueryTile;  // keys group + 8 k
constexpr int kKeysOfThread = kKeyTile / kKeyGroups;
constexpr int kTermStride = kQueryTile + 1;
static_assert(kKeyTile <= kKeyThreads, "a thread per key for its rank and token");
static_assert(kQueryTile == kLanes, "dims lane + 16 m, as in the forward");

// Dynamic shared memory of pass 2: the keys, values, q and dO rows, P and dS.
std::size_t key_pass_shared_floats(std::int64_t head_dim) {
  return static_cast<std::size_t>((2 * kKeyTile + 2 * kQueryTile) * (head_dim + 1) + 2 * kKeyTile * kTermStride);
}

// Rows [0, count) of `src` at the given tokens (-1: a row of zeros), row_stride apart.
template <class T>
__device__ void stage_tokens(const AttentionInput& src, std::int64_t b, std::int64_t head, const std::int64_t* tokens,
                             int count, int d_len, float* dst, int row_stride) {
  for (int e = static_cast<int>(threadIdx.x); e < count * d_len; e += static_cast<int>(blockDim.x)) {
    const std::int64_t token = tokens[e / d_len];
    dst[e / d_len * row_stride + e % d_len] =
        token < 0 ? 0.0f : core::to_float(input_row<T>(src, b, token, head)[e % d_len]);
  }
}

template <class T, class TOut>
__global__ void backward_keys_kernel(AttentionBackwardProblem p, std::int64_t key_rows) {
  __shared__ std::int64_t key_token[kKeyTile];  // -1: no key of this sequence
  __shared__ std::int64_t key_rank[kKeyTile];
  __shared__ std::int64_t row_token[kQueryTile];
  __shared__ std::int64_t row_visible[kQueryTile];
  __shared__ float row_lse[kQueryTile];
  __shared__ float row_delta[kQueryTile];
  __shared__ unsigned long long slot;
  GOLDEN_DYNAMIC_SHARED(float, staged);
  const AttentionLayout& l = p.layout;
  const int d_len = static_cast<int>(l.head_dim);
  const int ld = d_len + 1;
  float* const keys = staged;
  float* const values = keys + kKeyTile * ld;
  float* const q = values + kKeyTile * ld;
  float* const grad = q + kQueryTile * ld;
  float* const probs = grad + kQueryTile * ld;
  float* const score_grads = probs + kKeyTile * kTermStride;
  const std::int64_t g = blockIdx.y;
  const std::int64_t group_size = l.num_q_heads / l.num_kv_heads;
  const std::int64_t rows = core::attention_total_query_rows(l);
  const int t = static_cast<int>(threadIdx.x);
  const int group = t / kLanes;
  const int lane = t % kLanes;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * kKeyTile;
  const std::int64_t last = (first + kKeyTile < key_rows ? first + kKeyTile : key_rows) - 1;
  for (std::int64_t b = owner(l.cu_k, l.num_seqs, l.k_len, first); b <= owner(l.cu_k, l.num_seqs, l.k_len, last);
       ++b) {
    const core::AttentionSeq seq = core::attention_seq(l, b);
    bool mine = false;
    if (t < kKeyTile) {
      const std::int64_t key_row = first + t;
      const std::int64_t rank = key_row - (l.cu_k == nullptr ? b * l.k_len : seq.k_begin);
      mine = key_row <= last && owner(l.cu_k, l.num_seqs, l.k_len, key_row) == b &&
             rank < core::attention_valid_key_total(l, b, seq.k_len);
      key_rank[t] = rank;
      key_token[t] = mine ? seq.k_begin + core::attention_key_token(l, b, rank) : -1;
    }
    const unsigned long long lowest = block_min(mine ? static_cast<unsigned long long>(key_rank[t]) : ~0ull, &slot);
    stage_tokens<T>(p.k, b, g, key_token, kKeyTile, d_len, keys, ld);
    stage_tokens<T>(p.v, b, g, key_token, kKeyTile, d_len, values, ld);
    float dk[kKeysOfThread][kMaxDimsPerThread];
    float dv[kKeysOfThread][kMaxDimsPerThread];
    for (int k = 0; k < kKeysOfThread; ++k) {
      for (int m = 0; m < kMaxDimsPerThread; ++m) dk[k][m] = dv[k][m] = 0.0f;
    }
    for (std::int64_t h = g * group_size; h < (g + 1) * group_size; ++h) {
      for (std::int64_t i0 = 0; i0 < seq.q_len; i0 += kQueryTile) {
        std::int64_t visible = 0;
        if (t < kQueryTile) {
          const std::int64_t i = i0 + t;
          visible = i < seq.q_len ? core::attention_visible_keys(l, b, seq, i) : 0;
          row_visible[t] = visible;
          row_token[t] = i < seq.q_len ? seq.q_begin + i : -1;
          row_lse[t] = i < seq.q_len ? p.workspace[(seq.row_base + i) * l.num_q_heads + h] : 0.0f;
          row_delta[t] = i < seq.q_len ? p.workspace[(rows + seq.row_base + i) * l.num_q_heads + h] : 0.0f;
        }
        if (static_cast<unsigned long long>(block_max(visible, &slot)) <= lowest) continue;  // no key seen
        stage_tokens<T>(p.q, b, h, row_token, kQueryTile, d_len, q, ld);
        stage_tokens<T>(p.grad_out, b, h, row_token, kQueryTile, d_len, grad, ld);
        __syncthreads();
        float score[kKeysOfThread] = {};
        float dp[kKeysOfThread] = {};
        for (int d = 0; d < d_len; ++d) {
          const float x = q[lane * ld + d];
          const float y = grad[lane * ld + d];
          for (int k = 0; k < kKeysOfThread; ++k) {
            score[k] = core::attention_dot_step(score[k], x, keys[(group + kKeyGroups * k) * ld + d]);
            dp[k] = core::attention_dot_step(dp[k], y, values[(group + kKeyGroups * k) * ld + d]);
          }
        }
        for (int k = 0; k < kKeysOfThread; ++k) {
          const int j = group + kKeyGroups * k;
          const float prob = core::attention_probability(core::attention_score(score[k], l.scale), row_lse[lane]);
          probs[j * kTermStride + lane] = prob;
          score_grads[j * kTermStride + lane] = core::attention_score_grad(prob, dp[k], row_delta[lane]);
        }
        __syncthreads();
        for (int r = 0; r < kQueryTile; ++r) {
          for (int k = 0; k < kKeysOfThread; ++k) {
            const int j = group + kKeyGroups * k;
            if (key_token[j] < 0 || key_rank[j] >= row_visible[r]) continue;  // the row does not see the key
            const float prob = probs[j * kTermStride + r];
            const float ds = score_grads[j * kTermStride + r];
            for (int m = 0; m < kMaxDimsPerThread; ++m) {
              const int d = lane + kLanes * m;
              if (d < d_len) {
                dv[k][m] = core::attention_accumulate_step(dv[k][m], prob, grad[r * ld + d]);
                dk[k][m] = core::attention_accumulate_step(dk[k][m], ds, q[r * ld + d]);
              }
            }
          }
        }
        __syncthreads();
      }
    }
    for (int k = 0; k < kKeysOfThread; ++k) {
      const int j = group + kKeyGroups * k;
      if (key_token[j] < 0) continue;
      TOut* dk_out = output_row<TOut>(p.dk, b, key_token[j], g);
      TOut* dv_out = output_row<TOut>(p.dv, b, key_token[j], g);
      for (int m = 0; m < kMaxDimsPerThread; ++m) {
        const int d = lane + kLanes * m;
        if (d < d_len) {
          dk_out[d] = core::from_float<TOut>(core::attention_grad_output(dk[k][m], l.scale));
          dv_out[d] = core::from_float<TOut>(core::attention_grad_output(dv[k][m], 1.0f));
        }
      }
    }
    __syncthreads();  // key_token is read above before the next sequence rewrites it
  }
}

// A thread block per (tile of query rows, query head), the staged key block
// in dynamic shared memory (past the default 48 KiB only with the opt-in).
struct TileLaunch {
  dim3 grid;
  std::size_t shared_bytes;
};

TileLaunch tile_launch(const AttentionLayout& l) {
  return TileLaunch{dim3(grid_for(core::attention_total_query_rows(l), kTileRows),
                         grid_for(l.num_q_heads, 1, kMaxGridY)),
                    static_cast<std::size_t>(kBlock * l.head_dim) * sizeof(float)};
}

template <class Kernel>
void allow_shared_bytes(Kernel kernel, std::size_t bytes, const char* what) {
  constexpr std::size_t kDefaultLimit = 48 * 1024;
  if (bytes <= kDefaultLimit) return;
  check(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(bytes)),
        what);
}

}  // namespace

void attention_forward(const AttentionForwardProblem& p, std::uintptr_t stream) {
  if (core::attention_total_query_rows(p.layout) * p.layout.num_q_heads == 0) return;
  const AttentionLayout& l = p.layout;
  const dim3 grid(grid_for(core::attention_total_query_rows(l), kForwardRows), grid_for(l.num_q_heads, 1, kMaxGridY));
  const std::size_t shared_bytes = forward_shared_floats(l.head_dim) * sizeof(float);
  visit_in_out(p.dtype, p.out_dtype, [&](auto in, auto out) {
    const auto kernel = forward_kernel<decltype(in), decltype(out)>;
    allow_shared_bytes(kernel, shared_bytes, "attention_forward (shared memory)");
    launch(kernel, grid, kForwardThreads, shared_bytes, as_stream(stream), p);
  });
  check_launch("attention_forward");
}

void attention_backward(const AttentionBackwardProblem& p, std::uintptr_t stream) {
  const AttentionLayout& l = p.layout;
  const std::int64_t query_threads = core::attention_total_query_rows(l) * l.num_q_heads;
  const std::int64_t key_rows = l.cu_k == nullptr ? l.num_seqs * l.k_len : l.k_len;  // packed: k_len = tokens
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    if (query_threads > 0) {
      const TileLaunch tiles = tile_launch(l);
      const auto kernel = backward_rows_kernel<T, TOut>;
      allow_shared_bytes(kernel, tiles.shared_bytes, "attention_backward (shared memory)");
      launch(kernel, tiles.grid, kTileRows, tiles.shared_bytes, as_stream(stream), p);
      check_launch("attention_backward (rows)");
    }
    if (key_rows * l.num_kv_heads > 0) {
      const dim3 grid(grid_for(key_rows, kKeyTile), grid_for(l.num_kv_heads, 1, kMaxGridY));
      const std::size_t shared_bytes = key_pass_shared_floats(l.head_dim) * sizeof(float);
      const auto kernel = backward_keys_kernel<T, TOut>;
      allow_shared_bytes(kernel, shared_bytes, "attention_backward (keys, shared memory)");
      launch(kernel, grid, kKeyThreads, shared_bytes, as_stream(stream), p, key_rows);
      check_launch("attention_backward (keys)");
    }
  });
}

}  // namespace golden::gpu
