// CPU implementation of the modulated deformable convolution.
//
// Layout. The kernels read a channels-last copy of the input padded with one zero pixel on each
// side, (B, H + 2, W + 2, C). A sample at (y, x) with -1 < y < H and -1 < x < W has its four
// corners at pixels p, p + 1, p + Wp, p + Wp + 1 of the padded plane, each a contiguous run of the
// channels of its deformable group; a corner outside the image reads 0. So there are no per-corner
// bounds checks, and the inner loops run over contiguous channels and vectorise. A sample further
// out (or at a NaN position) has inside = 0 and contributes nothing.
//
// Tiling. Work is split into tiles of output positions of one sample. A thread samples the
// columns of its tile, position-major (n, K * C) with column k * C + c, into a buffer that stays in
// its L2 cache, and multiplies them with the weight reordered to (C_out, K * C) right away: the full
// column matrix (9x the input) is never materialised. Backward fuses the input, offset, mask and
// weight gradients of a tile in one pass; input gradients go to one padded accumulator per thread,
// so no atomics are needed. Threads: at::parallel_for (OpenMP in the PyTorch wheels; honours
// torch.set_num_threads). GEMMs: ATen (MKL / OpenBLAS), single-threaded inside a tile.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../dcn.h"

namespace {

// The offset rows (dy, dx) and the mask row of one (sample, group, tap), indexed by position.
template <typename T>
struct TapRows {
  const T* off_y;
  const T* off_x;
  const T* mask;
};

template <typename T>
inline TapRows<T> tap_rows(const T* offset, const T* mask, const DcnGeometry& geo, int64_t b, int64_t g, int64_t k) {
  const int64_t K = geo.taps(), L = geo.out_size(), gk = g * K + k;
  const T* off_b = offset + b * 2 * geo.groups * K * L;
  return {off_b + 2 * gk * L, off_b + (2 * gk + 1) * L, mask + (b * geo.groups * K + gk) * L};
}

// Sampling geometry of one (sample, group, tap) over the n positions of a tile, as arrays: the
// top-left corner pixel in the padded plane, the fractional parts, the inside flag, the mask times
// the inside flag.
template <typename T>
struct TapTile {
  std::vector<T> base_y, base_x;  // position of tap (0, 0), per tile position
  std::vector<int32_t> pixel;
  std::vector<T> ly, lx, inside, mask;

  // Base positions of the tile [l0, l0 + n); once per tile.
  void start(const DcnGeometry& geo, int64_t l0, int64_t n) {
    for (auto* v : {&base_y, &base_x, &ly, &lx, &inside, &mask}) v->resize(n);
    pixel.resize(n);
    int64_t ho = l0 / geo.out_w, wo = l0 % geo.out_w;
    for (int64_t i = 0; i < n; ++i) {
      base_y[i] = T(ho * geo.stride_h - geo.pad_h);
      base_x[i] = T(wo * geo.stride_w - geo.pad_w);
      if (++wo == geo.out_w) wo = 0, ++ho;
    }
  }

