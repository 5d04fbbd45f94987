// Entry points of the CPU kernels, one set per instruction set they are
// compiled for. `num_threads` = 1 runs everything on the caller's thread.
#pragma once

#include "../core/ops/attention.h"
#include "../core/ops/embedding.h"
#include "../core/ops/linear.h"
#include "../core/ops/logprob.h"
#include "../core/ops/rms_norm.h"
#include "../core/ops/rope.h"
#include "../core/ops/swiglu.h"
#include "isa.h"

#define GOLDEN_CPU_DECLARE_KERNELS(target)                                                  \
  namespace golden::cpu::target {                                                         \
  void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype,              \
               std::int64_t count, int num_threads);                                      \
  void rms_norm_forward(const RmsNormForwardProblem& problem, int num_threads);          \
  void attention_forward(const AttentionForwardProblem& problem, int num_threads);        \
  void attention_backward(const AttentionBackwardProblem& problem, int num_threads);      \
  void rms_norm_backward(const RmsNormBackwardProblem& problem, int num_threads);        \
  void embedding_find_invalid_id(const EmbeddingIds& ids, std::int64_t vocab,             \
                                 InvalidId* result, int num_threads);                     \
  void embedding_forward(const EmbeddingForwardProblem& problem, int num_threads);        \
  void embedding_backward(const EmbeddingBackwardProblem& problem, int num_threads);      \
  void silu_forward(const SiluForwardProblem& problem, int num_threads);                  \
  void silu_backward(const SiluBackwardProblem& problem, int num_threads);                \
  void swiglu_forward(const SwigluForwardProblem& problem, int num_threads);              \
  void swiglu_backward(const SwigluBackwardProblem& problem, int num_threads);            \
  void rope_inverse_frequencies(float* inv_freq, std::int64_t head_dim, float theta,      \
                                int num_threads);                                         \
  void rope_apply(const RopeProblem& problem, int num_threads);                           \
  void linear_forward(const LinearForwardProblem& problem, int num_threads);             \
  void linear_forward_reference(const LinearForwardProblem& problem);                    \
  void linear_backward(const LinearBackwardProblem& problem, int num_threads);           \
  void linear_backward_reference(const LinearBackwardProblem& problem);                  \
  void linear_merge(const LinearMergeProblem& problem, int num_threads);                 \
  void log_softmax_forward(const LogSoftmaxForwardProblem& problem, int num_threads);     \
  void log_softmax_backward(const LogSoftmaxBackwardProblem& problem, int num_threads);   \
  void token_logprob_forward(const TokenLogprobForwardProblem& problem, int num_threads); \
  void token_logprob_backward(const TokenLogprobBackwardProblem& problem, int num_threads);\
  void entropy_forward(const EntropyForwardProblem& problem, int num_threads);            \
  void entropy_backward(const EntropyBackwardProblem& problem, int num_threads);          \
  void lse_partials(const LsePartialsProblem& problem, int num_threads);                  \
  void merge_lse_partials(const MergeLsePartialsProblem& problem, int num_threads);       \
  void target_logits(const TargetLogitsProblem& problem, int num_threads);                \
  void logprob_from_partials(const LogprobFromPartialsProblem& problem, int num_threads); \
  void linear_logprob_forward(const LinearLogprobForwardProblem& problem, int num_threads); \
  void linear_logprob_forward_reference(const LinearLogprobForwardProblem& problem);  \
  }

GOLDEN_CPU_DECLARE_KERNELS(scalar)
GOLDEN_CPU_DECLARE_KERNELS(avx2)
GOLDEN_CPU_DECLARE_KERNELS(avx512)

#undef GOLDEN_CPU_DECLARE_KERNELS

namespace golden::cpu {

// Calls the kernel `name` compiled for `isa` with the given arguments.
#define GOLDEN_CPU_DISPATCH(isa, name, ...)  \
  do {                                       \
    switch (isa) {                           \
      case ::golden::cpu::Isa::scalar:       \
        ::golden::cpu::scalar::name(__VA_ARGS__); \
        break;                               \
      case ::golden::cpu::Isa::avx2:         \
        ::golden::cpu::avx2::name(__VA_ARGS__);   \
        break;                               \
      case ::golden::cpu::Isa::avx512:       \
        ::golden::cpu::avx512::name(__VA_ARGS__); \
        break;                               \
    }                                        \
  } while (false)

}  // namespace golden::cpu
