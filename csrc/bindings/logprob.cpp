// Bindings of log_softmax, token_logprob, entropy and the vocab-parallel
// pieces: validate every array (shapes, dtypes, target ids), then launch.
#include <pybind11/pybind11.h>

#include <optional>
#include <string>
#include <vector>

#include "launch.h"

namespace golden::bindings {
namespace {

struct RowShape {
  std::int64_t rows;
  std::int64_t vocab;
};

// logits [..., vocab], vocab >= 1, dense.
RowShape check_logits(const TensorView& logits) {
  require_float(logits);
  require_min_ndim(logits, 1);
  if (logits.dim(-1) == 0) fail_value(logits.name + ": the vocabulary (last) dimension must not be empty");
  require_contiguous(logits);
  return {logits.numel() / logits.dim(-1), logits.dim(-1)};
}

std::vector<std::int64_t> leading_shape(const TensorView& logits) {
  return {logits.shape.begin(), logits.shape.end() - 1};
}

// A per-row tensor of logits' leading shape (target ids, fp32 results).
void check_per_row(const TensorView& t, const TensorView& logits, ElementType type) {
  require_type(t, type);
  require_shape(t, leading_shape(logits));
  require_contiguous(t);
}

// Target ids: int64 or int32, of logits' leading shape.
void check_ids_per_row(const TensorView& ids, const TensorView& logits) {
  if (ids.type != ElementType::i64 && ids.type != ElementType::i32) {
    fail_type(ids.name + ": expected int64 or int32 token ids, got " + element_type_name(ids.type));
  }
  require_shape(ids, leading_shape(logits));
  require_contiguous(ids);
}

TargetIds target_ids_of(const TensorView& ids) { return TargetIds{ids.data, ids.type == ElementType::i32}; }

void check_same_or_f32(const TensorView& t, const TensorView& like) {
  if (t.type != like.type && t.type != ElementType::f32) {
    fail_type(t.name + ": expected " + element_type_name(like.type) + " or float32, got " +
              element_type_name(t.type));
  }
}

void check_outputs_apart(const std::vector<const TensorView*>& outputs,
                         const std::vector<const TensorView*>& inputs) {
  for (const TensorView* output : outputs) {
    require_contiguous(*output);
    for (const TensorView* input : inputs) require_no_overlap(*output, *input);
  }
}

// Every id is in [0, vocab) or equals ignore_index. Host memory is read here;
// the GPU launchers validate device ids themselves before any kernel reads logits.
void check_target_ids(const TensorView& ids, std::int64_t vocab, std::int64_t ignore_index) {
  if (ids.device != DeviceKind::cpu) return;
  const TargetIds data = target_ids_of(ids);
  for (std::int64_t i = 0; i < ids.numel(); ++i) {
    const std::int64_t id = data[i];
    if (id == ignore_index || (id >= 0 && id < vocab)) continue;
    fail_value("target_ids: id " + std::to_string(id) + " at flat index " + std::to_string(i) +
               " is outside [0, " + std::to_string(vocab) + ") and is not ignore_index (" +
               std::to_string(ignore_index) + ")");
  }
}

void log_softmax_forward(const std::string& backend, std::uintptr_t stream, const py::object& logits_capsule,
                         const py::object& out_capsule) {
  const TensorView logits = view_capsule(logits_capsule, "logits");
  const TensorView out = view_capsule(out_capsule, "out");
  const RowShape s = check_logits(logits);
  check_same_or_f32(out, logits);
  require_same_shape(logits, out);
  check_outputs_apart({&out}, {&logits});
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, {&logits, &out});
  const LogSoftmaxForwardProblem problem{logits.data, out.data, to_dtype(logits.type), to_dtype(out.type),
                                         s.rows, s.vocab};
  GOLDEN_LAUNCH(choice, log_softmax_forward, problem);
}

void log_softmax_backward(const std::string& backend, std::uintptr_t stream, const py::object& grad_capsule,
                          const py::object& logits_capsule, const py::object& dx_capsule) {
  const TensorView grad = view_capsule(grad_capsule, "grad_out");
  const TensorView logits = view_capsule(logits_capsule, "logits");
  const TensorView dx = view_capsule(dx_capsule, "grad_logits");
  const RowShape s = check_logits(logits);
  require_float(grad);
  check_same_or_f32(grad, logits);
  require_same_shape(logits, grad);
  require_contiguous(grad);
  check_same_or_f32(dx, logits);
  require_same_shape(logits, dx);
  check_outputs_apart({&dx}, {&grad, &logits});
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, {&grad, &logits, &dx});
  const LogSoftmaxBackwardProblem problem{grad.data, logits.data, dx.data, to_dtype(logits.type),
                                          to_dtype(grad.type), to_dtype(dx.type), s.rows, s.vocab};
  GOLDEN_LAUNCH(choice, log_softmax_backward, problem);
}

