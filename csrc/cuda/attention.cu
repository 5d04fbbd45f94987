// Attention on the GPU (CUDA, and HIP through the same source). Every kernel
// spreads a tile's chains over its threads, each chain (a dot over d, an
// accumulator over keys or over query rows, a row's max and sum over keys)
// on one thread in the CPU's order, so the bits are the CPU's:
//  - forward: a block per (32 query rows x heads of a kv group, taken
//    token-major, kv head), so the group's heads share each key block staged
//    in shared memory; scores and accumulators in per-thread register tiles;
//  - backward pass 1 (dq, and each row's LSE and Di for pass 2): a block per
//    (16 such rows, kv head), the same tiles, from the forward's output and
//    LSE (saved, or recomputed by the forward kernel first);
//  - backward pass 2 (dk, dv): a block per (32 keys, kv head), the query
//    rows of the group's heads taken 16 at a time in order.
// No tensor cores: their accumulation order is not the core's. All
// arithmetic is in csrc/core/ops/attention.h.
#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <type_traits>

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

// The block's shared memory: one staged key block and its keys' tokens.
struct Staging {
  float* keys;           // kBlock rows (dynamic shared memory)
  std::int64_t* tokens;  // kBlock
  unsigned long long* max_visible;
};

// body(row, col) for each element of a rows x cols array, element e (row-major)
// on thread e % blockDim.x, in increasing e: the indices advance by carrying
// rather than by a division per element (cols is only known at run time).
template <class Body>
__device__ void for_each_block_element(int rows, int cols, Body body) {
  if (cols <= 0) return;
  const int step = static_cast<int>(blockDim.x);
  const int row_step = step / cols;
  const int col_step = step % cols;
  int row = static_cast<int>(threadIdx.x) / cols;
  int col = static_cast<int>(threadIdx.x) % cols;
  while (row < rows) {
    body(row, col);
    row += row_step;
    col += col_step;
    if (col >= cols) {
      col -= cols;
      ++row;
    }
  }
}

// Rows [0, count) of `src`: row r at tokens[r] of head head_of(r) (token -1:
// a row of zeros), row_stride apart.
template <class T, class HeadOf>
__device__ void stage_rows(const AttentionInput& src, std::int64_t b, const std::int64_t* tokens, HeadOf head_of,
                           int count, int d_len, float* dst, int row_stride) {
  for_each_block_element(count, d_len, [&](int r, int d) {
    const std::int64_t token = tokens[r];
    dst[r * row_stride + d] = token < 0 ? 0.0f : core::to_float(input_row<T>(src, b, token, head_of(r))[d]);
  });
}

// stage_rows, every row of one head.
template <class T>
__device__ void stage_tokens(const AttentionInput& src, std::int64_t b, std::int64_t head, const std::int64_t* tokens,
                             int count, int d_len, float* dst, int row_stride) {
  stage_rows<T>(src, b, tokens, [=](int) { return head; }, count, d_len, dst, row_stride);
}

