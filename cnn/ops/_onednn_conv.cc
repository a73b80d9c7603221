// oneDNN's convolutions behind XLA:CPU custom calls (the XLA FFI): the three passes of a channels-last convolution.
//
//   forward          y[n, p, o]  = sum_{k, i} x[n, s*p + d*k - pad_lo, g(o)*I + i] * w[k, i, o]
//   backward data    dx = the transpose of the forward in x, applied to dy
//   backward weights dw = the transpose of the forward in w, applied to dy (x held)
//
// Layouts are JAX's: x (N, spatial..., C) and w (spatial..., C/G, O) with the output channels of group g at
// [g*O/G, (g+1)*O/G). oneDNN reads them in place (memory descriptors by strides); the weights are reordered to
// the layout oneDNN's kernel prefers on every call, except where PlainWeights says. Built and loaded by
// cnn/ops/_onednn.py.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "oneapi/dnnl/dnnl.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum Pass { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

dnnl_engine_t Engine() {
  static dnnl_engine_t engine = [] {
    dnnl_engine_t e = nullptr;
    dnnl_engine_create(&e, dnnl_cpu, 0);
    return e;
  }();
  return engine;
}

struct Geometry {
  std::vector<int64_t> x, w, y;  // JAX shapes
  std::vector<int64_t> strides, dilation, pad_lo, pad_hi;
  int64_t groups;
  int pass;

  std::string Key() const {
    std::string key;
    for (const auto* v : {&x, &w, &y, &strides, &dilation, &pad_lo, &pad_hi}) {
      for (int64_t d : *v) key += std::to_string(d) + ",";
      key += ";";
    }
    return key + std::to_string(groups) + ";" + std::to_string(pass);
  }
};

// An activation (N, spatial..., C) in oneDNN's logical order (N, C, spatial...), strided like channels-last.
dnnl_memory_desc_t ActivationDesc(const std::vector<int64_t>& shape) {
  const int rank = static_cast<int>(shape.size());
  std::vector<dnnl_dim_t> dims(rank), strides(rank);
  std::vector<int64_t> row_major(rank, 1);
  for (int a = rank - 2; a >= 0; --a) row_major[a] = row_major[a + 1] * shape[a + 1];
  dims[0] = shape[0], strides[0] = row_major[0];
  dims[1] = shape[rank - 1], strides[1] = 1;
  for (int a = 1; a < rank - 1; ++a) dims[a + 1] = shape[a], strides[a + 1] = row_major[a];
  dnnl_memory_desc_t md = nullptr;
  dnnl_memory_desc_create_with_strides(&md, rank, dims.data(), dnnl_f32, strides.data());
  return md;
}

// A kernel (spatial..., I, O) in oneDNN's logical order ([G,] O/G, I, spatial...).
dnnl_memory_desc_t WeightsDesc(const std::vector<int64_t>& shape, int64_t groups) {
  const int spatial = static_cast<int>(shape.size()) - 2;
  const int64_t in = shape[spatial], out = shape[spatial + 1];
  std::vector<int64_t> row_major(shape.size(), 1);
  for (int a = static_cast<int>(shape.size()) - 2; a >= 0; --a) row_major[a] = row_major[a + 1] * shape[a + 1];
  std::vector<dnnl_dim_t> dims, strides;
  if (groups > 1) dims.push_back(groups), strides.push_back(out / groups);
  dims.push_back(out / groups), strides.push_back(1);
  dims.push_back(in), strides.push_back(out);
  for (int a = 0; a < spatial; ++a) dims.push_back(shape[a]), strides.push_back(row_major[a]);
  dnnl_memory_desc_t md = nullptr;
  dnnl_memory_desc_create_with_strides(&md, static_cast<int>(dims.size()), dims.data(), dnnl_f32, strides.data());
  return md;
}

