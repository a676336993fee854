// CPU implementation of the modulated deformable convolution.
//
// Layout. The kernels read a grouped channels-last copy of the input padded with one zero pixel on
// each side, (B, G, H + 2, W + 2, C / G): one plane per deformable group. A sample at (y, x) with
// -1 < y < H and -1 < x < W has its four corners at pixels p, p + 1, p + Wp, p + Wp + 1 of its
// group's padded plane, each a contiguous run of the group's channels; a corner outside the image
// reads 0. So there are no per-corner bounds checks, the inner loops run over contiguous channels and
// vectorise, and every cache line read holds only channels of the group being sampled (a group's
// plane, unlike the whole image, stays in L2 while a tile's taps are sampled). A sample further out
// (or at a NaN position) has inside = 0 and contributes nothing.
//
// Tiling and contraction. Work is split into tiles of whole output rows of one sample. A thread
// writes the samples of its tile as an "unfolded" channels-last image, (R * kh, Wo * kw, C): output
// pixel (r, wo) becomes a kh x kw block holding its taps. The deformable convolution of the tile is
// then the dense convolution of that image with the weight, stride (kh, kw), which oneDNN runs at
// full speed (much faster than a GEMM through BLAS on some CPUs); the full column matrix (9x the
// input) is never materialised. Backward gets the gradient of the unfolded image and of the weight
// from the same dense convolution, and fuses the input, offset and mask gradients of a tile in one
// pass; input gradients go to one padded accumulator per thread, so no atomics are needed. Threads:
// at::parallel_for (OpenMP in the PyTorch wheels; honours torch.set_num_threads); the dense
// convolutions inside a tile run single-threaded.
#include <ATen/Parallel.h>

#ifdef __linux__
#include <sys/mman.h>
#endif

#include <algorithm>
#include <array>
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

// The loop of TapTile::compute, a function of restrict pointers so that it vectorises (through the
// member vectors the compiler must assume that the arrays alias; the float-to-int conversions need
// -fno-trapping-math).
template <typename T>
void tap_geometry(const DcnGeometry& geo, int64_t k, int64_t n, const T* __restrict base_y,
                  const T* __restrict base_x, const T* __restrict off_y, const T* __restrict off_x,
                  const T* __restrict mask_in, T* __restrict ly, T* __restrict lx, T* __restrict inside,
                  T* __restrict mask, int32_t* __restrict pixel) {
  const T dy = T((k / geo.kernel_w) * geo.dil_h), dx = T((k % geo.kernel_w) * geo.dil_w);
  const T h = T(geo.height), w = T(geo.width);
  const int32_t wp = static_cast<int32_t>(geo.width + 2);
  for (int64_t i = 0; i < n; ++i) {
    const T y = base_y[i] + dy + off_y[i], x = base_x[i] + dx + off_x[i], m = mask_in[i];
    const bool in = (y > T(-1)) & (y < h) & (x > T(-1)) & (x < w);  // false for NaN
    const T yc = in ? y : T(0), xc = in ? x : T(0);
    const T yf = std::floor(yc), xf = std::floor(xc);
    ly[i] = yc - yf;
    lx[i] = xc - xf;
    inside[i] = in ? T(1) : T(0);
    mask[i] = in ? m : T(0);
    const int32_t corner = (static_cast<int32_t>(yf) + 1) * wp + static_cast<int32_t>(xf) + 1;
    pixel[i] = in ? corner : 0;
  }
}

// The four bilinear corner weights times the mask (forward sampling), vectorised like tap_geometry.
template <typename T>
void corner_weights(int64_t n, const T* __restrict ly, const T* __restrict lx, const T* __restrict m, T* __restrict w00,
                    T* __restrict w01, T* __restrict w10, T* __restrict w11) {
  for (int64_t i = 0; i < n; ++i) {
    const T hy = T(1) - ly[i], hx = T(1) - lx[i];
    w00[i] = hy * hx * m[i];
    w01[i] = hy * lx[i] * m[i];
    w10[i] = ly[i] * hx * m[i];
    w11[i] = ly[i] * lx[i] * m[i];
  }
}