// Every thread of the block: stages key ranks [start, start + kBlock) of kv
// head g of sequence b (those below `keys`) from `src`, rows row_stride
// floats apart. The barriers on entry and exit keep it from overwriting a
// block still being read.
template <class T>
__device__ void stage(const AttentionLayout& l, const AttentionInput& src, std::int64_t b, std::int64_t k_begin,
                      std::int64_t g, std::int64_t start, std::int64_t keys, const Staging& s, int row_stride) {
  const int d_len = static_cast<int>(l.head_dim);
  __syncthreads();
  for (int j = threadIdx.x; j < kBlock; j += blockDim.x) {
    s.tokens[j] = start + j < keys ? k_begin + core::attention_key_token(l, b, start + j) : -1;
  }
  __syncthreads();
  stage_tokens<T>(src, b, g, s.tokens, static_cast<int>(kBlock), d_len, s.keys, row_stride);
  __syncthreads();
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

// ---- Forward: the tile's threads share every step -----------------------------------------
// A thread block of kForwardThreads per (kForwardRows tile entries, kv head):
// entries are (query row, query head of the group), token-major (see
// QueryTileThread). For each key block, in the core's order for every row:
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
// Each thread's accumulators cover dims lane + 16 m for m < kDims: the
// kernels are built for kDims 8 (head_dim <= 128, the models' size) and 16
// (up to kMaxD), so that D 128 keeps half the registers.
constexpr int kDimsUpTo128 = 128 / kLanes;
constexpr int kDimsUpToMax = static_cast<int>(kMaxD) / kLanes;
constexpr int kProbStride = static_cast<int>(kBlock) + 1;
static_assert(kGroups * kLanes == kForwardThreads, "one thread per (row group, lane)");
static_assert(kForwardRows <= kForwardThreads, "a thread per row for the row chains");

// Dynamic shared memory of the forward: the rows' q, the key (then value)
// block, the scores (then probabilities).
std::size_t forward_shared_floats(std::int64_t head_dim) {
  return static_cast<std::size_t>((kForwardRows + kBlock) * (head_dim + 1) + kForwardRows * kProbStride);
}

// Where a thread of a query-tile kernel is. A block serves kv head g and
// the tile entries [first, last] of its rows x heads entries, token-major
// over the group's query heads (entry e: query row e / heads of head
// head0 + e % heads), so the group's heads share each staged key block;
// (group, lane) is the thread's place in the register tiles.
struct QueryTileThread {
  std::int64_t g, head0, heads, first, last;
  int t, group, lane;
};

template <int kRows>
__device__ QueryTileThread query_tile_thread(const AttentionLayout& l) {
  const std::int64_t g = blockIdx.y;
  const std::int64_t heads = l.num_q_heads / l.num_kv_heads;
  const std::int64_t entries = core::attention_total_query_rows(l) * heads;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * kRows;
  const int t = static_cast<int>(threadIdx.x);
  return QueryTileThread{g, g * heads, heads, first, (first + kRows < entries ? first + kRows : entries) - 1,
                         t, t / kLanes, t % kLanes};
}

// Tile entry r's query row (row == nullptr: not wanted), token in sequence b
// (-1: not b's), head and visible keys (0 if not b's), set by thread r < kRows.
struct TileRows {
  std::int64_t* row;
  std::int64_t* token;
  std::int64_t* head;
  std::int64_t* visible;
};

template <int kRows>
__device__ void tile_rows_of_sequence(const AttentionLayout& l, std::int64_t b, const core::AttentionSeq& seq,
                                      const QueryTileThread& place, const TileRows& rows) {
  const int t = place.t;
  if (t >= kRows) return;
  const std::int64_t entry = place.first + t;
  const std::int64_t row = entry / place.heads;
  const bool mine = entry <= place.last && owner(l.cu_q, l.num_seqs, l.q_len, row) == b;
  if (rows.row != nullptr) rows.row[t] = row;
  rows.token[t] = mine ? seq.q_begin + (row - seq.row_base) : -1;
  rows.head[t] = place.head0 + entry % place.heads;
  rows.visible[t] = mine ? core::attention_visible_keys(l, b, seq, row - seq.row_base) : 0;
}

// dots[i][j] = the dot chain over d (from +0, in order) of the staged rows
// group + 8 i and the staged keys lane + 16 j, both ld floats apart.
template <int kRowsOf>
__device__ void tile_dots(const float* rows, const float* keys, int ld, int d_len, int group, int lane,
                          float (&dots)[kRowsOf][kKeysPerThread]) {
  for (auto& row_dots : dots) {
    for (float& v : row_dots) v = core::kAttentionDotStart;
  }
  for (int d = 0; d < d_len; ++d) {
    for (int i = 0; i < kRowsOf; ++i) {
      const float x = rows[(group + kGroups * i) * ld + d];
      for (int j = 0; j < kKeysPerThread; ++j) {
        dots[i][j] = core::attention_dot_step(dots[i][j], x, keys[(lane + kLanes * j) * ld + d]);
      }
    }
  }
}

// acc[i][m] of rows group + 8 i and dims lane + 16 m: each an fma chain over
// the row's keys j < count[i] in rank order, adding weights[row][j] times the
// staged rows[j][d] (ld floats apart). Keys outermost, so that the thread reads
// each staged element once for all its rows (not once per row).
template <int kRowsOf, int kDims>
__device__ void tile_accumulate(float (&acc)[kRowsOf][kDims], const int (&count)[kRowsOf], const float* weights,
                                int weight_stride, const float* rows, int ld, int d_len, int group, int lane) {
  int most = 0;
  for (const int c : count) most = c > most ? c : most;
  for (int j = 0; j < most; ++j) {
    float w[kRowsOf];
    for (int i = 0; i < kRowsOf; ++i) w[i] = weights[(group + kGroups * i) * weight_stride + j];  // used if j < count[i]
    for (int m = 0; m < kDims; ++m) {
      const int d = lane + kLanes * m;
      if (d >= d_len) continue;
      const float x = rows[j * ld + d];
      for (int i = 0; i < kRowsOf; ++i) {
        if (j < count[i]) acc[i][m] = core::attention_accumulate_step(acc[i][m], w[i], x);
      }
    }
  }
}

template <class T, class TOut, int kDims>
__global__ void forward_kernel(AttentionForwardProblem p) {
  GOLDEN_SHARED(std::int64_t[kBlock], tokens);
  GOLDEN_SHARED(std::int64_t[kForwardRows], row_token);  // -1: no row of this sequence
  GOLDEN_SHARED(std::int64_t[kForwardRows], row_head);
  GOLDEN_SHARED(std::int64_t[kForwardRows], row_visible);
  GOLDEN_SHARED(std::int64_t[kForwardRows], row_count);  // keys of the block the row folds
  GOLDEN_SHARED(core::AttentionRowState[kForwardRows], row_state);
  GOLDEN_SHARED(float[kForwardRows], row_origin);
  GOLDEN_SHARED(float[kForwardRows], row_alpha);
  GOLDEN_SHARED(unsigned long long, most_visible);
  GOLDEN_DYNAMIC_SHARED(float, staged);
  const AttentionLayout& l = p.layout;
  const int d_len = static_cast<int>(l.head_dim);
  const int ld = d_len + 1;
  float* const q = staged;
  float* const kv = q + kForwardRows * ld;
  float* const sp = kv + kBlock * ld;
  const Staging s{kv, tokens, &most_visible};
  const QueryTileThread place = query_tile_thread<kForwardRows>(l);
  const auto [g, head0, heads, first, last, t, group, lane] = place;
  for (std::int64_t b = owner(l.cu_q, l.num_seqs, l.q_len, first / heads);
       b <= owner(l.cu_q, l.num_seqs, l.q_len, last / heads); ++b) {
    const core::AttentionSeq seq = core::attention_seq(l, b);
    tile_rows_of_sequence<kForwardRows>(l, b, seq, place, TileRows{nullptr, row_token, row_head, row_visible});
    if (t < kForwardRows) {
      row_state[t] = core::attention_initial_state();
    }
    const std::int64_t keys = block_max(t < kForwardRows ? row_visible[t] : 0, s.max_visible);
    stage_rows<T>(p.q, b, row_token, [&](int r) { return row_head[r]; }, kForwardRows, d_len, q, ld);
    float acc[kRowsPerThread][kDims];
    for (auto& row_acc : acc) {
      for (float& a : row_acc) a = core::kAttentionAccStart;
    }
    for (std::int64_t start = 0; start < keys; start += kBlock) {
      stage<T>(l, p.k, b, seq.k_begin, g, start, keys, s, ld);
      float score[kRowsPerThread][kKeysPerThread];
      tile_dots(q, kv, ld, d_len, group, lane, score);
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
          const core::AttentionRescale rescale =
              core::attention_rescale_state(row_state[t], core::attention_block_max(sp + t * kProbStride, count));
          row_origin[t] = rescale.origin;
          row_alpha[t] = rescale.alpha;
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
          row_state[t].sum = core::attention_sum_step(row_state[t].sum, sp[t * kProbStride + j]);
        }
      }
      int count[kRowsPerThread];
      for (int i = 0; i < kRowsPerThread; ++i) {
        const int r = group + kGroups * i;
        count[i] = static_cast<int>(row_count[r]);
        if (count[i] == 0) continue;
        for (int m = 0; m < kDims; ++m) acc[i][m] = core::attention_rescaled(acc[i][m], row_alpha[r]);
      }
      tile_accumulate(acc, count, sp, kProbStride, kv, ld, d_len, group, lane);
      __syncthreads();
    }
    for (int i = 0; i < kRowsPerThread; ++i) {
      const int r = group + kGroups * i;
      if (row_token[r] < 0) continue;
      TOut* out = output_row<TOut>(p.out, b, row_token[r], row_head[r]);
      for (int m = 0; m < kDims; ++m) {
        const int d = lane + kLanes * m;
        if (d < d_len) {
          out[d] = core::from_float<TOut>(core::attention_normalized(acc[i][m], row_state[r].sum, row_visible[r]));
        }
      }
    }
    if (t < kForwardRows && row_token[t] >= 0 && p.lse.data != nullptr) {
      *output_row<float>(p.lse, b, row_token[t], row_head[t]) = core::attention_lse(row_state[t], row_visible[t]);
    }
    __syncthreads();  // the row arrays are read above before the next sequence rewrites them
  }
}