dnnl_memory_desc_t AnyLayout(const dnnl_memory_desc_t md) {
  int ndims = 0;
  dnnl_memory_desc_query(md, dnnl_query_ndims_s32, &ndims);
  const dnnl_dims_t* dims = nullptr;
  dnnl_memory_desc_query(md, dnnl_query_dims, &dims);
  dnnl_memory_desc_t any = nullptr;
  dnnl_memory_desc_create_with_tag(&any, ndims, *dims, dnnl_f32, dnnl_format_tag_any);
  return any;
}

// Whether a pass reads its weights in JAX's layout, as they are: the forward pass of a large kernel over few output
// positions (few clips or images, small maps), where reordering the kernel costs more than the blocked layout saves
// (r3d_18's 512-channel 3x3x3 layers on 4 clips of 1x4x4: 4.1 ms with the reorder, 2.1 without; ResNet-18's on 128
// images of 4x4 lose: 32 -> 47 ms).
bool PlainWeights(const Geometry& g) {
  int64_t weights = 1, positions = 1;
  for (int64_t d : g.w) weights *= d;
  for (size_t a = 0; a + 1 < g.y.size(); ++a) positions *= g.y[a];
  return g.pass == kForward && weights >= (int64_t{1} << 20) && positions <= 512;
}

// One pass's primitive for one geometry, with the reorder between JAX's kernel layout and the kernel's own.
struct Plan {
  dnnl_primitive_t primitive = nullptr;
  dnnl_primitive_t weights_reorder = nullptr;  // user -> kernel layout (forward, backward data) or back
  size_t kernel_weights_bytes = 0;
  size_t scratchpad_bytes = 0;
  dnnl_memory_desc_t x_md, w_md, y_md, kernel_w_md, scratchpad_md;
};

dnnl_status_t MakePlan(const Geometry& g, Plan* plan) {
  const int spatial = static_cast<int>(g.x.size()) - 2;
  std::vector<dnnl_dim_t> strides(g.strides.begin(), g.strides.end()), pad_lo(g.pad_lo.begin(), g.pad_lo.end()),
      pad_hi(g.pad_hi.begin(), g.pad_hi.end()), dilates(spatial);
  for (int a = 0; a < spatial; ++a) dilates[a] = g.dilation[a] - 1;  // oneDNN counts the skipped taps
  plan->x_md = ActivationDesc(g.x);
  plan->y_md = ActivationDesc(g.y);
  plan->w_md = WeightsDesc(g.w, g.groups);
  dnnl_memory_desc_t any_w = nullptr;
  if (PlainWeights(g)) {
    dnnl_memory_desc_clone(&any_w, plan->w_md);
  } else {
    any_w = AnyLayout(plan->w_md);
  }

  dnnl_primitive_attr_t attr = nullptr;
  dnnl_primitive_attr_create(&attr);
  dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);  // per call: calls may run at once
  dnnl_primitive_desc_t forward = nullptr, pd = nullptr;
  dnnl_status_t status = dnnl_convolution_forward_primitive_desc_create(
      &forward, Engine(), dnnl_forward_training, dnnl_convolution_direct, plan->x_md, any_w, nullptr, plan->y_md,
      strides.data(), dilates.data(), pad_lo.data(), pad_hi.data(), attr);
  if (status == dnnl_success && g.pass == kForward) {
    pd = forward;
  } else if (status == dnnl_success && g.pass == kBackwardData) {
    status = dnnl_convolution_backward_data_primitive_desc_create(
        &pd, Engine(), dnnl_convolution_direct, plan->x_md, any_w, plan->y_md, strides.data(), dilates.data(),
        pad_lo.data(), pad_hi.data(), forward, attr);
  } else if (status == dnnl_success) {
    status = dnnl_convolution_backward_weights_primitive_desc_create(
        &pd, Engine(), dnnl_convolution_direct, plan->x_md, any_w, nullptr, plan->y_md, strides.data(),
        dilates.data(), pad_lo.data(), pad_hi.data(), forward, attr);
  }
  dnnl_primitive_attr_destroy(attr);
  dnnl_memory_desc_destroy(any_w);
  if (status != dnnl_success) return status;

  const dnnl_query_t weights_query = g.pass == kBackwardWeights ? dnnl_query_diff_weights_md : dnnl_query_weights_md;
  dnnl_memory_desc_clone(&plan->kernel_w_md, dnnl_primitive_desc_query_md(pd, weights_query, 0));
  dnnl_memory_desc_clone(&plan->scratchpad_md, dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0));
  plan->kernel_weights_bytes = dnnl_memory_desc_get_size(plan->kernel_w_md);
  plan->scratchpad_bytes = dnnl_memory_desc_get_size(plan->scratchpad_md);
  status = dnnl_primitive_create(&plan->primitive, pd);
  if (status == dnnl_success && !dnnl_memory_desc_equal(plan->kernel_w_md, plan->w_md)) {
    dnnl_primitive_desc_t reorder = nullptr;
    const bool to_user = g.pass == kBackwardWeights;
    status = dnnl_reorder_primitive_desc_create(&reorder, to_user ? plan->kernel_w_md : plan->w_md, Engine(),
                                                to_user ? plan->w_md : plan->kernel_w_md, Engine(), nullptr);
    if (status == dnnl_success) status = dnnl_primitive_create(&plan->weights_reorder, reorder);
    dnnl_primitive_desc_destroy(reorder);
  }
  if (pd != forward) dnnl_primitive_desc_destroy(pd);
  dnnl_primitive_desc_destroy(forward);
  return status;
}

