// Linear on the CPU: every contraction (y, dx, dweight, dbias) runs on one packed,
// cache-blocked outer-product GEMM. Each K-block partial is an fma chain in index
// order held in a register tile (vectorised over output columns, never over k) and
// folded into the core's streaming tree (csrc/core/ops/linear.h); the reference
// evaluates core::linear_contraction one output at a time. Here: tiling, packing, threads.
#include "../core/ops/linear.h"
#include "rows.h"
#include "scratch.h"
#include "simd.h"
#include "target.h"

GOLDEN_CPU_BEGIN
namespace {

using core::to_float;
using Index = std::int64_t;

// ---- Tile geometry: a choice of this instruction set, never visible in a result. ----
// Rows x 2 vectors of accumulators: 16 of 32 registers (AVX-512), 12 of 16 (AVX2).
#if defined(GOLDEN_SIMD_16_LANES)
constexpr int kTileRows = 8;
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
constexpr int kTileRows = 6;
#else
constexpr int kTileRows = 4;
#endif
constexpr int kPanelVecs = 2;                           // vectors across one B panel
constexpr int kPanelCols = kPanelVecs * kVecLanes;      // output columns of a panel
constexpr int kTileFloats = kTileRows * kPanelCols;     // one register tile
constexpr Index kBlock = kLinearKBlock;
constexpr Index kPanelFloats = kBlock * kPanelCols;     // one packed K-block of a panel
constexpr Index kPanelsPerItem = 8;   // output columns of one work item, in panels
constexpr Index kRowTilesPerItem = 40;  // rows of one work item, in tiles (A block ~ L2)

// The contractions (operands, layouts, lengths) are the core's: LinearContraction.
using ALayout = core::LinearALayout;
using BLayout = core::LinearBLayout;
template <class T>
using Contraction = core::LinearContraction<T>;

Index min_index(Index a, Index b) { return a < b ? a : b; }

// ---- The reference: the canonical order straight from the core, one output at a time. ----

template <class T, class TOut>
void contract_reference(const Contraction<T>& c, TOut* out, const T* bias) {
  for (Index m = 0; m < c.rows; ++m) {
    for (Index n = 0; n < c.cols; ++n) {
      auto a_at = [&](Index k) { return core::linear_a_at(c, m, k); };
      auto b_at = [&](Index k) { return core::linear_b_at(c, k, n); };
      out[m * c.cols + n] = core::linear_output<TOut>(core::linear_contraction(a_at, b_at, c.k_len), bias, n);
    }
  }
}

// ---- Packing: operands to fp32 panels (16-bit types widen exactly, panel by panel). ----

// A panel: the rows of one tile (kTileRows, fewer in the last), all k, laid out
// [k][row], so the one row of a decode call is simply x in fp32.
template <class T>
void pack_a_panel(const Contraction<T>& c, Index panel, float* dst) {
  const Index row0 = panel * kTileRows;
  const Index rows = min_index(kTileRows, c.rows - row0);
  for (Index k = 0; k < c.k_len; ++k) {
    float* out = dst + k * rows;
    if (c.a_layout == ALayout::ones) {
      for (Index i = 0; i < rows; ++i) out[i] = 1.0f;
    } else if (c.a_layout == ALayout::col_major) {
      const T* src = c.a + k * c.lda + row0;
      for (Index i = 0; i < rows; ++i) out[i] = to_float(src[i]);
    } else {
      const T* src = c.a + row0 * c.lda + k;
      for (Index i = 0; i < rows; ++i) out[i] = to_float(src[i * c.lda]);
    }
  }
}

#if defined(__AVX2__) && defined(__F16C__)
// Rows r[0..8) become columns: r[j][k] -> r[k][j]. Data movement only.
inline void transpose8x8(__m256 (&r)[8]) {
  __m256 t[8];
  for (int j = 0; j < 8; j += 2) {
    t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
    t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
  }
  __m256 s[8];
  for (int h = 0; h < 8; h += 4) {
    s[h] = _mm256_shuffle_ps(t[h], t[h + 2], 0x44);
    s[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], 0xEE);
    s[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0x44);
    s[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {
    r[j] = _mm256_permute2f128_ps(s[j], s[j + 4], 0x20);
    r[j + 4] = _mm256_permute2f128_ps(s[j], s[j + 4], 0x31);
  }
}

// Weight rows sit a multiple of 4 KiB apart for the usual sizes, so the rows of a
// panel share one L1 set: each row's cache line is used whole (64 bytes of k) before
// moving on, never revisited after the other rows have evicted it.
template <class T>
constexpr Index kLineElems = 64 / static_cast<Index>(sizeof(T));

// Transposes rows[0..8) x k[k, k + 8) of the weight layout into 8 vectors over rows.
template <class T>
inline void load_transposed8x8(const T* src, Index ld, Index k, __m256 (&r)[8]) {
  for (int j = 0; j < 8; ++j) r[j] = load_8_as_float(src + j * ld + k);
  transpose8x8(r);
}

// Full panels of the weight layout, 8 x 8 blocks transposed in registers.
// Returns how many k were packed (whole cache lines of every row).
template <class T>
Index pack_output_rows_fast(const T* src, Index ld, Index len, float* dst) {
  Index k0 = 0;
  for (; k0 + kLineElems<T> <= len; k0 += kLineElems<T>) {
    for (int j0 = 0; j0 < kPanelCols; j0 += 8) {
      for (Index k = k0; k < k0 + kLineElems<T>; k += 8) {
        __m256 r[8];
        load_transposed8x8(src + j0 * ld, ld, k, r);
        for (int kk = 0; kk < 8; ++kk) _mm256_storeu_ps(dst + (k + kk) * kPanelCols + j0, r[kk]);
      }
    }
  }
  return k0;
}
#else
template <class T>
Index pack_output_rows_fast(const T*, Index, Index, float*) {
  return 0;
}
#endif

// One B panel for k in [k0, k0 + len), laid out [k][column]; columns past the end are zero.
template <class T>
void pack_b_panel(const Contraction<T>& c, Index panel, Index k0, Index len, float* dst) {
  const Index col0 = panel * kPanelCols;
  const int cols = static_cast<int>(col0 < c.cols ? min_index(kPanelCols, c.cols - col0) : 0);
  Index k = 0;
  if (c.b_layout == BLayout::output_rows) {
    const T* src = c.b + col0 * c.ldb + k0;
    if (cols == kPanelCols) k = pack_output_rows_fast(src, c.ldb, len, dst);
    for (; k < len; ++k) {
      for (int j = 0; j < cols; ++j) dst[k * kPanelCols + j] = to_float(src[j * c.ldb + k]);
      for (int j = cols; j < kPanelCols; ++j) dst[k * kPanelCols + j] = 0.0f;
    }
    return;
  }
  for (; k < len; ++k) {
    const T* src = c.b + (k0 + k) * c.ldb + col0;
    for (int j = 0; j < cols; ++j) dst[k * kPanelCols + j] = to_float(src[j]);
    for (int j = cols; j < kPanelCols; ++j) dst[k * kPanelCols + j] = 0.0f;
  }
}

// ---- The microkernel: R rows x one panel, one K-block, accumulators in registers. ----

// acc[i][v] = the K-block partial of the outputs (row i, vector v of the panel): for
// each k in order, fma(a[k][i], b[k][v], acc). Each lane is one output's chain.
template <int R>
inline void multiply_block(const float* a, const float* b, Index len, Vec (&acc)[R][kPanelVecs]) {
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < kPanelVecs; ++v) acc[i][v] = vec_zero();
  for (Index k = 0; k < len; ++k) {
    Vec bk[kPanelVecs];
    for (int v = 0; v < kPanelVecs; ++v) bk[v] = vec_load(b + k * kPanelCols + v * kVecLanes);
    for (int i = 0; i < R; ++i) {
      const Vec ai = vec_broadcast(a[k * R + i]);
      for (int v = 0; v < kPanelVecs; ++v) acc[i][v] = vec_fma(ai, bk[v], acc[i][v]);
    }
  }
}

// Folds `count` vectors of K-block partials into their outputs' tree stacks, lane
// by lane as core::tree_fold_leaf does: `merges` pops of v = stack[top] + v (left +
// right), then a push. Vector j of slot s lives at stack + s * slot_floats + j * lanes.
inline void fold_block(Vec* partials, int count, float* stack, Index slot_floats, int height, int merges) {
  int top = height;
  for (int m = 0; m < merges; ++m) {
    --top;
    for (int j = 0; j < count; ++j) partials[j] = vec_add(vec_load(stack + top * slot_floats + j * kVecLanes), partials[j]);
  }
  for (int j = 0; j < count; ++j) vec_store(stack + top * slot_floats + j * kVecLanes, partials[j]);
}

struct BlockStep {
  const float* a;  // packed A tile at this K-block, [k][row]
  const float* b;  // packed B panel at this K-block
  Index len;       // contraction indices in the block
  float* stack;    // tree stacks of the tile: slots of kTileFloats, [row][column]
  int height;      // values on each stack before this block
  int merges;      // tree nodes completed by this block
};

template <int R>
void multiply_row_tile(const BlockStep& s) {
  Vec acc[R][kPanelVecs];
  multiply_block<R>(s.a, s.b, s.len, acc);
  fold_block(&acc[0][0], R * kPanelVecs, s.stack, kTileFloats, s.height, s.merges);
}

template <int R = kTileRows>
void multiply_rows(int rows, const BlockStep& s) {
  if constexpr (R > 1) {
    if (rows < R) return multiply_rows<R - 1>(rows, s);
  }
  multiply_row_tile<R>(s);
}

// ---- The driver: work items of (row tiles x panels), each over all K-blocks. ----

template <class T, class TOut>
struct Gemm {
  Contraction<T> c;
  TOut* out;        // [rows, cols]
  const T* bias;    // [cols] or nullptr
  const float* packed_a;
  Index blocks;     // K-blocks
  int slots;        // tree stack slots
  Index row_tiles;
  Index panels;
  Index panel_items;
  Index items;
};

template <class T, class TOut>
void write_outputs(const Gemm<T, TOut>& g, const float* values, Index values_ld, Index row0, Index rows,
                   Index col0, Index cols) {
  const T* bias = g.bias != nullptr ? g.bias + col0 : nullptr;
  for (Index i = 0; i < rows; ++i) {
    TOut* out = g.out + (row0 + i) * g.c.cols + col0;
    for (Index j = 0; j < cols; ++j) out[j] = core::linear_output<TOut>(values[i * values_ld + j], bias, j);
  }
}

// One panel for the item's row tiles: K-blocks in order, each packed once and
// multiplied into every row tile, the partials streamed into the trees.
template <class T, class TOut>
void run_panel(const Gemm<T, TOut>& g, Index tile0, Index tiles, Index panel, float* stacks, float* packed_b) {
  const Index tile_stack = g.slots * kTileFloats;
  int height = 0;
  for (Index block = 0; block < g.blocks; ++block) {
    const Index k0 = block * kBlock;
    const Index len = core::linear_block_end(block, g.c.k_len) - k0;
    pack_b_panel(g.c, panel, k0, len, packed_b);
    const int merges = core::tree_merges_after_leaf(block, g.blocks);
    for (Index t = 0; t < tiles; ++t) {
      const Index tile = tile0 + t;
      const Index rows = min_index(kTileRows, g.c.rows - tile * kTileRows);
      const BlockStep step{g.packed_a + tile * g.c.k_len * kTileRows + k0 * rows, packed_b, len,
                           stacks + t * tile_stack, height, merges};
      multiply_rows(static_cast<int>(rows), step);
    }
    height = height - merges + 1;
  }
  for (Index t = 0; t < tiles; ++t) {
    const Index row0 = (tile0 + t) * kTileRows;
    const Index col0 = panel * kPanelCols;
    write_outputs(g, stacks + t * tile_stack, kPanelCols, row0, min_index(kTileRows, g.c.rows - row0), col0,
                  min_index(kPanelCols, g.c.cols - col0));
  }
}

#if defined(__AVX2__) && defined(__F16C__)
// Decode: one row against the weight layout, one chain of 8 outputs at a time: 8 x 8
// blocks of the weight are transposed in registers and fed straight to the fma chain
// (no packed panel). Eight rows stream at once, each cache line used whole (the rows
// share an L1 set, see kLineElems): measured faster than more chains over more rows.
constexpr bool kHasGemv = true;
constexpr Index kGemvCols = 8;

// Decode streams the weight through a single fma chain, whose latency limits how
// far out-of-order execution runs ahead of the loads; on a loaded memory system the
// stream then stalls. Prefetching each row a fixed distance ahead keeps lines in
// flight (a prefetch never faults, also past the end of the weight).
constexpr Index kPrefetchBytes = 1024;

template <class T>
inline void prefetch_rows(const T* w, Index ld, Index k) {
  for (int j = 0; j < 8; ++j) {
    _mm_prefetch(reinterpret_cast<const char*>(w + j * ld + k) + kPrefetchBytes, _MM_HINT_T0);
  }
}

template <class T>
inline __m256 gemv_block(const float* a, const T* w, Index ld, Index len) {
  __m256 acc = _mm256_setzero_ps();
  Index k = 0;
  for (; k + 8 <= len; k += 8) {
    if (k % kLineElems<T> == 0) prefetch_rows(w, ld, k);
    __m256 r[8];
    load_transposed8x8(w, ld, k, r);
    for (int kk = 0; kk < 8; ++kk) acc = _mm256_fmadd_ps(_mm256_set1_ps(a[k + kk]), r[kk], acc);
  }
  for (; k < len; ++k) {
    alignas(32) float column[8];
    for (int j = 0; j < 8; ++j) column[j] = to_float(w[j * ld + k]);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(a[k]), _mm256_load_ps(column), acc);
  }
  return acc;
}

