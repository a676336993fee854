// CUDA kernels of the modulated deformable convolution, same semantics and layout as the CPU ones
// (see ../dcn.h): one thread per column element for im2col and col2im (atomic adds into the input
// gradient), one thread per (sample, group, tap, position) for the offset and mask gradients,
// which loops over the channels of its group.
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <array>

#include "../dcn.h"

namespace {

constexpr int kThreads = 256;

inline int64_t blocks_for(int64_t n) {
  return std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 20);
}

// Bilinear corners of one position, as on the CPU: flat index and weight (bilinear weight x
// validity) of each corner; every weight 0 when the whole sample is outside.
template <typename T>
struct Corners {
  int64_t idx[4];
  T weight[4];
  T ly, lx;
  bool valid[4];
};

template <typename T>
__device__ inline Corners<T> corners_at(T y, T x, int64_t height, int64_t width) {
  Corners<T> c;
  const bool inside = y > T(-1) && x > T(-1) && y < T(height) && x < T(width);
  const T yf = inside ? floor(y) : T(0), xf = inside ? floor(x) : T(0);
  c.ly = inside ? y - yf : T(0);
  c.lx = inside ? x - xf : T(0);
  const int64_t y0 = static_cast<int64_t>(yf), x0 = static_cast<int64_t>(xf);
  const T w[4] = {(T(1) - c.ly) * (T(1) - c.lx), (T(1) - c.ly) * c.lx, c.ly * (T(1) - c.lx), c.ly * c.lx};
#pragma unroll
  for (int n = 0; n < 4; ++n) {
    const int64_t yy = y0 + (n >> 1), xx = x0 + (n & 1);
    c.valid[n] = inside && yy >= 0 && yy < height && xx >= 0 && xx < width;
    c.idx[n] = c.valid[n] ? yy * width + xx : 0;
    c.weight[n] = c.valid[n] ? w[n] : T(0);
  }
  return c;
}

// Decomposes a position index and finds the sampling position of tap k for sample b, group g.
struct TapIndex {
  int64_t b, g, k, l;
};

template <typename T>
__device__ inline Corners<T> tap_corners(const T* offset, const DcnGeometry& geo, const TapIndex& t) {
  const int64_t K = geo.kernel_h * geo.kernel_w, L = geo.out_h * geo.out_w;
  const int64_t gk = t.g * K + t.k;
  const T* off = offset + t.b * 2 * geo.groups * K * L;
  const int64_t ho = t.l / geo.out_w, wo = t.l % geo.out_w;
  const int64_t ki = t.k / geo.kernel_w, kj = t.k % geo.kernel_w;
  const T y = T(ho * geo.stride_h - geo.pad_h + ki * geo.dil_h) + off[2 * gk * L + t.l];
  const T x = T(wo * geo.stride_w - geo.pad_w + kj * geo.dil_w) + off[(2 * gk + 1) * L + t.l];
  return corners_at(y, x, geo.height, geo.width);
}

template <typename T>
__device__ inline T mask_at(const T* mask, const DcnGeometry& geo, const TapIndex& t) {
  const int64_t K = geo.kernel_h * geo.kernel_w, L = geo.out_h * geo.out_w;
  return mask[(t.b * geo.groups * K + t.g * K + t.k) * L + t.l];
}

// Column element n = ((b * C + c) * K + k) * L + l.
__device__ inline TapIndex column_index(int64_t n, const DcnGeometry& geo, int64_t* channel) {
  const int64_t K = geo.kernel_h * geo.kernel_w, L = geo.out_h * geo.out_w;
  const int64_t l = n % L, k = (n / L) % K, c = (n / (L * K)) % geo.channels, b = n / (L * K * geo.channels);
  *channel = c;
  return {b, c / (geo.channels / geo.groups), k, l};
}