const Plan* CachedPlan(const Geometry& g, dnnl_status_t* status) {
  static std::mutex mutex;
  static std::map<std::string, std::unique_ptr<Plan>> plans;
  std::lock_guard<std::mutex> lock(mutex);
  auto& plan = plans[g.Key()];
  if (!plan) {
    auto fresh = std::make_unique<Plan>();
    *status = MakePlan(g, fresh.get());
    if (*status != dnnl_success) return nullptr;
    plan = std::move(fresh);
  }
  *status = dnnl_success;
  return plan.get();
}

struct Aligned {
  void* data = nullptr;
  explicit Aligned(size_t bytes) {
    if (bytes) data = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  }
  ~Aligned() { std::free(data); }
};

dnnl_memory_t Memory(const dnnl_memory_desc_t md, void* data) {
  dnnl_memory_t memory = nullptr;
  dnnl_memory_create(&memory, md, Engine(), data);
  return memory;
}

ffi::Error Run(int pass, ffi::AnyBuffer first, ffi::AnyBuffer second, ffi::Result<ffi::AnyBuffer> out,
               ffi::Span<const int64_t> strides, ffi::Span<const int64_t> dilation,
               ffi::Span<const int64_t> pad_lo, ffi::Span<const int64_t> pad_hi, int64_t groups) {
  if (first.element_type() != ffi::DataType::F32 || second.element_type() != ffi::DataType::F32 ||
      out->element_type() != ffi::DataType::F32) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "oneDNN convolutions take float32 operands only");
  }
  auto shape = [](ffi::Span<const int64_t> dims) { return std::vector<int64_t>(dims.begin(), dims.end()); };
  Geometry g;
  g.pass = pass, g.groups = groups;
  g.strides = shape(strides), g.dilation = shape(dilation), g.pad_lo = shape(pad_lo), g.pad_hi = shape(pad_hi);
  void *x, *w, *y;
  if (pass == kForward) {
    g.x = shape(first.dimensions()), g.w = shape(second.dimensions()), g.y = shape(out->dimensions());
    x = first.untyped_data(), w = second.untyped_data(), y = out->untyped_data();
  } else if (pass == kBackwardData) {
    g.y = shape(first.dimensions()), g.w = shape(second.dimensions()), g.x = shape(out->dimensions());
    y = first.untyped_data(), w = second.untyped_data(), x = out->untyped_data();
  } else {
    g.x = shape(first.dimensions()), g.y = shape(second.dimensions()), g.w = shape(out->dimensions());
    x = first.untyped_data(), y = second.untyped_data(), w = out->untyped_data();
  }
  dnnl_status_t status;
  const Plan* plan = CachedPlan(g, &status);
  if (!plan) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "oneDNN has no convolution for this geometry (status " + std::to_string(status) + ")");
  }
  dnnl_stream_t stream = nullptr;
  dnnl_stream_create(&stream, Engine(), dnnl_stream_default_flags);
  Aligned kernel_weights(plan->weights_reorder ? plan->kernel_weights_bytes : 0), scratchpad(plan->scratchpad_bytes);
  dnnl_memory_t x_mem = Memory(plan->x_md, x), y_mem = Memory(plan->y_md, y), w_mem = Memory(plan->w_md, w);
  dnnl_memory_t kernel_w_mem = plan->weights_reorder ? Memory(plan->kernel_w_md, kernel_weights.data) : w_mem;
  dnnl_memory_t scratch_mem = Memory(plan->scratchpad_md, scratchpad.data);
  if (plan->weights_reorder && pass != kBackwardWeights) {
    dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, w_mem}, {DNNL_ARG_TO, kernel_w_mem}};
    dnnl_primitive_execute(plan->weights_reorder, stream, 2, args);
  }
  const int x_arg = pass == kBackwardData ? DNNL_ARG_DIFF_SRC : DNNL_ARG_SRC;
  const int w_arg = pass == kBackwardWeights ? DNNL_ARG_DIFF_WEIGHTS : DNNL_ARG_WEIGHTS;
  const int y_arg = pass == kForward ? DNNL_ARG_DST : DNNL_ARG_DIFF_DST;
  dnnl_exec_arg_t args[] = {{x_arg, x_mem}, {w_arg, kernel_w_mem}, {y_arg, y_mem}, {DNNL_ARG_SCRATCHPAD, scratch_mem}};
  status = dnnl_primitive_execute(plan->primitive, stream, 4, args);
  if (status == dnnl_success && plan->weights_reorder && pass == kBackwardWeights) {
    dnnl_exec_arg_t back[] = {{DNNL_ARG_FROM, kernel_w_mem}, {DNNL_ARG_TO, w_mem}};
    status = dnnl_primitive_execute(plan->weights_reorder, stream, 2, back);
  }
  dnnl_stream_wait(stream);
  for (dnnl_memory_t m : {x_mem, y_mem, w_mem, scratch_mem}) dnnl_memory_destroy(m);
  if (plan->weights_reorder) dnnl_memory_destroy(kernel_w_mem);
  dnnl_stream_destroy(stream);
  if (status != dnnl_success) {
    return ffi::Error(ffi::ErrorCode::kInternal, "oneDNN convolution failed (status " + std::to_string(status) + ")");
  }
  return ffi::Error::Success();
}

template <int pass>
ffi::Error RunPass(ffi::AnyBuffer first, ffi::AnyBuffer second, ffi::Result<ffi::AnyBuffer> out,
                   ffi::Span<const int64_t> strides, ffi::Span<const int64_t> dilation,
                   ffi::Span<const int64_t> pad_lo, ffi::Span<const int64_t> pad_hi, int64_t groups) {
  return Run(pass, first, second, out, strides, dilation, pad_lo, pad_hi, groups);
}

auto Binding() {
  return ffi::Ffi::Bind()
      .Arg<ffi::AnyBuffer>()
      .Arg<ffi::AnyBuffer>()
      .Ret<ffi::AnyBuffer>()
      .Attr<ffi::Span<const int64_t>>("strides")
      .Attr<ffi::Span<const int64_t>>("dilation")
      .Attr<ffi::Span<const int64_t>>("pad_lo")
      .Attr<ffi::Span<const int64_t>>("pad_hi")
      .Attr<int64_t>("groups");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvForward, RunPass<kForward>, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBackwardData, RunPass<kBackwardData>, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBackwardWeights, RunPass<kBackwardWeights>, Binding());