void token_logprob_forward(const std::string& backend, std::uintptr_t stream, const py::object& logits_capsule,
                           const py::object& ids_capsule, const py::object& out_capsule,
                           std::int64_t ignore_index) {
  const TensorView logits = view_capsule(logits_capsule, "logits");
  const TensorView ids = view_capsule(ids_capsule, "target_ids");
  const TensorView out = view_capsule(out_capsule, "out");
  const RowShape s = check_logits(logits);
  check_ids_per_row(ids, logits);
  check_per_row(out, logits, ElementType::f32);
  check_outputs_apart({&out}, {&logits, &ids});
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, {&logits, &ids, &out});
  check_target_ids(ids, s.vocab, ignore_index);
  const TokenLogprobForwardProblem problem{logits.data, target_ids_of(ids),
                                           static_cast<float*>(out.data), to_dtype(logits.type), s.rows,
                                           s.vocab, ignore_index};
  GOLDEN_LAUNCH(choice, token_logprob_forward, problem);
}

void token_logprob_backward(const std::string& backend, std::uintptr_t stream, const py::object& grad_capsule,
                            const py::object& logits_capsule, const py::object& ids_capsule,
                            const py::object& dx_capsule, std::int64_t ignore_index) {
  const TensorView grad = view_capsule(grad_capsule, "grad_out");
  const TensorView logits = view_capsule(logits_capsule, "logits");
  const TensorView ids = view_capsule(ids_capsule, "target_ids");
  const TensorView dx = view_capsule(dx_capsule, "grad_logits");
  const RowShape s = check_logits(logits);
  check_per_row(grad, logits, ElementType::f32);
  check_ids_per_row(ids, logits);
  check_same_or_f32(dx, logits);
  require_same_shape(logits, dx);
  check_outputs_apart({&dx}, {&grad, &logits, &ids});
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, {&grad, &logits, &ids, &dx});
  check_target_ids(ids, s.vocab, ignore_index);
  const TokenLogprobBackwardProblem problem{static_cast<const float*>(grad.data),
                                            logits.data,
                                            target_ids_of(ids),
                                            dx.data,
                                            to_dtype(logits.type),
                                            to_dtype(dx.type),
                                            s.rows,
                                            s.vocab,
                                            ignore_index};
  GOLDEN_LAUNCH(choice, token_logprob_backward, problem);
}

void entropy_forward(const std::string& backend, std::uintptr_t stream, const py::object& logits_capsule,
                     const py::object& out_capsule) {
  const TensorView logits = view_capsule(logits_capsule, "logits");
  const TensorView out = view_capsule(out_capsule, "out");
  const RowShape s = check_logits(logits);
  check_per_row(out, logits, ElementType::f32);
  check_outputs_apart({&out}, {&logits});
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, {&logits, &out});
  const EntropyForwardProblem problem{logits.data, static_cast<float*>(out.data), to_dtype(logits.type),
                                      s.rows, s.vocab};
  GOLDEN_LAUNCH(choice, entropy_forward, problem);
}

void entropy_backward(const std::string& backend, std::uintptr_t stream, const py::object& grad_capsule,
                      const py::object& logits_capsule, const py::object& dx_capsule) {
  const TensorView grad = view_capsule(grad_capsule, "grad_out");
  const TensorView logits = view_capsule(logits_capsule, "logits");
  const TensorView dx = view_capsule(dx_capsule, "grad_logits");
  const RowShape s = check_logits(logits);
  check_per_row(grad, logits, ElementType::f32);
  check_same_or_f32(dx, logits);
  require_same_shape(logits, dx);
  check_outputs_apart({&dx}, {&grad, &logits});
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, {&grad, &logits, &dx});
  const EntropyBackwardProblem problem{static_cast<const float*>(grad.data), logits.data, dx.data,
                                       to_dtype(logits.type), to_dtype(dx.type), s.rows, s.vocab};
  GOLDEN_LAUNCH(choice, entropy_backward, problem);
}