// ---- Forward of a few query rows (decode): keys spread over the whole GPU ------------------
// A decode step has a handful of query rows per kv head (the group's heads of
// one token), so the tile kernel above would run one block per kv head, most
// of its tile empty, each streaming its whole cache through one
// multiprocessor. When a (sequence, kv head) has at most kDecodeRows rows, the
// forward instead runs three kernels over scratch in device memory:
//  - decode_scores_kernel, a block per (64-key block, kv head, sequence):
//    every row's scores for the block (each an fma chain over d), and each
//    row's max of the block (a chain over its keys in rank order);
//  - decode_softmax_kernel, a block per (row, kv head, sequence): the row's
//    max after each block (a chain over the blocks), then in parallel each
//    block's origin and rescale factor and every probability (each depends
//    only on those maxima);
//  - decode_values_kernel, a block per (8 dims, kv head, sequence): thread
//    (row, dim) runs acc[d]'s chain over the row's keys in rank order
//    (rescaled at each block's start), and the row's dim-0 thread its sum.
// Every value is the one the row's online softmax gives in the core's order,
// so the bits are those of the tile kernel and of the CPU. The scratch holds
// a score per (row, key), so the sequences are taken as many at a time as fit
// 256 MiB (GOLDEN_KERNELS_GPU_DECODE_SCRATCH_BYTES; tests make it small).
constexpr int kDecodeRows = 16;
constexpr int kDecodeScoreThreads = 128;
constexpr int kDecodeScoreHalves = kDecodeScoreThreads / static_cast<int>(kBlock);
constexpr int kDecodeScoreRowsPerThread = kDecodeRows / kDecodeScoreHalves;
static_assert(kDecodeScoreHalves * kBlock == kDecodeScoreThreads, "a thread per (half, key) of the block");
// The softmax kernel's parallel part is a probability (an exp) per key.
constexpr int kDecodeSoftmaxThreads = 256;

// Per (sequence of the launch, kv head, row): the row's scores (then
// probabilities) at key ranks [0, blocks x kBlock), and per key block its max
// (then the row's max after it), origin and rescale factor.
struct DecodeScratch {
  float* scores;
  float* block_max;
  float* origin;
  float* alpha;
  std::int64_t rows;  // per (sequence, kv head): query tokens x heads of the group, token-major
  std::int64_t blocks;
  std::int64_t first_seq;
  std::int64_t num_kv_heads;

  __device__ std::int64_t slot(std::int64_t b, std::int64_t g, std::int64_t r) const {
    return ((b - first_seq) * num_kv_heads + g) * rows + r;
  }
  __device__ float* row_scores(std::int64_t b, std::int64_t g, std::int64_t r) const {
    return scores + slot(b, g, r) * blocks * kBlock;
  }
  // The row's entry of a per-block array (block_max, origin or alpha).
  __device__ float* row_blocks(float* per_block, std::int64_t b, std::int64_t g, std::int64_t r) const {
    return per_block + slot(b, g, r) * blocks;
  }
};

// Row r of kv head g's decode rows: its token and query head.
struct DecodeRow {
  std::int64_t token;
  std::int64_t head;
  std::int64_t visible;
};

// Rows past the sequence's own (packed sequences shorter than the longest)
// have token -1 and see no key.
__device__ DecodeRow decode_row(const AttentionLayout& l, std::int64_t b, const core::AttentionSeq& seq,
                                std::int64_t g, std::int64_t r) {
  const std::int64_t heads = l.num_q_heads / l.num_kv_heads;
  const std::int64_t i = r / heads;
  if (i >= seq.q_len) return {-1, g * heads + r % heads, 0};
  return {seq.q_begin + i, g * heads + r % heads, core::attention_visible_keys(l, b, seq, i)};
}

// A block's table of its (sequence, kv head)'s rows, in shared memory.
struct DecodeRowTable {
  std::int64_t token[kDecodeRows];
  std::int64_t head[kDecodeRows];
  std::int64_t visible[kDecodeRows];
};

// Fills the table (thread r for row r; a barrier for all) and returns the
// most keys a row sees, in every thread.
__device__ std::int64_t fill_decode_rows(const AttentionLayout& l, std::int64_t b, const core::AttentionSeq& seq,
                                         std::int64_t g, int rows, DecodeRowTable& table) {
  const int t = static_cast<int>(threadIdx.x);
  if (t < rows) {
    const DecodeRow row = decode_row(l, b, seq, g, t);
    table.token[t] = row.token;
    table.head[t] = row.head;
    table.visible[t] = row.visible;
  }
  __syncthreads();
  std::int64_t seen = 0;
  for (int r = 0; r < rows; ++r) seen = table.visible[r] > seen ? table.visible[r] : seen;
  return seen;
}

std::size_t decode_score_shared_floats(std::int64_t rows, std::int64_t head_dim) {
  return static_cast<std::size_t>((rows + kBlock) * (head_dim + 1) + rows * kProbStride);
}

template <class T>
__global__ void decode_scores_kernel(AttentionForwardProblem p, DecodeScratch s) {
  GOLDEN_SHARED(std::int64_t[kBlock], tokens);
  GOLDEN_SHARED(DecodeRowTable, row);
  GOLDEN_DYNAMIC_SHARED(float, staged);
  const AttentionLayout& l = p.layout;
  const std::int64_t b = s.first_seq + blockIdx.z;
  const std::int64_t g = blockIdx.y;
  const std::int64_t kb = blockIdx.x;
  const std::int64_t start = kb * kBlock;
  const core::AttentionSeq seq = core::attention_seq(l, b);
  const int rows = static_cast<int>(s.rows);
  const int t = static_cast<int>(threadIdx.x);
  const int d_len = static_cast<int>(l.head_dim);
  const int ld = d_len + 1;
  float* const q = staged;
  float* const keys = q + rows * ld;
  float* const sp = keys + kBlock * ld;
  const std::int64_t seen = fill_decode_rows(l, b, seq, g, rows, row);
  if (start >= seen) return;  // the whole block returns
  stage_rows<T>(p.q, b, row.token, [&](int r) { return row.head[r]; }, rows, d_len, q, ld);
  stage<T>(l, p.k, b, seq.k_begin, g, start, seen, Staging{keys, tokens, nullptr}, ld);
  // Thread (half, key j) runs the dot chains of key j with rows half + 2 i,
  // reading each staged key element once for all of them.
  const int j = t % static_cast<int>(kBlock);
  const int half = t / static_cast<int>(kBlock);
  float dots[kDecodeScoreRowsPerThread];
  for (float& dot : dots) dot = core::kAttentionDotStart;
  for (int d = 0; d < d_len; ++d) {
    const float key = keys[j * ld + d];
    for (int i = 0; i < kDecodeScoreRowsPerThread; ++i) {
      const int r = half + kDecodeScoreHalves * i;
      if (r < rows) dots[i] = core::attention_dot_step(dots[i], q[r * ld + d], key);
    }
  }
  for (int i = 0; i < kDecodeScoreRowsPerThread; ++i) {
    const int r = half + kDecodeScoreHalves * i;
    if (r >= rows || start + j >= row.visible[r]) continue;
    const float score = core::attention_score(dots[i], l.scale);
    sp[r * kProbStride + j] = score;
    s.row_scores(b, g, r)[start + j] = score;
  }
  __syncthreads();
  if (t < rows) {
    const std::int64_t count = row.visible[t] - start < kBlock ? row.visible[t] - start : kBlock;
    if (count > 0) {
      s.row_blocks(s.block_max, b, g, t)[kb] = core::attention_block_max(sp + t * kProbStride, count);
    }
  }
}

