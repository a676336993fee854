// CPU implementation of the modulated deformable convolution.
//
// The work is split into tiles of output positions of one sample. A thread samples the columns of
// its tile into a buffer that stays in its L2 cache and multiplies them with the weight right away,
// so the (C*K, Ho*Wo) column matrix is never materialised (it would cost 9x the input in memory
// traffic and page faults). Inside a tile, the bilinear corners of a (group, tap) are computed once
// and reused for the channels of that group. Backward fuses the input, offset, mask and weight
// gradients of a tile in one pass; input gradients are scattered into one accumulator per thread,
// so no atomics are needed. Threads come from at::parallel_for (OpenMP in the PyTorch wheels; it
// honours torch.set_num_threads); GEMMs are ATen's (MKL / OpenBLAS), single-threaded inside a tile.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../dcn.h"

namespace {

// The kernels read a copy of the input padded with one zero pixel on each side. A sample at
// (y, x) with -1 < y < H and -1 < x < W then has its four corners at idx, idx + 1, idx + Wp and
// idx + Wp + 1 of the padded plane (width Wp = W + 2), and a corner outside the image reads 0:
// no per-corner bounds checks in the inner loops. A sample further out (or at a NaN position) is
// flagged by inside = 0 and contributes nothing.
struct Padded {
  int64_t height, width;
  explicit Padded(const DcnGeometry& geo) : height(geo.height + 2), width(geo.width + 2) {}
  int64_t plane() const { return height * width; }
};

// The offset rows (dy, dx) and the mask row of one (sample, group, tap), indexed by position.
template <typename T>
struct TapRows {
  const T* off_y;
  const T* off_x;
  const T* mask;
};

template <typename T>
inline TapRows<T> tap_rows(const T* offset, const T* mask, const DcnGeometry& geo, int64_t b, int64_t g,
                           int64_t k) {
  const int64_t K = geo.taps(), L = geo.out_size(), gk = g * K + k;
  const T* off_b = offset + b * 2 * geo.groups * K * L;
  return {off_b + 2 * gk * L, off_b + (2 * gk + 1) * L, mask + (b * geo.groups * K + gk) * L};
}

// Sampling geometry of one (sample, group, tap) over the n positions of a tile, structure of
// arrays so that the loops vectorise: top-left corner in the padded plane, fractional parts,
// inside flag, and the mask times the inside flag.
template <typename T>
struct TapTile {
  std::vector<T> base_y, base_x;  // position of tap (0, 0), per tile position
  std::vector<int32_t> idx;
  std::vector<T> ly, lx, inside, mask;

  // Base positions of the tile [l0, l0 + n); once per tile.
  void start(const DcnGeometry& geo, int64_t l0, int64_t n) {
    base_y.resize(n);
    base_x.resize(n);
    idx.resize(n);
    ly.resize(n);
    lx.resize(n);
    inside.resize(n);
    mask.resize(n);
    int64_t ho = l0 / geo.out_w, wo = l0 % geo.out_w;
    for (int64_t i = 0; i < n; ++i) {
      base_y[i] = T(ho * geo.stride_h - geo.pad_h);
      base_x[i] = T(wo * geo.stride_w - geo.pad_w);
      if (++wo == geo.out_w) wo = 0, ++ho;
    }
  }

  void compute(const DcnGeometry& geo, const Padded& pad, const TapRows<T>& rows, int64_t k, int64_t l0, int64_t n) {
    const T dy = T((k / geo.kernel_w) * geo.dil_h), dx = T((k % geo.kernel_w) * geo.dil_w);
    const T h = T(geo.height), w = T(geo.width);
    const int32_t wp = static_cast<int32_t>(pad.width);
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
      idx[i] = in ? (static_cast<int32_t>(yf) + 1) * wp + static_cast<int32_t>(xf) + 1 : 0;
    }
  }
};