  void compute(const DcnGeometry& geo, const TapRows<T>& rows, int64_t k, int64_t l0, int64_t n) {
    const T dy = T((k / geo.kernel_w) * geo.dil_h), dx = T((k % geo.kernel_w) * geo.dil_w);
    const T h = T(geo.height), w = T(geo.width);
    const int32_t wp = static_cast<int32_t>(geo.width + 2);
    const T* off_y = rows.off_y + l0;
    const T* off_x = rows.off_x + l0;
    const T* m = rows.mask + l0;
    for (int64_t i = 0; i < n; ++i) {
      const T y = base_y[i] + dy + off_y[i], x = base_x[i] + dx + off_x[i];
      const bool in = y > T(-1) && y < h && x > T(-1) && x < w;  // false for NaN
      const T yc = in ? y : T(0), xc = in ? x : T(0);
      const T yf = std::floor(yc), xf = std::floor(xc);
      ly[i] = yc - yf;
      lx[i] = xc - xf;
      inside[i] = in ? T(1) : T(0);
      mask[i] = in ? m[i] : T(0);
      pixel[i] = in ? (static_cast<int32_t>(yf) + 1) * wp + static_cast<int32_t>(xf) + 1 : 0;
    }
  }
};

// Pointers to the four corner channel runs of one sample position.
template <typename T>
struct Quad {
  T *p00, *p01, *p10, *p11;
  Quad(T* plane, int32_t pixel, int64_t channels, int64_t wp, int64_t c0) {
    p00 = plane + int64_t(pixel) * channels + c0;
    p01 = p00 + channels;
    p10 = p00 + wp * channels;
    p11 = p10 + channels;
  }
};

// Channel loops have a compile-time length for the common group sizes (so they unroll into
// vector code), a run-time one otherwise.
template <int kFixed>
inline int64_t run_length(int64_t cpg) {
  return kFixed > 0 ? kFixed : cpg;
}

// Modulated samples of positions [l0, l0 + n) of sample b, position-major: cols[i * ld + k * C + c].
template <typename T, int kFixed>
void sample_tile(const DcnGeometry& geo, const T* padded, const T* offset, const T* mask, int64_t b, int64_t l0,
                 int64_t n, T* cols, int64_t ld, TapTile<T>& tap) {
  const int64_t K = geo.taps(), C = geo.channels, cpg = run_length<kFixed>(geo.channels_per_group());
  const int64_t wp = geo.width + 2;
  T* plane = const_cast<T*>(padded) + b * (geo.height + 2) * wp * C;
  tap.start(geo, l0, n);
  for (int64_t g = 0; g < geo.groups; ++g) {
    for (int64_t k = 0; k < K; ++k) {
      tap.compute(geo, tap_rows(offset, mask, geo, b, g, k), k, l0, n);
      for (int64_t i = 0; i < n; ++i) {
        const Quad<T> q(plane, tap.pixel[i], C, wp, g * cpg);
        const T m = tap.mask[i], hy = T(1) - tap.ly[i], hx = T(1) - tap.lx[i], ly = tap.ly[i], lx = tap.lx[i];
        const T w00 = hy * hx * m, w01 = hy * lx * m, w10 = ly * hx * m, w11 = ly * lx * m;
        T* out = cols + i * ld + k * C + g * cpg;
#pragma omp simd  // the channel runs never overlap the columns
        for (int64_t c = 0; c < cpg; ++c) out[c] = w00 * q.p00[c] + w01 * q.p01[c] + w10 * q.p10[c] + w11 * q.p11[c];
      }
    }
  }
}

// What the sampling backward of a tile writes; null pointers are gradients not wanted.
template <typename T>
struct TileGrads {
  T* input;   // padded channels-last accumulator (B, H + 2, W + 2, C)
  T* offset;  // the full (B, 2GK, L) gradient
  T* mask;    // the full (B, GK, L) gradient
  T* cols;    // forward columns of the tile (for the weight gradient), same layout as grad_cols
};

template <typename T>
struct BackwardScratch {
  TapTile<T> tap;
  std::vector<T> gy, gx, gm;
};

// Backward of the sampling of positions [l0, l0 + n) of sample b; grad_cols[i * ld + k * C + c].
template <typename T, int kFixed>
void sample_backward_tile(const DcnGeometry& geo, const T* padded, const T* offset, const T* mask, int64_t b,
                          int64_t l0, int64_t n, const T* grad_cols, int64_t ld, const TileGrads<T>& out,
                          BackwardScratch<T>& s) {
  const int64_t K = geo.taps(), L = geo.out_size(), C = geo.channels, cpg = run_length<kFixed>(geo.channels_per_group());
  const int64_t wp = geo.width + 2, sample_size = (geo.height + 2) * wp * C;
  T* plane = const_cast<T*>(padded) + b * sample_size;
  T* gplane = out.input ? out.input + b * sample_size : nullptr;
  for (auto* v : {&s.gy, &s.gx, &s.gm}) v->resize(n);
  s.tap.start(geo, l0, n);
  for (int64_t g = 0; g < geo.groups; ++g) {
    for (int64_t k = 0; k < K; ++k) {
      const TapTile<T>& tap = s.tap;
      s.tap.compute(geo, tap_rows(offset, mask, geo, b, g, k), k, l0, n);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t col0 = i * ld + k * C + g * cpg;
        const T* gcol = grad_cols + col0;
        const T m = tap.mask[i], ly = tap.ly[i], lx = tap.lx[i], hy = T(1) - ly, hx = T(1) - lx;
        if (gplane) {
          const Quad<T> q(gplane, tap.pixel[i], C, wp, g * cpg);
          const T w00 = hy * hx * m, w01 = hy * lx * m, w10 = ly * hx * m, w11 = ly * lx * m;
#pragma omp simd  // the four corner runs are disjoint
          for (int64_t c = 0; c < cpg; ++c) {
            q.p00[c] += w00 * gcol[c];
            q.p01[c] += w01 * gcol[c];
            q.p10[c] += w10 * gcol[c];
            q.p11[c] += w11 * gcol[c];
          }
        }
        if (out.offset || out.cols) {
          const Quad<T> v(plane, tap.pixel[i], C, wp, g * cpg);
          T* col = out.cols ? out.cols + col0 : nullptr;
          T sum_dy = T(0), sum_dx = T(0), sum_value = T(0);
#pragma omp simd reduction(+ : sum_dy, sum_dx, sum_value)
          for (int64_t c = 0; c < cpg; ++c) {
            const T value = hy * hx * v.p00[c] + hy * lx * v.p01[c] + ly * hx * v.p10[c] + ly * lx * v.p11[c];
            sum_dy += gcol[c] * (hx * (v.p10[c] - v.p00[c]) + lx * (v.p11[c] - v.p01[c]));
            sum_dx += gcol[c] * (hy * (v.p01[c] - v.p00[c]) + ly * (v.p11[c] - v.p10[c]));
            sum_value += gcol[c] * value;
            if (col) col[c] = m * value;
          }
          s.gy[i] = m * sum_dy;
          s.gx[i] = m * sum_dx;
          s.gm[i] = tap.inside[i] * sum_value;
        }
      }
      if (out.offset) {
        const int64_t gk = g * K + k;
        T* goff = out.offset + b * 2 * geo.groups * K * L;
        std::copy(s.gy.begin(), s.gy.end(), goff + 2 * gk * L + l0);
        std::copy(s.gx.begin(), s.gx.end(), goff + (2 * gk + 1) * L + l0);
        std::copy(s.gm.begin(), s.gm.end(), out.mask + (b * geo.groups * K + gk) * L + l0);
      }
    }
  }
}