// Sampling geometry of one (sample, group, tap) over the n positions of a tile, as arrays: the
// top-left corner pixel in the padded plane, the fractional parts, the inside flag, the mask times
// the inside flag.
template <typename T>
struct TapTile {
  std::vector<T> base_y, base_x;  // position of tap (0, 0), per tile position
  std::vector<int32_t> pixel;
  std::vector<T> ly, lx, inside, mask;
  std::vector<T> w00, w01, w10, w11;  // filled by weights()

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
    tap_geometry(geo, k, n, base_y.data(), base_x.data(), rows.off_y + l0, rows.off_x + l0, rows.mask + l0,
                 ly.data(), lx.data(), inside.data(), mask.data(), pixel.data());
  }

  // The corner weights of the last compute(): the one place their formula is applied.
  void weights(int64_t n) {
    for (auto* v : {&w00, &w01, &w10, &w11}) v->resize(n);
    corner_weights(n, ly.data(), lx.data(), mask.data(), w00.data(), w01.data(), w10.data(), w11.data());
  }
};

// Pointers to the four corner channel runs of one sample position in a group's padded plane.
template <typename T>
struct Quad {
  T *p00, *p01, *p10, *p11;
  Quad(T* group_plane, int32_t pixel, int64_t cpg, int64_t wp) {
    p00 = group_plane + int64_t(pixel) * cpg;
    p01 = p00 + cpg;
    p10 = p00 + wp * cpg;
    p11 = p10 + cpg;
  }
};

// Channel loops have a compile-time length for the common group sizes (so they unroll into
// vector code), a run-time one otherwise.
template <int kFixed>
inline int64_t run_length(int64_t cpg) {
  return kFixed > 0 ? kFixed : cpg;
}

// Rows [r0, r0 + rows) of sample b as an unfolded channels-last tile (see the top of the file):
// tap k = (ki, kj) of output pixel (r, wo), channel c, is at
// ((r * kh + ki) * Wo * kw + wo * kw + kj) * C + c.
struct Unfolded {
  int64_t row_stride;  // elements per unfolded row
  explicit Unfolded(const DcnGeometry& geo) : row_stride(geo.out_w * geo.kernel_w * geo.channels) {}
  int64_t at(const DcnGeometry& geo, int64_t r, int64_t wo, int64_t k) const {
    return (r * geo.kernel_h + k / geo.kernel_w) * row_stride + (wo * geo.kernel_w + k % geo.kernel_w) * geo.channels;
  }
};

// Modulated samples of rows [r0, r0 + rows) of sample b into the unfolded tile `cols`.
template <typename T, int kFixed>
void sample_tile(const DcnGeometry& geo, const T* padded, const T* offset, const T* mask, int64_t b, int64_t r0,
                 int64_t rows, T* cols, TapTile<T>& tap) {
  const int64_t K = geo.taps(), C = geo.channels, cpg = run_length<kFixed>(geo.channels_per_group());
  const int64_t wp = geo.width + 2, l0 = r0 * geo.out_w, n = rows * geo.out_w, step = geo.kernel_w * C;
  const Unfolded unfolded(geo);
  const int64_t group_size = (geo.height + 2) * wp * cpg;
  tap.start(geo, l0, n);
  for (int64_t g = 0; g < geo.groups; ++g) {
    T* plane = const_cast<T*>(padded) + (b * geo.groups + g) * group_size;
    for (int64_t k = 0; k < K; ++k) {
      tap.compute(geo, tap_rows(offset, mask, geo, b, g, k), k, l0, n);
      tap.weights(n);
      for (int64_t r = 0, i = 0; r < rows; ++r) {
        T* out = cols + unfolded.at(geo, r, 0, k) + g * cpg;
        for (int64_t wo = 0; wo < geo.out_w; ++wo, ++i, out += step) {
          const Quad<T> q(plane, tap.pixel[i], cpg, wp);
          const T w00 = tap.w00[i], w01 = tap.w01[i], w10 = tap.w10[i], w11 = tap.w11[i];
#pragma omp simd  // the channel runs never overlap the columns
          for (int64_t c = 0; c < cpg; ++c)
            out[c] = w00 * q.p00[c] + w01 * q.p01[c] + w10 * q.p10[c] + w11 * q.p11[c];
        }
      }
    }
  }
}

