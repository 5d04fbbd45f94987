// Bindings of attention (padded [B, H, S, D] and packed [T, H, D]): validate
// shapes, dtypes, strides, sequence offsets and key lists, then launch.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <optional>

#include "launch.h"

namespace golden::bindings {
namespace {

std::optional<TensorView> optional_view(const py::object& capsule, const char* name) {
  if (capsule.is_none()) return std::nullopt;
  return view_capsule(capsule, name);
}

// Padded [B, H, S, D] (ndim 4) or packed [T, H, D] (ndim 3), head_dim
// contiguous, no negative strides.
void check_strided(const TensorView& t, int ndim) {
  if (t.ndim() != ndim) {
    fail_value(t.name + ": expected " + std::to_string(ndim) + " dimensions, got " + t.shape_string());
  }
  if (t.numel() == 0) return;  // nothing is read: an empty array's strides are arbitrary
  for (std::int64_t s : t.strides) {
    if (s < 0) fail_value(t.name + ": negative strides are not supported");
  }
  if (t.dim(-1) > 1 && t.strides.back() != 1) fail_value(t.name + ": the last dimension must be contiguous");
}

template <class Strided>
Strided strided(const TensorView& t, bool packed) {
  using Data = decltype(Strided::data);
  if (packed) return Strided{static_cast<Data>(t.data), 0, t.strides[0], t.strides[1]};
  return Strided{static_cast<Data>(t.data), t.strides[0], t.strides[2], t.strides[1]};
}

// The head counts of q and k/v and the sequence geometry.
struct Heads {
  std::int64_t q_heads;
  std::int64_t kv_heads;
  std::int64_t head_dim;
};

Heads check_qkv(const TensorView& q, const TensorView& k, const TensorView& v, bool packed) {
  const int ndim = packed ? 3 : 4;
  for (const TensorView* t : {&q, &k, &v}) check_strided(*t, ndim);
  require_float(q);
  require_same_type(q, k);
  require_same_type(q, v);
  require_same_shape(k, v);
  const Heads heads{q.dim(1), k.dim(1), q.dim(-1)};
  if (k.dim(-1) != heads.head_dim) {
    fail_value("k: head_dim " + std::to_string(k.dim(-1)) + " differs from q's " + std::to_string(heads.head_dim));
  }
  if (heads.head_dim < 1 || heads.head_dim > kAttentionMaxHeadDim) {
    fail_value("head_dim must be in [1, " + std::to_string(kAttentionMaxHeadDim) + "], got " +
               std::to_string(heads.head_dim));
  }
  if (heads.kv_heads < 1 || heads.q_heads % heads.kv_heads != 0) {
    fail_value("the number of query heads (" + std::to_string(heads.q_heads) +
               ") must be a multiple of the number of key/value heads (" + std::to_string(heads.kv_heads) + ")");
  }
  if (!packed && k.dim(0) != q.dim(0)) fail_value("k: batch size differs from q's");
  return heads;
}

// cu_seqlens: int64 [num_seqs + 1], 0 first, non-decreasing, total last.
void check_cu_seqlens(const TensorView& cu, std::int64_t total, bool on_host) {
  require_type(cu, ElementType::i64);
  require_contiguous(cu);
  if (cu.ndim() != 1 || cu.dim(0) < 1) fail_value(cu.name + ": expected a 1-D array of num_seqs + 1 offsets");
  if (!on_host) return;  // the Python layer checked the values
  const auto* offsets = static_cast<const std::int64_t*>(cu.data);
  if (offsets[0] != 0) fail_value(cu.name + ": must start at 0");
  for (std::int64_t i = 1; i < cu.dim(0); ++i) {
    if (offsets[i] < offsets[i - 1]) fail_value(cu.name + ": offsets must be non-decreasing");
  }
  if (offsets[cu.dim(0) - 1] != total) {
    fail_value(cu.name + ": the last offset must equal the number of tokens " + std::to_string(total));
  }
}

// Each sequence's valid keys: count in [0, k_len], tokens ascending in range.
void check_key_lists(const AttentionLayout& l) {
  for (std::int64_t b = 0; b < l.num_seqs; ++b) {
    const std::int64_t count = l.key_count[b];
    if (count < 0 || count > l.k_len) fail_value("key_count out of range");
    for (std::int64_t n = 0; n < count; ++n) {
      const std::int64_t token = l.key_index[b * l.key_stride + n];
      const std::int64_t previous = n == 0 ? -1 : l.key_index[b * l.key_stride + n - 1];
      if (token <= previous || token >= l.k_len) fail_value("key_index must be ascending token indices");
    }
  }
}

// key_keep and key_index: rows of one common stride (a cache's [B, max_len]
// arrays viewed up to its length), each row contiguous.
std::int64_t check_key_rows(const TensorView& keep, const TensorView& index) {
  if (index.numel() == 0) return 0;  // (keep's shape is index's) nothing is read: any strides will do
  for (const TensorView* t : {&keep, &index}) {
    if (t->dim(1) > 1 && t->strides[1] != 1) fail_value(t->name + ": rows must be contiguous");
    if (t->dim(0) > 1 && t->strides[0] < t->dim(1)) fail_value(t->name + ": rows must not overlap");
  }
  if (keep.dim(0) > 1 && keep.strides[0] != index.strides[0]) {
    fail_value("key_padding_mask and key_index must share their row stride");
  }
  return index.strides[0];
}

// The layout from the arrays (all already validated).
struct LayoutArrays {
  std::optional<TensorView> cu_q, cu_k, key_index, key_count, key_keep;
};

LayoutArrays read_layout_arrays(const py::object& cu_q, const py::object& cu_k, const py::object& key_index,
                                const py::object& key_count, const py::object& key_keep) {
  return {optional_view(cu_q, "cu_seqlens_q"), optional_view(cu_k, "cu_seqlens_k"),
          optional_view(key_index, "key_index"), optional_view(key_count, "key_count"),
          optional_view(key_keep, "key_padding_mask")};
}

// The longest sequence's length in offsets `cu`: read here when they are on
// the host; on a GPU, `given` (the Python layer's reading) or, unknown (< 0),
// the total, which bounds it.
std::int64_t longest_sequence(const TensorView& cu, std::int64_t total, std::int64_t given, bool on_host) {
  if (!on_host) return given >= 0 && given < total ? given : total;
  const auto* offsets = static_cast<const std::int64_t*>(cu.data);
  std::int64_t longest = 0;
  for (std::int64_t i = 1; i < cu.dim(0); ++i) longest = std::max(longest, offsets[i] - offsets[i - 1]);
  return longest;
}

AttentionLayout build_layout(const TensorView& q, const TensorView& k, const Heads& heads, const LayoutArrays& a,
                             bool causal, float scale, bool on_host, std::int64_t longest_q = -1,
                             std::int64_t longest_k = -1) {
  const bool packed = a.cu_q.has_value();
  AttentionLayout l{};
  l.num_q_heads = heads.q_heads;
  l.num_kv_heads = heads.kv_heads;
  l.head_dim = heads.head_dim;
  l.causal = causal;
  l.scale = scale;
  require_finite(scale, "scale");
  if (packed) {
    if (!a.cu_k) fail_value("cu_seqlens_k is required with cu_seqlens_q");
    check_cu_seqlens(*a.cu_q, q.dim(0), on_host);
    check_cu_seqlens(*a.cu_k, k.dim(0), on_host);
    require_same_shape(*a.cu_q, *a.cu_k);
    l.num_seqs = a.cu_q->dim(0) - 1;
    l.q_len = q.dim(0);
    l.k_len = k.dim(0);
    l.cu_q = static_cast<const std::int64_t*>(a.cu_q->data);
    l.cu_k = static_cast<const std::int64_t*>(a.cu_k->data);
    l.longest_q = longest_sequence(*a.cu_q, l.q_len, longest_q, on_host);
    l.longest_k = longest_sequence(*a.cu_k, l.k_len, longest_k, on_host);
    return l;
  }
  l.num_seqs = q.dim(0);
  l.q_len = q.dim(2);
  l.k_len = k.dim(2);
  l.longest_q = l.q_len;
  l.longest_k = l.k_len;
  if (!a.key_keep) return l;
  if (!a.key_index || !a.key_count) fail_value("key_index and key_count come with key_padding_mask");
  require_type(*a.key_keep, ElementType::boolean);
  require_shape(*a.key_keep, {l.num_seqs, l.k_len});
  require_type(*a.key_index, ElementType::i32);
  require_shape(*a.key_index, {l.num_seqs, l.k_len});
  l.key_stride = check_key_rows(*a.key_keep, *a.key_index);
  require_type(*a.key_count, ElementType::i32);
  require_shape(*a.key_count, {l.num_seqs});
  require_contiguous(*a.key_count);
  l.key_keep = static_cast<const std::uint8_t*>(a.key_keep->data);
  l.key_index = static_cast<const std::int32_t*>(a.key_index->data);
  l.key_count = static_cast<const std::int32_t*>(a.key_count->data);
  if (on_host) check_key_lists(l);
  return l;
}

std::vector<const TensorView*> present(std::vector<const TensorView*> fixed, const LayoutArrays& a) {
  for (const auto* t : {&a.cu_q, &a.cu_k, &a.key_index, &a.key_count, &a.key_keep}) {
    if (t->has_value()) fixed.push_back(&**t);
  }
  return fixed;
}

// Every output (null: absent) shares no byte with any other argument.
void require_outputs_apart(std::initializer_list<const TensorView*> outputs,
                           const std::vector<const TensorView*>& arguments) {
  for (const TensorView* output : outputs) {
    if (output == nullptr) continue;
    for (const TensorView* other : arguments) {
      if (other != output) require_no_overlap(*output, *other);
    }
  }
}

void check_float_output(const TensorView& input, const TensorView& output, bool packed) {
  if (output.type != input.type && output.type != ElementType::f32) {
    fail_type(output.name + ": expected " + element_type_name(input.type) + " or float32, got " +
              element_type_name(output.type));
  }
  require_same_shape(input, output);
  check_strided(output, packed ? 3 : 4);
}

// An LSE array: float32, contiguous, padded [B, Hq, Sq] or packed [Hq, T];
// returned as a [seq, token, head] view.
template <class Strided>
Strided lse_strided(const TensorView& lse, const TensorView& q, const Heads& heads, bool packed) {
  using Data = decltype(Strided::data);
  require_type(lse, ElementType::f32);
  require_contiguous(lse);
  if (packed) {
    require_shape(lse, {heads.q_heads, q.dim(0)});
    return Strided{static_cast<Data>(lse.data), 0, 1, q.dim(0)};
  }
  require_shape(lse, {q.dim(0), heads.q_heads, q.dim(2)});
  return Strided{static_cast<Data>(lse.data), heads.q_heads * q.dim(2), 1, q.dim(2)};
}

void attention_forward(const std::string& backend, std::uintptr_t stream, const py::object& q_capsule,
                       const py::object& k_capsule, const py::object& v_capsule, const py::object& out_capsule,
                       const py::object& lse_capsule, const py::object& cu_q, const py::object& cu_k,
                       const py::object& key_index, const py::object& key_count, const py::object& key_keep,
                       bool causal, float scale, std::int64_t longest_q, std::int64_t longest_k) {
  const TensorView q = view_capsule(q_capsule, "q");
  const TensorView k = view_capsule(k_capsule, "k");
  const TensorView v = view_capsule(v_capsule, "v");
  const TensorView out = view_capsule(out_capsule, "out");
  const std::optional<TensorView> lse = optional_view(lse_capsule, "lse");
  const LayoutArrays arrays = read_layout_arrays(cu_q, cu_k, key_index, key_count, key_keep);
  const bool packed = arrays.cu_q.has_value();
  const Heads heads = check_qkv(q, k, v, packed);
  check_float_output(q, out, packed);
  const BackendChoice choice = parse_backend(backend, stream);
  std::vector<const TensorView*> all = present({&q, &k, &v, &out}, arrays);
  AttentionOutput lse_out{nullptr, 0, 0, 0};
  if (lse) {
    lse_out = lse_strided<AttentionOutput>(*lse, q, heads, packed);
    all.push_back(&*lse);
  }
  require_backend_device(choice, all);
  require_outputs_apart({&out, lse ? &*lse : nullptr}, all);
  const AttentionLayout layout =
      build_layout(q, k, heads, arrays, causal, scale, choice.backend != Backend::gpu, longest_q, longest_k);
  const AttentionForwardProblem problem{layout,
                                        strided<AttentionInput>(q, packed),
                                        strided<AttentionInput>(k, packed),
                                        strided<AttentionInput>(v, packed),
                                        strided<AttentionOutput>(out, packed),
                                        lse_out,
                                        to_dtype(q.type),
                                        to_dtype(out.type)};
  GOLDEN_LAUNCH(choice, attention_forward, problem);
}

void attention_backward(const std::string& backend, std::uintptr_t stream, const py::object& grad_capsule,
                        const py::object& q_capsule, const py::object& k_capsule, const py::object& v_capsule,
                        const py::object& dq_capsule, const py::object& dk_capsule, const py::object& dv_capsule,
                        const py::object& workspace_capsule, const py::object& saved_out_capsule,
                        const py::object& saved_lse_capsule, const py::object& cu_q, const py::object& cu_k,
                        const py::object& key_index, const py::object& key_count, const py::object& key_keep,
                        bool causal, float scale) {
  const TensorView grad = view_capsule(grad_capsule, "grad_out");
  const TensorView q = view_capsule(q_capsule, "q");
  const TensorView k = view_capsule(k_capsule, "k");
  const TensorView v = view_capsule(v_capsule, "v");
  const TensorView dq = view_capsule(dq_capsule, "dq");
  const TensorView dk = view_capsule(dk_capsule, "dk");
  const TensorView dv = view_capsule(dv_capsule, "dv");
  const TensorView workspace = view_capsule(workspace_capsule, "workspace");
  const std::optional<TensorView> saved_out = optional_view(saved_out_capsule, "saved_out");
  const std::optional<TensorView> saved_lse = optional_view(saved_lse_capsule, "saved_lse");
  const LayoutArrays arrays = read_layout_arrays(cu_q, cu_k, key_index, key_count, key_keep);
  const bool packed = arrays.cu_q.has_value();
  const Heads heads = check_qkv(q, k, v, packed);
  check_strided(grad, packed ? 3 : 4);
  require_same_type(q, grad);
  require_same_shape(q, grad);
  check_float_output(q, dq, packed);
  check_float_output(k, dk, packed);
  check_float_output(v, dv, packed);
  require_same_type(dq, dk);
  require_same_type(dq, dv);
  const std::int64_t query_rows = packed ? q.dim(0) : q.dim(0) * q.dim(2);
  require_type(workspace, ElementType::f32);
  require_shape(workspace, {2, query_rows, heads.q_heads});
  require_contiguous(workspace);
  const BackendChoice choice = parse_backend(backend, stream);
  std::vector<const TensorView*> all = present({&grad, &q, &k, &v, &dq, &dk, &dv, &workspace}, arrays);
  // The forward's fp32 output and LSE, both or neither (then pass 1 recomputes them).
  AttentionInput saved_out_view{nullptr, 0, 0, 0};
  AttentionInput saved_lse_view{nullptr, 0, 0, 0};
  if (saved_out.has_value() != saved_lse.has_value()) fail_value("saved_out and saved_lse come together");
  if (saved_out) {
    check_strided(*saved_out, packed ? 3 : 4);
    require_type(*saved_out, ElementType::f32);
    require_same_shape(q, *saved_out);
    saved_out_view = strided<AttentionInput>(*saved_out, packed);
    saved_lse_view = lse_strided<AttentionInput>(*saved_lse, q, heads, packed);
    all.push_back(&*saved_out);
    all.push_back(&*saved_lse);
  }
  require_backend_device(choice, all);
  require_outputs_apart({&dq, &dk, &dv, &workspace}, all);
  const AttentionLayout layout =
      build_layout(q, k, heads, arrays, causal, scale, choice.backend != Backend::gpu);
  const AttentionBackwardProblem problem{layout,
                                         strided<AttentionInput>(grad, packed),
                                         strided<AttentionInput>(q, packed),
                                         strided<AttentionInput>(k, packed),
                                         strided<AttentionInput>(v, packed),
                                         saved_out_view,
                                         saved_lse_view,
                                         strided<AttentionOutput>(dq, packed),
                                         strided<AttentionOutput>(dk, packed),
                                         strided<AttentionOutput>(dv, packed),
                                         static_cast<float*>(workspace.data),
                                         to_dtype(q.type),
                                         to_dtype(dq.type)};
  GOLDEN_LAUNCH(choice, attention_backward, problem);
}

}  // namespace

void register_attention(py::module_& m) {
  m.attr("ATTENTION_KEY_BLOCK") = kAttentionKeyBlock;
  m.attr("ATTENTION_MAX_HEAD_DIM") = kAttentionMaxHeadDim;
  m.def("attention_forward", &attention_forward, py::arg("backend"), py::arg("stream"), py::arg("q"),
        py::arg("k"), py::arg("v"), py::arg("out"), py::arg("lse").none(true), py::arg("cu_seqlens_q").none(true),
        py::arg("cu_seqlens_k").none(true), py::arg("key_index").none(true), py::arg("key_count").none(true),
        py::arg("key_padding_mask").none(true), py::arg("causal"), py::arg("scale"), py::arg("longest_q") = -1,
        py::arg("longest_k") = -1);
  m.def("attention_backward", &attention_backward, py::arg("backend"), py::arg("stream"), py::arg("grad_out"),
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("dq"), py::arg("dk"), py::arg("dv"),
        py::arg("workspace"), py::arg("saved_out").none(true), py::arg("saved_lse").none(true),
        py::arg("cu_seqlens_q").none(true), py::arg("cu_seqlens_k").none(true),
        py::arg("key_index").none(true), py::arg("key_count").none(true), py::arg("key_padding_mask").none(true),
        py::arg("causal"), py::arg("scale"));
}

}  // namespace golden::bindings