// Calls f(std::integral_constant<int, N>) with N the group size when it has a specialisation.
template <typename F>
void with_group_size(int64_t cpg, F&& f) {
  switch (cpg) {
    case 4: return f(std::integral_constant<int, 4>());
    case 8: return f(std::integral_constant<int, 8>());
    case 16: return f(std::integral_constant<int, 16>());
    default: return f(std::integral_constant<int, 0>());
  }
}

// Positions per tile: the tile's columns (n x C*K) should fit in L2, and there should be a few
// tiles per thread.
struct Tiling {
  int64_t size, per_sample, count;
  Tiling(const DcnGeometry& geo, int64_t element_size) {
    const int64_t ck = geo.channels * geo.taps(), L = geo.out_size(), threads = at::get_num_threads();
    const int64_t fit_cache = (int64_t(1) << 19) / (element_size * ck);
    const int64_t spread = (geo.batch * L + 4 * threads - 1) / (4 * threads);
    size = std::min(L, std::max<int64_t>(16, std::min(fit_cache, spread)));
    per_sample = (L + size - 1) / size;
    count = geo.batch * per_sample;
  }
  int64_t sample(int64_t t) const { return t / per_sample; }
  int64_t first(int64_t t) const { return (t % per_sample) * size; }
  int64_t length(int64_t t, int64_t L) const { return std::min(size, L - first(t)); }
};

