// Python bindings of the modulated deformable convolution: argument checks, then the CPU
// (cpu/dcn_cpu.cpp) or CUDA (cuda/dcn_cuda.cu) implementation.
#include <torch/extension.h>

#include "dcn.h"

namespace {

struct Params {
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;
};

void check_weight(const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == input.size(1),
              "dcn: weight must be (C_out, C_in, kh, kw) with C_in = ", input.size(1), ", got ", weight.sizes());
  TORCH_CHECK(weight.device() == input.device() && weight.scalar_type() == input.scalar_type(),
              "dcn: weight must share the input's device and dtype");
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), "dcn: bias must be (", weight.size(0),
                "), got ", bias->sizes());
    TORCH_CHECK(bias->device() == input.device() && bias->scalar_type() == input.scalar_type(),
                "dcn: bias must share the input's device and dtype");
  }
}

DcnGeometry make_geometry(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                          int64_t kernel_h, int64_t kernel_w, const Params& p) {
  TORCH_CHECK(input.dim() == 4, "dcn: input must be (B, C, H, W), got ", input.sizes());
  TORCH_CHECK(kernel_h > 0 && kernel_w > 0 && p.stride_h > 0 && p.stride_w > 0 && p.dil_h > 0 &&
                  p.dil_w > 0 && p.pad_h >= 0 && p.pad_w >= 0,
              "dcn: kernel, stride and dilation must be positive and padding non-negative");
  DcnGeometry g{};
  g.batch = input.size(0);
  g.channels = input.size(1);
  g.height = input.size(2);
  g.width = input.size(3);
  g.kernel_h = kernel_h;
  g.kernel_w = kernel_w;
  g.stride_h = p.stride_h;
  g.stride_w = p.stride_w;
  g.pad_h = p.pad_h;
  g.pad_w = p.pad_w;
  g.dil_h = p.dil_h;
  g.dil_w = p.dil_w;
  g.groups = p.groups;
  g.out_h = (g.height + 2 * p.pad_h - (p.dil_h * (kernel_h - 1) + 1)) / p.stride_h + 1;
  g.out_w = (g.width + 2 * p.pad_w - (p.dil_w * (kernel_w - 1) + 1)) / p.stride_w + 1;
  TORCH_CHECK(g.out_h > 0 && g.out_w > 0, "dcn: output would be empty for input ", input.sizes());
  TORCH_CHECK(p.groups > 0 && g.channels % p.groups == 0, "dcn: channels (", g.channels,
              ") must be divisible by deformable_groups (", p.groups, ")");
  TORCH_CHECK(g.height * g.width < (int64_t(1) << 31), "dcn: image plane too large");
  const int64_t K = g.taps();
  TORCH_CHECK(offset.dim() == 4 && offset.size(0) == g.batch && offset.size(1) == 2 * p.groups * K &&
                  offset.size(2) == g.out_h && offset.size(3) == g.out_w,
              "dcn: offset must be (", g.batch, ", ", 2 * p.groups * K, ", ", g.out_h, ", ", g.out_w,
              "), got ", offset.sizes());
  TORCH_CHECK(mask.dim() == 4 && mask.size(0) == g.batch && mask.size(1) == p.groups * K &&
                  mask.size(2) == g.out_h && mask.size(3) == g.out_w,
              "dcn: mask must be (", g.batch, ", ", p.groups * K, ", ", g.out_h, ", ", g.out_w,
              "), got ", mask.sizes());
  for (const at::Tensor* t : {&offset, &mask}) {
    TORCH_CHECK(t->device() == input.device() && t->scalar_type() == input.scalar_type(),
                "dcn: input, offset and mask must share device and dtype");
    TORCH_CHECK(t->is_contiguous(), "dcn: offset and mask must be contiguous");
  }
  TORCH_CHECK(input.is_contiguous(), "dcn: input must be contiguous");
  return g;
}

// The kernels are differentiated by hand (stvsr/ops/ext.py registers their backward), so they work on
// detached tensors. This matters on the CPU: the kernel calls ATen ops from at::parallel_for worker threads,
// which (in some torch releases, e.g. 2.11) do not inherit the caller's grad mode and dispatch state; on
// tensors that require grad those ops would then record autograd history from several threads at once
// (seen: "a leaf Variable that requires grad is being used in an in-place operation", and a segfault).
inline at::Tensor plain(const at::Tensor& t) { return t.defined() ? t.detach() : t; }

#ifdef WITH_CUDA
#define DCN_DISPATCH(name, t, ...) ((t).is_cuda() ? name##_cuda(__VA_ARGS__) : name##_cpu(__VA_ARGS__))
#else
inline void require_cpu(const at::Tensor& t) {
  TORCH_CHECK(!t.is_cuda(), "dcn: this build of the extension has no CUDA kernels; rebuild it on a machine with "
              "CUDA (see DCNv2_latest/make.sh)");
}
#define DCN_DISPATCH(name, t, ...) (require_cpu(t), name##_cpu(__VA_ARGS__))
#endif

}  // namespace