// Positions per tile: the tile's columns (C*K x tile) should fit in L2, and there should be a
// few tiles per thread.
int64_t tile_size(const DcnGeometry& geo, int64_t element_size) {
  const int64_t ck = geo.channels * geo.taps(), L = geo.out_size();
  const int64_t fit_cache = (int64_t(1) << 19) / (element_size * ck);
  const int64_t spread = (geo.batch * L + 4 * at::get_num_threads() - 1) / (4 * at::get_num_threads());
  const int64_t tile = std::max<int64_t>(32, std::min(fit_cache, spread));
  return std::min(L, (tile + 15) / 16 * 16);
}

struct Tiling {
  int64_t size, per_sample, count;
  Tiling(const DcnGeometry& geo, int64_t element_size)
      : size(tile_size(geo, element_size)),
        per_sample((geo.out_size() + size - 1) / size),
        count(geo.batch * per_sample) {}
  int64_t sample(int64_t t) const { return t / per_sample; }
  int64_t first(int64_t t) const { return (t % per_sample) * size; }
};

// Bilinear weights times mask of one tap, per tile position.
template <typename T>
struct TapWeights {
  std::vector<T> w00, w01, w10, w11;

  void compute(const TapTile<T>& tap, int64_t n) {
    w00.resize(n);
    w01.resize(n);
    w10.resize(n);
    w11.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      const T hy = T(1) - tap.ly[i], hx = T(1) - tap.lx[i], m = tap.mask[i];
      w00[i] = hy * hx * m;
      w01[i] = hy * tap.lx[i] * m;
      w10[i] = tap.ly[i] * hx * m;
      w11[i] = tap.ly[i] * tap.lx[i] * m;
    }
  }
};

template <typename T>
struct SampleScratch {
  TapTile<T> tap;
  TapWeights<T> weights;
};

// Modulated samples of positions [l0, l0 + n) of sample b into cols (row c * K + k, row stride ld).
// `padded` is the zero-padded input (B, C, H + 2, W + 2).
template <typename T>
void sample_tile(const DcnGeometry& geo, const T* padded, const T* offset, const T* mask, int64_t b, int64_t l0,
                 int64_t n, T* cols, int64_t ld, SampleScratch<T>& s) {
  const Padded pad(geo);
  const int64_t K = geo.taps(), cpg = geo.channels_per_group(), wp = pad.width;
  s.tap.start(geo, l0, n);
  for (int64_t g = 0; g < geo.groups; ++g) {
    for (int64_t k = 0; k < K; ++k) {
      s.tap.compute(geo, pad, tap_rows(offset, mask, geo, b, g, k), k, l0, n);
      s.weights.compute(s.tap, n);
      const int32_t* idx = s.tap.idx.data();
      const T *w00 = s.weights.w00.data(), *w01 = s.weights.w01.data();
      const T *w10 = s.weights.w10.data(), *w11 = s.weights.w11.data();
      for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
        const T* x = padded + (b * geo.channels + c) * pad.plane();
        T* col = cols + (c * K + k) * ld;
        for (int64_t i = 0; i < n; ++i) {
          const T* p = x + idx[i];
          col[i] = w00[i] * p[0] + w01[i] * p[1] + w10[i] * p[wp] + w11[i] * p[wp + 1];
        }
      }
    }
  }
}

// Per-tile outputs of the sampling backward; null pointers are gradients not wanted.
template <typename T>
struct TileGrads {
  T* input;   // (C, H + 2, W + 2) padded accumulator of sample b
  T* offset;  // the full (B, 2GK, L) gradient
  T* mask;    // the full (B, GK, L) gradient
  T* cols;    // forward columns of the tile (recomputed for the weight gradient), row stride ld_cols
  int64_t ld_cols;
};

template <typename T>
struct BackwardScratch {
  TapTile<T> tap;
  std::vector<T> gy, gx, gm;
};