// What the sampling backward of a tile writes; null pointers are gradients not wanted.
template <typename T>
struct TileGrads {
  T* input;   // grouped padded accumulator (B, G, H + 2, W + 2, C / G), as the input copy
  T* offset;  // the full (B, 2GK, L) gradient
  T* mask;    // the full (B, GK, L) gradient
  T* cols;    // forward columns of the tile (for the weight gradient), same layout as grad_cols
};

template <typename T>
struct BackwardScratch {
  TapTile<T> tap;
  std::vector<T> gy, gx, gm;
};

// Backward of the sampling of rows [r0, r0 + rows) of sample b; grad_cols is an unfolded tile.
template <typename T, int kFixed>
void sample_backward_tile(const DcnGeometry& geo, const T* padded, const T* offset, const T* mask, int64_t b,
                          int64_t r0, int64_t rows, const T* grad_cols, const TileGrads<T>& out,
                          BackwardScratch<T>& s) {
  const int64_t K = geo.taps(), L = geo.out_size(), C = geo.channels, cpg = run_length<kFixed>(geo.channels_per_group());
  const int64_t wp = geo.width + 2, group_size = (geo.height + 2) * wp * cpg;
  const int64_t l0 = r0 * geo.out_w, n = rows * geo.out_w, step = geo.kernel_w * C;
  const Unfolded unfolded(geo);
  for (auto* v : {&s.gy, &s.gx, &s.gm}) v->resize(n);
  s.tap.start(geo, l0, n);
  for (int64_t g = 0; g < geo.groups; ++g) {
    const int64_t plane_at = (b * geo.groups + g) * group_size;
    T* plane = const_cast<T*>(padded) + plane_at;
    T* gplane = out.input ? out.input + plane_at : nullptr;
    for (int64_t k = 0; k < K; ++k) {
      const TapTile<T>& tap = s.tap;
      s.tap.compute(geo, tap_rows(offset, mask, geo, b, g, k), k, l0, n);
      s.tap.weights(n);
      for (int64_t r = 0, i = 0; r < rows; ++r) {
        const int64_t row0 = unfolded.at(geo, r, 0, k) + g * cpg;
        for (int64_t wo = 0; wo < geo.out_w; ++wo, ++i) {
          const int64_t col0 = row0 + wo * step;
          const T* gcol = grad_cols + col0;
          const T m = tap.mask[i], ly = tap.ly[i], lx = tap.lx[i], hy = T(1) - ly, hx = T(1) - lx;
          const T w00 = tap.w00[i], w01 = tap.w01[i], w10 = tap.w10[i], w11 = tap.w11[i];
          if (gplane) {
            const Quad<T> q(gplane, tap.pixel[i], cpg, wp);
#pragma omp simd  // the four corner runs are disjoint
            for (int64_t c = 0; c < cpg; ++c) {
              q.p00[c] += w00 * gcol[c];
              q.p01[c] += w01 * gcol[c];
              q.p10[c] += w10 * gcol[c];
              q.p11[c] += w11 * gcol[c];
            }
          }
          if (out.offset || out.cols) {
            const Quad<T> v(plane, tap.pixel[i], cpg, wp);
            T* col = out.cols ? out.cols + col0 : nullptr;
            // The value and both position derivatives are combinations of the four corner dot
            // products with the upstream gradient: four reductions, and little work per channel.
            T d00 = T(0), d01 = T(0), d10 = T(0), d11 = T(0);
#pragma omp simd reduction(+ : d00, d01, d10, d11)
            for (int64_t c = 0; c < cpg; ++c) {
              d00 += gcol[c] * v.p00[c];
              d01 += gcol[c] * v.p01[c];
              d10 += gcol[c] * v.p10[c];
              d11 += gcol[c] * v.p11[c];
            }
            if (col) {
#pragma omp simd
              for (int64_t c = 0; c < cpg; ++c)
                col[c] = w00 * v.p00[c] + w01 * v.p01[c] + w10 * v.p10[c] + w11 * v.p11[c];
            }
            s.gy[i] = m * (hx * (d10 - d00) + lx * (d11 - d01));
            s.gx[i] = m * (hy * (d01 - d00) + ly * (d11 - d10));
            s.gm[i] = tap.inside[i] * (hy * hx * d00 + hy * lx * d01 + ly * hx * d10 + ly * lx * d11);
          }
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

// Tiles of whole output rows: an unfolded tile should stay within about 2 MB (smaller tiles cost
// more in per-call overhead of the dense convolution than they gain in cache, measured), there
// should be a couple of tiles per thread, and the tiles of one sample should be of even height (28
// + 4 rows at 32x32 left a thread idle).
struct Tiling {
  int64_t rows, per_sample, count;
  Tiling(const DcnGeometry& geo, int64_t element_size) {
    const int64_t row_bytes = geo.taps() * geo.out_w * geo.channels * element_size;
    const int64_t threads = at::get_num_threads();
    const int64_t fit = std::max<int64_t>(1, (int64_t(1) << 21) / row_bytes);
    const int64_t spread = std::max<int64_t>(1, geo.batch * geo.out_h / (2 * threads));
    const int64_t most = std::min({geo.out_h, fit, spread});
    per_sample = (geo.out_h + most - 1) / most;
    rows = (geo.out_h + per_sample - 1) / per_sample;  // <= most; the tiles of a sample as even as rows allow
    count = geo.batch * per_sample;
  }
  int64_t sample(int64_t t) const { return t / per_sample; }
  int64_t first_row(int64_t t) const { return (t % per_sample) * rows; }
  int64_t row_count(int64_t t, const DcnGeometry& geo) const { return std::min(rows, geo.out_h - first_row(t)); }
  int64_t tile_elements(const DcnGeometry& geo) const { return rows * geo.out_w * geo.taps() * geo.channels; }
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

// (B, C, H, W) of any strides -> zero-padded, grouped channels-last (B, G, H + 2, W + 2, C / G), in
// one parallel pass (a pad and a permuting copy through ATen took twice as long).
template <typename T, int kFixed>
void fill_grouped(const at::Tensor& input, const DcnGeometry& geo, at::Tensor& padded) {
  const int64_t cpg = run_length<kFixed>(geo.channels_per_group()), H = geo.height, W = geo.width;
  const int64_t hp = H + 2, wp = W + 2, row_len = wp * cpg;
  const int64_t sb = input.stride(0), sc = input.stride(1), sy = input.stride(2), sx = input.stride(3);
  const T* src = input.data_ptr<T>();
  T* dst = padded.data_ptr<T>();
  at::parallel_for(0, geo.batch * geo.groups * hp, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {  // row = ((b * G) + g) * hp + padded y
      const int64_t plane = row / hp, y = row % hp - 1, b = plane / geo.groups, g = plane % geo.groups;
      T* d = dst + row * row_len;
      if (y < 0 || y >= H) {
        std::fill(d, d + row_len, T(0));
        continue;
      }
      std::fill(d, d + cpg, T(0));
      std::fill(d + (W + 1) * cpg, d + row_len, T(0));
      const T* s = src + b * sb + g * cpg * sc + y * sy;
      for (int64_t x = 0; x < W; ++x)
        for (int64_t c = 0; c < cpg; ++c) d[(x + 1) * cpg + c] = s[c * sc + x * sx];
    }
  });
}

template <typename T>
at::Tensor pad_grouped(const at::Tensor& input, const DcnGeometry& geo) {
  at::Tensor padded = at::empty({geo.batch, geo.groups, geo.height + 2, geo.width + 2, geo.channels_per_group()},
                                input.options());
  with_group_size(geo.channels_per_group(), [&](auto fixed) {
    fill_grouped<T, decltype(fixed)::value>(input, geo, padded);
  });
  return padded;
}

// Inverse for gradients: grouped padded accumulator -> (B, C, H, W).
at::Tensor unpad_grouped(const at::Tensor& padded) {
  const int64_t B = padded.size(0), G = padded.size(1), Hp = padded.size(2), Wp = padded.size(3), cpg = padded.size(4);
  return padded.narrow(2, 1, Hp - 2).narrow(3, 1, Wp - 2).permute({0, 1, 4, 2, 3}).reshape({B, G * cpg, Hp - 2, Wp - 2});
}

// An unfolded tile buffer seen as a channels-last (1, C, rows * kh, Wo * kw) image.
at::Tensor unfolded_image(void* data, const DcnGeometry& geo, int64_t rows, const at::TensorOptions& options) {
  return at::from_blob(data, {1, rows * geo.kernel_h, geo.out_w * geo.kernel_w, geo.channels}, options)
      .permute({0, 3, 1, 2});
}

// The dense convolution that contracts an unfolded tile with the weight, and its backward.
struct Contraction {
  at::Tensor weight;  // detached (autograd is handled in Python), channels-last for oneDNN
  std::array<int64_t, 2> stride_;

  Contraction(const at::Tensor& w, const DcnGeometry& geo)
      : weight(w.detach().contiguous(at::MemoryFormat::ChannelsLast)), stride_{geo.kernel_h, geo.kernel_w} {}

  at::Tensor forward(const at::Tensor& image, const at::Tensor& bias) const {
    return at::conv2d(image, weight, bias, stride_);
  }
  // Gradient of the unfolded image of a tile (the image's values are not read), channels-last.
  at::Tensor grad_image(const at::Tensor& grad_out, const at::Tensor& image) const {
    const auto grads = at::convolution_backward(grad_out, image, weight, c10::nullopt, stride_, {0, 0}, {1, 1},
                                                false, {0, 0}, 1, {true, false, false});
    return std::get<0>(grads).contiguous(at::MemoryFormat::ChannelsLast);
  }
};

// Adds a tile's weight gradient to grad (C_out, kh, kw * C): one GEMM per (output row, kernel row),
// grad[:, ki] += grad_out[:, r] (C_out x Wo) @ unfolded row r * kh + ki (Wo x kw * C). (oneDNN's weight
// gradient, unlike its input gradient, came out wrong when called from inside a parallel region.)
template <typename T>
void add_weight_grad(const at::Tensor& grad_out, const T* cols, const DcnGeometry& geo, int64_t rows,
                     at::Tensor& grad) {
  const int64_t row_len = geo.kernel_w * geo.channels;
  for (int64_t r = 0; r < rows; ++r) {
    const at::Tensor g = grad_out.select(1, r);  // (C_out, Wo), row stride H * W
    for (int64_t ki = 0; ki < geo.kernel_h; ++ki) {
      T* row = const_cast<T*>(cols) + (r * geo.kernel_h + ki) * geo.out_w * row_len;
      at::Tensor grad_ki = grad.select(1, ki);
      grad_ki.addmm_(g, at::from_blob(row, {geo.out_w, row_len}, grad.options()));
    }
  }
}

// Samples every tile, in parallel, into a per-thread unfolded buffer and hands it to
// consume(b, r0, rows, cols): the loop shared by the convolution and the sampling op.
template <typename T, typename Consume>
void for_each_sampled_tile(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                           const DcnGeometry& geo, Consume&& consume) {
  const at::Tensor padded = pad_grouped<T>(input, geo);
  const Tiling tiles(geo, sizeof(T));
  with_group_size(geo.channels_per_group(), [&](auto fixed) {
    at::parallel_for(0, tiles.count, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> cols(tiles.tile_elements(geo));
      TapTile<T> tap;
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = tiles.sample(t), r0 = tiles.first_row(t), rows = tiles.row_count(t, geo);
        sample_tile<T, decltype(fixed)::value>(geo, padded.data_ptr<T>(), offset.data_ptr<T>(), mask.data_ptr<T>(),
                                               b, r0, rows, cols.data(), tap);
        consume(b, r0, rows, cols.data());
      }
    });
  });
}

// Calls f(tile_row, planar_row, stride) for every (channel, tap, tile row): a tile row of the
// unfolded tile of `rows` output rows, whose element wo (at wo * stride) is planar_row[wo] of the
// (C, K, L) layout of deform_sample, counted from the tile's first position. The planar side is
// walked in order; the tile, which is in cache, strided.
template <typename F>
void for_each_planar_row(const DcnGeometry& geo, int64_t rows, F&& f) {
  const Unfolded unfolded(geo);
  const int64_t K = geo.taps(), L = geo.out_size(), stride = geo.kernel_w * geo.channels;
  for (int64_t c = 0; c < geo.channels; ++c)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t r = 0; r < rows; ++r) f(unfolded.at(geo, r, 0, k) + c, (c * K + k) * L + r * geo.out_w, stride);
}

template <typename T>
void forward_impl(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                  const at::Tensor& offset, const at::Tensor& mask, const DcnGeometry& geo, at::Tensor& output) {
  const Contraction contraction(weight, geo);
  for_each_sampled_tile<T>(input, offset, mask, geo, [&](int64_t b, int64_t r0, int64_t rows, T* cols) {
    const at::Tensor image = unfolded_image(cols, geo, rows, input.options());
    output.narrow(0, b, 1).narrow(2, r0, rows).copy_(contraction.forward(image, bias));
  });
}

// Fills grad_offset, grad_mask and grad_weight (when defined); returns the input gradient or an
// undefined tensor.
template <typename T>
at::Tensor backward_impl(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& offset, const at::Tensor& mask, const DcnGeometry& geo, DcnNeeds needs,
                         at::Tensor& grad_offset, at::Tensor& grad_mask, at::Tensor& grad_weight) {
  const Contraction contraction(weight, geo);
  const at::Tensor padded = pad_grouped<T>(input, geo);
  const Tiling tiles(geo, sizeof(T));
  PerThread input_acc(needs.input ? at::zeros_like(padded) : at::Tensor());
  PerThread weight_acc(needs.weight ? at::zeros({weight.size(0), geo.kernel_h, geo.kernel_w * geo.channels},
                                                input.options())
                                     : at::Tensor());
  const bool sampling = needs.input || needs.offset_mask;
  with_group_size(geo.channels_per_group(), [&](auto fixed) {
    constexpr int kFixed = decltype(fixed)::value;
    at::parallel_for(0, tiles.count, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> cols(tiles.tile_elements(geo));
      BackwardScratch<T> scratch;
      const TileGrads<T> grads{needs.input ? input_acc.mine().data_ptr<T>() : nullptr,
                               needs.offset_mask ? grad_offset.data_ptr<T>() : nullptr,
                               needs.offset_mask ? grad_mask.data_ptr<T>() : nullptr,
                               needs.weight ? cols.data() : nullptr};
      at::Tensor* gw = needs.weight ? &weight_acc.mine() : nullptr;
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = tiles.sample(t), r0 = tiles.first_row(t), rows = tiles.row_count(t, geo);
        const at::Tensor gout = grad_output.narrow(0, b, 1).narrow(2, r0, rows);
        if (sampling) {
          const at::Tensor image = unfolded_image(cols.data(), geo, rows, input.options());
          const at::Tensor grad_image = contraction.grad_image(gout, image);
          sample_backward_tile<T, kFixed>(geo, padded.data_ptr<T>(), offset.data_ptr<T>(), mask.data_ptr<T>(), b, r0,
                                          rows, grad_image.data_ptr<T>(), grads, scratch);
        } else {
          sample_tile<T, kFixed>(geo, padded.data_ptr<T>(), offset.data_ptr<T>(), mask.data_ptr<T>(), b, r0, rows,
                                 cols.data(), scratch.tap);
        }
        if (gw) add_weight_grad(gout.select(0, 0), cols.data(), geo, rows, *gw);
      }
    });
  });
  if (needs.weight) {
    const at::Tensor acc = weight_acc.reduce().view({weight.size(0), geo.kernel_h, geo.kernel_w, geo.channels});
    grad_weight.copy_(acc.permute({0, 3, 1, 2}));
  }
  return needs.input ? unpad_grouped(input_acc.reduce()) : at::Tensor();
}