at::Tensor dcn_forward(const at::Tensor& input_, const at::Tensor& weight_,
                       const c10::optional<at::Tensor>& bias_, const at::Tensor& offset_,
                       const at::Tensor& mask_, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                       int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups) {
  const at::Tensor input = plain(input_), weight = plain(weight_), offset = plain(offset_), mask = plain(mask_);
  const c10::optional<at::Tensor> bias = bias_.has_value() ? c10::optional<at::Tensor>(plain(*bias_)) : c10::nullopt;
  const Params p{stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups};
  check_weight(input, weight, bias);
  const DcnGeometry g = make_geometry(input, offset, mask, weight.size(2), weight.size(3), p);
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  return DCN_DISPATCH(dcn_forward, input, input, weight.contiguous(), b, offset, mask, g);
}

std::vector<at::Tensor> dcn_backward(const at::Tensor& grad_output_, const at::Tensor& input_,
                                     const at::Tensor& weight_, const at::Tensor& offset_,
                                     const at::Tensor& mask_, int64_t stride_h, int64_t stride_w,
                                     int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w,
                                     int64_t groups, bool need_input, bool need_offset_mask,
                                     bool need_weight, bool need_bias) {
  const at::Tensor grad_output = plain(grad_output_), input = plain(input_), weight = plain(weight_);
  const at::Tensor offset = plain(offset_), mask = plain(mask_);
  const Params p{stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups};
  check_weight(input, weight, c10::nullopt);
  const DcnGeometry g = make_geometry(input, offset, mask, weight.size(2), weight.size(3), p);
  const at::Tensor grad = grad_output.contiguous().to(input.scalar_type());
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == g.batch && grad.size(1) == weight.size(0) &&
                  grad.size(2) == g.out_h && grad.size(3) == g.out_w,
              "dcn: grad_output has shape ", grad.sizes());
  const DcnNeeds needs{need_input, need_offset_mask, need_weight, need_bias};
  return DCN_DISPATCH(dcn_backward, input, grad, input, weight.contiguous(), offset, mask, g, needs);
}

at::Tensor dcn_sample(const at::Tensor& input_, const at::Tensor& offset_, const at::Tensor& mask_,
                      int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
                      int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups) {
  const at::Tensor input = plain(input_), offset = plain(offset_), mask = plain(mask_);
  const Params p{stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups};
  const DcnGeometry g = make_geometry(input, offset, mask, kernel_h, kernel_w, p);
  return DCN_DISPATCH(dcn_sample, input, input, offset, mask, g);
}

std::vector<at::Tensor> dcn_sample_backward(const at::Tensor& grad_samples_, const at::Tensor& input_,
                                            const at::Tensor& offset_, const at::Tensor& mask_,
                                            int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                                            int64_t stride_w, int64_t pad_h, int64_t pad_w,
                                            int64_t dil_h, int64_t dil_w, int64_t groups,
                                            bool need_input, bool need_offset_mask) {
  const at::Tensor grad_samples = plain(grad_samples_), input = plain(input_), offset = plain(offset_);
  const at::Tensor mask = plain(mask_);
  const Params p{stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups};
  const DcnGeometry g = make_geometry(input, offset, mask, kernel_h, kernel_w, p);
  const at::Tensor grad = grad_samples.contiguous().to(input.scalar_type());
  TORCH_CHECK(grad.numel() == g.batch * g.channels * g.taps() * g.out_size(),
              "dcn: grad of the samples has shape ", grad.sizes());
  const DcnNeeds needs{need_input, need_offset_mask, false, false};
  return DCN_DISPATCH(dcn_sample_backward, input, grad, input, offset, mask, g, needs);
}

#ifndef STVSR_SOURCE_DIGEST
#define STVSR_SOURCE_DIGEST unknown
#endif
#define DCN_STRINGIFY_(x) #x
#define DCN_STRINGIFY(x) DCN_STRINGIFY_(x)

// Hash of the sources this module was built from (see stvsr/ops/ext.py: source_digest).
std::string source_digest() { return DCN_STRINGIFY(STVSR_SOURCE_DIGEST); }

bool with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "stvsr modulated deformable convolution (DCNv2) kernels";
  m.def("forward", &dcn_forward, "DCNv2 forward");
  m.def("backward", &dcn_backward, "DCNv2 backward");
  m.def("sample", &dcn_sample, "modulated deformable sampling (B, C, K, L)");
  m.def("sample_backward", &dcn_sample_backward, "backward of sample");
  m.def("with_cuda", &with_cuda, "whether CUDA kernels were compiled in");
  m.def("source_digest", &source_digest, "hash of the sources this module was built from");
}
