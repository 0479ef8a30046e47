// Block formats and the quant_matmul entry point (csrc/include/engine/quant.h): the type table,
// the choice between the two regimes and the ISA dispatch.
//  * Small M (decode): x rows are quantised once to int8 blocks (XBlock) and the per-ISA kernels
//    (quant_impl.h) take integer dot products straight from the weight blocks, threads over N.
//  * Large M (prompt): panels of W are dequantised to f32 scratch, each panel's product runs
//    on the GEMM kernels (sgemm, trans_b); panels are the parallel tasks.
#include "engine/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "cpu/quant_kernels.h"
#include "engine/cpu_features.h"
#include "engine/gemm.h"
#include "engine/scratch.h"
#include "engine/threadpool.h"

namespace engine {

namespace {
struct TypeInfo {
  QuantType type;
  const char* name;
  index_t block, bytes;
};
constexpr TypeInfo kTypes[] = {
    {QuantType::F32, "F32", 1, 4},     {QuantType::F16, "F16", 1, 2},
    {QuantType::Q4_0, "Q4_0", 32, 18}, {QuantType::Q4_1, "Q4_1", 32, 20},
    {QuantType::Q8_0, "Q8_0", 32, 34}, {QuantType::Q4_K, "Q4_K", 256, 144},
    {QuantType::Q6_K, "Q6_K", 256, 210}, {QuantType::BF16, "BF16", 1, 2},
};

const TypeInfo& info(QuantType t) {
  for (const auto& i : kTypes)
    if (i.type == t) return i;
  throw Error("quant: unknown weight type id " + std::to_string(static_cast<int>(t)));
}
}  // namespace

bool quant_type_known(int t) {
  for (const auto& i : kTypes)
    if (static_cast<int>(i.type) == t) return true;
  return false;
}
const char* quant_type_name(QuantType t) { return info(t).name; }
index_t quant_block_size(QuantType t) { return info(t).block; }
index_t quant_block_bytes(QuantType t) { return info(t).bytes; }

index_t quant_row_bytes(QuantType t, index_t K) {
  const TypeInfo& i = info(t);
  ENGINE_CHECK(K > 0 && K % i.block == 0, std::string("quant: a row of ") + i.name + " holds a multiple of " +
                                              std::to_string(i.block) + " values, got K=" + std::to_string(K));
  return K / i.block * i.bytes;
}

namespace {

enum class Kernels { Vnni, Avx2, Portable };

Kernels kernels() {
  const Isa isa = cpu_isa();
  if (isa == Isa::Avx512 && cpu_has_avx512_vnni()) return Kernels::Vnni;
  if (isa >= Isa::Avx2) return Kernels::Avx2;  // also the avx512 tier without VNNI
  return Kernels::Portable;
}

void dequantize(Kernels k, const std::uint8_t* w, QuantType t, index_t K, index_t rows, float* out) {
  switch (k) {
    case Kernels::Vnni: return quant_avx512vnni::dequantize_rows(w, t, K, rows, out);
    case Kernels::Avx2: return quant_avx2::dequantize_rows(w, t, K, rows, out);
    default: return quant_portable::dequantize_rows(w, t, K, rows, out);
  }
}

void matmul_rows(Kernels k, const QuantRows& a, index_t n0, index_t n1) {
  switch (k) {
    case Kernels::Vnni: return quant_avx512vnni::matmul_rows(a, n0, n1);
    case Kernels::Avx2: return quant_avx2::matmul_rows(a, n0, n1);
    default: return quant_portable::matmul_rows(a, n0, n1);
  }
}

// From this many x rows on, dequantising panels and running the GEMM beats the integer kernels
// (measured on Zen 4, one thread, SmolLM2's 1536x576, 576x1536 Q4_1 and 49152x576 Q8_0: at 8
// rows the integer kernels take 0.65-0.9 of the GEMM path's time, at 11 1.0-1.2x).
constexpr index_t kPanelMinRows = 10;

void matmul_small(Kernels k, const float* x, index_t ldx, index_t M, index_t K, const std::uint8_t* w,
                  QuantType t, index_t row_bytes, index_t N, float* y, index_t ldy, bool accumulate) {
  QuantRows a{x, ldx, nullptr, 0, nullptr, M, K, w, row_bytes, t, y, ldy, accumulate};
  if (t != QuantType::F16 && t != QuantType::BF16) {
    const index_t nb = K / kXBlock, passes = (M + kMaxRowsPerPass - 1) / kMaxRowsPerPass;
    XBlock* xq = thread_scratch<XBlock, kScratchQuantX>(static_cast<std::size_t>(M * nb));
    for (index_t m = 0; m < M; ++m) quantize_row(x + m * ldx, K, xq + m * nb);
    float* xs = thread_scratch<float, kScratchQuantXScales>(static_cast<std::size_t>(passes * nb * 32));
    std::memset(xs, 0, sizeof(float) * static_cast<std::size_t>(passes * nb * 32));
    for (index_t m = 0; m < M; ++m)
      for (index_t b = 0; b < nb; ++b) {
        const XBlock& xb = xq[m * nb + b];
        float* o = xs + ((m / kMaxRowsPerPass) * nb + b) * 32 + m % kMaxRowsPerPass;
        o[0] = xb.d, o[8] = xb.s, o[16] = xb.sum16[0], o[24] = xb.sum16[1];
      }
    a.xq = xq;
    a.xq_ld = nb;
    a.xs = xs;
  }
  // Tasks of at least ~32 KiB of weight rows (less and the wake-up costs more than it saves),
  // a few per thread so a thread slowed by other work does not hold up the rest.
  const index_t grain = std::max<index_t>(1, (32 << 10) / (row_bytes * std::min<index_t>(M, 4)));
  const index_t tasks = std::min<index_t>((N + grain - 1) / grain, 4 * num_threads());
  if (tasks <= 1) return matmul_rows(k, a, 0, N);
  parallel_tasks(tasks, [&](std::int64_t i) { matmul_rows(k, a, N * i / tasks, N * (i + 1) / tasks); });
}

void matmul_panels(Kernels k, const float* x, index_t ldx, index_t M, index_t K, const std::uint8_t* w,
                   QuantType t, index_t row_bytes, index_t N, float* y, index_t ldy, bool accumulate) {
  // Panels of up to 256 rows (1.5 MiB of f32 at K=1536), at least two per thread when N allows.
  const index_t threads = num_threads();
  index_t panel = std::min<index_t>(256, (N + 2 * threads - 1) / (2 * threads));
  panel = std::max<index_t>(16, (panel + 15) / 16 * 16);
  const index_t panels = (N + panel - 1) / panel;
  parallel_tasks(panels, [&](std::int64_t p) {
    const index_t n0 = p * panel, n1 = std::min(N, n0 + panel);
    float* f = thread_scratch<float, kScratchQuantPanel>(static_cast<std::size_t>((n1 - n0) * K));
    dequantize(k, w + n0 * row_bytes, t, K, n1 - n0, f);
    sgemm(false, true, M, n1 - n0, K, 1.f, x, ldx, f, K, accumulate ? 1.f : 0.f, y + n0, ldy);
  });
}

}  // namespace

// One x row to blocks of 32 in two int8 parts (XBlock): Q = round(x/d) with d = max|x|/(127*128),
// then q = round(Q/128), lo = Q - 128 q; so |x - d*Q| <= d/2 per value.
void quantize_row(const float* x, index_t K, XBlock* out) {
  for (index_t b = 0; b < K / kXBlock; ++b, x += kXBlock) {
    XBlock& xb = out[b];
    float amax = 0.f;
    bool finite = true;
    for (index_t i = 0; i < kXBlock; ++i) {
      finite &= std::isfinite(x[i]);
      amax = std::max(amax, std::fabs(x[i]));
    }
    if (!finite) {  // NaN or inf: the block's products are NaN (never a silently finite sum)
      xb.d = xb.s = std::numeric_limits<float>::quiet_NaN();
      xb.sum16[0] = xb.sum16[1] = 0;
      std::memset(xb.q, 0, sizeof xb.q);
      std::memset(xb.lo, 0, sizeof xb.lo);
      continue;
    }
    constexpr int kMax = 127 << kXLoShift;
    const float d = amax / static_cast<float>(kMax), id = d > 0.f ? 1.f / d : 0.f;
    // A subnormal d has no finite reciprocal: divide instead (|x/d| <= kMax always).
    const bool divide = !std::isfinite(id);
    int sum[2] = {0, 0};
    for (index_t i = 0; i < kXBlock; ++i) {
      const float r = divide ? x[i] / d : x[i] * id;
      const int v = std::clamp(static_cast<int>(std::nearbyint(r)), -kMax, kMax);
      const int q = (v >= 0 ? v + 64 : v - 64) / 128;  // nearest; |q| <= 127, |v - 128 q| <= 64
      xb.q[i] = static_cast<std::int8_t>(q);
      xb.lo[i] = static_cast<std::int8_t>(v - 128 * q);
      sum[i / 16] += v;
    }
    xb.d = d;
    xb.sum16[0] = sum[0];
    xb.sum16[1] = sum[1];
    xb.s = d * static_cast<float>(sum[0] + sum[1]);
  }
}

void quant_matmul(const float* x, index_t ldx, index_t M, index_t K, const void* w, QuantType t, index_t N,
                  float* y, index_t ldy, bool accumulate) {
  const index_t row_bytes = quant_row_bytes(t, K);
  if (M == 0 || N == 0) return;
  if (t == QuantType::F32) {
    sgemm(false, true, M, N, K, 1.0f, x, ldx, static_cast<const float*>(w), K, accumulate ? 1.0f : 0.0f, y, ldy);
    return;
  }
  const Kernels k = kernels();
  const auto* wb = static_cast<const std::uint8_t*>(w);
  if (M >= kPanelMinRows)
    matmul_panels(k, x, ldx, M, K, wb, t, row_bytes, N, y, ldy, accumulate);
  else
    matmul_small(k, x, ldx, M, K, wb, t, row_bytes, N, y, ldy, accumulate);
}

void quant_dequantize_rows(const void* w, QuantType t, index_t K, index_t n0, index_t n1, float* out) {
  const index_t row = quant_row_bytes(t, K);
  ENGINE_CHECK(0 <= n0 && n0 <= n1, "quant_dequantize_rows: bad row range [" + std::to_string(n0) + ", " +
                                        std::to_string(n1) + ")");
  dequantize(kernels(), static_cast<const std::uint8_t*>(w) + n0 * row, t, K, n1 - n0, out);
}

}  // namespace engine