// fold_block's rule for the 8 lanes of one decode chain (stack slots of 8 floats).
inline void fold_chain(__m256 v, float* stack, int height, int merges) {
  int top = height;
  for (int m = 0; m < merges; ++m) {
    --top;
    v = _mm256_add_ps(_mm256_load_ps(stack + top * 8), v);
  }
  _mm256_store_ps(stack + top * 8, v);
}

template <class T, class TOut>
void gemv_columns(const Gemm<T, TOut>& g, Index col0, float* stack) {
  const T* w = g.c.b + col0 * g.c.ldb;
  int height = 0;
  for (Index block = 0; block < g.blocks; ++block) {
    const Index k0 = block * kBlock;
    const Index len = core::linear_block_end(block, g.c.k_len) - k0;
    const int merges = core::tree_merges_after_leaf(block, g.blocks);
    fold_chain(gemv_block(g.packed_a + k0, w + k0, g.c.ldb, len), stack, height, merges);
    height = height - merges + 1;
  }
  write_outputs(g, stack, kGemvCols, 0, 1, col0, kGemvCols);
}
#else
constexpr bool kHasGemv = false;
constexpr Index kGemvCols = 8;
template <class T, class TOut>
void gemv_columns(const Gemm<T, TOut>&, Index, float*) {}
#endif

