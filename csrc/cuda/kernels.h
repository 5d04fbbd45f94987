// Host-side entry points of the GPU backend. The same .cu sources build the
// CUDA variant with nvcc and the HIP variant with hipcc (see
// csrc/hip/hip_compat.h); without a GPU compiler, no_gpu.cpp stands in.
// Launchers only map rows/tiles to threads; the arithmetic is in csrc/core.
#pragma once

#include <cstdint>
#include <string>

#include "../core/ops/attention.h"
#include "../core/ops/embedding.h"
#include "../core/ops/linear.h"
#include "../core/ops/logprob.h"
#include "../core/ops/rms_norm.h"
#include "../core/ops/rope.h"
#include "../core/ops/swiglu.h"

namespace golden::gpu {

bool compiled();
int device_count();

// Each launcher enqueues on `stream` (0: the default stream) and throws
// std::runtime_error on a launch or runtime error.
void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, std::int64_t count,
             std::uintptr_t stream);
void rms_norm_forward(const RmsNormForwardProblem& problem, std::uintptr_t stream);
void rms_norm_backward(const RmsNormBackwardProblem& problem, std::uintptr_t stream);
void attention_forward(const AttentionForwardProblem& problem, std::uintptr_t stream);
void attention_backward(const AttentionBackwardProblem& problem, std::uintptr_t stream);
// Finds the first out-of-range id on the device and copies it to the host
// `result` (synchronising with the stream), so the bindings can raise.
void embedding_find_invalid_id(const EmbeddingIds& ids, std::int64_t vocab, InvalidId* result,
                               std::uintptr_t stream);
void embedding_forward(const EmbeddingForwardProblem& problem, std::uintptr_t stream);
void embedding_backward(const EmbeddingBackwardProblem& problem, std::uintptr_t stream);
void silu_forward(const SiluForwardProblem& problem, std::uintptr_t stream);
void silu_backward(const SiluBackwardProblem& problem, std::uintptr_t stream);
void swiglu_forward(const SwigluForwardProblem& problem, std::uintptr_t stream);
void swiglu_backward(const SwigluBackwardProblem& problem, std::uintptr_t stream);
void rope_inverse_frequencies(float* inv_freq, std::int64_t head_dim, float theta,
                              std::uintptr_t stream);
void rope_apply(const RopeProblem& problem, std::uintptr_t stream);
void linear_forward(const LinearForwardProblem& problem, std::uintptr_t stream);
void linear_backward(const LinearBackwardProblem& problem, std::uintptr_t stream);
void linear_merge(const LinearMergeProblem& problem, std::uintptr_t stream);
void log_softmax_forward(const LogSoftmaxForwardProblem& problem, std::uintptr_t stream);
void log_softmax_backward(const LogSoftmaxBackwardProblem& problem, std::uintptr_t stream);
void token_logprob_forward(const TokenLogprobForwardProblem& problem, std::uintptr_t stream);
void token_logprob_backward(const TokenLogprobBackwardProblem& problem, std::uintptr_t stream);
void entropy_forward(const EntropyForwardProblem& problem, std::uintptr_t stream);
void entropy_backward(const EntropyBackwardProblem& problem, std::uintptr_t stream);
void lse_partials(const LsePartialsProblem& problem, std::uintptr_t stream);
void merge_lse_partials(const MergeLsePartialsProblem& problem, std::uintptr_t stream);
void target_logits(const TargetLogitsProblem& problem, std::uintptr_t stream);
void logprob_from_partials(const LogprobFromPartialsProblem& problem, std::uintptr_t stream);

}  // namespace golden::gpu