// ---- Vocab parallelism ------------------------------------------------------------------

std::vector<std::int64_t> with_pair(std::vector<std::int64_t> shape) {
  shape.push_back(2);
  return shape;
}

void lse_partials(const std::string& backend, std::uintptr_t stream, const py::object& logits_capsule,
                  const py::object& out_capsule) {
  const TensorView logits = view_capsule(logits_capsule, "logits");
  const TensorView out = view_capsule(out_capsule, "out");
  const RowShape s = check_logits(logits);
  require_type(out, ElementType::f32);
  require_shape(out, with_pair(leading_shape(logits)));
  check_outputs_apart({&out}, {&logits});
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, {&logits, &out});
  const LsePartialsProblem problem{logits.data, static_cast<float*>(out.data), to_dtype(logits.type), s.rows,
                                   s.vocab};
  GOLDEN_LAUNCH(choice, lse_partials, problem);
}

void merge_lse_partials(const std::string& backend, std::uintptr_t stream, const py::object& partials_capsule,
                        const py::object& out_capsule) {
  const TensorView partials = view_capsule(partials_capsule, "partials");
  const TensorView out = view_capsule(out_capsule, "out");
  require_type(partials, ElementType::f32);
  require_min_ndim(partials, 2);
  if (partials.dim(-1) != 2) fail_value("partials: expected a last dimension of 2 (max, sum), got shape " + partials.shape_string());
  if (partials.dim(0) == 0) fail_value("partials: expected at least one shard");
  require_contiguous(partials);
  require_type(out, ElementType::f32);
  require_shape(out, {partials.shape.begin() + 1, partials.shape.end()});
  check_outputs_apart({&out}, {&partials});
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, {&partials, &out});
  const std::int64_t shards = partials.dim(0);
  const MergeLsePartialsProblem problem{static_cast<const float*>(partials.data), static_cast<float*>(out.data),
                                        shards, partials.numel() / (2 * shards)};
  GOLDEN_LAUNCH(choice, merge_lse_partials, problem);
}

std::vector<std::int64_t> with_triple(std::vector<std::int64_t> shape) {
  shape.push_back(3);
  return shape;
}

void entropy_partials(const std::string& backend, std::uintptr_t stream, const py::object& logits_capsule,
                      const py::object& out_capsule) {
  const TensorView logits = view_capsule(logits_capsule, "logits");
  const TensorView out = view_capsule(out_capsule, "out");
  const RowShape s = check_logits(logits);
  require_type(out, ElementType::f32);
  require_shape(out, with_triple(leading_shape(logits)));
  check_outputs_apart({&out}, {&logits});
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, {&logits, &out});
  const EntropyPartialsProblem problem{logits.data, static_cast<float*>(out.data), to_dtype(logits.type), s.rows,
                                       s.vocab};
  GOLDEN_LAUNCH(choice, entropy_partials, problem);
}

// partials [shards, ..., 3] -> merged [..., 3] and/or entropy [...] (None skips one).
void merge_entropy_partials(const std::string& backend, std::uintptr_t stream, const py::object& partials_capsule,
                            const py::object& merged_capsule, const py::object& entropy_capsule) {
  const TensorView partials = view_capsule(partials_capsule, "partials");
  require_type(partials, ElementType::f32);
  require_min_ndim(partials, 2);
  if (partials.dim(-1) != 3) {
    fail_value("partials: expected a last dimension of 3 (max, sum, shifted), got shape " + partials.shape_string());
  }
  if (partials.dim(0) == 0) fail_value("partials: expected at least one shard");
  require_contiguous(partials);
  const std::vector<std::int64_t> merged_shape{partials.shape.begin() + 1, partials.shape.end()};
  std::vector<const TensorView*> outputs;
  std::optional<TensorView> merged;
  std::optional<TensorView> entropy;
  if (!merged_capsule.is_none()) {
    merged = view_capsule(merged_capsule, "merged");
    require_type(*merged, ElementType::f32);
    require_shape(*merged, merged_shape);
    outputs.push_back(&*merged);
  }
  if (!entropy_capsule.is_none()) {
    entropy = view_capsule(entropy_capsule, "entropy");
    require_type(*entropy, ElementType::f32);
    require_shape(*entropy, {merged_shape.begin(), merged_shape.end() - 1});
    outputs.push_back(&*entropy);
  }
  if (merged && entropy) require_no_overlap(*entropy, *merged);
  check_outputs_apart(outputs, {&partials});
  const BackendChoice choice = parse_backend(backend, stream);
  std::vector<const TensorView*> all{&partials};
  all.insert(all.end(), outputs.begin(), outputs.end());
  require_backend_device(choice, all);
  const std::int64_t shards = partials.dim(0);
  const MergeEntropyPartialsProblem problem{static_cast<const float*>(partials.data),
                                            merged ? static_cast<float*>(merged->data) : nullptr,
                                            entropy ? static_cast<float*>(entropy->data) : nullptr, shards,
                                            partials.numel() / (3 * shards)};
  GOLDEN_LAUNCH(choice, merge_entropy_partials, problem);
}