// Backward of the sampling for positions [l0, l0 + n) of sample b; grad_cols has row stride ld.
template <typename T>
void sample_backward_tile(const DcnGeometry& geo, const T* padded, const T* offset, const T* mask, int64_t b,
                          int64_t l0, int64_t n, const T* grad_cols, int64_t ld, const TileGrads<T>& out,
                          BackwardScratch<T>& s) {
  const Padded pad(geo);
  const int64_t K = geo.taps(), L = geo.out_size(), cpg = geo.channels_per_group(), wp = pad.width;
  const bool coord = out.offset != nullptr;
  s.gy.resize(n);
  s.gx.resize(n);
  s.gm.resize(n);
  s.tap.start(geo, l0, n);
  for (int64_t g = 0; g < geo.groups; ++g) {
    for (int64_t k = 0; k < K; ++k) {
      s.tap.compute(geo, pad, tap_rows(offset, mask, geo, b, g, k), k, l0, n);
      std::fill(s.gy.begin(), s.gy.end(), T(0));
      std::fill(s.gx.begin(), s.gx.end(), T(0));
      std::fill(s.gm.begin(), s.gm.end(), T(0));
      const int32_t* idx = s.tap.idx.data();
      const T *ly = s.tap.ly.data(), *lx = s.tap.lx.data(), *in = s.tap.inside.data(), *m = s.tap.mask.data();
      for (int64_t ch = g * cpg; ch < (g + 1) * cpg; ++ch) {
        const T* x = padded + (b * geo.channels + ch) * pad.plane();
        const T* gcol = grad_cols + (ch * K + k) * ld;
        T* gin = out.input ? out.input + ch * pad.plane() : nullptr;
        T* col = out.cols ? out.cols + (ch * K + k) * out.ld_cols : nullptr;
        if (gin) {
          for (int64_t i = 0; i < n; ++i) {
            const T hy = T(1) - ly[i], hx = T(1) - lx[i], g_mod = gcol[i] * m[i];
            T* q = gin + idx[i];
            q[0] += hy * hx * g_mod;
            q[1] += hy * lx[i] * g_mod;
            q[wp] += ly[i] * hx * g_mod;
            q[wp + 1] += ly[i] * lx[i] * g_mod;
          }
        }
        if (coord || col) {
          for (int64_t i = 0; i < n; ++i) {
            const T* p = x + idx[i];
            const T v00 = p[0], v01 = p[1], v10 = p[wp], v11 = p[wp + 1];
            const T hy = T(1) - ly[i], hx = T(1) - lx[i];
            const T value = in[i] * (hy * hx * v00 + hy * lx[i] * v01 + ly[i] * hx * v10 + ly[i] * lx[i] * v11);
            if (coord) {
              const T g_mod = gcol[i] * m[i];
              s.gy[i] += g_mod * (hx * (v10 - v00) + lx[i] * (v11 - v01));
              s.gx[i] += g_mod * (hy * (v01 - v00) + ly[i] * (v11 - v10));
              s.gm[i] += gcol[i] * value;
            }
            if (col) col[i] = m[i] * value;
          }
        }
      }
      if (coord) {
        const int64_t gk = g * K + k;
        T* goff = out.offset + b * 2 * geo.groups * K * L;
        std::copy(s.gy.begin(), s.gy.end(), goff + 2 * gk * L + l0);
        std::copy(s.gx.begin(), s.gx.end(), goff + (2 * gk + 1) * L + l0);
        std::copy(s.gm.begin(), s.gm.end(), out.mask + (b * geo.groups * K + gk) * L + l0);
      }
    }
  }
}

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

at::Tensor pad_input(const at::Tensor& input) { return at::constant_pad_nd(input, {1, 1, 1, 1}, 0); }

// The gradient of the input from its padded accumulator.
at::Tensor unpad(const at::Tensor& padded) {
  return padded.narrow(2, 1, padded.size(2) - 2).narrow(3, 1, padded.size(3) - 2).contiguous();
}