// One accumulator per thread for a gradient that several tiles add into; slot 0 is the result.
class PerThread {
 public:
  explicit PerThread(const at::Tensor& result) : slots_(at::get_num_threads()) { slots_[0] = result; }
  at::Tensor& mine() {
    const int tid = at::get_thread_num();
    TORCH_CHECK(tid < static_cast<int>(slots_.size()), "dcn: unexpected thread id ", tid);
    if (!slots_[tid].defined()) slots_[tid] = at::zeros_like(slots_[0]);
    return slots_[tid];
  }
  const at::Tensor& reduce() {
    for (size_t i = 1; i < slots_.size(); ++i)
      if (slots_[i].defined()) slots_[0].add_(slots_[i]);
    return slots_[0];
  }

 private:
  std::vector<at::Tensor> slots_;
};

at::Tensor matrix(void* data, int64_t rows, int64_t cols, const at::TensorOptions& options) {
  return at::from_blob(data, {rows, cols}, options);
}

// (B, C, H, W) -> zero-padded channels-last (B, H + 2, W + 2, C).
at::Tensor pad_channels_last(const at::Tensor& input) {
  return at::constant_pad_nd(input, {1, 1, 1, 1}, 0).permute({0, 2, 3, 1}).contiguous();
}

// Inverse for gradients: padded channels-last accumulator -> (B, C, H, W).
at::Tensor unpad_channels_first(const at::Tensor& padded) {
  const int64_t h = padded.size(1) - 2, w = padded.size(2) - 2;
  return padded.narrow(1, 1, h).narrow(2, 1, w).permute({0, 3, 1, 2}).contiguous();
}

// The weight as (C_out, K * C), column k * C + c, matching the column layout (detached: autograd
// is handled in Python, and the GEMMs below run with out= in worker threads).
at::Tensor weight_matrix(const at::Tensor& weight) {
  return weight.detach().permute({0, 2, 3, 1}).reshape({weight.size(0), -1}).contiguous();
}

template <typename T>
void forward_impl(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                  const at::Tensor& offset, const at::Tensor& mask, const DcnGeometry& geo, at::Tensor& output) {
  const int64_t ck = geo.channels * geo.taps(), c_out = weight.size(0), L = geo.out_size();
  const at::Tensor w2d = weight_matrix(weight);
  const at::Tensor padded = pad_channels_last(input);
  const Tiling tiles(geo, sizeof(T));
  const T* bias_ptr = bias.defined() ? bias.data_ptr<T>() : nullptr;
  T* out = output.data_ptr<T>();
  with_group_size(geo.channels_per_group(), [&](auto fixed) {
    at::parallel_for(0, tiles.count, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> cols(ck * tiles.size), prod(c_out * tiles.size);
      TapTile<T> tap;
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = tiles.sample(t), l0 = tiles.first(t), n = tiles.length(t, L);
        sample_tile<T, decltype(fixed)::value>(geo, padded.data_ptr<T>(), offset.data_ptr<T>(), mask.data_ptr<T>(),
                                               b, l0, n, cols.data(), ck, tap);
        at::Tensor prod_t = matrix(prod.data(), c_out, n, input.options());
        at::mm_out(prod_t, w2d, matrix(cols.data(), n, ck, input.options()).t());
        for (int64_t o = 0; o < c_out; ++o) {
          const T shift = bias_ptr ? bias_ptr[o] : T(0);
          const T* src = prod.data() + o * n;
          T* dst = out + (b * c_out + o) * L + l0;
          for (int64_t i = 0; i < n; ++i) dst[i] = src[i] + shift;
        }
      }
    });
  });
}

