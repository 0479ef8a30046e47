// Elementwise kernels: ISA dispatch and threading. The kernels themselves live in
// elementwise_impl.h, compiled once per ISA (elementwise_{avx512,avx2,portable}.cpp).
//
// Small work runs inline with no thread dispatch (activation() is called by the GEMM and
// conv epilogues on short row segments); large arrays are split with parallel_for on
// 64-byte-aligned boundaries. Nothing here allocates.
#include "engine/elementwise.h"

#include <algorithm>
#include <string>

#include "engine/cpu_features.h"
#include "engine/threadpool.h"

namespace engine {

#define EW_DECLARE(ns)                                                                       \
  namespace ns {                                                                             \
  void activation(float* y, const float* x, index_t n, Act act, float alpha, float beta);   \
  void binary_row(float* out, const float* a, index_t sa, const float* b, index_t sb,        \
                  index_t n, BinaryOp op);                                                   \
  void softmax_rows(float* y, const float* x, index_t rows, index_t len, bool log);          \
  void softmax_cols(float* y, const float* x, index_t axis, index_t inner, index_t j0,       \
                    index_t j1, bool log);                                                   \
  }
EW_DECLARE(ew_avx512)
EW_DECLARE(ew_avx2)
EW_DECLARE(ew_portable)
#undef EW_DECLARE

namespace {

struct Kernels {
  void (*activation)(float*, const float*, index_t, Act, float, float);
  void (*binary_row)(float*, const float*, index_t, const float*, index_t, index_t, BinaryOp);
  void (*softmax_rows)(float*, const float*, index_t, index_t, bool);
  void (*softmax_cols)(float*, const float*, index_t, index_t, index_t, index_t, bool);
};

constexpr Kernels kKernels[3] = {
    {ew_portable::activation, ew_portable::binary_row, ew_portable::softmax_rows, ew_portable::softmax_cols},
    {ew_avx2::activation, ew_avx2::binary_row, ew_avx2::softmax_rows, ew_avx2::softmax_cols},
    {ew_avx512::activation, ew_avx512::binary_row, ew_avx512::softmax_rows, ew_avx512::softmax_cols},
};

// cpu_isa() is one relaxed atomic load (tests may lower it at run time with set_isa).
inline const Kernels& kernels() { return kKernels[static_cast<int>(cpu_isa())]; }

// Work below this many floats runs inline on the caller.
constexpr index_t kGrainCheap = 1 << 16;      // memory-bound ops (relu, add, ...)
constexpr index_t kGrainHeavy = 1 << 15;      // transcendental ops (exp, erf, softmax)
constexpr index_t kBlock = 16;                // chunk boundaries: multiples of 64 bytes

bool heavy(Act act) {
  switch (act) {
    case Act::Sigmoid: case Act::Tanh: case Act::Gelu: case Act::GeluTanh: case Act::Elu:
    case Act::Selu: case Act::Silu: case Act::Softplus: case Act::Exp: case Act::Log:
    case Act::Erf:
      return true;
    default:
      return false;
  }
}

}  // namespace

void activation(float* y, const float* x, index_t n, Act act, float alpha, float beta) {
  if (n <= 0) return;
  const Kernels& k = kernels();
  const index_t grain = heavy(act) ? kGrainHeavy : kGrainCheap;
  if (n <= grain) return k.activation(y, x, n, act, alpha, beta);
  const index_t blocks = (n + kBlock - 1) / kBlock;
  parallel_for(blocks, grain / kBlock, [&](index_t b0, index_t b1) {
    const index_t i0 = b0 * kBlock, i1 = std::min(n, b1 * kBlock);
    k.activation(y + i0, x + i0, i1 - i0, act, alpha, beta);
  });
}

void binary(float* out, const float* a, const float* b, BinaryOp op, int ndim,
            const index_t* out_shape, const index_t* a_strides, const index_t* b_strides) {
  constexpr int kMaxDims = 16;
  ENGINE_CHECK(ndim >= 0, "binary: negative ndim");
  index_t total = 1;
  for (int d = 0; d < ndim; ++d) {
    ENGINE_CHECK(out_shape[d] >= 0, "binary: negative dimension");
    total *= out_shape[d];
  }
  if (total == 0) return;

  // Collapse: drop size-1 dims, merge neighbours that are contiguous w.r.t. each other in
  // both inputs (a scalar, a row, a column broadcast all end up with rank <= 2).
  index_t shape[kMaxDims], sa[kMaxDims], sb[kMaxDims];
  int nd = 0;  // collapsed dims are stored innermost-first
  for (int d = ndim - 1; d >= 0; --d) {
    const index_t s = out_shape[d];
    if (s == 1) continue;
    if (nd > 0 && a_strides[d] == sa[nd - 1] * shape[nd - 1] && b_strides[d] == sb[nd - 1] * shape[nd - 1]) {
      shape[nd - 1] *= s;
      continue;
    }
    ENGINE_CHECK(nd < kMaxDims, "binary: too many non-mergeable dims (max 16)");
    shape[nd] = s;
    sa[nd] = a_strides[d];
    sb[nd] = b_strides[d];
    ++nd;
  }
  const Kernels& k = kernels();
  const index_t grain = op == BinaryOp::Pow ? kGrainHeavy / 8 : kGrainCheap;  // pow: libm
  if (nd == 0) return k.binary_row(out, a, 0, b, 0, 1, op);

  const index_t len = shape[0], asi = sa[0], bsi = sb[0];
  if (nd == 1) {
    if (total <= grain) return k.binary_row(out, a, asi, b, bsi, len, op);
    const index_t blocks = (len + kBlock - 1) / kBlock;
    parallel_for(blocks, grain / kBlock, [&](index_t b0, index_t b1) {
      const index_t i0 = b0 * kBlock, i1 = std::min(len, b1 * kBlock);
      k.binary_row(out + i0, a + i0 * asi, asi, b + i0 * bsi, bsi, i1 - i0, op);
    });
    return;
  }

  // N-d: rows of the innermost dim, outer dims walked with an odometer.
  const index_t rows = total / len;
  auto run = [&](index_t r0, index_t r1) {
    index_t idx[kMaxDims] = {0};
    index_t ao = 0, bo = 0, rem = r0;
    for (int d = 1; d < nd; ++d) {
      idx[d] = rem % shape[d];
      rem /= shape[d];
      ao += idx[d] * sa[d];
      bo += idx[d] * sb[d];
    }
    for (index_t r = r0; r < r1; ++r) {
      k.binary_row(out + r * len, a + ao, asi, b + bo, bsi, len, op);
      for (int d = 1; d < nd; ++d) {
        ao += sa[d];
        bo += sb[d];
        if (++idx[d] < shape[d]) break;
        ao -= sa[d] * shape[d];
        bo -= sb[d] * shape[d];
        idx[d] = 0;
      }
    }
  };
  if (total <= grain) return run(0, rows);
  if (len <= grain) return parallel_for(rows, std::max<index_t>(1, grain / len), run);
  // Few long rows: split each row into column chunks too, so every thread gets work.
  const index_t cchunk = grain, nc = (len + cchunk - 1) / cchunk;
  parallel_for(rows * nc, 1, [&](index_t t0, index_t t1) {
    for (index_t t = t0; t < t1; ++t) {
      index_t r = t / nc, rem = r, ao = 0, bo = 0;
      for (int d = 1; d < nd; ++d) {
        const index_t i = rem % shape[d];
        rem /= shape[d];
        ao += i * sa[d];
        bo += i * sb[d];
      }
      const index_t j0 = (t % nc) * cchunk, j1 = std::min(len, j0 + cchunk);
      k.binary_row(out + r * len + j0, a + ao + j0 * asi, asi, b + bo + j0 * bsi, bsi, j1 - j0, op);
    }
  });
}

void softmax(float* y, const float* x, index_t outer, index_t axis, index_t inner, bool log) {
  ENGINE_CHECK(outer >= 0 && axis >= 0 && inner >= 0, "softmax: negative size");
  if (outer == 0 || axis == 0 || inner == 0) return;
  const Kernels& k = kernels();
  const index_t total = outer * axis * inner;
  if (inner == 1) {
    if (total <= kGrainHeavy) return k.softmax_rows(y, x, outer, axis, log);
    parallel_for(outer, std::max<index_t>(1, kGrainHeavy / axis), [&](index_t r0, index_t r1) {
      k.softmax_rows(y + r0 * axis, x + r0 * axis, r1 - r0, axis, log);
    });
    return;
  }
  // Vectorised across `inner`: tasks are (outer slab, column block) pairs.
  const index_t slab = axis * inner;
  if (total <= kGrainHeavy) {
    for (index_t o = 0; o < outer; ++o) k.softmax_cols(y + o * slab, x + o * slab, axis, inner, 0, inner, log);
    return;
  }
  const index_t colblock = std::max<index_t>(kBlock, (kGrainHeavy / axis + kBlock - 1) / kBlock * kBlock);
  const index_t nblk = (inner + colblock - 1) / colblock;
  const index_t per_task = std::max<index_t>(1, colblock * axis);  // floats per task
  parallel_for(outer * nblk, std::max<index_t>(1, kGrainHeavy / per_task), [&](index_t t0, index_t t1) {
    for (index_t t = t0; t < t1; ++t) {
      const index_t o = t / nblk, j0 = (t % nblk) * colblock, j1 = std::min(inner, j0 + colblock);
      k.softmax_cols(y + o * slab, x + o * slab, axis, inner, j0, j1, log);
    }
  });
}

}  // namespace engine