// An uninitialised tensor that the caller writes in full. Above glibc's largest mmap threshold (32 MB)
// every allocation is a fresh mapping whose first touch costs a page fault per 4 kB page: for the 60 MB
// of samples at 144x180 that took longer (27 ms on one core) than the sampling. There the pages are
// asked to be transparent huge pages (512x fewer faults); without THP support this changes nothing.
at::Tensor empty_for_writing(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
#ifdef __linux__
  constexpr uintptr_t kHuge = uintptr_t(2) << 20, kFreshMapping = uintptr_t(32) << 20;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr()), bytes = t.nbytes();
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1), last = (begin + bytes) & ~(kHuge - 1);
  if (bytes >= kFreshMapping && last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
  return t;
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
  const std::array<int64_t, 3> bias_dims{0, 2, 3};  // not a braced list: see the note in dcn_cuda.cu
  at::Tensor grad_bias = needs.bias ? grad_output.sum(at::IntArrayRef(bias_dims)) : at::Tensor();
  return {grad_input, grad_offset, grad_mask, grad_weight, grad_bias};
}

at::Tensor dcn_sample_cpu(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                          const DcnGeometry& geo) {
  const int64_t C = geo.channels, K = geo.taps(), L = geo.out_size();
  at::Tensor samples = empty_for_writing({geo.batch, C, K, L}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "dcn_sample_cpu", [&] {
    using T = scalar_t;
    for_each_sampled_tile<T>(input, offset, mask, geo, [&](int64_t b, int64_t r0, int64_t rows, const T* cols) {
      T* planar = samples.data_ptr<T>() + b * C * K * L + r0 * geo.out_w;
      for_each_planar_row(geo, rows, [&](int64_t tile_row, int64_t planar_row, int64_t stride) {
        const T* src = cols + tile_row;
        T* dst = planar + planar_row;
        for (int64_t wo = 0; wo < geo.out_w; ++wo) dst[wo] = src[wo * stride];
      });
    });
  });
  return samples;
}