template <class T, class TOut>
void run_item(const Gemm<T, TOut>& g, Index item, float* stacks, float* packed_b) {
  const Index tile0 = item / g.panel_items * kRowTilesPerItem;
  const Index tiles = min_index(kRowTilesPerItem, g.row_tiles - tile0);
  const Index panel_end = min_index((item % g.panel_items + 1) * kPanelsPerItem, g.panels);
  const bool gemv = kHasGemv && g.c.rows == 1 && g.c.b_layout == BLayout::output_rows;
  for (Index panel = item % g.panel_items * kPanelsPerItem; panel < panel_end; ++panel) {
    const Index col0 = panel * kPanelCols;
    if (gemv && col0 + kPanelCols <= g.c.cols) {
      for (Index c = 0; c < kPanelCols; c += kGemvCols) gemv_columns(g, col0 + c, stacks);
    } else {
      run_panel(g, tile0, tiles, panel, stacks, packed_b);
    }
  }
}

template <class T>
void pack_a(const Contraction<T>& c, Index row_tiles, float* packed_a, int num_threads) {
  const Index per_task = items_per_task(row_tiles, num_threads, 1);
  auto body = [&](Index task) {
    const Index end = min_index((task + 1) * per_task, row_tiles);
    for (Index tile = task * per_task; tile < end; ++tile) pack_a_panel(c, tile, packed_a + tile * c.k_len * kTileRows);
  };
  parallel_tasks(core::ceil_div(row_tiles, per_task), num_threads, body);
}

