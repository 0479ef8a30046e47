// The backward kernels' per-ISA loops (grad_{act,rows,spatial}_impl.h, compiled once per ISA
// in grad_{avx512,avx2,portable}.cpp) and the table the drivers (grad_*.cpp) pick them from.
// All loops are serial: the drivers split the work and check the arguments.
#pragma once

#include <cstdint>

#include "engine/common.h"

namespace engine {
namespace gradk {

// One image of a pooling window sweep (the forward's geometry, pool.cpp).
struct PoolGeom {
  index_t H, W, C, OH, OW, KH, KW, sh, sw, dh, dw, pt, pl, pb, pr;
  bool count_include_pad;
  bool relu = false;  // max pooling of a ReLU's output: its derivative applied too (dy only where x > 0 or NaN)
};

// One image of a depthwise convolution: C input channels, M filters each (OC = C·M).
struct DwGeom {
  index_t H, W, C, M, OH, OW, KH, KW, sh, sw, dh, dw, pt, pl;
};

struct Kernels {
  // grad_act_impl.h
  void (*act_backward)(float* dx, const float* dy, const float* src, index_t n, int act, float alpha, float beta);
  void (*softmax_rows)(float* dx, const float* dy, const float* y, index_t rows, index_t len, bool log);
  void (*softmax_cols)(float* dx, const float* dy, const float* y, index_t axis, index_t inner, bool log);
  // One row: returns its loss; g (null, or may alias z) = gscale·(softmax·Σt − t). label >= 0:
  // sparse (t one-hot), else t is the target row.
  float (*xent_row)(float* g, const float* z, index_t C, index_t label, const float* t, float gscale);
  // Elements [i0, i1) (i0 a multiple of 4): y = keep ? x·scale : 0, keep from mask_in or drawn.
  void (*dropout)(float* y, std::uint8_t* mask_out, const float* x, const std::uint8_t* mask_in, index_t i0,
                  index_t i1, std::uint32_t thresh24, float scale, std::uint64_t seed, std::uint64_t step);

  // grad_rows_impl.h. dst[i] += src[i].
  void (*add)(float* dst, const float* src, index_t n);
  // rows × cols, row stride ld; acc[cols] += ...
  void (*col_sum)(float* acc, const float* x, index_t rows, index_t cols, index_t ld);
  void (*col_sqdev)(float* acc, const float* x, const float* mean, index_t rows, index_t cols);
  void (*col_dy_xc)(float* s_dy, float* s_dyxc, const float* dy, const float* x, const float* mean, index_t rows,
                    index_t cols);
  // y = (x − mean)·scale + shift, per column.
  void (*rows_affine)(float* y, const float* x, const float* mean, const float* scale, const float* shift,
                      index_t rows, index_t cols);
  // dx = a·dy + b·(x − mean) + c, per column.
  void (*rows_bn_dx)(float* dx, const float* dy, const float* x, const float* mean, const float* a, const float* b,
                     const float* c, index_t rows, index_t cols);
  void (*ln_row)(float* dx, const float* dy, const float* x, const float* gamma, float mean, float invstd, index_t D,
                 bool rms);
  // acc_g += dy·x̂, acc_b += dy over rows (either may be null).
  void (*ln_params)(float* acc_g, float* acc_b, const float* dy, const float* x, const float* mean,
                    const float* invstd, index_t rows, index_t D, bool rms);

  // grad_spatial_impl.h: one image, channels [c0, c1); every dx value written (pooling
  // overwrites dx; dw_data adds to it when acc).
  void (*maxpool)(float* dx, const float* dy, const float* x, const PoolGeom& g, index_t c0, index_t c1);
  void (*avgpool)(float* dx, const float* dy, const PoolGeom& g, index_t c0, index_t c1);
  void (*dw_data)(float* dx, const float* dy, const float* w, const DwGeom& g, index_t c0, index_t c1, bool acc);
  // dw (KH·KW×C·M) += this image's contribution.
  void (*dw_filter)(float* dw, const float* dy, const float* x, const DwGeom& g, index_t c0, index_t c1);
};

const Kernels& kernels();  // for cpu_isa()

}  // namespace gradk
}  // namespace engine