// The row's max after each block (a chain over the blocks: thread 0), then,
// in parallel, each block's origin and rescale factor and every probability
// (overwriting the scores). A block per (row, kv head, sequence).
__global__ void decode_softmax_kernel(AttentionForwardProblem p, DecodeScratch s) {
  const AttentionLayout& l = p.layout;
  const std::int64_t b = s.first_seq + blockIdx.z;
  const std::int64_t g = blockIdx.y;
  const std::int64_t r = blockIdx.x;
  const core::AttentionSeq seq = core::attention_seq(l, b);
  const std::int64_t visible = decode_row(l, b, seq, g, r).visible;
  const int t = static_cast<int>(threadIdx.x);
  const int threads = static_cast<int>(blockDim.x);
  const std::int64_t blocks = (visible + kBlock - 1) / kBlock;
  float* const probs = s.row_scores(b, g, r);
  float* const max_after = s.row_blocks(s.block_max, b, g, r);
  float* const origin = s.row_blocks(s.origin, b, g, r);
  float* const alpha = s.row_blocks(s.alpha, b, g, r);
  // The chain runs on thread 0 over maxima the block stages in shared memory
  // kMaxChunk at a time, so that its steps wait on no load from device memory.
  constexpr int kMaxChunk = 1024;
  GOLDEN_SHARED(float[kMaxChunk], chunk);
  float running = core::attention_initial_state().max;
  for (std::int64_t first = 0; first < blocks; first += kMaxChunk) {
    const int count = static_cast<int>(blocks - first < kMaxChunk ? blocks - first : kMaxChunk);
    for (int i = t; i < count; i += threads) chunk[i] = max_after[first + i];
    __syncthreads();
    if (t == 0) {
      for (int i = 0; i < count; ++i) {
        running = core::attention_max(running, chunk[i]);
        chunk[i] = running;
      }
    }
    __syncthreads();
    for (int i = t; i < count; i += threads) max_after[first + i] = chunk[i];
    __syncthreads();  // the chunk is written out before the next one is staged
  }
  for (std::int64_t kb = t; kb < blocks; kb += threads) {
    const float before = kb == 0 ? core::attention_initial_state().max : max_after[kb - 1];
    const core::AttentionRescale rescale = core::attention_rescale_between(before, max_after[kb]);
    origin[kb] = rescale.origin;
    alpha[kb] = rescale.alpha;
  }
  __syncthreads();
  for (std::int64_t n = t; n < visible; n += threads) {
    probs[n] = core::attention_block_prob(probs[n], origin[n / kBlock]);
  }
}

// The chains: a block of kDecodeThreads per (kDecodeDims dims, kv head,
// sequence). Thread (row r, lane) with r < rows runs acc[d]'s chain of row r
// over its visible keys in rank order, rescaled at each block's start; lane
// 0 also runs the row's sum, from the probabilities it reads anyway. Why 8
// dims: a warp (4 rows x 8 dims) then reads one shared-memory wavefront of
// values and one of probabilities per key, so the chains, not shared
// memory, bound a step, and one Qwen3-8B sequence (D 128, 8 kv heads) spreads
// over 128 blocks. The keys go kDecodeStep at a time through two shared
// buffers: while the chains fold one step, every thread holds its share of
// the next step's values, probabilities and factors in registers, loaded
// before the fold and stored after it, so the loads' latency overlaps the
// chains' ~4 cycles per key.
constexpr int kDecodeDims = 8;
constexpr int kDecodeStepBlocks = 2;
constexpr int kDecodeStep = kDecodeStepBlocks * static_cast<int>(kBlock);
constexpr int kDecodeThreads = kDecodeRows * kDecodeDims;
constexpr int kStepValues = kDecodeStep * kDecodeDims;
// A row's probabilities in a buffer, one word more than a step apart so that
// the rows of a warp fall in different banks.
constexpr int kStepProbStride = kDecodeStep + 1;
constexpr int kValuesPerThread = (kStepValues + kDecodeThreads - 1) / kDecodeThreads;
constexpr int kProbsPerThread = (kDecodeRows * kDecodeStep + kDecodeThreads - 1) / kDecodeThreads;
constexpr int kTokensPerThread = (kDecodeStep + kDecodeThreads - 1) / kDecodeThreads;
static_assert(kDecodeRows * kDecodeStepBlocks <= kDecodeThreads, "a thread per (row, block) of a step for its factor");

// One buffer of a step: values [kDecodeStep][kDecodeDims], probabilities
// [rows][kStepProbStride], factors [rows][kDecodeStepBlocks].
struct DecodeStepBuffer {
  float* values;
  float* probs;
  float* alpha;
};

__host__ __device__ std::int64_t decode_step_buffer_floats(std::int64_t rows) {
  return kStepValues + rows * (kStepProbStride + kDecodeStepBlocks);
}

std::size_t decode_values_shared_floats(std::int64_t rows) {
  return 2 * static_cast<std::size_t>(decode_step_buffer_floats(rows));
}

__device__ DecodeStepBuffer decode_step_buffer(float* shared, std::int64_t rows, int which) {
  float* const base = shared + which * decode_step_buffer_floats(rows);
  return {base, base + kStepValues, base + kStepValues + rows * kStepProbStride};
}

// A thread's share of one step, in registers between the loads and the stores.
struct DecodeStepLoads {
  float values[kValuesPerThread];
  float probs[kProbsPerThread];
  float alpha;
};