void target_logits(const std::string& backend, std::uintptr_t stream, const py::object& logits_capsule,
                   const py::object& ids_capsule, const py::object& out_capsule, std::int64_t vocab_start,
                   std::int64_t vocab_size, std::int64_t ignore_index) {
  const TensorView logits = view_capsule(logits_capsule, "logits");
  const TensorView ids = view_capsule(ids_capsule, "target_ids");
  const TensorView out = view_capsule(out_capsule, "out");
  const RowShape s = check_logits(logits);
  if (vocab_start < 0 || vocab_size < s.vocab || vocab_start > vocab_size - s.vocab) {  // no overflow
    fail_value("the shard of " + std::to_string(s.vocab) + " logits starting at vocab_start = " +
               std::to_string(vocab_start) + " must lie inside [0, vocab_size = " + std::to_string(vocab_size) + ")");
  }
  check_ids_per_row(ids, logits);
  check_per_row(out, logits, ElementType::f32);
  check_outputs_apart({&out}, {&logits, &ids});
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, {&logits, &ids, &out});
  check_target_ids(ids, vocab_size, ignore_index);
  const TargetLogitsProblem problem{logits.data,   target_ids_of(ids),
                                    static_cast<float*>(out.data), to_dtype(logits.type),
                                    s.rows,        s.vocab,
                                    vocab_start,   vocab_size,
                                    ignore_index};
  GOLDEN_LAUNCH(choice, target_logits, problem);
}

void logprob_from_partials(const std::string& backend, std::uintptr_t stream, const py::object& target_capsule,
                           const py::object& partials_capsule, const py::object& ids_capsule,
                           const py::object& out_capsule, std::int64_t ignore_index) {
  const TensorView target = view_capsule(target_capsule, "target_logits");
  const TensorView partials = view_capsule(partials_capsule, "partials");
  const TensorView ids = view_capsule(ids_capsule, "target_ids");
  const TensorView out = view_capsule(out_capsule, "out");
  require_type(target, ElementType::f32);
  require_contiguous(target);
  require_type(partials, ElementType::f32);
  require_shape(partials, with_pair(target.shape));
  require_contiguous(partials);
  check_ids_per_row(ids, partials);  // partials [..., 2]: its leading shape is the rows
  require_type(out, ElementType::f32);
  require_shape(out, target.shape);
  check_outputs_apart({&out}, {&target, &partials, &ids});
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, {&target, &partials, &ids, &out});
  const LogprobFromPartialsProblem problem{static_cast<const float*>(target.data),
                                           static_cast<const float*>(partials.data),
                                           target_ids_of(ids),
                                           static_cast<float*>(out.data),
                                           target.numel(),
                                           ignore_index};
  GOLDEN_LAUNCH(choice, logprob_from_partials, problem);
}

// ---- Fused lm_head + token logprob --------------------------------------------------

// hidden [..., H] and weight [vocab >= 1, H] of one float dtype, ids of hidden's leading shape.
void check_fused_operands(const TensorView& hidden, const TensorView& weight, const TensorView& ids) {
  require_float(hidden);
  require_min_ndim(hidden, 1);
  require_contiguous(hidden);
  require_same_type(hidden, weight);
  require_contiguous(weight);
  if (weight.ndim() != 2 || weight.dim(1) != hidden.dim(-1) || weight.dim(0) == 0) {
    fail_value("weight: expected shape [vocab >= 1, " + std::to_string(hidden.dim(-1)) + "], got " +
               weight.shape_string());
  }
  check_ids_per_row(ids, hidden);
}