// A single fp32 row in the row-major layout is already its packed panel ([k][row]
// with one row): decode reads x in place instead of copying it on every call.
const float* already_packed_a(const Contraction<float>& c) {
  return c.rows == 1 && c.a_layout == ALayout::row_major ? c.a : nullptr;
}
template <class T>
const float* already_packed_a(const Contraction<T>&) {
  return nullptr;
}

template <class T, class TOut>
void contract_fast(const Contraction<T>& c, TOut* out, const T* bias, int num_threads) {
  if (c.rows == 0 || c.cols == 0) return;
  Gemm<T, TOut> g{c, out, bias, nullptr, core::linear_block_count(c.k_len),
                  core::tree_stack_slots(core::linear_block_count(c.k_len)),
                  core::ceil_div(c.rows, kTileRows), core::ceil_div(c.cols, kPanelCols), 0, 0};
  g.panel_items = core::ceil_div(g.panels, kPanelsPerItem);
  g.items = core::ceil_div(g.row_tiles, kRowTilesPerItem) * g.panel_items;

  g.packed_a = already_packed_a(c);
  ScratchBuffer packed_a(g.packed_a != nullptr ? 0 : static_cast<std::size_t>(g.row_tiles * c.k_len * kTileRows));
  if (g.packed_a == nullptr) {
    pack_a(c, g.row_tiles, packed_a.data(), num_threads);
    g.packed_a = packed_a.data();
  }

  // Each worker owns its stacks and packed-B buffer and takes items from a shared
  // counter; which worker runs an item never changes what the item computes.
  const Index workers = min_index(num_threads, g.items);
  const Index stack_floats = min_index(kRowTilesPerItem, g.row_tiles) * g.slots * kTileFloats;
  const Index worker_floats = stack_floats + kPanelFloats;
  ScratchBuffer scratch(static_cast<std::size_t>(workers * worker_floats));
  Index next_item = 0;
  auto worker = [&](Index w) {
    float* stacks = scratch.data() + w * worker_floats;
    for (;;) {
      const Index item = __atomic_fetch_add(&next_item, 1, __ATOMIC_RELAXED);
      if (item >= g.items) return;
      run_item(g, item, stacks, stacks + stack_floats);
    }
  };
  parallel_tasks(workers, static_cast<int>(workers), worker);
}