template <typename T>
__global__ void im2col_kernel(int64_t n_total, const T* input, const T* offset, const T* mask,
                              DcnGeometry geo, T* columns) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < n_total;
       n += int64_t(blockDim.x) * gridDim.x) {
    int64_t c;
    const TapIndex t = column_index(n, geo, &c);
    const Corners<T> cr = tap_corners(offset, geo, t);
    const T* x = input + (t.b * geo.channels + c) * geo.height * geo.width;
    T v = T(0);
#pragma unroll
    for (int i = 0; i < 4; ++i) v += cr.weight[i] * x[cr.idx[i]];
    columns[n] = mask_at(mask, geo, t) * v;
  }
}

template <typename T>
__global__ void col2im_kernel(int64_t n_total, const T* grad_columns, const T* offset, const T* mask,
                              DcnGeometry geo, T* grad_input) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < n_total;
       n += int64_t(blockDim.x) * gridDim.x) {
    int64_t c;
    const TapIndex t = column_index(n, geo, &c);
    const Corners<T> cr = tap_corners(offset, geo, t);
    const T g = grad_columns[n] * mask_at(mask, geo, t);
    T* gx = grad_input + (t.b * geo.channels + c) * geo.height * geo.width;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if (cr.valid[i]) gpuAtomicAdd(gx + cr.idx[i], cr.weight[i] * g);
    }
  }
}

template <typename T>
__global__ void col2im_coord_kernel(int64_t n_total, const T* grad_columns, const T* input, const T* offset,
                                    const T* mask, DcnGeometry geo, T* grad_offset, T* grad_mask, T* columns) {
  const int64_t K = geo.kernel_h * geo.kernel_w, L = geo.out_h * geo.out_w, HW = geo.height * geo.width;
  const int64_t cpg = geo.channels / geo.groups;
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < n_total;
       n += int64_t(blockDim.x) * gridDim.x) {
    // n = ((b * G + g) * K + k) * L + l
    const TapIndex t{n / (L * K * geo.groups), (n / (L * K)) % geo.groups, (n / L) % K, n % L};
    const Corners<T> cr = tap_corners(offset, geo, t);
    const T m = mask_at(mask, geo, t);
    const T hy = T(1) - cr.ly, hx = T(1) - cr.lx;
    T gy = T(0), gx = T(0), gm = T(0);
    for (int64_t c = t.g * cpg; c < (t.g + 1) * cpg; ++c) {
      const T* x = input + (t.b * geo.channels + c) * HW;
      const int64_t col = ((t.b * geo.channels + c) * K + t.k) * L + t.l;
      const T v00 = cr.valid[0] ? x[cr.idx[0]] : T(0), v01 = cr.valid[1] ? x[cr.idx[1]] : T(0);
      const T v10 = cr.valid[2] ? x[cr.idx[2]] : T(0), v11 = cr.valid[3] ? x[cr.idx[3]] : T(0);
      const T value = hy * hx * v00 + hy * cr.lx * v01 + cr.ly * hx * v10 + cr.ly * cr.lx * v11;
      const T g = grad_columns[col];
      gy += g * m * (hx * (v10 - v00) + cr.lx * (v11 - v01));
      gx += g * m * (hy * (v01 - v00) + cr.ly * (v11 - v10));
      gm += g * value;
      if (columns) columns[col] = m * value;
    }
    const int64_t gk = t.g * K + t.k;
    T* goff = grad_offset + t.b * 2 * geo.groups * K * L;
    goff[2 * gk * L + t.l] = gy;
    goff[(2 * gk + 1) * L + t.l] = gx;
    grad_mask[(t.b * geo.groups * K + gk) * L + t.l] = gm;
  }
}

