// Stand-in for the GPU backend when the module is built without CUDA or HIP:
// it reports no devices, so the bindings never route a call here.
#include <stdexcept>

#include "kernels.h"

namespace golden::gpu {
namespace {
[[noreturn]] void not_built() { throw std::runtime_error("golden_kernels was built without a GPU backend"); }
}  // namespace

bool compiled() { return false; }
int device_count() { return 0; }
void convert(const void*, DType, void*, DType, std::int64_t, std::uintptr_t) { not_built(); }
void rms_norm_forward(const RmsNormForwardProblem&, std::uintptr_t) { not_built(); }
void rms_norm_backward(const RmsNormBackwardProblem&, std::uintptr_t) { not_built(); }
void attention_forward(const AttentionForwardProblem&, std::uintptr_t) { not_built(); }
void attention_backward(const AttentionBackwardProblem&, std::uintptr_t) { not_built(); }
void embedding_find_invalid_id(const EmbeddingIds&, std::int64_t, InvalidId*, std::uintptr_t) { not_built(); }
void embedding_forward(const EmbeddingForwardProblem&, std::uintptr_t) { not_built(); }
void embedding_backward(const EmbeddingBackwardProblem&, std::uintptr_t) { not_built(); }
void silu_forward(const SiluForwardProblem&, std::uintptr_t) { not_built(); }
void silu_backward(const SiluBackwardProblem&, std::uintptr_t) { not_built(); }
void swiglu_forward(const SwigluForwardProblem&, std::uintptr_t) { not_built(); }
void swiglu_backward(const SwigluBackwardProblem&, std::uintptr_t) { not_built(); }
void rope_inverse_frequencies(float*, std::int64_t, float, std::uintptr_t) { not_built(); }
void rope_apply(const RopeProblem&, std::uintptr_t) { not_built(); }
void linear_forward(const LinearForwardProblem&, std::uintptr_t) { not_built(); }
void linear_backward(const LinearBackwardProblem&, std::uintptr_t) { not_built(); }
void linear_merge(const LinearMergeProblem&, std::uintptr_t) { not_built(); }
void log_softmax_forward(const LogSoftmaxForwardProblem&, std::uintptr_t) { not_built(); }
void log_softmax_backward(const LogSoftmaxBackwardProblem&, std::uintptr_t) { not_built(); }
void token_logprob_forward(const TokenLogprobForwardProblem&, std::uintptr_t) { not_built(); }
void token_logprob_backward(const TokenLogprobBackwardProblem&, std::uintptr_t) { not_built(); }
void entropy_forward(const EntropyForwardProblem&, std::uintptr_t) { not_built(); }
void entropy_backward(const EntropyBackwardProblem&, std::uintptr_t) { not_built(); }
void lse_partials(const LsePartialsProblem&, std::uintptr_t) { not_built(); }
void merge_lse_partials(const MergeLsePartialsProblem&, std::uintptr_t) { not_built(); }
void target_logits(const TargetLogitsProblem&, std::uintptr_t) { not_built(); }
void logprob_from_partials(const LogprobFromPartialsProblem&, std::uintptr_t) { not_built(); }

}  // namespace golden::gpu