// The fused op's fp32 logits [..., vocab]: hidden's leading shape, weight's vocabulary, dense.
void check_fused_logits(const TensorView& logits, const TensorView& hidden, const TensorView& weight) {
  require_type(logits, ElementType::f32);
  std::vector<std::int64_t> shape = leading_shape(hidden);
  shape.push_back(weight.dim(0));
  require_shape(logits, shape);
  require_contiguous(logits);
}

// The fused op's per-row entropy partial: fp32 (max, sum, shifted) [..., 3], dense.
void check_row_partial(const TensorView& partial, const TensorView& hidden) {
  require_type(partial, ElementType::f32);
  require_shape(partial, with_triple(leading_shape(hidden)));
  require_contiguous(partial);
}

void linear_logprob_forward(const std::string& backend, std::uintptr_t stream, const py::object& hidden_capsule,
                            const py::object& weight_capsule, const py::object& ids_capsule,
                            const py::object& logprob_capsule, const py::object& entropy_capsule,
                            std::int64_t ignore_index, const py::object& lse_capsule,
                            const py::object& logits_capsule, const py::object& entropy_partial_capsule) {
  const TensorView hidden = view_capsule(hidden_capsule, "hidden");
  const TensorView weight = view_capsule(weight_capsule, "weight");
  const TensorView ids = view_capsule(ids_capsule, "target_ids");
  const TensorView logprob = view_capsule(logprob_capsule, "logprob");
  check_fused_operands(hidden, weight, ids);
  check_per_row(logprob, hidden, ElementType::f32);
  std::vector<const TensorView*> outputs{&logprob};
  std::optional<TensorView> entropy;
  if (!entropy_capsule.is_none()) {
    entropy = view_capsule(entropy_capsule, "entropy");
    check_per_row(*entropy, hidden, ElementType::f32);
    outputs.push_back(&*entropy);
    require_no_overlap(*entropy, logprob);
  }
  std::optional<TensorView> lse;
  if (!lse_capsule.is_none()) {
    lse = view_capsule(lse_capsule, "lse");
    check_per_row(*lse, hidden, ElementType::f32);
    for (const TensorView* output : outputs) require_no_overlap(*lse, *output);
    outputs.push_back(&*lse);
  }
  std::optional<TensorView> logits;  // for the backward to take back
  if (!logits_capsule.is_none()) {
    logits = view_capsule(logits_capsule, "logits");
    check_fused_logits(*logits, hidden, weight);
    for (const TensorView* output : outputs) require_no_overlap(*logits, *output);
    outputs.push_back(&*logits);
  }
  std::optional<TensorView> entropy_partial;  // for the backward to take back
  if (!entropy_partial_capsule.is_none()) {
    entropy_partial = view_capsule(entropy_partial_capsule, "entropy_partial");
    check_row_partial(*entropy_partial, hidden);
    for (const TensorView* output : outputs) require_no_overlap(*entropy_partial, *output);
    outputs.push_back(&*entropy_partial);
  }
  check_outputs_apart(outputs, {&hidden, &weight, &ids});
  const BackendChoice choice = parse_backend(backend, stream);
  std::vector<const TensorView*> all{&hidden, &weight, &ids};
  all.insert(all.end(), outputs.begin(), outputs.end());
  require_backend_device(choice, all);
  const std::int64_t vocab = weight.dim(0);
  check_target_ids(ids, vocab, ignore_index);
  const LinearLogprobForwardProblem problem{hidden.data,
                                            weight.data,
                                            target_ids_of(ids),
                                            static_cast<float*>(logprob.data),
                                            entropy ? static_cast<float*>(entropy->data) : nullptr,
                                            lse ? static_cast<float*>(lse->data) : nullptr,
                                            entropy_partial ? static_cast<float*>(entropy_partial->data) : nullptr,
                                            logits ? static_cast<float*>(logits->data) : nullptr,
                                            to_dtype(hidden.type),
                                            ids.numel(),
                                            hidden.dim(-1),
                                            vocab,
                                            ignore_index};
  py::gil_scoped_release no_gil;
  cpu::DefaultFloatEnvironment default_environment;
  switch (choice.backend) {
    case Backend::reference:
      cpu::scalar::linear_logprob_forward_reference(problem);
      break;
    case Backend::cpu:
      GOLDEN_CPU_DISPATCH(cpu::active_isa(), linear_logprob_forward, problem, cpu::num_threads());
      break;
    case Backend::gpu:
      gpu::linear_logprob_forward(problem, choice.stream);
      break;
  }
}

