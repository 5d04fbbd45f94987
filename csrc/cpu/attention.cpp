// Attention on the CPU: tasks of (sequence, kv head, 64 query rows of its
// group) for the forward and the backward's LSE / Di pass; the backward's
// dk/dv pass runs tasks of (sequence, kv head), which also carry dq, or of
// (sequence, kv head, 64 key ranks) after a pass 1 that makes dq.
// A task stages one block of keys as fp32 (K transposed so the score loop
// vectorises across keys) and runs the core's per-row functions
// (csrc/core/ops/attention.h) on it; the SIMD builds fold 4 rows at once
// (tile_*), or a full task's 64 rows with the rows in vector lanes for blocks
// they all see whole (task_*, lane_*), and the backward's dk/dv pass runs a
// block's 64 keys in vector lanes (lane_*, pending_*); each chain keeps the
// core's order, so the bits are the same.
#include <type_traits>

#include "../core/ops/attention.h"
#include "../core/reduce.h"
#include "rows.h"
#include "scratch.h"
#include "simd.h"
#include "target.h"

GOLDEN_CPU_BEGIN
namespace {

constexpr std::int64_t kBlock = kAttentionKeyBlock;
constexpr std::int64_t kMaxD = kAttentionMaxHeadDim;
// Rows of fp32 staged (or gathered) for a block are kRowStride floats apart:
// a cache line more than kMaxD, so that a block's 64 rows spread over all of
// L1's sets (rows 1 KiB apart would map them onto a sixteenth of the sets, and
// a pass down a column of them would miss every time).
constexpr std::int64_t kRowStride = kMaxD + 16;
// Query rows per forward task, token-major over the kv group's query heads
// (decode: one token, all heads of the group share each staged key block).
constexpr std::int64_t kTaskRows = 64;

template <class T>
const T* input_row(const AttentionInput& t, std::int64_t b, std::int64_t token, std::int64_t head) {
  return static_cast<const T*>(t.data) + b * t.seq_stride + token * t.token_stride +
         head * t.head_stride;
}

template <class T>
T* output_row(const AttentionOutput& t, std::int64_t b, std::int64_t token, std::int64_t head) {
  return static_cast<T*>(t.data) + b * t.seq_stride + token * t.token_stride +
         head * t.head_stride;
}

#if defined(__AVX2__)

// out[d * kBlock + j] = rows[j][d] for 8 keys j: 8 x 8 tiles transposed in
// registers (pure data movement), the d tail element by element.
template <class T>
void transpose_8_keys(const T* const* rows, std::int64_t d_len, float* out) {
  std::int64_t d0 = 0;
  for (; d0 + 8 <= d_len; d0 += 8) {
    __m256 r[8];
    for (int j = 0; j < 8; ++j) r[j] = load_8_as_float(rows[j] + d0);
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    const __m256 cols[8] = {
        _mm256_permute2f128_ps(u0, u4, 0x20), _mm256_permute2f128_ps(u1, u5, 0x20),
        _mm256_permute2f128_ps(u2, u6, 0x20), _mm256_permute2f128_ps(u3, u7, 0x20),
        _mm256_permute2f128_ps(u0, u4, 0x31), _mm256_permute2f128_ps(u1, u5, 0x31),
        _mm256_permute2f128_ps(u2, u6, 0x31), _mm256_permute2f128_ps(u3, u7, 0x31)};
    for (int i = 0; i < 8; ++i) _mm256_storeu_ps(out + (d0 + i) * kBlock, cols[i]);
  }
  for (; d0 < d_len; ++d0) {
    for (int j = 0; j < 8; ++j) out[d0 * kBlock + j] = core::to_float(rows[j][d0]);
  }
}

#endif

// Key ranks [start, start + count) of kv head g as fp32: transposed
// [D][kBlock] (lanes past count zero) and/or as rows [kBlock][D].
template <class T>
struct KeyBlockStage {
  const AttentionLayout& layout;
  const AttentionInput& src;
  std::int64_t b;
  const core::AttentionSeq& seq;
  std::int64_t g;

  void transposed(std::int64_t start, std::int64_t count, float* out) const {
    const std::int64_t d_len = layout.head_dim;
    for (std::int64_t d = 0; d < d_len; ++d) {
      for (std::int64_t j = count; j < kBlock; ++j) out[d * kBlock + j] = 0.0f;
    }
    std::int64_t j0 = 0;
#if defined(__AVX2__)
    for (; j0 + 8 <= count; j0 += 8) {
      const T* rows8[8];
      for (int j = 0; j < 8; ++j) rows8[j] = token_row(start + j0 + j);
      transpose_8_keys(rows8, d_len, out + j0);
    }
#endif
    for (std::int64_t j = j0; j < count; ++j) {
      const T* row = token_row(start + j);
      for (std::int64_t d = 0; d < d_len; ++d) out[d * kBlock + j] = core::to_float(row[d]);
    }
  }

  void rows(std::int64_t start, std::int64_t count, float* out, std::int64_t row_stride = kRowStride) const {
    for (std::int64_t j = 0; j < count; ++j) widen_row(token_row(start + j), out + j * row_stride, layout.head_dim);
  }

  // Asks for the rows of ranks [start, start + count) to be brought towards the
  // core (L2) while the current block is computed.
  void prefetch(std::int64_t start, std::int64_t count) const {
    const std::int64_t row_bytes = layout.head_dim * static_cast<std::int64_t>(sizeof(T));
    for (std::int64_t j = 0; j < count; ++j) {
      const char* row = reinterpret_cast<const char*>(token_row(start + j));
      for (std::int64_t byte = 0; byte < row_bytes; byte += 64) __builtin_prefetch(row + byte, 0, 2);
    }
  }

  const T* token_row(std::int64_t rank) const {
    return input_row<T>(src, b, seq.k_begin + core::attention_key_token(layout, b, rank), g);
  }