template <typename T>
void forward_impl(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                  const at::Tensor& offset, const at::Tensor& mask, const DcnGeometry& geo, at::Tensor& output) {
  const int64_t ck = geo.channels * geo.taps(), c_out = weight.size(0), L = geo.out_size();
  // detached: autograd is handled in Python, and the GEMMs below run in worker threads with out=
  const at::Tensor w2d = weight.detach().view({c_out, ck});
  const at::Tensor padded = pad_input(input);
  const Tiling tiles(geo, sizeof(T));
  const T* bias_ptr = bias.defined() ? bias.data_ptr<T>() : nullptr;
  T* out = output.data_ptr<T>();
  at::parallel_for(0, tiles.count, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> cols(ck * tiles.size), prod(c_out * tiles.size);
    SampleScratch<T> scratch;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = tiles.sample(t), l0 = tiles.first(t), n = std::min(tiles.size, L - l0);
      sample_tile(geo, padded.data_ptr<T>(), offset.data_ptr<T>(), mask.data_ptr<T>(), b, l0, n, cols.data(), n,
                  scratch);
      at::Tensor prod_t = matrix(prod.data(), c_out, n, input.options());
      at::mm_out(prod_t, w2d, matrix(cols.data(), ck, n, input.options()));
      for (int64_t o = 0; o < c_out; ++o) {
        const T shift = bias_ptr ? bias_ptr[o] : T(0);
        const T* src = prod.data() + o * n;
        T* dst = out + (b * c_out + o) * L + l0;
        for (int64_t i = 0; i < n; ++i) dst[i] = src[i] + shift;
      }
    }
  });
}

// Returns the gradient of the input (undefined unless needs.input); fills the others.
template <typename T>
at::Tensor backward_impl(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& offset, const at::Tensor& mask, const DcnGeometry& geo, DcnNeeds needs,
                         at::Tensor& grad_offset, at::Tensor& grad_mask, at::Tensor& grad_weight) {
  const int64_t ck = geo.channels * geo.taps(), c_out = weight.size(0), L = geo.out_size();
  const int64_t plane = Padded(geo).plane();
  const at::Tensor w2d_t = weight.detach().view({c_out, ck}).t();
  const at::Tensor padded = pad_input(input);
  const Tiling tiles(geo, sizeof(T));
  const T* gout = grad_output.data_ptr<T>();
  PerThread input_acc(needs.input ? at::zeros_like(padded) : at::Tensor());
  PerThread weight_acc(needs.weight ? grad_weight.view({c_out, ck}) : at::Tensor());
  const bool sampling = needs.input || needs.offset_mask;
  at::parallel_for(0, tiles.count, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> gout_tile(c_out * tiles.size), gcols(ck * tiles.size), cols(ck * tiles.size);
    BackwardScratch<T> scratch;
    SampleScratch<T> sample_scratch;
    T* gin = needs.input ? input_acc.mine().data_ptr<T>() : nullptr;
    at::Tensor* gw = needs.weight ? &weight_acc.mine() : nullptr;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = tiles.sample(t), l0 = tiles.first(t), n = std::min(tiles.size, L - l0);
      for (int64_t o = 0; o < c_out; ++o) {
        const T* src = gout + (b * c_out + o) * L + l0;
        std::copy(src, src + n, gout_tile.data() + o * n);
      }
      const at::Tensor gout_t = matrix(gout_tile.data(), c_out, n, input.options());
      const at::Tensor cols_t = matrix(cols.data(), ck, n, input.options());
      if (sampling) {
        at::Tensor gcols_t = matrix(gcols.data(), ck, n, input.options());
        at::mm_out(gcols_t, w2d_t, gout_t);
        const TileGrads<T> out{gin ? gin + b * geo.channels * plane : nullptr,
                               needs.offset_mask ? grad_offset.data_ptr<T>() : nullptr,
                               needs.offset_mask ? grad_mask.data_ptr<T>() : nullptr,
                               needs.weight ? cols.data() : nullptr, n};
        sample_backward_tile(geo, padded.data_ptr<T>(), offset.data_ptr<T>(), mask.data_ptr<T>(), b, l0, n,
                             gcols.data(), n, out, scratch);
      } else {
        sample_tile(geo, padded.data_ptr<T>(), offset.data_ptr<T>(), mask.data_ptr<T>(), b, l0, n, cols.data(), n,
                    sample_scratch);
      }
      if (gw) gw->addmm_(gout_t, cols_t.t());
    }
  });
  if (needs.weight) weight_acc.reduce();
  if (!needs.input) return at::Tensor();
  return unpad(input_acc.reduce());
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
                                         const at::Tensor& weight, const at::Tensor& offset,
                                         const at::Tensor& mask, const DcnGeometry& geo, DcnNeeds needs) {
  at::Tensor grad_input;
  at::Tensor grad_offset = needs.offset_mask ? at::empty_like(offset) : at::Tensor();
  at::Tensor grad_mask = needs.offset_mask ? at::empty_like(mask) : at::Tensor();
  at::Tensor grad_weight = needs.weight ? at::zeros_like(weight) : at::Tensor();
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
  const int64_t ck = geo.channels * geo.taps(), L = geo.out_size();
  at::Tensor samples = at::empty({geo.batch, geo.channels, geo.taps(), L}, input.options());
  const at::Tensor padded = pad_input(input);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "dcn_sample_cpu", [&] {
    const Tiling tiles(geo, sizeof(scalar_t));
    at::parallel_for(0, tiles.count, 1, [&](int64_t begin, int64_t end) {
      SampleScratch<scalar_t> scratch;
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = tiles.sample(t), l0 = tiles.first(t), n = std::min(tiles.size, L - l0);
        scalar_t* cols = samples.data_ptr<scalar_t>() + b * ck * L + l0;
        sample_tile(geo, padded.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), mask.data_ptr<scalar_t>(), b,
                    l0, n, cols, L, scratch);
      }
    });
  });
  return samples;
}