// The gradients asked for (grad_hidden, grad_weight: None skips one) of the
// logprob (and, with grad_entropy, the entropy) output.
void linear_logprob_backward(const std::string& backend, std::uintptr_t stream, const py::object& grad_capsule,
                             const py::object& grad_entropy_capsule, const py::object& hidden_capsule,
                             const py::object& weight_capsule, const py::object& ids_capsule,
                             const py::object& dhidden_capsule, const py::object& dweight_capsule,
                             std::int64_t ignore_index, const py::object& lse_capsule,
                             const py::object& logits_capsule, const py::object& entropy_partial_capsule) {
  const TensorView grad = view_capsule(grad_capsule, "grad_logprob");
  const TensorView hidden = view_capsule(hidden_capsule, "hidden");
  const TensorView weight = view_capsule(weight_capsule, "weight");
  const TensorView ids = view_capsule(ids_capsule, "target_ids");
  check_fused_operands(hidden, weight, ids);
  check_per_row(grad, hidden, ElementType::f32);
  std::vector<const TensorView*> inputs{&grad, &hidden, &weight, &ids};
  std::optional<TensorView> grad_entropy;
  if (!grad_entropy_capsule.is_none()) {
    grad_entropy = view_capsule(grad_entropy_capsule, "grad_entropy");
    check_per_row(*grad_entropy, hidden, ElementType::f32);
    inputs.push_back(&*grad_entropy);
  }
  std::optional<TensorView> lse;  // the forward's: skips the statistics pass
  if (!lse_capsule.is_none()) {
    if (grad_entropy) {
      fail_value("lse: not accepted with grad_entropy (its gradient needs more statistics: give the forward's "
                 "entropy_partial instead)");
    }
    lse = view_capsule(lse_capsule, "lse");
    check_per_row(*lse, hidden, ElementType::f32);
    inputs.push_back(&*lse);
  }
  std::optional<TensorView> logits;  // the forward's: read instead of recomputed
  if (!logits_capsule.is_none()) {
    logits = view_capsule(logits_capsule, "logits");
    check_fused_logits(*logits, hidden, weight);
    inputs.push_back(&*logits);
  }
  std::optional<TensorView> entropy_partial;  // the forward's: skips the statistics pass
  if (!entropy_partial_capsule.is_none()) {
    if (lse) fail_value("entropy_partial: give lse or entropy_partial, not both");
    entropy_partial = view_capsule(entropy_partial_capsule, "entropy_partial");
    check_row_partial(*entropy_partial, hidden);
    inputs.push_back(&*entropy_partial);
  }
  std::vector<const TensorView*> outputs;
  std::optional<TensorView> dhidden;
  std::optional<TensorView> dweight;
  if (!dhidden_capsule.is_none()) {
    dhidden = view_capsule(dhidden_capsule, "grad_hidden");
    check_same_or_f32(*dhidden, hidden);
    require_same_shape(*dhidden, hidden);
    outputs.push_back(&*dhidden);
  }
  if (!dweight_capsule.is_none()) {
    dweight = view_capsule(dweight_capsule, "grad_weight");
    check_same_or_f32(*dweight, hidden);
    require_same_shape(*dweight, weight);
    outputs.push_back(&*dweight);
  }
  if (dhidden && dweight) {
    if (dhidden->type != dweight->type) fail_type("grad_hidden and grad_weight must have one dtype");
    require_no_overlap(*dweight, *dhidden);
  }
  check_outputs_apart(outputs, inputs);
  const BackendChoice choice = parse_backend(backend, stream);
  std::vector<const TensorView*> all = inputs;
  all.insert(all.end(), outputs.begin(), outputs.end());
  require_backend_device(choice, all);
  const std::int64_t vocab = weight.dim(0);
  check_target_ids(ids, vocab, ignore_index);
  const TensorView* first_output = outputs.empty() ? &hidden : outputs.front();
  const LinearLogprobBackwardProblem problem{static_cast<const float*>(grad.data),
                                             grad_entropy ? static_cast<const float*>(grad_entropy->data) : nullptr,
                                             lse ? static_cast<const float*>(lse->data) : nullptr,
                                             entropy_partial ? static_cast<const float*>(entropy_partial->data)
                                                             : nullptr,
                                             logits ? static_cast<const float*>(logits->data) : nullptr,
                                             hidden.data,
                                             weight.data,
                                             target_ids_of(ids),
                                             dhidden ? dhidden->data : nullptr,
                                             dweight ? dweight->data : nullptr,
                                             to_dtype(hidden.type),
                                             to_dtype(first_output->type),
                                             ids.numel(),
                                             hidden.dim(-1),
                                             vocab,
                                             ignore_index};
  if (outputs.empty()) return;
  py::gil_scoped_release no_gil;
  cpu::DefaultFloatEnvironment default_environment;
  switch (choice.backend) {
    case Backend::reference:
      cpu::scalar::linear_logprob_backward_reference(problem);
      break;
    case Backend::cpu:
      GOLDEN_CPU_DISPATCH(cpu::active_isa(), linear_logprob_backward, problem, cpu::num_threads());
      break;
    case Backend::gpu:
      gpu::linear_logprob_backward(problem, choice.stream);
      break;
  }
}

}  // namespace