  // The fp32 rows of ranks [start, start + count), src.token_stride apart, where
  // they can be read in place (consecutive tokens: no padding gap); else nullptr.
  const float* rows_in_place(std::int64_t start, std::int64_t count) const {
    if constexpr (std::is_same_v<T, float>) {
      const std::int64_t first = core::attention_key_token(layout, b, start);
      if (core::attention_key_token(layout, b, start + count - 1) - first == count - 1) return token_row(start);
    }
    return nullptr;
  }
};

// Views of the staged blocks for the core's generic loops.
struct TransposedView {
  const float* data;
  float operator()(std::int64_t d, std::int64_t j) const { return data[d * kBlock + j]; }
};

struct RowsView {
  const float* data;
  float operator()(std::int64_t j, std::int64_t d) const { return data[j * kRowStride + d]; }
};

#if defined(__AVX2__)

// The core's attention_block_dots on a staged transposed block with the 64
// lane accumulators in registers: lane j is the same fma chain over d.
void block_dots(const float* x, std::int64_t d_len, const float* keys_t, float* dots) {
  constexpr int kVecs = kBlock / kVecLanes;
  Vec acc[kVecs];
  for (int c = 0; c < kVecs; ++c) acc[c] = vec_zero();
  for (std::int64_t d = 0; d < d_len; ++d) {
    const Vec xd = vec_broadcast(x[d]);
    const float* row = keys_t + d * kBlock;
    for (int c = 0; c < kVecs; ++c) acc[c] = vec_fma(xd, vec_load(row + c * kVecLanes), acc[c]);
  }
  for (int c = 0; c < kVecs; ++c) vec_store(dots + c * kVecLanes, acc[c]);
}

void block_scores(const float* q, std::int64_t d_len, float scale, const float* keys_t, float* scores) {
  block_dots(q, d_len, keys_t, scores);
  core::attention_block_scale(scores, scale);
}

// The core's attention_accumulate over a block's rows (acc[d] = fma(w_j,
// row_j[d], acc[d]), j in order), 32 columns of acc at a time in registers.
void block_accumulate(float* acc, std::int64_t d_len, const float* weights, std::int64_t count,
                      const float* rows) {
  constexpr int kVecs = 32 / kVecLanes;
  std::int64_t d0 = 0;
  for (; d0 + 32 <= d_len; d0 += 32) {
    Vec sum[kVecs];
    for (int c = 0; c < kVecs; ++c) sum[c] = vec_load(acc + d0 + c * kVecLanes);
    for (std::int64_t j = 0; j < count; ++j) {
      const Vec w = vec_broadcast(weights[j]);
      const float* row = rows + j * kRowStride + d0;
      for (int c = 0; c < kVecs; ++c) sum[c] = vec_fma(w, vec_load(row + c * kVecLanes), sum[c]);
    }
    for (int c = 0; c < kVecs; ++c) vec_store(acc + d0 + c * kVecLanes, sum[c]);
  }
  for (std::int64_t j = 0; j < count; ++j) {
    for (std::int64_t d = d0; d < d_len; ++d) acc[d] = core::fma_rn(weights[j], rows[j * kRowStride + d], acc[d]);
  }
}

// Register tiles of kTileRows query rows that fold the same key count: each
// K or V vector loaded feeds all the tile's rows. Every row keeps its own
// chains in the core's order (score lane j: fma over d; sum: + over j; acc
// column d: fma over j), so the bits are those of the one-row path.
constexpr int kTileRows = 4;
// Vectors per row: 4 x 3 independent fma chains in flight hide the fma
// latency on AVX2 (2 vectors would leave none to spare) and with the vectors
// they share fill its 16 registers; AVX-512's 32 registers hold 4 x 4 chains
// (a whole 64-key block of scores per tile) and 4 shared vectors.
#if defined(GOLDEN_SIMD_16_LANES)
constexpr int kTileVecs = 4;
#else
constexpr int kTileVecs = 3;
#endif

// Columns [c0, c0 + kVecs * kVecLanes) of the tile's block dots.
template <int kVecs>
void tile_dots_chunk(const float* const* q, std::int64_t d_len, const float* keys_t, std::int64_t c0,
                     float (*scores)[kBlock]) {
  Vec acc[kTileRows][kVecs];
  for (int r = 0; r < kTileRows; ++r) {
    for (int c = 0; c < kVecs; ++c) acc[r][c] = vec_zero();
  }
  for (std::int64_t d = 0; d < d_len; ++d) {
    Vec key[kVecs];
    for (int c = 0; c < kVecs; ++c) key[c] = vec_load(keys_t + d * kBlock + c0 + c * kVecLanes);
    for (int r = 0; r < kTileRows; ++r) {
      const Vec qd = vec_broadcast(q[r][d]);
      for (int c = 0; c < kVecs; ++c) acc[r][c] = vec_fma(qd, key[c], acc[r][c]);
    }
  }
  for (int r = 0; r < kTileRows; ++r) {
    for (int c = 0; c < kVecs; ++c) vec_store(scores[r] + c0 + c * kVecLanes, acc[r][c]);
  }
}

// Splits `vectors` register columns into tile chunks of kTileVecs, ending
// (kTileVecs - 1) + 2 rather than kTileVecs + 1 (a 1-vector chunk keeps only
// 4 fma chains in flight), and calls chunk(first vector, width) for each, in
// column order.
template <class Chunk>
void for_each_column_chunk(std::int64_t vectors, Chunk&& chunk) {
  for (std::int64_t v = 0; v < vectors;) {
    const std::int64_t left = vectors - v;
    const int width = left <= kTileVecs       ? static_cast<int>(left)
                      : left == kTileVecs + 1 ? kTileVecs - 1
                                              : kTileVecs;
    chunk(v, width);
    v += width;
  }
}

// Calls body(std::integral_constant<int, width>) for a chunk width of
// for_each_column_chunk, so each width gets its own register tile.
template <class Body>
void with_chunk_width(int width, Body&& body) {
  static_assert(kTileVecs <= 4, "a case per chunk width");
  switch (width) {
    case 4:
      if constexpr (kTileVecs == 4) body(std::integral_constant<int, 4>{});
      break;
    case 3: body(std::integral_constant<int, 3>{}); break;
    case 2: body(std::integral_constant<int, 2>{}); break;
    default: body(std::integral_constant<int, 1>{}); break;
  }
}

// dots[r] = the core's attention_block_dots of x[r], for the tile's rows.
void tile_dots(const float* const* q, std::int64_t d_len, const float* keys_t, float (*scores)[kBlock]) {
  static_assert(kBlock % kVecLanes == 0, "the key block splits into vectors");
  for_each_column_chunk(kBlock / kVecLanes, [&](std::int64_t v, int width) {
    with_chunk_width(width, [&](auto vecs) {
      tile_dots_chunk<decltype(vecs)::value>(q, d_len, keys_t, v * kVecLanes, scores);
    });
  });
}

// scores[r] = the core's attention_block_scores of q[r], for the tile's rows.
void tile_scores(const float* const* q, std::int64_t d_len, float scale, const float* keys_t,
                 float (*scores)[kBlock]) {
  tile_dots(q, d_len, keys_t, scores);
  for (int r = 0; r < kTileRows; ++r) core::attention_block_scale(scores[r], scale);
}

// The core's attention_block_probs in a function of its own, where the
// compiler vectorises the block's exps (exp_f32 is branch-free).
void block_probs(const float* __restrict scores, float origin, float* __restrict probs) {
  core::attention_block_probs(scores, origin, probs);
}

// The tile's serial chains over a block's keys (max, then sum) run with row r
// in lane r of one 4-wide vector: each lane is the core's chain over j in
// rank order, and the 4 rows' chains overlap instead of queueing.
static_assert(kTileRows == 4, "one row per lane of a 4-wide vector");

// Lanes r = m[r][j .. j + 3], transposed so that out[i] holds key j + i.
void tile_columns(const float (*m)[kBlock], std::int64_t j, __m128* out) {
  out[0] = _mm_load_ps(m[0] + j);
  out[1] = _mm_load_ps(m[1] + j);
  out[2] = _mm_load_ps(m[2] + j);
  out[3] = _mm_load_ps(m[3] + j);
  _MM_TRANSPOSE4_PS(out[0], out[1], out[2], out[3]);
}

__m128 tile_column(const float (*m)[kBlock], std::int64_t j) {
  return _mm_setr_ps(m[0][j], m[1][j], m[2][j], m[3][j]);
}

// The core's attention_block_max for each row: max_ps(s, m) is the core's
// select(s > m, s, m), lane by lane.
__m128 tile_block_max(const float (*scores)[kBlock], std::int64_t count) {
  __m128 block_max = _mm_set1_ps(-core::math_detail::inf());
  std::int64_t j = 0;
  for (; j + 4 <= count; j += 4) {
    __m128 col[4];
    tile_columns(scores, j, col);
    for (int i = 0; i < 4; ++i) block_max = _mm_max_ps(col[i], block_max);
  }
  for (; j < count; ++j) block_max = _mm_max_ps(tile_column(scores, j), block_max);
  return block_max;
}

// The core's attention_block_sum for each row: sum = sum + p over j in order.
__m128 tile_block_sum(__m128 sum, const float (*probs)[kBlock], std::int64_t count) {
  std::int64_t j = 0;
  for (; j + 4 <= count; j += 4) {
    __m128 col[4];
    tile_columns(probs, j, col);
    for (int i = 0; i < 4; ++i) sum = _mm_add_ps(sum, col[i]);
  }
  for (; j < count; ++j) sum = _mm_add_ps(sum, tile_column(probs, j));
  return sum;
}

// The core's attention_block_softmax for each of the tile's rows.
void tile_softmax(core::AttentionRowState* const* st, float* const* acc, std::int64_t d_len,
                  const float (*scores)[kBlock], std::int64_t count, float (*probs)[kBlock]) {
  alignas(16) float block_max[kTileRows];
  alignas(16) float sum[kTileRows];
  _mm_store_ps(block_max, tile_block_max(scores, count));
  for (int r = 0; r < kTileRows; ++r) {
    const float origin = core::attention_rescale_to(*st[r], acc[r], d_len, block_max[r]);
    block_probs(scores[r], origin, probs[r]);
    sum[r] = st[r]->sum;
  }
  _mm_store_ps(sum, tile_block_sum(_mm_load_ps(sum), probs, count));
  for (int r = 0; r < kTileRows; ++r) st[r]->sum = sum[r];
}

// Columns [d0, d0 + kVecs * kVecLanes) of the tile's accumulation: row r
// takes weights[r][j] times key j's row (rows kRowStride apart).
template <int kVecs>
void tile_accumulate_chunk(float* const* acc, const float (*weights)[kBlock], std::int64_t count,
                           const float* rows, std::int64_t d0) {
  Vec sum[kTileRows][kVecs];
  for (int r = 0; r < kTileRows; ++r) {
    for (int c = 0; c < kVecs; ++c) sum[r][c] = vec_load(acc[r] + d0 + c * kVecLanes);
  }
  for (std::int64_t j = 0; j < count; ++j) {
    Vec value[kVecs];
    for (int c = 0; c < kVecs; ++c) value[c] = vec_load(rows + j * kRowStride + d0 + c * kVecLanes);
    for (int r = 0; r < kTileRows; ++r) {
      const Vec w = vec_broadcast(weights[r][j]);
      for (int c = 0; c < kVecs; ++c) sum[r][c] = vec_fma(w, value[c], sum[r][c]);
    }
  }
  for (int r = 0; r < kTileRows; ++r) {
    for (int c = 0; c < kVecs; ++c) vec_store(acc[r] + d0 + c * kVecLanes, sum[r][c]);
  }
}

// block_accumulate for the tile's rows: each V vector loaded feeds all rows.
void tile_accumulate(float* const* acc, std::int64_t d_len, const float (*weights)[kBlock],
                     std::int64_t count, const float* rows) {
  for_each_column_chunk(d_len / kVecLanes, [&](std::int64_t v, int width) {
    with_chunk_width(width, [&](auto vecs) {
      tile_accumulate_chunk<decltype(vecs)::value>(acc, weights, count, rows, v * kVecLanes);
    });
  });
  for (int r = 0; r < kTileRows; ++r) {  // the columns past the last whole vector
    for (std::int64_t j = 0; j < count; ++j) {
      for (std::int64_t d = d_len / kVecLanes * kVecLanes; d < d_len; ++d) {
        acc[r][d] = core::fma_rn(weights[r][j], rows[j * kRowStride + d], acc[r][d]);
      }
    }
  }
}

#else

// The scalar build (the reference backend) runs the core's loops as written.
void block_dots(const float* x, std::int64_t d_len, const float* keys_t, float* dots) {
  core::attention_block_dots(x, d_len, TransposedView{keys_t}, dots);
}

void block_scores(const float* q, std::int64_t d_len, float scale, const float* keys_t, float* scores) {
  core::attention_block_scores(q, d_len, scale, TransposedView{keys_t}, scores);
}

void block_accumulate(float* acc, std::int64_t d_len, const float* weights, std::int64_t count,
                      const float* rows) {
  core::attention_block_accumulate(acc, d_len, weights, count, RowsView{rows});
}

#endif

// The rows of one forward task: query heads of kv head g, token-major.
struct TaskRows {
  std::int64_t b;
  std::int64_t g;
  std::int64_t first;  // row index within the sequence's group rows (token * G + head)
  std::int64_t count;
  std::int64_t group;  // query heads per kv head