// The bound keeps its registers within a multiprocessor's for kDecodeThreads.
template <class T, class TOut>
__global__ void __launch_bounds__(kDecodeThreads) decode_values_kernel(AttentionForwardProblem p, DecodeScratch s) {
  GOLDEN_SHARED(DecodeRowTable, row);
  GOLDEN_SHARED(float[kDecodeRows], row_sum);
  GOLDEN_SHARED(std::int64_t[2][kDecodeStep], step_token);  // by step parity
  GOLDEN_DYNAMIC_SHARED(float, staged);
  const AttentionLayout& l = p.layout;
  const std::int64_t b = s.first_seq + blockIdx.z;
  const std::int64_t g = blockIdx.y;
  const std::int64_t d0 = static_cast<std::int64_t>(blockIdx.x) * kDecodeDims;
  const core::AttentionSeq seq = core::attention_seq(l, b);
  const int rows = static_cast<int>(s.rows);
  const int t = static_cast<int>(threadIdx.x);
  const std::int64_t seen = fill_decode_rows(l, b, seq, g, rows, row);
  const T* const values = input_row<T>(p.v, b, seq.k_begin, g);
  const std::int64_t row_keys = s.blocks * kBlock;  // a row's scratch

  // The tokens of this thread's keys t + i x kDecodeThreads of step `step`
  // (-1 past the keys any row sees): stored in step_token[step % 2] a step
  // ahead of their use, so that no barrier waits on the lookup (key_index).
  using StepTokens = std::int64_t[kTokensPerThread];
  const auto tokens_of = [&](std::int64_t step, StepTokens& tokens) {
    for (int i = 0; i < kTokensPerThread; ++i) {
      const int k = t + i * kDecodeThreads;
      const std::int64_t n = step * kDecodeStep + k;
      tokens[i] = k < kDecodeStep && n < seen ? core::attention_key_token(l, b, n) : -1;
    }
  };
  const auto store_tokens = [&](const StepTokens& tokens, std::int64_t step) {
    for (int i = 0; i < kTokensPerThread; ++i) {
      const int k = t + i * kDecodeThreads;
      if (k < kDecodeStep) step_token[step % 2][k] = tokens[i];
    }
  };
  // Loads step `step`'s share of this thread: values (zeros past the keys
  // any row sees and past head_dim), probabilities and factors.
  const auto load = [&](std::int64_t step, DecodeStepLoads& x) {
    const std::int64_t first = step * kDecodeStep;
    const std::int64_t* const tokens = step_token[step % 2];
    for (int i = 0; i < kValuesPerThread; ++i) {
      const int e = t + i * kDecodeThreads;
      const std::int64_t token = e < kStepValues ? tokens[e / kDecodeDims] : -1;
      const std::int64_t d = d0 + e % kDecodeDims;
      x.values[i] = token >= 0 && d < l.head_dim ? core::to_float(values[token * p.v.token_stride + d]) : 0.0f;
    }
    // Probabilities and factors past a row's visible keys are never folded:
    // only the scratch's bounds are checked.
    const float* const step_probs = s.row_scores(b, g, 0) + first;
    const int left = static_cast<int>(row_keys - first < kDecodeStep ? row_keys - first : kDecodeStep);
    for (int i = 0; i < kProbsPerThread; ++i) {
      const int e = t + i * kDecodeThreads;
      const int r = e / kDecodeStep;
      const int k = e % kDecodeStep;
      x.probs[i] = r < rows && k < left ? step_probs[r * row_keys + k] : 0.0f;
    }
    const int r = t / kDecodeStepBlocks;
    const std::int64_t kb = step * kDecodeStepBlocks + t % kDecodeStepBlocks;
    x.alpha = r < rows && kb < s.blocks ? s.row_blocks(s.alpha, b, g, r)[kb] : 0.0f;
  };
  const auto store = [&](const DecodeStepLoads& x, const DecodeStepBuffer& buffer) {
    for (int i = 0; i < kValuesPerThread; ++i) {
      const int e = t + i * kDecodeThreads;
      if (e < kStepValues) buffer.values[e] = x.values[i];
    }
    for (int i = 0; i < kProbsPerThread; ++i) {
      const int e = t + i * kDecodeThreads;
      if (e < rows * kDecodeStep) buffer.probs[e / kDecodeStep * kStepProbStride + e % kDecodeStep] = x.probs[i];
    }
    if (t < rows * kDecodeStepBlocks) buffer.alpha[t] = x.alpha;
  };

  const int r = t / kDecodeDims;
  const int lane = t % kDecodeDims;
  const bool holds_acc = r < rows;
  const bool holds_sum = holds_acc && lane == 0;
  float acc = core::kAttentionAccStart;
  float sum = core::attention_initial_state().sum;
  const std::int64_t steps = (seen + kDecodeStep - 1) / kDecodeStep;
  DecodeStepLoads next;
  StepTokens tokens_ahead;
  if (steps > 0) {
    tokens_of(0, tokens_ahead);
    store_tokens(tokens_ahead, 0);
    tokens_of(1, tokens_ahead);
    store_tokens(tokens_ahead, 1);
    __syncthreads();  // the first two steps' tokens
    load(0, next);
    store(next, decode_step_buffer(staged, rows, 0));
    __syncthreads();  // the first step's buffer
  }
  for (std::int64_t step = 0; step < steps; ++step) {
    if (step + 1 < steps) load(step + 1, next);
    tokens_of(step + 2, tokens_ahead);
    const DecodeStepBuffer now = decode_step_buffer(staged, rows, static_cast<int>(step % 2));
    if (holds_acc) {
      const std::int64_t visible = row.visible[r];
      for (int blk = 0; blk < kDecodeStepBlocks; ++blk) {
        const std::int64_t start = step * kDecodeStep + blk * kBlock;
        if (start >= visible) break;
        const int count = static_cast<int>(visible - start < kBlock ? visible - start : kBlock);
        const float factor = now.alpha[r * kDecodeStepBlocks + blk];
        const float* const w = now.probs + r * kStepProbStride + blk * kBlock;
        const float* const v = now.values + blk * kBlock * kDecodeDims + lane;
        acc = core::attention_rescaled(acc, factor);
        if (holds_sum) sum = core::attention_rescaled(sum, factor);
        for (int j = 0; j < count; ++j) {
          const float weight = w[j];
          acc = core::attention_accumulate_step(acc, weight, v[j * kDecodeDims]);
          if (holds_sum) sum = core::attention_sum_step(sum, weight);
        }
      }
    }
    if (step + 1 < steps) store(next, decode_step_buffer(staged, rows, static_cast<int>((step + 1) % 2)));
    store_tokens(tokens_ahead, step);  // step + 2's; step's were read by load(step)
    __syncthreads();  // the step's buffer is read before it is refilled
  }
  if (holds_sum) row_sum[r] = sum;
  __syncthreads();
  const std::int64_t d = d0 + lane;
  const bool writes = holds_acc && row.token[r] >= 0;
  if (writes && d < l.head_dim) {
    output_row<TOut>(p.out, b, row.token[r], row.head[r])[d] =
        core::from_float<TOut>(core::attention_normalized(acc, row_sum[r], row.visible[r]));
  }
  if (holds_sum && writes && blockIdx.x == 0 && p.lse.data != nullptr) {
    const std::int64_t blocks = (row.visible[r] + kBlock - 1) / kBlock;
    core::AttentionRowState state = core::attention_initial_state();
    if (blocks > 0) state.max = s.row_blocks(s.block_max, b, g, r)[blocks - 1];
    state.sum = row_sum[r];
    *output_row<float>(p.lse, b, row.token[r], row.head[r]) = core::attention_lse(state, row.visible[r]);
  }
}

// Pass 1 of the backward: a thread block of kRowThreads per (kRowTile tile
// entries, kv head) as in the forward, given the forward's fp32 output and
// LSE (saved by the caller, or recomputed by forward_kernel just before).
// Thread r < kRowTile takes row r's Di (a chain over d) and writes its LSE
// and Di for pass 2. Then for each key block, as the forward does: thread
// (group, lane) holds the score and dP chains of rows group + 8 i and keys
// lane + 16 j, then dS; and dq of rows group + 8 i, dims lane + 16 m in
// registers, each an fma chain over the row's visible keys in rank order.
constexpr int kRowTile = 16;
constexpr int kRowThreads = 128;
constexpr int kRowsOfThread = kRowTile / kGroups;
constexpr int kGradStride = static_cast<int>(kBlock) + 1;
static_assert(kGroups * kLanes == kRowThreads, "one thread per (row group, lane)");

// Dynamic shared memory of pass 1: the rows' q and dO, the key (then value,
// then key again) block, dS.
std::size_t row_pass_shared_floats(std::int64_t head_dim) {
  return static_cast<std::size_t>((2 * kRowTile + kBlock) * (head_dim + 1) + kRowTile * kGradStride);
}

