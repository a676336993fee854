// Modulated deformable convolution (DCNv2): shared declarations of the CPU and CUDA implementations.
//
// Semantics (specs/models.md, section 1): tap k = i * kw + j samples input channel c at
//   y = ho * stride_h - pad_h + i * dil_h + offset[b, 2 * (g * K + k)    , ho, wo]
//   x = wo * stride_w - pad_w + j * dil_w + offset[b, 2 * (g * K + k) + 1, ho, wo]
// with g = c / (C / deformable_groups), bilinear interpolation, zeros outside the image, and the
// sample multiplied by mask[b, g * K + k, ho, wo]. "Columns" hold those modulated samples laid out
// (B, C * K, Ho * Wo), channel-major and tap-minor; the convolution contracts them with the
// weight viewed as (C_out, C * K).
#pragma once

#include <ATen/ATen.h>

#include <vector>

struct DcnGeometry {
  int64_t batch, channels, height, width;
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  int64_t groups;  // deformable groups
  int64_t out_h, out_w;

  int64_t taps() const { return kernel_h * kernel_w; }
  int64_t out_size() const { return out_h * out_w; }
  int64_t channels_per_group() const { return channels / groups; }
};

// Which gradients a backward call must produce.
struct DcnNeeds {
  bool input, offset_mask, weight, bias;
};

// Every implementation takes contiguous tensors of one dtype that the caller has checked against
// the geometry. Backward returns {grad_input, grad_offset, grad_mask, grad_weight, grad_bias},
// undefined where not needed; the sampling backward returns the first three.
at::Tensor dcn_forward_cpu(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                           const at::Tensor& offset, const at::Tensor& mask, const DcnGeometry& geo);
std::vector<at::Tensor> dcn_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                         const at::Tensor& weight, const at::Tensor& offset,
                                         const at::Tensor& mask, const DcnGeometry& geo, DcnNeeds needs);
at::Tensor dcn_sample_cpu(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                          const DcnGeometry& geo);
std::vector<at::Tensor> dcn_sample_backward_cpu(const at::Tensor& grad_samples, const at::Tensor& input,
                                                const at::Tensor& offset, const at::Tensor& mask,
                                                const DcnGeometry& geo, DcnNeeds needs);

#ifdef WITH_CUDA
at::Tensor dcn_forward_cuda(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                            const at::Tensor& offset, const at::Tensor& mask, const DcnGeometry& geo);
std::vector<at::Tensor> dcn_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                          const at::Tensor& weight, const at::Tensor& offset,
                                          const at::Tensor& mask, const DcnGeometry& geo, DcnNeeds needs);
at::Tensor dcn_sample_cuda(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                           const DcnGeometry& geo);
std::vector<at::Tensor> dcn_sample_backward_cuda(const at::Tensor& grad_samples, const at::Tensor& input,
                                                 const at::Tensor& offset, const at::Tensor& mask,
                                                 const DcnGeometry& geo, DcnNeeds needs);
#endif