  std::int64_t token(std::int64_t r) const { return (first + r) / group; }
  std::int64_t head(std::int64_t r) const { return g * group + (first + r) % group; }
};

std::int64_t max_query_len(const AttentionLayout& l) {
  if (l.cu_q == nullptr) return l.q_len;
  std::int64_t longest = 0;
  for (std::int64_t b = 0; b < l.num_seqs; ++b) {
    const std::int64_t len = l.cu_q[b + 1] - l.cu_q[b];
    longest = len > longest ? len : longest;
  }
  return longest;
}

std::int64_t max_key_len(const AttentionLayout& l) {
  if (l.cu_k == nullptr) return l.k_len;
  std::int64_t longest = 0;
  for (std::int64_t b = 0; b < l.num_seqs; ++b) {
    const std::int64_t len = l.cu_k[b + 1] - l.cu_k[b];
    longest = len > longest ? len : longest;
  }
  return longest;
}

// Runs body(TaskRows) for every (sequence, kv head, chunk of kTaskRows rows);
// chunk boundaries depend only on the sequence's own length.
template <class Body>
void for_each_row_task(const AttentionLayout& l, int num_threads, Body&& body) {
  const std::int64_t group = l.num_q_heads / l.num_kv_heads;
  const std::int64_t chunks = core::ceil_div(max_query_len(l) * group, kTaskRows);
  auto task_body = [&](std::int64_t task) {
    const std::int64_t chunk = task % chunks;
    const std::int64_t g = (task / chunks) % l.num_kv_heads;
    const std::int64_t b = task / chunks / l.num_kv_heads;
    const core::AttentionSeq seq = core::attention_seq(l, b);
    const std::int64_t rows = seq.q_len * group;
    const std::int64_t first = chunk * kTaskRows;
    if (first >= rows) return;
    const std::int64_t count = rows - first < kTaskRows ? rows - first : kTaskRows;
    body(seq, TaskRows{b, g, first, count, group});
  };
  if (chunks == 0) return;
  parallel_tasks(l.num_seqs * l.num_kv_heads * chunks, num_threads, task_body);
}

// The forward of a task's rows: on return acc/state hold each row's online
// softmax over all its visible keys.
struct RowForward {
  float q[kTaskRows][kMaxD];
  float acc[kTaskRows][kMaxD];
  core::AttentionRowState state[kTaskRows];
  std::int64_t visible[kTaskRows];
};

// Keys of rank [start, start + count) that row r folds in this block.
std::int64_t block_count(const RowForward& f, std::int64_t r, std::int64_t start) {
  const std::int64_t left = f.visible[r] - start;
  return left <= 0 ? 0 : (left < kBlock ? left : kBlock);
}

// Folds the staged key block into one row (the core's functions as written).
void fold_row(RowForward& f, std::int64_t r, std::int64_t count, std::int64_t d_len, float scale,
              const float* keys_t, const float* values) {
  alignas(64) float scores[kBlock];
  alignas(64) float probs[kBlock];
  block_scores(f.q[r], d_len, scale, keys_t, scores);
  core::attention_block_softmax(f.state[r], f.acc[r], d_len, scores, count, probs);
  block_accumulate(f.acc[r], d_len, probs, count, values);
}

#if defined(__AVX2__)

// ---- Whole blocks with the task's rows in vector lanes ----------------------------------
// When all kTaskRows rows of a task fold a whole key block (every block of a
// long prefill but those on the causal diagonal), the block's scores are kept
// transposed, scores_t[j][r], each still the core's fma chain over d. The
// serial chains over j (the block max, the sum of probabilities) then run
// kVecLanes rows to a vector and kTaskRows / kVecLanes vectors side by side,
// instead of four rows per 64-step chain: with AVX-512's wide fma tiles those
// chains had become a third of the prefill's time.
constexpr int kRowVecs = static_cast<int>(kTaskRows) / kVecLanes;
static_assert(kTaskRows % kVecLanes == 0, "the task's rows fill whole vectors");
// Lane tiles of kLaneRowVecs row vectors x kLaneCols columns (keys for the
// scores, head dims for P V): 24 fma chains and 5 shared vectors of AVX-512's
// 32 registers; 12 chains and 3 of AVX2's 16.
#if defined(GOLDEN_SIMD_16_LANES)
constexpr int kLaneRowVecs = 4;
constexpr int kLaneCols = 6;
#else
constexpr int kLaneRowVecs = 2;
constexpr int kLaneCols = 6;
#endif
static_assert(kRowVecs % kLaneRowVecs == 0, "whole lane tiles over the rows");

// lanes[d * kTaskRows + r] = rows[r][d] for the task's rows, and back.
void rows_to_lanes(const float (*rows)[kMaxD], std::int64_t d_len, float* lanes) {
  for (std::int64_t d = 0; d < d_len; ++d) {
    for (std::int64_t r = 0; r < kTaskRows; ++r) lanes[d * kTaskRows + r] = rows[r][d];
  }
}

void lanes_to_rows(const float* lanes, std::int64_t d_len, float (*rows)[kMaxD]) {
  for (std::int64_t r = 0; r < kTaskRows; ++r) {
    for (std::int64_t d = 0; d < d_len; ++d) rows[r][d] = lanes[d * kTaskRows + r];
  }
}

// The lane tiles' register tile: for the lane vectors [v0, v0 + kRV) and kCols
// columns c, sum[c][v] += a[i][lanes] * b[c * c_stride + i * i_stride] over
// i = 0..count-1 in order (a is [count][kTaskRows]; b's element is broadcast).
// Each lane is one fma chain, as in the core's loops. kMasked: step i reaches
// only lanes below lane_counts[i], the others skip it (a key that row i does
// not see).
template <int kRV, int kCols, bool kMasked = false>
void lane_tile_fma(const float* a, int v0, const float* b, std::int64_t c_stride, std::int64_t i_stride,
                   std::int64_t count, Vec (&sum)[kCols][kRV], const std::int64_t* lane_counts = nullptr) {
  for (std::int64_t i = 0; i < count; ++i) {
    Vec rows[kRV];
    for (int v = 0; v < kRV; ++v) rows[v] = vec_load(a + i * kTaskRows + (v0 + v) * kVecLanes);
    [[maybe_unused]] LaneMask in[kRV];
    if constexpr (kMasked) {
      for (int v = 0; v < kRV; ++v) in[v] = lanes_below(static_cast<int>(lane_counts[i]) - (v0 + v) * kVecLanes);
    }
    for (int c = 0; c < kCols; ++c) {
      const Vec bc = vec_broadcast(b[c * c_stride + i * i_stride]);
      for (int v = 0; v < kRV; ++v) {
        if constexpr (kMasked) {
          sum[c][v] = vec_fma_in(in[v], rows[v], bc, sum[c][v]);
        } else {
          sum[c][v] = vec_fma(rows[v], bc, sum[c][v]);
        }
      }
    }
  }
}

// Calls body(std::integral_constant<int, width>) for a runtime width in [1, kMax].
template <int kMax, class Body>
void with_width(int width, Body&& body) {
  if constexpr (kMax > 0) {
    if (width == kMax) {
      body(std::integral_constant<int, kMax>{});
    } else {
      with_width<kMax - 1>(width, body);
    }
  }
}

// The lane tiles below are forced inline: shared out of line by the forward and
// the backward, they cost the fp32 prefill ~4% at S 8192.
// The fma chain over d from +0 of lanes_t[d][lane] * rows[c][d], for rows
// [c0, c0 + kCols) (row_stride apart) and the lanes of vectors [v0, v0 + kRV),
// handed to store(c, v, dots) row by row in order: the core's block dots, rows
// in lanes (the forward's queries against key rows) or keys in lanes (the
// backward's key block against q, dO).
template <int kRV, int kCols, class Store>
[[gnu::always_inline]] inline void lane_dots_tile(const float* lanes_t, std::int64_t d_len, const float* rows,
                                                  std::int64_t row_stride, int v0, std::int64_t c0, Store& store) {
  Vec dot[kCols][kRV];
  for (int c = 0; c < kCols; ++c) {
    for (int v = 0; v < kRV; ++v) dot[c][v] = vec_zero();
  }
  lane_tile_fma<kRV, kCols>(lanes_t, v0, rows + c0 * row_stride, row_stride, 1, d_len, dot);
  for (int c = 0; c < kCols; ++c) {
    for (int v = 0; v < kRV; ++v) store(c0 + c, v0 + v, dot[c][v]);
  }
}

// lane_dots_tile for rows [0, count), in row order within each lane.
template <class Store>
[[gnu::always_inline]] inline void lane_dots(const float* lanes_t, std::int64_t d_len, const float* rows,
                                             std::int64_t row_stride, std::int64_t count, Store&& store) {
  for (int v0 = 0; v0 < kRowVecs; v0 += kLaneRowVecs) {
    std::int64_t c0 = 0;
    for (; c0 + kLaneCols <= count; c0 += kLaneCols) {
      lane_dots_tile<kLaneRowVecs, kLaneCols>(lanes_t, d_len, rows, row_stride, v0, c0, store);
    }
    with_width<kLaneCols - 1>(static_cast<int>(count - c0), [&](auto cols) {
      lane_dots_tile<kLaneRowVecs, decltype(cols)::value>(lanes_t, d_len, rows, row_stride, v0, c0, store);
    });
  }
}

// dots[c][lane] for rows [0, count).
[[gnu::always_inline]] inline void lane_dots(const float* lanes_t, std::int64_t d_len, const float* rows,
                                             std::int64_t row_stride, std::int64_t count, float (*dots)[kTaskRows]) {
  lane_dots(lanes_t, d_len, rows, row_stride, count,
            [dots](std::int64_t c, int v, Vec dot) { vec_store(dots[c] + v * kVecLanes, dot); });
}

// scores_t[j][r] = the core's attention_block_scores of row r for key j, from
// the transposed queries and the block's key rows (key_stride apart), and
// block_max[r] = the core's attention_block_max of those scores. Each score
// is scaled (the core's attention_score on the tile's vector) and folded into its row's
// max as its tile stores it; the tiles hand over keys in rank order.
void task_scores(const float* q_t, std::int64_t d_len, float scale, const float* key_rows, std::int64_t key_stride,
                 float (*scores_t)[kTaskRows], float* block_max) {
  const Vec scale_v = vec_broadcast(scale);
  Vec max_chain[kRowVecs];
  for (int v = 0; v < kRowVecs; ++v) max_chain[v] = vec_broadcast(-core::math_detail::inf());
  lane_dots(q_t, d_len, key_rows, key_stride, kBlock, [&](std::int64_t j, int v, Vec dot) {
    const Vec score = core::attention_score(dot, scale_v);
    vec_store(scores_t[j] + v * kVecLanes, score);
    max_chain[v] = vec_select_greater(max_chain[v], score);
  });
  for (int v = 0; v < kRowVecs; ++v) vec_store(block_max + v * kVecLanes, max_chain[v]);
}

// acc_t[d][lane] for columns [d0, d0 + kCols) and the lanes of vectors
// [v0, v0 + kRV): the chains continue from the accumulators over i in order,
// each adding weights[i][lane] * rows[i][d] (rows row_stride apart).
template <int kRV, int kCols, bool kMasked>
[[gnu::always_inline]] inline void lane_accumulate_tile(float* acc_t, const float (*weights)[kTaskRows],
                                                        std::int64_t count, const float* rows, std::int64_t row_stride,
                                                        const std::int64_t* lane_counts, int v0, std::int64_t d0) {
  Vec sum[kCols][kRV];
  for (int c = 0; c < kCols; ++c) {
    for (int v = 0; v < kRV; ++v) sum[c][v] = vec_load(acc_t + (d0 + c) * kTaskRows + (v0 + v) * kVecLanes);
  }
  lane_tile_fma<kRV, kCols, kMasked>(weights[0], v0, rows + d0, 1, row_stride, count, sum, lane_counts);
  for (int c = 0; c < kCols; ++c) {
    for (int v = 0; v < kRV; ++v) vec_store(acc_t + (d0 + c) * kTaskRows + (v0 + v) * kVecLanes, sum[c][v]);
  }
}

// acc_t[d][lane] += weights[i][lane] * rows[i][d] for i = 0..count-1 in order
// (kMasked: only for lanes below lane_counts[i]): the core's accumulate chains
// with their sums in lanes, the forward's rows (weights = probabilities, rows =
// value rows) or the backward's dk, dv of a key block (weights = dS or P of
// the query rows, rows = their q or dO).
template <bool kMasked>
[[gnu::always_inline]] inline void lane_accumulate(float* acc_t, std::int64_t d_len, const float (*weights)[kTaskRows],
                                                   std::int64_t count, const float* rows, std::int64_t row_stride,
                                                   const std::int64_t* lane_counts) {
  for (int v0 = 0; v0 < kRowVecs; v0 += kLaneRowVecs) {
    std::int64_t d0 = 0;
    for (; d0 + kLaneCols <= d_len; d0 += kLaneCols) {
      lane_accumulate_tile<kLaneRowVecs, kLaneCols, kMasked>(acc_t, weights, count, rows, row_stride, lane_counts,
                                                             v0, d0);
    }
    with_width<kLaneCols - 1>(static_cast<int>(d_len - d0), [&](auto cols) {
      lane_accumulate_tile<kLaneRowVecs, decltype(cols)::value, kMasked>(acc_t, weights, count, rows, row_stride,
                                                                         lane_counts, v0, d0);
    });
  }
}

// One key's probabilities for the task's rows: the core's attention_block_prob
// on vectors of rows (VecLanes: each lane's bits are the scalar core's).
void key_probs(const float* scores, const float* origin, float* probs) {
  for (int v = 0; v < kRowVecs; ++v) {
    const Vec prob = core::attention_block_prob<VecLanes>(vec_load(scores + v * kVecLanes),
                                                          vec_load(origin + v * kVecLanes));
    vec_store(probs + v * kVecLanes, prob);
  }
}

// The core's attention_rescale_to for every task row, its steps in loops over
// the rows that the compiler vectorises (alpha's exps included), on the rows'
// transposed accumulators acc_t[d][r]; the rows' max and sum are copied to
// arrays and back around them.
void task_rescale(RowForward& f, float* __restrict acc_t, std::int64_t d_len, const float* __restrict block_max,
                  float* __restrict origin, float* __restrict sum) {
  alignas(64) float old_max[kTaskRows];
  alignas(64) float new_max[kTaskRows];
  alignas(64) float alpha[kTaskRows];
  for (std::int64_t r = 0; r < kTaskRows; ++r) {
    old_max[r] = f.state[r].max;
    sum[r] = f.state[r].sum;
  }
  for (std::int64_t r = 0; r < kTaskRows; ++r) {
    new_max[r] = core::attention_max(old_max[r], block_max[r]);
    const core::AttentionRescale rescale = core::attention_rescale_between(old_max[r], new_max[r]);
    origin[r] = rescale.origin;
    alpha[r] = rescale.alpha;
    sum[r] = core::attention_rescaled(sum[r], alpha[r]);
  }
  for (std::int64_t r = 0; r < kTaskRows; ++r) f.state[r].max = new_max[r];
  // No row's max moved (every alpha is exactly 1, as in most blocks of a long
  // row): x * 1 is x bit for bit, a NaN included, so the pass is skipped.
  bool every_alpha_one = true;
  for (std::int64_t r = 0; r < kTaskRows; ++r) every_alpha_one &= alpha[r] == 1.0f;
  if (every_alpha_one) return;
  for (std::int64_t d = 0; d < d_len; ++d) {
    for (std::int64_t r = 0; r < kTaskRows; ++r) {
      acc_t[d * kTaskRows + r] = core::attention_rescaled(acc_t[d * kTaskRows + r], alpha[r]);
    }
  }
}

// The core's attention_block_softmax of every task row over a whole block
// whose max is block_max: each key's probabilities join the rows' sums as
// they are made.
void task_softmax(RowForward& f, float* acc_t, std::int64_t d_len, const float (*scores_t)[kTaskRows],
                  const float* block_max, float (*probs_t)[kTaskRows]) {
  alignas(64) float origin[kTaskRows];
  alignas(64) float sum[kTaskRows];
  task_rescale(f, acc_t, d_len, block_max, origin, sum);
  Vec chain[kRowVecs];
  for (int v = 0; v < kRowVecs; ++v) chain[v] = vec_load(sum + v * kVecLanes);
  for (std::int64_t j = 0; j < kBlock; ++j) {
    key_probs(scores_t[j], origin, probs_t[j]);
    for (int v = 0; v < kRowVecs; ++v) chain[v] = vec_add(chain[v], vec_load(probs_t[j] + v * kVecLanes));
  }
  for (int v = 0; v < kRowVecs; ++v) vec_store(sum + v * kVecLanes, chain[v]);
  for (std::int64_t r = 0; r < kTaskRows; ++r) f.state[r].sum = sum[r];
}

// A whole block's fp32 key and value rows, each row stride elements apart.
struct WholeBlock {
  const float* keys;
  std::int64_t key_stride;
  const float* values;
  std::int64_t value_stride;
};

// Folds a whole block into every task row, the rows' accumulators transposed
// in acc_t[d][r].
void fold_whole_block(RowForward& f, float* acc_t, std::int64_t d_len, float scale, const float* q_t,
                      const WholeBlock& block) {
  alignas(64) float scores_t[kBlock][kTaskRows];
  alignas(64) float probs_t[kBlock][kTaskRows];
  alignas(64) float block_max[kTaskRows];
  task_scores(q_t, d_len, scale, block.keys, block.key_stride, scores_t, block_max);
  task_softmax(f, acc_t, d_len, scores_t, block_max, probs_t);
  lane_accumulate<false>(acc_t, d_len, probs_t, kBlock, block.values, block.value_stride, nullptr);
}

// The whole block of ranks [start, start + kBlock): fp32 rows of consecutive
// tokens are read in place, others staged as fp32 rows into key_rows / value_rows.
template <class T>
WholeBlock whole_block(const KeyBlockStage<T>& keys, const KeyBlockStage<T>& vals, std::int64_t start,
                       float* key_rows, float* value_rows) {
  WholeBlock block{keys.rows_in_place(start, kBlock), keys.src.token_stride,
                   vals.rows_in_place(start, kBlock), vals.src.token_stride};
  if (block.keys == nullptr) {
    keys.rows(start, kBlock, key_rows);
    block.keys = key_rows;
    block.key_stride = kRowStride;
  }
  if (block.values == nullptr) {
    vals.rows(start, kBlock, value_rows);
    block.values = value_rows;
    block.value_stride = kRowStride;
  }
  return block;
}

// The rank below which every row of a full task sees whole key blocks (the
// least visible count, rounded down to a block).
std::int64_t whole_blocks_end(const RowForward& f, std::int64_t most_visible) {
  std::int64_t seen_by_all = most_visible;
  for (std::int64_t r = 0; r < kTaskRows; ++r) seen_by_all = f.visible[r] < seen_by_all ? f.visible[r] : seen_by_all;
  return seen_by_all / kBlock * kBlock;
}

// Calls body(WholeBlock) for the blocks of ranks [0, end) in order, asking for
// each next block's rows meanwhile.
template <class T, class Body>
void for_each_whole_block(const KeyBlockStage<T>& keys, const KeyBlockStage<T>& vals, std::int64_t end,
                          std::int64_t most_visible, float* key_rows, float* value_rows, Body&& body) {
  for (std::int64_t start = 0; start < end; start += kBlock) {
    const WholeBlock block = whole_block(keys, vals, start, key_rows, value_rows);
    const std::int64_t next = most_visible - (start + kBlock) < kBlock ? most_visible - (start + kBlock) : kBlock;
    keys.prefetch(start + kBlock, next);
    vals.prefetch(start + kBlock, next);
    body(block);
  }
}

// Folds the key blocks that every row of a full task sees whole with the rows
// in lanes; returns the rank where the remaining blocks start.
template <class T>
std::int64_t fold_whole_blocks(RowForward& f, const KeyBlockStage<T>& keys, const KeyBlockStage<T>& vals,
                               std::int64_t most_visible, float* key_rows, float* value_rows) {
  const std::int64_t d_len = keys.layout.head_dim;
  const std::int64_t whole_end = whole_blocks_end(f, most_visible);
  if (whole_end == 0) return 0;
  alignas(64) float q_t[kMaxD * kTaskRows];
  alignas(64) float acc_t[kMaxD * kTaskRows];
  rows_to_lanes(f.q, d_len, q_t);
  rows_to_lanes(f.acc, d_len, acc_t);
  for_each_whole_block(keys, vals, whole_end, most_visible, key_rows, value_rows, [&](const WholeBlock& block) {
    fold_whole_block(f, acc_t, d_len, keys.layout.scale, q_t, block);
  });
  lanes_to_rows(acc_t, d_len, f.acc);
  return whole_end;
}

#endif

// Folds the staged block into row r, or into rows r.. r + kTileRows - 1 at
// once when they all fold the same key count; returns the rows done.
std::int64_t fold_key_block(RowForward& f, std::int64_t r, std::int64_t row_count, std::int64_t start,
                            std::int64_t d_len, float scale, const float* keys_t, const float* values) {
  const std::int64_t count = block_count(f, r, start);
#if defined(__AVX2__)
  bool tile = count > 0 && r + kTileRows <= row_count;
  for (int t = 1; tile && t < kTileRows; ++t) tile = block_count(f, r + t, start) == count;
  if (tile) {
    const float* q[kTileRows];
    float* acc[kTileRows];
    core::AttentionRowState* st[kTileRows];
    for (int t = 0; t < kTileRows; ++t) {
      q[t] = f.q[r + t];
      acc[t] = f.acc[r + t];
      st[t] = &f.state[r + t];
    }
    alignas(64) float scores[kTileRows][kBlock];
    alignas(64) float probs[kTileRows][kBlock];
    tile_scores(q, d_len, scale, keys_t, scores);
    tile_softmax(st, acc, d_len, scores, count, probs);
    tile_accumulate(acc, d_len, probs, count, values);
    return kTileRows;
  }
#else
  (void)row_count;
#endif
  if (count > 0) fold_row(f, r, count, d_len, scale, keys_t, values);
  return 1;
}

// Loads the task's q rows and visible key counts and starts each row's
// online softmax (acc zeroed); returns the largest visible count.
template <class T>
std::int64_t start_task_rows(const AttentionLayout& l, const AttentionInput& q_in, const core::AttentionSeq& seq,
                             const TaskRows& rows, RowForward& f) {
  std::int64_t most_visible = 0;
  for (std::int64_t r = 0; r < rows.count; ++r) {
    const std::int64_t i = rows.token(r);
    widen_row(input_row<T>(q_in, rows.b, seq.q_begin + i, rows.head(r)), f.q[r], l.head_dim);
    f.visible[r] = core::attention_visible_keys(l, rows.b, seq, i);
    f.state[r] = core::attention_row_start(f.acc[r], l.head_dim);
    most_visible = f.visible[r] > most_visible ? f.visible[r] : most_visible;
  }
  return most_visible;
}

template <class T>
void run_forward_rows(const AttentionLayout& l, const AttentionInput& q_in, const AttentionInput& k_in,
                      const AttentionInput& v_in, const core::AttentionSeq& seq, const TaskRows& rows,
                      RowForward& f) {
  const std::int64_t d_len = l.head_dim;
  const std::int64_t most_visible = start_task_rows<T>(l, q_in, seq, rows, f);
  alignas(64) float keys_t[kBlock * kRowStride];  // transposed, or rows for fold_whole_blocks
  alignas(64) float values[kBlock * kRowStride];
  const KeyBlockStage<T> keys{l, k_in, rows.b, seq, rows.g};
  const KeyBlockStage<T> vals{l, v_in, rows.b, seq, rows.g};
  std::int64_t start = 0;
#if defined(__AVX2__)
  if (rows.count == kTaskRows) start = fold_whole_blocks(f, keys, vals, most_visible, keys_t, values);
#endif
  for (; start < most_visible; start += kBlock) {
    const std::int64_t staged = most_visible - start < kBlock ? most_visible - start : kBlock;
    keys.transposed(start, staged, keys_t);
    vals.rows(start, staged, values);
    for (std::int64_t r = 0; r < rows.count;) {
      r += fold_key_block(f, r, rows.count, start, d_len, l.scale, keys_t, values);
    }
  }
}

template <class T, class TOut>
void forward(const AttentionForwardProblem& p, int num_threads) {
  const AttentionLayout& l = p.layout;
  for_each_row_task(l, num_threads, [&](const core::AttentionSeq& seq, const TaskRows& rows) {
    RowForward f;
    run_forward_rows<T>(l, p.q, p.k, p.v, seq, rows, f);
    for (std::int64_t r = 0; r < rows.count; ++r) {
      const std::int64_t token = seq.q_begin + rows.token(r);
      alignas(64) float row[kMaxD];
      for (std::int64_t d = 0; d < l.head_dim; ++d) {
        row[d] = core::attention_output(f.state[r], f.acc[r], d, f.visible[r]);
      }
      narrow_row(row, output_row<TOut>(p.out, rows.b, token, rows.head(r)), l.head_dim);
      if (p.lse.data != nullptr) {
        *output_row<float>(p.lse, rows.b, token, rows.head(r)) =
            core::attention_lse(f.state[r], f.visible[r]);
      }
    }
  });
}

// ---- Backward --------------------------------------------------------------------------

struct Workspace {
  float* lse;
  float* delta;
  std::int64_t heads;
  float* at(float* base, const core::AttentionSeq& seq, std::int64_t i, std::int64_t h) const {
    return base + (seq.row_base + i) * heads + h;
  }
};

// What pass 1 knows of each task row besides its forward state.
struct RowGrads {
  const float (*grad)[kMaxD];  // dO rows
  const float* lse;
  const float* delta;
  std::int64_t d_len;
  float scale;
};

// P of a key from its q.k dot: the core's score, then its probability.
float probability_of_dot(float dot, float scale, float lse) {
  return core::attention_probability(core::attention_score(dot, scale), lse);
}

// dS of one row's block, in place of its dO.v dots: dps[j] = P * (dP - Di)
// with P from the row's q.k dots.
void block_score_grads(const float* dots, float scale, float lse, float delta, std::int64_t count, float* dps) {
  for (std::int64_t j = 0; j < count; ++j) {
    dps[j] = core::attention_score_grad(probability_of_dot(dots[j], scale, lse), dps[j], delta);
  }
}

// dq += dS k for row r over the staged block, or for rows r.. r + kTileRows - 1
// at once when they see the same key count; returns the rows done.
std::int64_t dq_key_block(RowForward& f, std::int64_t r, std::int64_t row_count, std::int64_t start,
                          const RowGrads& g, const float* keys_t, const float* values_t,
                          const float* key_rows) {
  const std::int64_t count = block_count(f, r, start);
#if defined(__AVX2__)
  bool tile = count > 0 && r + kTileRows <= row_count;
  for (int t = 1; tile && t < kTileRows; ++t) tile = block_count(f, r + t, start) == count;
  if (tile) {
    const float* q[kTileRows];
    const float* grad[kTileRows];
    float* acc[kTileRows];
    for (int t = 0; t < kTileRows; ++t) {
      q[t] = f.q[r + t];
      grad[t] = g.grad[r + t];
      acc[t] = f.acc[r + t];
    }
    alignas(64) float dots[kTileRows][kBlock];
    alignas(64) float dps[kTileRows][kBlock];
    tile_dots(q, g.d_len, keys_t, dots);
    tile_dots(grad, g.d_len, values_t, dps);
    for (int t = 0; t < kTileRows; ++t) {
      block_score_grads(dots[t], g.scale, g.lse[r + t], g.delta[r + t], count, dps[t]);
    }
    tile_accumulate(acc, g.d_len, dps, count, key_rows);
    return kTileRows;
  }
#else
  (void)row_count;
#endif
  if (count > 0) {
    alignas(64) float dots[kBlock];
    alignas(64) float dps[kBlock];
    block_dots(f.q[r], g.d_len, keys_t, dots);
    block_dots(g.grad[r], g.d_len, values_t, dps);
    block_score_grads(dots, g.scale, g.lse[r], g.delta[r], count, dps);
    block_accumulate(f.acc[r], g.d_len, dps, count, key_rows);
  }
  return 1;
}

#if defined(__AVX2__)
// One key's dS for a full task's rows in lanes, in place of their dP: the
// core's score, probability (VecLanes) and score
// gradient on vectors of rows.
void key_score_grads(const RowGrads& g, const float* dots, float* dps) {
  const Vec scale = vec_broadcast(g.scale);
  for (int v = 0; v < kRowVecs; ++v) {
    const Vec score = core::attention_score(vec_load(dots + v * kVecLanes), scale);
    const Vec p = core::attention_probability<VecLanes>(score, vec_load(g.lse + v * kVecLanes));
    const Vec ds = core::attention_score_grad(p, vec_load(dps + v * kVecLanes), vec_load(g.delta + v * kVecLanes));
    vec_store(dps + v * kVecLanes, ds);
  }
}

// Pass 1's dq of a full task's rows over the key blocks they all see whole,
// rows in lanes as in the forward: per block the scores and dP (lane_dots
// against the key and value rows), dS, then dq_t += dS k with dq_t[d][r] the
// transposed accumulators; returns the rank where the remaining blocks start.
// Not inlined: its 224 KiB of buffers (at D = 256) would otherwise sit in the
// caller's frame while the caller recomputes the forward.
template <class T>
[[gnu::noinline]] std::int64_t dq_whole_blocks(RowForward& f, const RowGrads& g, const KeyBlockStage<T>& keys,
                                               const KeyBlockStage<T>& vals, std::int64_t most_visible,
                                               float* key_rows, float* value_rows) {
  const std::int64_t whole_end = whole_blocks_end(f, most_visible);
  if (whole_end == 0) return 0;
  alignas(64) float q_t[kMaxD * kTaskRows];
  alignas(64) float grad_t[kMaxD * kTaskRows];
  alignas(64) float dq_t[kMaxD * kTaskRows];
  rows_to_lanes(f.q, g.d_len, q_t);
  rows_to_lanes(g.grad, g.d_len, grad_t);
  rows_to_lanes(f.acc, g.d_len, dq_t);
  for_each_whole_block(keys, vals, whole_end, most_visible, key_rows, value_rows, [&](const WholeBlock& block) {
    alignas(64) float dots_t[kBlock][kTaskRows];
    alignas(64) float ds_t[kBlock][kTaskRows];  // dP, then dS
    lane_dots(q_t, g.d_len, block.keys, block.key_stride, kBlock, dots_t);
    lane_dots(grad_t, g.d_len, block.values, block.value_stride, kBlock, ds_t);
    for (std::int64_t j = 0; j < kBlock; ++j) key_score_grads(g, dots_t[j], ds_t[j]);
    lane_accumulate<false>(dq_t, g.d_len, ds_t, kBlock, block.keys, block.key_stride, nullptr);
  });
  lanes_to_rows(dq_t, g.d_len, f.acc);
  return whole_end;
}
#endif

// Pass 1, per task of query rows: each row's LSE and fp32 output (the saved
// forward's, or the forward recomputed), Di from them, both stored; then, when
// pass 2 does not carry dq, dq = scale * sum over visible keys in rank order
// of dS * k.
template <class T, class TOut>
void backward_rows(const AttentionBackwardProblem& p, const Workspace& ws, int num_threads, bool with_dq) {
  const AttentionLayout& l = p.layout;
  const std::int64_t d_len = l.head_dim;
  const bool saved = p.saved_out.data != nullptr;
  for_each_row_task(l, num_threads, [&](const core::AttentionSeq& seq, const TaskRows& rows) {
    RowForward f;
    if (!saved) {
      run_forward_rows<T>(l, p.q, p.k, p.v, seq, rows, f);
    } else if (with_dq) {  // q rows and visible counts, for dq only
      start_task_rows<T>(l, p.q, seq, rows, f);
    }
    float grad[kTaskRows][kMaxD];
    float lse[kTaskRows];
    float delta[kTaskRows];
    for (std::int64_t r = 0; r < rows.count; ++r) {
      const std::int64_t i = rows.token(r);
      widen_row(input_row<T>(p.grad_out, rows.b, seq.q_begin + i, rows.head(r)), grad[r], d_len);
      float out[kMaxD];
      if (saved) {
        widen_row(input_row<float>(p.saved_out, rows.b, seq.q_begin + i, rows.head(r)), out, d_len);
        lse[r] = *input_row<float>(p.saved_lse, rows.b, seq.q_begin + i, rows.head(r));
      } else {
        for (std::int64_t d = 0; d < d_len; ++d) out[d] = core::attention_output(f.state[r], f.acc[r], d, f.visible[r]);
        lse[r] = core::attention_lse(f.state[r], f.visible[r]);
      }
      delta[r] = core::attention_delta(grad[r], out, d_len);
      *ws.at(ws.lse, seq, i, rows.head(r)) = lse[r];
      *ws.at(ws.delta, seq, i, rows.head(r)) = delta[r];
    }
    if (!with_dq) return;
    std::int64_t most_visible = 0;
    for (std::int64_t r = 0; r < rows.count; ++r) {
      for (std::int64_t d = 0; d < d_len; ++d) f.acc[r][d] = core::kAttentionAccStart;  // now the dq accumulator
      most_visible = f.visible[r] > most_visible ? f.visible[r] : most_visible;
    }
    alignas(64) float keys_t[kMaxD * kBlock];
    alignas(64) float values_t[kBlock * kRowStride];  // transposed, or rows for dq_whole_blocks
    alignas(64) float key_rows[kBlock * kRowStride];
    const KeyBlockStage<T> keys{l, p.k, rows.b, seq, rows.g};
    const KeyBlockStage<T> vals{l, p.v, rows.b, seq, rows.g};
    const RowGrads grads{grad, lse, delta, d_len, l.scale};
    std::int64_t start = 0;
#if defined(__AVX2__)
    if (rows.count == kTaskRows) start = dq_whole_blocks(f, grads, keys, vals, most_visible, key_rows, values_t);
#endif
    for (; start < most_visible; start += kBlock) {
      const std::int64_t staged = most_visible - start < kBlock ? most_visible - start : kBlock;
      keys.transposed(start, staged, keys_t);
      keys.rows(start, staged, key_rows);
      vals.transposed(start, staged, values_t);
      for (std::int64_t r = 0; r < rows.count;) {
        r += dq_key_block(f, r, rows.count, start, grads, keys_t, values_t, key_rows);
      }
    }
    for (std::int64_t r = 0; r < rows.count; ++r) {
      alignas(64) float row[kMaxD];
      for (std::int64_t d = 0; d < d_len; ++d) row[d] = core::attention_grad_output(f.acc[r][d], l.scale);
      narrow_row(row, output_row<TOut>(p.dq, rows.b, seq.q_begin + rows.token(r), rows.head(r)), d_len);
    }
  });
}

// Up to kPendingRows query rows (heads of the group in order, each head's rows
// in token order) waiting to fold into a key block's dk, dv: the keys' dk, dv
// sums are then loaded and stored once per batch of rows instead of per row.
constexpr int kPendingRows = 64;

struct PendingRows {
  alignas(64) float q[kPendingRows][kRowStride];
  alignas(64) float grad[kPendingRows][kRowStride];
  alignas(64) float scores[kPendingRows][kBlock];  // dots, then P
  alignas(64) float dps[kPendingRows][kBlock];     // dots, then dS
  float lse[kPendingRows];
  float delta[kPendingRows];
  std::int64_t count[kPendingRows];  // the block's keys the row sees
  float* dq[kPendingRows];           // the row's dq accumulator when pass 2 carries dq, else nullptr
  int size;
};

#if defined(__AVX2__)
static_assert(kBlock == kTaskRows, "a key block fills the lane tiles' vectors");

// The pending rows' q.k and dO.v dots over the staged block, keys in lanes
// (each dot the core's chain over d).
void pending_dots(PendingRows& rows, std::int64_t d_len, const float* keys_t, const float* values_t) {
  lane_dots(keys_t, d_len, &rows.q[0][0], kRowStride, rows.size, rows.scores);
  lane_dots(values_t, d_len, &rows.grad[0][0], kRowStride, rows.size, rows.dps);
}

// dv_t[d][j] += P * dO[d] and dk_t[d][j] += dS * q[d] of the pending rows that
// see key j, in their order: the keys in lanes, a row's terms masked off the
// keys it does not see.
void pending_key_grads(const PendingRows& rows, std::int64_t d_len, float* dk_t, float* dv_t) {
  bool whole = true;
  for (int t = 0; t < rows.size; ++t) whole = whole && rows.count[t] == kBlock;
  if (whole) {
    lane_accumulate<false>(dv_t, d_len, rows.scores, rows.size, &rows.grad[0][0], kRowStride, nullptr);
    lane_accumulate<false>(dk_t, d_len, rows.dps, rows.size, &rows.q[0][0], kRowStride, nullptr);
  } else {
    lane_accumulate<true>(dv_t, d_len, rows.scores, rows.size, &rows.grad[0][0], kRowStride, rows.count);
    lane_accumulate<true>(dk_t, d_len, rows.dps, rows.size, &rows.q[0][0], kRowStride, rows.count);
  }
}
#else
void pending_dots(PendingRows& rows, std::int64_t d_len, const float* keys_t, const float* values_t) {
  for (int t = 0; t < rows.size; ++t) {
    block_dots(rows.q[t], d_len, keys_t, rows.scores[t]);
    block_dots(rows.grad[t], d_len, values_t, rows.dps[t]);
  }
}

void pending_key_grads(const PendingRows& rows, std::int64_t d_len, float* dk_t, float* dv_t) {
  for (int t = 0; t < rows.size; ++t) {
    for (std::int64_t d = 0; d < d_len; ++d) {
      for (std::int64_t j = 0; j < rows.count[t]; ++j) {
        dv_t[d * kBlock + j] = core::fma_rn(rows.scores[t][j], rows.grad[t][d], dv_t[d * kBlock + j]);
        dk_t[d * kBlock + j] = core::fma_rn(rows.dps[t][j], rows.q[t][d], dk_t[d * kBlock + j]);
      }
    }
  }
}
#endif

// dq += dS * k over the block's keys each pending row sees, in rank order:
// pass 1's dq_key_block for this block, from the dS pass 2 has computed.
void pending_dq(PendingRows& rows, std::int64_t d_len, const float* key_rows) {
  for (int t = 0; t < rows.size;) {
#if defined(__AVX2__)
    bool tile = t + kTileRows <= rows.size;
    for (int r = 1; tile && r < kTileRows; ++r) tile = rows.count[t + r] == rows.count[t];
    if (tile) {
      tile_accumulate(&rows.dq[t], d_len, &rows.dps[t], rows.count[t], key_rows);
      t += kTileRows;
      continue;
    }
#endif
    block_accumulate(rows.dq[t], d_len, rows.dps[t], rows.count[t], key_rows);
    ++t;
  }
}

// dv_j += P * dO and dk_j += dS * q of the pending rows that see key j, in
// their order, after computing their P and dS (and their dq terms when
// key_rows is given); dk_t, dv_t are [D][kBlock]. Empties the batch.
void fold_pending_rows(PendingRows& rows, std::int64_t d_len, float scale, const float* keys_t,
                       const float* values_t, const float* key_rows, float* dk_t, float* dv_t) {
  if (rows.size == 0) return;
  pending_dots(rows, d_len, keys_t, values_t);
  for (int t = 0; t < rows.size; ++t) {
    for (std::int64_t j = 0; j < rows.count[t]; ++j) {
      const float p = probability_of_dot(rows.scores[t][j], scale, rows.lse[t]);
      rows.scores[t][j] = p;
      rows.dps[t][j] = core::attention_score_grad(p, rows.dps[t][j], rows.delta[t]);
    }
  }
  if (key_rows != nullptr) pending_dq(rows, d_len, key_rows);
  pending_key_grads(rows, d_len, dk_t, dv_t);
  rows.size = 0;
}

// dq accumulators of one (sequence, kv head) when pass 2 carries dq: row
// (token i, head h of the group) at rows + i * token_stride + h * d_len.
struct DqRows {
  float* rows;
  std::int64_t token_stride;
  std::int64_t d_len;
  float* at(std::int64_t i, std::int64_t h) const { return rows + i * token_stride + h * d_len; }
};

// Pass 2 for key ranks [start, start + kBlock) of kv head g: dk and dv of each
// key sum over the group's query heads in head order, and within a head over
// the query rows that see the key in token order (padding rows see none).
// With dq, each row's dq also takes this block's dS * k terms.
template <class T, class TOut>
void key_block_grads(const AttentionBackwardProblem& p, const Workspace& ws, std::int64_t b, std::int64_t g,
                     std::int64_t start, const DqRows* dq) {
  const AttentionLayout& l = p.layout;
  const std::int64_t d_len = l.head_dim;
  const std::int64_t group = l.num_q_heads / l.num_kv_heads;
  const core::AttentionSeq seq = core::attention_seq(l, b);
  const std::int64_t valid = core::attention_valid_key_total(l, b, seq.k_len);
  if (start >= valid) return;
  const std::int64_t staged = valid - start < kBlock ? valid - start : kBlock;
  alignas(64) float keys_t[kMaxD * kBlock];
  alignas(64) float values_t[kMaxD * kBlock];
  alignas(64) float key_rows[kBlock * kRowStride];
  alignas(64) float dk_t[kMaxD * kBlock];
  alignas(64) float dv_t[kMaxD * kBlock];
  PendingRows pending;
  pending.size = 0;
  const KeyBlockStage<T> keys{l, p.k, b, seq, g};
  const KeyBlockStage<T> vals{l, p.v, b, seq, g};
  keys.transposed(start, staged, keys_t);
  if (dq != nullptr) keys.rows(start, staged, key_rows);
  vals.transposed(start, staged, values_t);
  const float* dq_keys = dq != nullptr ? key_rows : nullptr;
  for (std::int64_t i = 0; i < kMaxD * kBlock; ++i) dk_t[i] = dv_t[i] = core::kAttentionAccStart;
  for (std::int64_t h = g * group; h < (g + 1) * group; ++h) {
    for (std::int64_t i = 0; i < seq.q_len; ++i) {
      const std::int64_t visible = core::attention_visible_keys(l, b, seq, i);
      if (visible <= start) continue;
      const std::int64_t count = visible - start < kBlock ? visible - start : kBlock;
      const int t = pending.size++;
      widen_row(input_row<T>(p.q, b, seq.q_begin + i, h), pending.q[t], d_len);
      widen_row(input_row<T>(p.grad_out, b, seq.q_begin + i, h), pending.grad[t], d_len);
      pending.lse[t] = *ws.at(ws.lse, seq, i, h);
      pending.delta[t] = *ws.at(ws.delta, seq, i, h);
      pending.count[t] = count;
      pending.dq[t] = dq != nullptr ? dq->at(i, h - g * group) : nullptr;
      if (pending.size == kPendingRows) {
        fold_pending_rows(pending, d_len, l.scale, keys_t, values_t, dq_keys, dk_t, dv_t);
      }
    }
  }
  fold_pending_rows(pending, d_len, l.scale, keys_t, values_t, dq_keys, dk_t, dv_t);
  for (std::int64_t j = 0; j < staged; ++j) {
    const std::int64_t token = seq.k_begin + core::attention_key_token(l, b, start + j);
    alignas(64) float dk_row[kMaxD];
    alignas(64) float dv_row[kMaxD];
    for (std::int64_t d = 0; d < d_len; ++d) {
      dk_row[d] = core::attention_grad_output(dk_t[d * kBlock + j], l.scale);
      dv_row[d] = core::attention_grad_output(dv_t[d * kBlock + j], 1.0f);
    }
    narrow_row(dk_row, output_row<TOut>(p.dk, b, token, g), d_len);
    narrow_row(dv_row, output_row<TOut>(p.dv, b, token, g), d_len);
  }
}

// Pass 2 as tasks of (sequence, kv head, 64 key ranks); pass 1 made dq.
template <class T, class TOut>
void backward_keys(const AttentionBackwardProblem& p, const Workspace& ws, int num_threads) {
  const AttentionLayout& l = p.layout;
  const std::int64_t blocks = core::ceil_div(max_key_len(l), kBlock);
  if (blocks == 0) return;
  auto body = [&](std::int64_t task) {
    const std::int64_t g = (task / blocks) % l.num_kv_heads;
    const std::int64_t b = task / blocks / l.num_kv_heads;
    key_block_grads<T, TOut>(p, ws, b, g, task % blocks * kBlock, nullptr);
  };
  parallel_tasks(l.num_seqs * l.num_kv_heads * blocks, num_threads, body);
}

// Pass 2 carrying dq, as tasks of (sequence, kv head): the key blocks run in
// rank order, so each row's dq takes its terms in rank order, the chain of
// pass 1's dq (the same bits) without recomputing the scores and dP for it.
template <class T, class TOut>
void backward_keys_and_dq(const AttentionBackwardProblem& p, const Workspace& ws, int num_threads) {
  const AttentionLayout& l = p.layout;
  const std::int64_t d_len = l.head_dim;
  const std::int64_t group = l.num_q_heads / l.num_kv_heads;
  // fp32 dq of every query row: [rows, Hq, D]; no huge pages, as for the
  // op's outputs (python/golden_kernels/ops/attention.py)
  const ScratchBuffer accumulators(
      static_cast<std::size_t>(core::attention_total_query_rows(l) * l.num_q_heads * d_len), PageAdvice::kNone);
  auto body = [&](std::int64_t task) {
    const std::int64_t g = task % l.num_kv_heads;
    const std::int64_t b = task / l.num_kv_heads;
    const core::AttentionSeq seq = core::attention_seq(l, b);
    const DqRows dq{accumulators.data() + (seq.row_base * l.num_q_heads + g * group) * d_len,
                    l.num_q_heads * d_len, d_len};
    for (std::int64_t i = 0; i < seq.q_len; ++i) {
      for (std::int64_t d = 0; d < group * d_len; ++d) dq.at(i, 0)[d] = core::kAttentionAccStart;
    }
    const std::int64_t valid = core::attention_valid_key_total(l, b, seq.k_len);
    for (std::int64_t start = 0; start < valid; start += kBlock) key_block_grads<T, TOut>(p, ws, b, g, start, &dq);
    for (std::int64_t i = 0; i < seq.q_len; ++i) {
      for (std::int64_t h = 0; h < group; ++h) {
        const float* acc = dq.at(i, h);
        alignas(64) float row[kMaxD];
        for (std::int64_t d = 0; d < d_len; ++d) row[d] = core::attention_grad_output(acc[d], l.scale);
        narrow_row(row, output_row<TOut>(p.dq, b, seq.q_begin + i, g * group + h), d_len);
      }
    }
  };
  parallel_tasks(l.num_seqs * l.num_kv_heads, num_threads, body);
}

// Pass 2 carries dq when its (sequence, kv head) tasks keep the threads busy:
// rounds of one task per thread leave at most a fifth of the thread time idle
// (the pass it saves is ~2/9 of the work). Otherwise pass 1 computes dq and
// pass 2 splits each head's keys into tasks of 64. The same bits either way.
bool dq_in_key_pass(const AttentionLayout& l, int num_threads) {
  const std::int64_t pairs = l.num_seqs * l.num_kv_heads;
  const std::int64_t threads = num_threads < 1 ? 1 : num_threads;
  return core::ceil_div(pairs, threads) * threads * 4 <= pairs * 5;
}

}  // namespace

void attention_forward(const AttentionForwardProblem& problem, int num_threads) {
  visit_in_out(problem.dtype, problem.out_dtype, [&](auto in, auto out) {
    forward<decltype(in), decltype(out)>(problem, num_threads);
  });
}

void attention_backward(const AttentionBackwardProblem& problem, int num_threads) {
  const Workspace ws{problem.workspace,
                     problem.workspace + core::attention_total_query_rows(problem.layout) * problem.layout.num_q_heads,
                     problem.layout.num_q_heads};
  const bool dq_with_keys = dq_in_key_pass(problem.layout, num_threads);
  visit_in_out(problem.dtype, problem.grad_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    backward_rows<T, TOut>(problem, ws, num_threads, !dq_with_keys);
    if (dq_with_keys) {
      backward_keys_and_dq<T, TOut>(problem, ws, num_threads);
    } else {
      backward_keys<T, TOut>(problem, ws, num_threads);
    }
  });
}

GOLDEN_CPU_END