// Fills grad_offset, grad_mask and grad_weight (when defined); returns the input gradient or an
// undefined tensor.
template <typename T>
at::Tensor backward_impl(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& offset, const at::Tensor& mask, const DcnGeometry& geo, DcnNeeds needs,
                         at::Tensor& grad_offset, at::Tensor& grad_mask, at::Tensor& grad_weight) {
  const int64_t ck = geo.channels * geo.taps(), c_out = weight.size(0), L = geo.out_size();
  const at::Tensor w2d = weight_matrix(weight);
  const at::Tensor padded = pad_channels_last(input);
  const Tiling tiles(geo, sizeof(T));
  const T* gout = grad_output.data_ptr<T>();
  PerThread input_acc(needs.input ? at::zeros_like(padded) : at::Tensor());
  PerThread weight_acc(needs.weight ? at::zeros_like(w2d) : at::Tensor());
  const bool sampling = needs.input || needs.offset_mask;
  with_group_size(geo.channels_per_group(), [&](auto fixed) {
    constexpr int kFixed = decltype(fixed)::value;
    at::parallel_for(0, tiles.count, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> gout_tile(c_out * tiles.size), gcols(ck * tiles.size), cols(ck * tiles.size);
      BackwardScratch<T> scratch;
      const TileGrads<T> grads{needs.input ? input_acc.mine().data_ptr<T>() : nullptr,
                               needs.offset_mask ? grad_offset.data_ptr<T>() : nullptr,
                               needs.offset_mask ? grad_mask.data_ptr<T>() : nullptr,
                               needs.weight ? cols.data() : nullptr};
      at::Tensor* gw = needs.weight ? &weight_acc.mine() : nullptr;
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = tiles.sample(t), l0 = tiles.first(t), n = tiles.length(t, L);
        for (int64_t o = 0; o < c_out; ++o) {
          const T* src = gout + (b * c_out + o) * L + l0;
          std::copy(src, src + n, gout_tile.data() + o * n);
        }
        const at::Tensor gout_t = matrix(gout_tile.data(), c_out, n, input.options());
        const at::Tensor cols_t = matrix(cols.data(), n, ck, input.options());
        if (sampling) {
          at::Tensor gcols_t = matrix(gcols.data(), n, ck, input.options());
          at::mm_out(gcols_t, gout_t.t(), w2d);
          sample_backward_tile<T, kFixed>(geo, padded.data_ptr<T>(), offset.data_ptr<T>(), mask.data_ptr<T>(), b, l0,
                                          n, gcols.data(), ck, grads, scratch);
        } else {
          sample_tile<T, kFixed>(geo, padded.data_ptr<T>(), offset.data_ptr<T>(), mask.data_ptr<T>(), b, l0, n,
                                 cols.data(), ck, scratch.tap);
        }
        if (gw) gw->addmm_(gout_t, cols_t);
      }
    });
  });
  if (needs.weight) {
    const int64_t kh = geo.kernel_h, kw = geo.kernel_w;
    grad_weight.copy_(weight_acc.reduce().view({c_out, kh, kw, geo.channels}).permute({0, 3, 1, 2}));
  }
  return needs.input ? unpad_channels_first(input_acc.reduce()) : at::Tensor();
}

}  // namespace

at::Tensor dcn_forward_cpu(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                           const at::Tensor& offset, const at::Tensor& mask, const DcnGeometry& geo) {
  at::Tensor output = at::empty({geo.batch, weight.size(0), geo.out_h, geo.out_w}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "dcn_forward_cpu", [&] {
    forward_impl<scalar_t>(input, weight, bias, offset, mask, geo, output);
  });
  return output;
}

std::vector<at::Tensor> dcn_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                         const at::Tensor& weight, const at::Tensor& offset, const at::Tensor& mask,
                                         const DcnGeometry& geo, DcnNeeds needs) {
  at::Tensor grad_input;
  at::Tensor grad_offset = needs.offset_mask ? at::empty_like(offset) : at::Tensor();
  at::Tensor grad_mask = needs.offset_mask ? at::empty_like(mask) : at::Tensor();
  at::Tensor grad_weight = needs.weight ? at::empty_like(weight) : at::Tensor();
  if (needs.input || needs.offset_mask || needs.weight) {
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "dcn_backward_cpu", [&] {
      grad_input = backward_impl<scalar_t>(grad_output, input, weight, offset, mask, geo, needs, grad_offset,
                                           grad_mask, grad_weight);
    });
  }
  at::Tensor grad_bias = needs.bias ? grad_output.sum({0, 2, 3}) : at::Tensor();
  return {grad_input, grad_offset, grad_mask, grad_weight, grad_bias};
}