// Runs contract(contraction, out, bias) for each gradient the problem asks for.
template <class T, class TOut, class Contract>
void backward_contractions(const LinearBackwardProblem& p, Contract&& contract) {
  const T* no_bias = nullptr;
  if (p.dx != nullptr) contract(core::linear_dx_contraction<T>(p), static_cast<TOut*>(p.dx), no_bias);
  if (p.dweight != nullptr) {
    contract(core::linear_dweight_contraction<T>(p), static_cast<TOut*>(p.dweight), no_bias);
  }
  if (p.dbias != nullptr) contract(core::linear_dbias_contraction<T>(p), static_cast<TOut*>(p.dbias), no_bias);
}

template <class T, class TOut>
void merge_partials(const LinearMergeProblem& p, int num_threads) {
  const T* bias = static_cast<const T*>(p.bias);
  TOut* y = static_cast<TOut*>(p.y);
  const Index per_task = items_per_task(p.count, num_threads, 1 << 14);
  auto body = [&](Index task) {
    const Index end = min_index((task + 1) * per_task, p.count);
    for (Index i = task * per_task; i < end; ++i) {
      const float sum = core::tree_reduce(p.partials + i, p.shards, p.count, core::AddCombine{});
      y[i] = core::linear_output<TOut>(sum, bias, i % p.out_features);
    }
  };
  parallel_tasks(core::ceil_div(p.count, per_task), num_threads, body);
}

}  // namespace

void linear_forward(const LinearForwardProblem& problem, int num_threads) {
  visit_in_out(problem.dtype, problem.out_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    contract_fast(core::linear_forward_contraction<T>(problem), static_cast<decltype(out)*>(problem.y),
                  static_cast<const T*>(problem.bias), num_threads);
  });
}

void linear_forward_reference(const LinearForwardProblem& problem) {
  visit_in_out(problem.dtype, problem.out_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    contract_reference(core::linear_forward_contraction<T>(problem), static_cast<decltype(out)*>(problem.y),
                       static_cast<const T*>(problem.bias));
  });
}

void linear_backward(const LinearBackwardProblem& problem, int num_threads) {
  visit_in_out(problem.dtype, problem.grad_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    backward_contractions<T, TOut>(problem, [&](const Contraction<T>& c, TOut* result, const T* bias) {
      contract_fast(c, result, bias, num_threads);
    });
  });
}

void linear_backward_reference(const LinearBackwardProblem& problem) {
  visit_in_out(problem.dtype, problem.grad_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    backward_contractions<T, TOut>(problem, [&](const Contraction<T>& c, TOut* result, const T* bias) {
      contract_reference(c, result, bias);
    });
  });
}

void linear_merge(const LinearMergeProblem& problem, int num_threads) {
  visit_in_out(problem.bias_dtype, problem.out_dtype, [&](auto in, auto out) {
    merge_partials<decltype(in), decltype(out)>(problem, num_threads);
  });
}

GOLDEN_CPU_END