void register_logprob(py::module_& m) {
  m.attr("LOGPROB_VOCAB_CHUNK") = core::kRowBlock;
  m.attr("DEFAULT_IGNORE_INDEX") = kDefaultIgnoreIndex;
  m.def("log_softmax_forward", &log_softmax_forward, py::arg("backend"), py::arg("stream"), py::arg("logits"),
        py::arg("out"));
  m.def("log_softmax_backward", &log_softmax_backward, py::arg("backend"), py::arg("stream"),
        py::arg("grad_out"), py::arg("logits"), py::arg("grad_logits"));
  m.def("token_logprob_forward", &token_logprob_forward, py::arg("backend"), py::arg("stream"),
        py::arg("logits"), py::arg("target_ids"), py::arg("out"), py::arg("ignore_index"));
  m.def("token_logprob_backward", &token_logprob_backward, py::arg("backend"), py::arg("stream"),
        py::arg("grad_out"), py::arg("logits"), py::arg("target_ids"), py::arg("grad_logits"),
        py::arg("ignore_index"));
  m.def("entropy_forward", &entropy_forward, py::arg("backend"), py::arg("stream"), py::arg("logits"),
        py::arg("out"));
  m.def("entropy_backward", &entropy_backward, py::arg("backend"), py::arg("stream"), py::arg("grad_out"),
        py::arg("logits"), py::arg("grad_logits"));
  m.def("lse_partials", &lse_partials, py::arg("backend"), py::arg("stream"), py::arg("logits"), py::arg("out"));
  m.def("merge_lse_partials", &merge_lse_partials, py::arg("backend"), py::arg("stream"), py::arg("partials"),
        py::arg("out"));
  m.def("entropy_partials", &entropy_partials, py::arg("backend"), py::arg("stream"), py::arg("logits"),
        py::arg("out"));
  m.def("merge_entropy_partials", &merge_entropy_partials, py::arg("backend"), py::arg("stream"),
        py::arg("partials"), py::arg("merged"), py::arg("entropy"));
  m.def("target_logits", &target_logits, py::arg("backend"), py::arg("stream"), py::arg("logits"),
        py::arg("target_ids"), py::arg("out"), py::arg("vocab_start"), py::arg("vocab_size"),
        py::arg("ignore_index"));
  m.def("logprob_from_partials", &logprob_from_partials, py::arg("backend"), py::arg("stream"),
        py::arg("target_logits"), py::arg("partials"), py::arg("target_ids"), py::arg("out"),
        py::arg("ignore_index"));
  m.def("linear_logprob_forward", &linear_logprob_forward, py::arg("backend"), py::arg("stream"),
        py::arg("hidden"), py::arg("weight"), py::arg("target_ids"), py::arg("logprob"), py::arg("entropy"),
        py::arg("ignore_index"), py::arg("lse") = py::none(), py::arg("logits") = py::none(),
        py::arg("entropy_partial") = py::none());
  m.def("linear_logprob_backward", &linear_logprob_backward, py::arg("backend"), py::arg("stream"),
        py::arg("grad_logprob"), py::arg("grad_entropy"), py::arg("hidden"), py::arg("weight"),
        py::arg("target_ids"), py::arg("grad_hidden"), py::arg("grad_weight"), py::arg("ignore_index"),
        py::arg("lse") = py::none(), py::arg("logits") = py::none(), py::arg("entropy_partial") = py::none());
}

}  // namespace golden::bindings