template <class T, class TOut, int kDims>
__global__ void backward_rows_kernel(AttentionBackwardProblem p) {
  GOLDEN_SHARED(std::int64_t[kBlock], tokens);
  GOLDEN_SHARED(std::int64_t[kRowTile], row_index);
  GOLDEN_SHARED(std::int64_t[kRowTile], row_token);  // -1: no row of this sequence
  GOLDEN_SHARED(std::int64_t[kRowTile], row_head);
  GOLDEN_SHARED(std::int64_t[kRowTile], row_visible);
  GOLDEN_SHARED(float[kRowTile], row_lse);
  GOLDEN_SHARED(float[kRowTile], row_delta);
  GOLDEN_SHARED(unsigned long long, most_visible);
  GOLDEN_DYNAMIC_SHARED(float, staged);
  const AttentionLayout& l = p.layout;
  const int d_len = static_cast<int>(l.head_dim);
  const int ld = d_len + 1;
  float* const q = staged;
  float* const grad = q + kRowTile * ld;
  float* const kv = grad + kRowTile * ld;
  float* const score_grads = kv + kBlock * ld;
  const Staging s{kv, tokens, &most_visible};
  const QueryTileThread place = query_tile_thread<kRowTile>(l);
  const auto [g, head0, heads, first, last, t, group, lane] = place;
  const std::int64_t rows = core::attention_total_query_rows(l);
  for (std::int64_t b = owner(l.cu_q, l.num_seqs, l.q_len, first / heads);
       b <= owner(l.cu_q, l.num_seqs, l.q_len, last / heads); ++b) {
    const core::AttentionSeq seq = core::attention_seq(l, b);
    tile_rows_of_sequence<kRowTile>(l, b, seq, place, TileRows{row_index, row_token, row_head, row_visible});
    const std::int64_t keys = block_max(t < kRowTile ? row_visible[t] : 0, s.max_visible);
    const auto head_of = [&](int r) { return row_head[r]; };
    stage_rows<T>(p.q, b, row_token, head_of, kRowTile, d_len, q, ld);
    stage_rows<T>(p.grad_out, b, row_token, head_of, kRowTile, d_len, grad, ld);
    __syncthreads();
    if (t < kRowTile && row_token[t] >= 0) {
      const std::int64_t h = row_head[t];
      row_lse[t] = *input_row<float>(p.saved_lse, b, row_token[t], h);
      row_delta[t] = core::attention_delta(grad + t * ld, input_row<float>(p.saved_out, b, row_token[t], h), d_len);
      p.workspace[row_index[t] * l.num_q_heads + h] = row_lse[t];
      p.workspace[(rows + row_index[t]) * l.num_q_heads + h] = row_delta[t];
    }
    float dq[kRowsOfThread][kDims];
    for (auto& row_dq : dq) {
      for (float& v : row_dq) v = core::kAttentionAccStart;
    }
    for (std::int64_t start = 0; start < keys; start += kBlock) {
      stage<T>(l, p.k, b, seq.k_begin, g, start, keys, s, ld);
      float score[kRowsOfThread][kKeysPerThread];
      tile_dots(q, kv, ld, d_len, group, lane, score);
      stage<T>(l, p.v, b, seq.k_begin, g, start, keys, s, ld);
      float dp[kRowsOfThread][kKeysPerThread];
      tile_dots(grad, kv, ld, d_len, group, lane, dp);
      for (int i = 0; i < kRowsOfThread; ++i) {
        const int r = group + kGroups * i;
        for (int j = 0; j < kKeysPerThread; ++j) {
          const float prob = core::attention_probability(core::attention_score(score[i][j], l.scale), row_lse[r]);
          score_grads[r * kGradStride + lane + kLanes * j] = core::attention_score_grad(prob, dp[i][j], row_delta[r]);
        }
      }
      stage<T>(l, p.k, b, seq.k_begin, g, start, keys, s, ld);  // its first barrier: dS is in shared memory
      int count[kRowsOfThread];
      for (int i = 0; i < kRowsOfThread; ++i) {
        const std::int64_t left = row_visible[group + kGroups * i] - start;
        count[i] = static_cast<int>(left < 0 ? 0 : left < kBlock ? left : kBlock);
      }
      tile_accumulate(dq, count, score_grads, kGradStride, kv, ld, d_len, group, lane);
    }
    for (int i = 0; i < kRowsOfThread; ++i) {
      const int r = group + kGroups * i;
      if (row_token[r] < 0) continue;
      TOut* out = output_row<TOut>(p.dq, b, row_token[r], row_head[r]);
      for (int m = 0; m < kDims; ++m) {
        const int d = lane + kLanes * m;
        if (d < d_len) out[d] = core::from_float<TOut>(core::attention_grad_output(dq[i][m], l.scale));
      }
    }
    __syncthreads();  // the row arrays are read above before the next sequence rewrites them
  }
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
//  - thread t takes 2 rows x 2 keys of the tile (rows t % 8 + 8 a, keys
//    t / 8 + 16 c): the score and dP chains over d, then P and dS, as the
//    CPU's key lanes compute them;
//  - then thread (group, lane), for keys group + 8 k (k < 4) and dims
//    lane + 16 m, adds the tile's rows in order, dv += P dO and dk += dS q in
//    registers, a key skipping the rows that do not see it.
// Each key's dk and dv are thus the chains over (head, row) in order that
// the CPU sums.
constexpr int kKeyTile = 32;
constexpr int kKeyThreads = 128;
constexpr int kQueryTile = 16;
constexpr int kKeyGroups = kKeyThreads / kQueryTile;  // keys group + 8 k
constexpr int kKeysOfThread = kKeyTile / kKeyGroups;
constexpr int kTermStride = kQueryTile + 1;
// The scores / dP tile: 2 rows x 2 keys per thread, rows kPairRowStep and keys
// kPairKeyStep apart.
constexpr int kPairRowStep = kQueryTile / 2;
constexpr int kPairKeyStep = kKeyTile / 2;
static_assert(kPairRowStep * kPairKeyStep == kKeyThreads, "a thread per (row pair, key pair) of the tile");
static_assert(kKeyTile <= kKeyThreads, "a thread per key for its rank and token");
static_assert(kQueryTile == kLanes, "dims lane + 16 m, as in the forward");

// Dynamic shared memory of pass 2: the keys, values, q and dO rows, P and dS.
std::size_t key_pass_shared_floats(std::int64_t head_dim) {
  return static_cast<std::size_t>((2 * kKeyTile + 2 * kQueryTile) * (head_dim + 1) + 2 * kKeyTile * kTermStride);
}

template <class T, class TOut, int kDims>
__global__ void backward_keys_kernel(AttentionBackwardProblem p, std::int64_t key_rows) {
  GOLDEN_SHARED(std::int64_t[kKeyTile], key_token);  // -1: no key of this sequence
  GOLDEN_SHARED(std::int64_t[kKeyTile], key_rank);
  GOLDEN_SHARED(std::int64_t[kQueryTile], row_token);
  GOLDEN_SHARED(std::int64_t[kQueryTile], row_visible);
  GOLDEN_SHARED(float[kQueryTile], row_lse);
  GOLDEN_SHARED(float[kQueryTile], row_delta);
  GOLDEN_SHARED(unsigned long long, slot);
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
    // The rank of each of the thread's keys, -1 where the tile has no such
    // key: a row sees key k when 0 <= key_rank_of[k] < its visible count.
    std::int64_t key_rank_of[kKeysOfThread];
    for (int k = 0; k < kKeysOfThread; ++k) {
      const int j = group + kKeyGroups * k;
      key_rank_of[k] = key_token[j] < 0 ? -1 : key_rank[j];
    }
    stage_tokens<T>(p.k, b, g, key_token, kKeyTile, d_len, keys, ld);
    stage_tokens<T>(p.v, b, g, key_token, kKeyTile, d_len, values, ld);
    float dk[kKeysOfThread][kDims];
    float dv[kKeysOfThread][kDims];
    for (int k = 0; k < kKeysOfThread; ++k) {
      for (int m = 0; m < kDims; ++m) dk[k][m] = dv[k][m] = core::kAttentionAccStart;
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
        // The tile's scores and dP: thread t takes rows t % 8 + 8 a and keys
        // t / 8 + 16 c (a, c < 2), 8 staged loads per d for its 8 chains.
        const int row0 = t % kPairRowStep;
        const int key0 = t / kPairRowStep;
        float score[2][2];
        float dp[2][2];
        for (int a = 0; a < 2; ++a) {
          for (int c = 0; c < 2; ++c) score[a][c] = dp[a][c] = core::kAttentionDotStart;
        }
        for (int d = 0; d < d_len; ++d) {
          float x[2], y[2], key[2], value[2];
          for (int a = 0; a < 2; ++a) {
            x[a] = q[(row0 + kPairRowStep * a) * ld + d];
            y[a] = grad[(row0 + kPairRowStep * a) * ld + d];
          }
          for (int c = 0; c < 2; ++c) {
            key[c] = keys[(key0 + kPairKeyStep * c) * ld + d];
            value[c] = values[(key0 + kPairKeyStep * c) * ld + d];
          }
          for (int a = 0; a < 2; ++a) {
            for (int c = 0; c < 2; ++c) {
              score[a][c] = core::attention_dot_step(score[a][c], x[a], key[c]);
              dp[a][c] = core::attention_dot_step(dp[a][c], y[a], value[c]);
            }
          }
        }
        for (int a = 0; a < 2; ++a) {
          const int r = row0 + kPairRowStep * a;
          for (int c = 0; c < 2; ++c) {
            const int j = key0 + kPairKeyStep * c;
            const float prob = core::attention_probability(core::attention_score(score[a][c], l.scale), row_lse[r]);
            probs[j * kTermStride + r] = prob;
            score_grads[j * kTermStride + r] = core::attention_score_grad(prob, dp[a][c], row_delta[r]);
          }
        }
        __syncthreads();
        // Row by row in order; each of the row's staged dO and q elements is
        // read once for the thread's keys.
        for (int r = 0; r < kQueryTile; ++r) {
          bool sees[kKeysOfThread];
          float prob[kKeysOfThread];
          float ds[kKeysOfThread];
          for (int k = 0; k < kKeysOfThread; ++k) {
            const int j = group + kKeyGroups * k;
            sees[k] = key_rank_of[k] >= 0 && key_rank_of[k] < row_visible[r];
            prob[k] = probs[j * kTermStride + r];
            ds[k] = score_grads[j * kTermStride + r];
          }
          for (int m = 0; m < kDims; ++m) {
            const int d = lane + kLanes * m;
            if (d >= d_len) continue;
            const float row_grad = grad[r * ld + d];
            const float row_q = q[r * ld + d];
            for (int k = 0; k < kKeysOfThread; ++k) {
              if (!sees[k]) continue;
              dv[k][m] = core::attention_accumulate_step(dv[k][m], prob[k], row_grad);
              dk[k][m] = core::attention_accumulate_step(dk[k][m], ds[k], row_q);
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
      for (int m = 0; m < kDims; ++m) {
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
template <class Kernel>
void allow_shared_bytes(Kernel kernel, std::size_t bytes, const char* what) {
  constexpr std::size_t kDefaultLimit = 48 * 1024;
  if (bytes <= kDefaultLimit) return;
  check(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(bytes)),
        what);
}

}  // namespace

namespace {

// Calls body(std::integral_constant<int, kDims>) for the kernels' build that covers head_dim.
template <class Body>
void with_dims(std::int64_t head_dim, Body&& body) {
  if (head_dim <= kDimsUpTo128 * kLanes) {
    body(std::integral_constant<int, kDimsUpTo128>{});
  } else {
    body(std::integral_constant<int, kDimsUpToMax>{});
  }
}

template <class T, class TOut>
void launch_forward(const AttentionForwardProblem& p, cudaStream_t stream) {
  const AttentionLayout& l = p.layout;
  const std::int64_t entries = core::attention_total_query_rows(l) * (l.num_q_heads / l.num_kv_heads);
  const dim3 grid(grid_for(entries, kForwardRows), grid_for(l.num_kv_heads, 1, kMaxGridY));
  const std::size_t shared_bytes = forward_shared_floats(l.head_dim) * sizeof(float);
  with_dims(l.head_dim, [&](auto dims) {
    const auto kernel = forward_kernel<T, TOut, decltype(dims)::value>;
    allow_shared_bytes(kernel, shared_bytes, "attention_forward (shared memory)");
    launch(kernel, grid, kForwardThreads, shared_bytes, stream, p);
  });
  check_launch("attention_forward");
}

std::size_t decode_scratch_bytes() {
  const char* env = std::getenv("GOLDEN_KERNELS_GPU_DECODE_SCRATCH_BYTES");
  if (env == nullptr) return std::size_t{256} << 20;
  char* end = nullptr;
  const unsigned long long bytes = std::strtoull(env, &end, 10);
  if (*env < '0' || *env > '9' || *end != '\0' || bytes == 0) {  // strtoull would take "-1" or " 1"
    throw std::invalid_argument(std::string("GOLDEN_KERNELS_GPU_DECODE_SCRATCH_BYTES must be a positive integer, not '") +
                                env + "'");
  }
  return static_cast<std::size_t>(bytes);
}

// Rows per (sequence, kv head) and key blocks of the decode kernels: the
// longest sequence's.
std::int64_t decode_rows(const AttentionLayout& l) { return l.longest_q * (l.num_q_heads / l.num_kv_heads); }
std::int64_t decode_blocks(const AttentionLayout& l) { return (l.longest_k + kBlock - 1) / kBlock; }

// Scratch floats of the decode kernels per sequence.
std::int64_t decode_floats_per_seq(const AttentionLayout& l) {
  return l.num_kv_heads * decode_rows(l) * (decode_blocks(l) * kBlock + 3 * decode_blocks(l));
}

// The decode kernels take sequences of at most kDecodeRows rows per kv head,
// one sequence's scratch within the budget.
bool decode_applies(const AttentionLayout& l) {
  return decode_rows(l) <= kDecodeRows &&
         static_cast<std::size_t>(decode_floats_per_seq(l)) * sizeof(float) <= decode_scratch_bytes();
}

template <class T, class TOut>
void launch_decode(const AttentionForwardProblem& p, cudaStream_t stream) {
  const AttentionLayout& l = p.layout;
  const std::int64_t rows = decode_rows(l);
  const std::int64_t blocks = decode_blocks(l);
  const std::int64_t per_seq = decode_floats_per_seq(l);
  const std::int64_t max_seqs = static_cast<std::int64_t>(decode_scratch_bytes() / sizeof(float)) / (per_seq > 0 ? per_seq : 1);
  const std::int64_t seqs_per_launch = std::min({l.num_seqs, max_seqs, kMaxGridY});
  DeviceBuffer scratch(static_cast<std::size_t>(seqs_per_launch * per_seq) * sizeof(float), stream,
                       "attention_forward (decode scratch)");
  const std::int64_t row_slots = seqs_per_launch * l.num_kv_heads * rows;
  float* const scores = scratch.as<float>();
  float* const block_max = scores + row_slots * blocks * kBlock;
  const std::size_t score_bytes = decode_score_shared_floats(rows, l.head_dim) * sizeof(float);
  allow_shared_bytes(decode_scores_kernel<T>, score_bytes, "attention_forward (decode scores, shared memory)");
  const std::size_t value_bytes = decode_values_shared_floats(rows) * sizeof(float);
  allow_shared_bytes(decode_values_kernel<T, TOut>, value_bytes, "attention_forward (decode values, shared memory)");
  for (std::int64_t first = 0; first < l.num_seqs; first += seqs_per_launch) {
    const std::int64_t seqs = std::min(seqs_per_launch, l.num_seqs - first);
    const DecodeScratch s{scores, block_max, block_max + row_slots * blocks, block_max + 2 * row_slots * blocks,
                          rows, blocks, first, l.num_kv_heads};
    const unsigned heads = grid_for(l.num_kv_heads, 1, kMaxGridY);
    const unsigned launch_seqs = static_cast<unsigned>(seqs);
    if (blocks > 0) {
      launch(decode_scores_kernel<T>, dim3(grid_for(blocks, 1), heads, launch_seqs), kDecodeScoreThreads,
             score_bytes, stream, p, s);
      check_launch("attention_forward (decode scores)");
      launch(decode_softmax_kernel, dim3(grid_for(rows, 1), heads, launch_seqs), kDecodeSoftmaxThreads, 0, stream, p,
             s);
      check_launch("attention_forward (decode softmax)");
    }
    launch(decode_values_kernel<T, TOut>, dim3(grid_for(l.head_dim, kDecodeDims), heads, launch_seqs),
           kDecodeThreads, value_bytes, stream, p, s);
    check_launch("attention_forward (decode values)");
  }
}

// GOLDEN_KERNELS_GPU_ATTENTION=tiles or =decode forces the forward's kernels
// (decode only where it applies, else ValueError); unset or auto: decode
// where it applies. Both give the same bits; tests run each.
bool use_decode(const AttentionLayout& l) {
  const char* env = std::getenv("GOLDEN_KERNELS_GPU_ATTENTION");
  const std::string choice = env == nullptr ? "auto" : env;
  if (choice == "auto") return decode_applies(l);
  if (choice == "tiles") return false;
  if (choice == "decode") {
    if (!decode_applies(l)) {
      throw std::invalid_argument(
          "GOLDEN_KERNELS_GPU_ATTENTION=decode: the decode kernels take sequences of at most " +
          std::to_string(kDecodeRows) + " query rows per kv head (query tokens x query heads per kv head) whose "
          "scratch fits GOLDEN_KERNELS_GPU_DECODE_SCRATCH_BYTES");
    }
    return true;
  }
  throw std::invalid_argument("GOLDEN_KERNELS_GPU_ATTENTION must be auto, tiles or decode, not '" + choice + "'");
}

}  // namespace

void attention_forward(const AttentionForwardProblem& p, std::uintptr_t stream) {
  if (core::attention_total_query_rows(p.layout) * p.layout.num_q_heads == 0) return;
  const bool decode = use_decode(p.layout);
  visit_in_out(p.dtype, p.out_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    if (decode) {
      launch_decode<T, TOut>(p, as_stream(stream));
    } else {
      launch_forward<T, TOut>(p, as_stream(stream));
    }
  });
}

void attention_backward(const AttentionBackwardProblem& problem, std::uintptr_t stream) {
  const AttentionLayout& l = problem.layout;
  const std::int64_t rows = core::attention_total_query_rows(l);
  const std::int64_t key_rows = l.cu_k == nullptr ? l.num_seqs * l.k_len : l.k_len;  // packed: k_len = tokens
  const cudaStream_t s = as_stream(stream);
  // Without the forward's output and LSE, forward_kernel makes them (fp32, the
  // bits a saved forward has), laid out [seq, token, Hq, D] and [seq, token, Hq].
  const bool recompute = problem.saved_out.data == nullptr && rows * l.num_q_heads > 0;
  const std::int64_t head_floats = l.num_q_heads * l.head_dim;
  DeviceBuffer forward(recompute ? static_cast<std::size_t>(rows * (head_floats + l.num_q_heads)) * sizeof(float) : 0,
                       s, "attention_backward (forward scratch)");
  AttentionBackwardProblem p = problem;
  if (recompute) {
    float* out = forward.as<float>();
    float* lse = out + rows * head_floats;
    const bool packed = l.cu_q != nullptr;
    p.saved_out = AttentionInput{out, packed ? 0 : l.q_len * head_floats, head_floats, l.head_dim};
    p.saved_lse = AttentionInput{lse, packed ? 0 : l.q_len * l.num_q_heads, l.num_q_heads, 1};
    const AttentionForwardProblem f{l, p.q, p.k, p.v,
                                    AttentionOutput{out, p.saved_out.seq_stride, head_floats, l.head_dim},
                                    AttentionOutput{lse, p.saved_lse.seq_stride, l.num_q_heads, 1},
                                    p.dtype, DType::f32};
    visit_dtype(p.dtype, [&](auto in) { launch_forward<decltype(in), float>(f, s); });
  }
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    if (rows * l.num_q_heads > 0) {
      const dim3 grid(grid_for(rows * (l.num_q_heads / l.num_kv_heads), kRowTile),
                      grid_for(l.num_kv_heads, 1, kMaxGridY));
      const std::size_t shared_bytes = row_pass_shared_floats(l.head_dim) * sizeof(float);
      with_dims(l.head_dim, [&](auto dims) {
        const auto kernel = backward_rows_kernel<T, TOut, decltype(dims)::value>;
        allow_shared_bytes(kernel, shared_bytes, "attention_backward (rows, shared memory)");
        launch(kernel, grid, kRowThreads, shared_bytes, s, p);
      });
      check_launch("attention_backward (rows)");
    }
    if (key_rows * l.num_kv_heads > 0) {
      const dim3 grid(grid_for(key_rows, kKeyTile), grid_for(l.num_kv_heads, 1, kMaxGridY));
      const std::size_t shared_bytes = key_pass_shared_floats(l.head_dim) * sizeof(float);
      with_dims(l.head_dim, [&](auto dims) {
        const auto kernel = backward_keys_kernel<T, TOut, decltype(dims)::value>;
        allow_shared_bytes(kernel, shared_bytes, "attention_backward (keys, shared memory)");
        launch(kernel, grid, kKeyThreads, shared_bytes, s, p, key_rows);
      });
      check_launch("attention_backward (keys)");
    }
  });
}

}  // namespace golden::gpu