std::vector<at::Tensor> dcn_sample_backward_cpu(const at::Tensor& grad_samples, const at::Tensor& input,
                                                const at::Tensor& offset, const at::Tensor& mask,
                                                const DcnGeometry& geo, DcnNeeds needs) {
  const int64_t ck = geo.channels * geo.taps(), L = geo.out_size(), plane = Padded(geo).plane();
  at::Tensor grad_input;
  at::Tensor grad_offset = needs.offset_mask ? at::empty_like(offset) : at::Tensor();
  at::Tensor grad_mask = needs.offset_mask ? at::empty_like(mask) : at::Tensor();
  if (!needs.input && !needs.offset_mask) return {grad_input, grad_offset, grad_mask};
  const at::Tensor padded = pad_input(input);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "dcn_sample_backward_cpu", [&] {
    using T = scalar_t;
    const Tiling tiles(geo, sizeof(T));
    PerThread input_acc(needs.input ? at::zeros_like(padded) : at::Tensor());
    at::parallel_for(0, tiles.count, 1, [&](int64_t begin, int64_t end) {
      BackwardScratch<T> scratch;
      T* gin = needs.input ? input_acc.mine().data_ptr<T>() : nullptr;
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = tiles.sample(t), l0 = tiles.first(t), n = std::min(tiles.size, L - l0);
        const TileGrads<T> out{gin ? gin + b * geo.channels * plane : nullptr,
                               needs.offset_mask ? grad_offset.data_ptr<T>() : nullptr,
                               needs.offset_mask ? grad_mask.data_ptr<T>() : nullptr, nullptr, 0};
        sample_backward_tile(geo, padded.data_ptr<T>(), offset.data_ptr<T>(), mask.data_ptr<T>(), b, l0, n,
                             grad_samples.data_ptr<T>() + b * ck * L + l0, L, out, scratch);
      }
    });
    if (needs.input) grad_input = unpad(input_acc.reduce());
  });
  return {grad_input, grad_offset, grad_mask};
}