at::Tensor dcn_sample_cpu(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                          const DcnGeometry& geo) {
  const int64_t C = geo.channels, K = geo.taps(), ck = C * K, L = geo.out_size();
  at::Tensor samples = at::empty({geo.batch, C, K, L}, input.options());
  const at::Tensor padded = pad_channels_last(input);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "dcn_sample_cpu", [&] {
    using T = scalar_t;
    const Tiling tiles(geo, sizeof(T));
    with_group_size(geo.channels_per_group(), [&](auto fixed) {
      at::parallel_for(0, tiles.count, 1, [&](int64_t begin, int64_t end) {
        std::vector<T> cols(ck * tiles.size);
        TapTile<T> tap;
        for (int64_t t = begin; t < end; ++t) {
          const int64_t b = tiles.sample(t), l0 = tiles.first(t), n = tiles.length(t, L);
          sample_tile<T, decltype(fixed)::value>(geo, padded.data_ptr<T>(), offset.data_ptr<T>(), mask.data_ptr<T>(),
                                                 b, l0, n, cols.data(), ck, tap);
          for (int64_t c = 0; c < C; ++c) {  // position-major tile -> (C, K, L)
            for (int64_t k = 0; k < K; ++k) {
              T* dst = samples.data_ptr<T>() + ((b * C + c) * K + k) * L + l0;
              for (int64_t i = 0; i < n; ++i) dst[i] = cols[i * ck + k * C + c];
            }
          }
        }
      });
    });
  });
  return samples;
}

std::vector<at::Tensor> dcn_sample_backward_cpu(const at::Tensor& grad_samples, const at::Tensor& input,
                                                const at::Tensor& offset, const at::Tensor& mask,
                                                const DcnGeometry& geo, DcnNeeds needs) {
  const int64_t C = geo.channels, K = geo.taps(), ck = C * K, L = geo.out_size();
  at::Tensor grad_input;
  at::Tensor grad_offset = needs.offset_mask ? at::empty_like(offset) : at::Tensor();
  at::Tensor grad_mask = needs.offset_mask ? at::empty_like(mask) : at::Tensor();
  if (!needs.input && !needs.offset_mask) return {grad_input, grad_offset, grad_mask};
  const at::Tensor padded = pad_channels_last(input);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "dcn_sample_backward_cpu", [&] {
    using T = scalar_t;
    const Tiling tiles(geo, sizeof(T));
    PerThread input_acc(needs.input ? at::zeros_like(padded) : at::Tensor());
    with_group_size(geo.channels_per_group(), [&](auto fixed) {
      at::parallel_for(0, tiles.count, 1, [&](int64_t begin, int64_t end) {
        std::vector<T> gcols(ck * tiles.size);
        BackwardScratch<T> scratch;
        const TileGrads<T> grads{needs.input ? input_acc.mine().data_ptr<T>() : nullptr,
                                 needs.offset_mask ? grad_offset.data_ptr<T>() : nullptr,
                                 needs.offset_mask ? grad_mask.data_ptr<T>() : nullptr, nullptr};
        for (int64_t t = begin; t < end; ++t) {
          const int64_t b = tiles.sample(t), l0 = tiles.first(t), n = tiles.length(t, L);
          for (int64_t c = 0; c < C; ++c) {  // (C, K, L) -> position-major tile
            for (int64_t k = 0; k < K; ++k) {
              const T* src = grad_samples.data_ptr<T>() + ((b * C + c) * K + k) * L + l0;
              for (int64_t i = 0; i < n; ++i) gcols[i * ck + k * C + c] = src[i];
            }
          }
          sample_backward_tile<T, decltype(fixed)::value>(geo, padded.data_ptr<T>(), offset.data_ptr<T>(),
                                                          mask.data_ptr<T>(), b, l0, n, gcols.data(), ck, grads,
                                                          scratch);
        }
      });
    });
    if (needs.input) grad_input = unpad_channels_first(input_acc.reduce());
  });
  return {grad_input, grad_offset, grad_mask};
}