std::vector<at::Tensor> dcn_sample_backward_cpu(const at::Tensor& grad_samples, const at::Tensor& input,
                                                const at::Tensor& offset, const at::Tensor& mask,
                                                const DcnGeometry& geo, DcnNeeds needs) {
  const int64_t C = geo.channels, K = geo.taps(), L = geo.out_size();
  at::Tensor grad_input;
  at::Tensor grad_offset = needs.offset_mask ? at::empty_like(offset) : at::Tensor();
  at::Tensor grad_mask = needs.offset_mask ? at::empty_like(mask) : at::Tensor();
  if (!needs.input && !needs.offset_mask) return {grad_input, grad_offset, grad_mask};
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "dcn_sample_backward_cpu", [&] {
    using T = scalar_t;
    const at::Tensor padded = pad_grouped<T>(input, geo);
    const Tiling tiles(geo, sizeof(T));
    PerThread input_acc(needs.input ? at::zeros_like(padded) : at::Tensor());
    with_group_size(geo.channels_per_group(), [&](auto fixed) {
      at::parallel_for(0, tiles.count, 1, [&](int64_t begin, int64_t end) {
        std::vector<T> gcols(tiles.tile_elements(geo));
        BackwardScratch<T> scratch;
        const TileGrads<T> grads{needs.input ? input_acc.mine().data_ptr<T>() : nullptr,
                                 needs.offset_mask ? grad_offset.data_ptr<T>() : nullptr,
                                 needs.offset_mask ? grad_mask.data_ptr<T>() : nullptr, nullptr};
        for (int64_t t = begin; t < end; ++t) {
          const int64_t b = tiles.sample(t), r0 = tiles.first_row(t), rows = tiles.row_count(t, geo);
          const T* planar = grad_samples.data_ptr<T>() + b * C * K * L + r0 * geo.out_w;
          for_each_planar_row(geo, rows, [&](int64_t tile_row, int64_t planar_row, int64_t stride) {
            const T* src = planar + planar_row;
            T* dst = gcols.data() + tile_row;
            for (int64_t wo = 0; wo < geo.out_w; ++wo) dst[wo * stride] = src[wo];
          });
          sample_backward_tile<T, decltype(fixed)::value>(geo, padded.data_ptr<T>(), offset.data_ptr<T>(),
                                                          mask.data_ptr<T>(), b, r0, rows, gcols.data(), grads,
                                                          scratch);
        }
      });
    });
    if (needs.input) grad_input = unpad_grouped(input_acc.reduce());
  });
  return {grad_input, grad_offset, grad_mask};
}