void launch_im2col(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask, const DcnGeometry& geo,
                   at::Tensor& columns) {
  const int64_t n = geo.batch * geo.channels * geo.taps() * geo.out_size();
  if (n == 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "dcn_im2col_cuda", [&] {
    im2col_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
        n, input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), mask.data_ptr<scalar_t>(), geo,
        columns.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_col2im(const at::Tensor& grad_columns, const at::Tensor& offset, const at::Tensor& mask,
                   const DcnGeometry& geo, at::Tensor& grad_input) {
  const int64_t n = geo.batch * geo.channels * geo.taps() * geo.out_size();
  if (n == 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(grad_columns.scalar_type(), "dcn_col2im_cuda", [&] {
    col2im_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
        n, grad_columns.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), mask.data_ptr<scalar_t>(), geo,
        grad_input.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_col2im_coord(const at::Tensor& grad_columns, const at::Tensor& input, const at::Tensor& offset,
                         const at::Tensor& mask, const DcnGeometry& geo, at::Tensor& grad_offset,
                         at::Tensor& grad_mask, at::Tensor& columns) {
  const int64_t n = geo.batch * geo.groups * geo.taps() * geo.out_size();
  if (n == 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "dcn_col2im_coord_cuda", [&] {
    col2im_coord_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
        n, grad_columns.data_ptr<scalar_t>(), input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(),
        mask.data_ptr<scalar_t>(), geo, grad_offset.data_ptr<scalar_t>(), grad_mask.data_ptr<scalar_t>(),
        columns.defined() ? columns.data_ptr<scalar_t>() : nullptr);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Samples per chunk: the column matrix of one chunk stays under kColumnBudget elements.
constexpr int64_t kColumnBudget = int64_t(1) << 27;

int64_t chunk_size(const DcnGeometry& geo) {
  const int64_t per_sample = std::max<int64_t>(1, geo.channels * geo.taps() * geo.out_size());
  return std::max<int64_t>(1, std::min<int64_t>(geo.batch, kColumnBudget / per_sample));
}

DcnGeometry with_batch(DcnGeometry geo, int64_t batch) {
  geo.batch = batch;
  return geo;
}

at::Tensor rows(const at::Tensor& t, int64_t b0, int64_t n) { return t.defined() ? t.narrow(0, b0, n) : t; }

// Gradients of the sampling step of samples [b0, b0 + n); columns (optional) gets the forward ones.
void sampling_backward(const at::Tensor& grad_columns, const at::Tensor& input, const at::Tensor& offset,
                       const at::Tensor& mask, const DcnGeometry& geo, int64_t b0, int64_t n, at::Tensor& grad_input,
                       at::Tensor& grad_offset, at::Tensor& grad_mask, at::Tensor& columns) {
  const DcnGeometry sub = with_batch(geo, n);
  const at::Tensor in = rows(input, b0, n), off = rows(offset, b0, n), msk = rows(mask, b0, n);
  if (grad_input.defined()) {
    at::Tensor gi = rows(grad_input, b0, n);
    launch_col2im(grad_columns, off, msk, sub, gi);
  }
  if (grad_offset.defined()) {
    at::Tensor go = rows(grad_offset, b0, n), gm = rows(grad_mask, b0, n);
    launch_col2im_coord(grad_columns, in, off, msk, sub, go, gm, columns);
  } else if (columns.defined()) {
    launch_im2col(in, off, msk, sub, columns);
  }
}

}  // namespace

at::Tensor dcn_forward_cuda(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                            const at::Tensor& offset, const at::Tensor& mask, const DcnGeometry& geo) {
  const c10::cuda::CUDAGuard guard(input.device());
  const int64_t c_out = weight.size(0), ck = geo.channels * geo.taps(), L = geo.out_size();
  const at::Tensor w2d = weight.detach().view({c_out, ck});  // autograd is handled in Python
  // The returned tensor is the allocation itself, never a view of it: autograd (and in-place ops on
  // the result, e.g. a LeakyReLU_) must see a fresh tensor. The GEMMs write through a flat view.
  at::Tensor output = at::empty({geo.batch, c_out, geo.out_h, geo.out_w}, input.options());
  at::Tensor flat = output.view({geo.batch, c_out, L});
  const int64_t chunk = chunk_size(geo);
  for (int64_t b0 = 0; b0 < geo.batch; b0 += chunk) {
    const int64_t n = std::min(chunk, geo.batch - b0);
    at::Tensor columns = at::empty({n, ck, L}, input.options());
    launch_im2col(rows(input, b0, n), rows(offset, b0, n), rows(mask, b0, n), with_batch(geo, n), columns);
    at::Tensor out = flat.narrow(0, b0, n);
    at::bmm_out(out, w2d.expand({n, c_out, ck}), columns);
  }
  if (bias.defined()) flat.add_(bias.view({1, c_out, 1}));
  return output;
}

std::vector<at::Tensor> dcn_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                          const at::Tensor& weight, const at::Tensor& offset, const at::Tensor& mask,
                                          const DcnGeometry& geo, DcnNeeds needs) {
  const c10::cuda::CUDAGuard guard(input.device());
  const int64_t c_out = weight.size(0), ck = geo.channels * geo.taps(), L = geo.out_size();
  const at::Tensor grad_out = grad_output.view({geo.batch, c_out, L});
  const at::Tensor w2d_t = weight.detach().view({c_out, ck}).t();
  at::Tensor grad_input = needs.input ? at::zeros_like(input) : at::Tensor();
  at::Tensor grad_offset = needs.offset_mask ? at::empty_like(offset) : at::Tensor();
  at::Tensor grad_mask = needs.offset_mask ? at::empty_like(mask) : at::Tensor();
  at::Tensor grad_weight = needs.weight ? at::zeros_like(weight) : at::Tensor();
  at::Tensor grad_weight_2d = needs.weight ? grad_weight.view({c_out, ck}) : at::Tensor();
  const int64_t chunk = chunk_size(geo);
  const bool any_sampling_grad = needs.input || needs.offset_mask || needs.weight;
  for (int64_t b0 = 0; any_sampling_grad && b0 < geo.batch; b0 += chunk) {
    const int64_t n = std::min(chunk, geo.batch - b0);
    const at::Tensor gout = grad_out.narrow(0, b0, n);
    at::Tensor columns = needs.weight ? at::empty({n, ck, L}, input.options()) : at::Tensor();
    if (needs.input || needs.offset_mask) {
      const at::Tensor grad_columns = at::bmm(w2d_t.expand({n, ck, c_out}), gout);
      sampling_backward(grad_columns, input, offset, mask, geo, b0, n, grad_input, grad_offset, grad_mask, columns);
    } else {
      launch_im2col(rows(input, b0, n), rows(offset, b0, n), rows(mask, b0, n), with_batch(geo, n), columns);
    }
    if (needs.weight) grad_weight_2d.add_(at::bmm(gout, columns.transpose(1, 2)).sum(0));
  }
  // Reduction dims as an explicit IntArrayRef: a braced list is ambiguous under nvcc between the
  // OptionalIntArrayRef and DimnameList overloads of some torch versions' headers (2.11).
  const std::array<int64_t, 2> bias_dims{0, 2};
  at::Tensor grad_bias = needs.bias ? grad_out.sum(at::IntArrayRef(bias_dims)) : at::Tensor();
  return {grad_input, grad_offset, grad_mask, grad_weight, grad_bias};
}

at::Tensor dcn_sample_cuda(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                           const DcnGeometry& geo) {
  const c10::cuda::CUDAGuard guard(input.device());
  at::Tensor samples = at::empty({geo.batch, geo.channels, geo.taps(), geo.out_size()}, input.options());
  launch_im2col(input, offset, mask, geo, samples);
  return samples;
}

std::vector<at::Tensor> dcn_sample_backward_cuda(const at::Tensor& grad_samples, const at::Tensor& input,
                                                 const at::Tensor& offset, const at::Tensor& mask,
                                                 const DcnGeometry& geo, DcnNeeds needs) {
  const c10::cuda::CUDAGuard guard(input.device());
  at::Tensor grad_input = needs.input ? at::zeros_like(input) : at::Tensor();
  at::Tensor grad_offset = needs.offset_mask ? at::empty_like(offset) : at::Tensor();
  at::Tensor grad_mask = needs.offset_mask ? at::empty_like(mask) : at::Tensor();
  at::Tensor no_columns;
  if (needs.input || needs.offset_mask) {
    sampling_backward(grad_samples, input, offset, mask, geo, 0, geo.batch, grad_input, grad_offset, grad_mask,
                      no_columns);
  }
  return {grad_input, grad_offset, grad_mask};
}
