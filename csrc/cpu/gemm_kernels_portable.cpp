// Portable SGEMM micro-kernel (baseline x86-64 / any CPU): a 4×8 tile in 8 four-float
// accumulators (GCC/Clang vector extensions, SSE2 on baseline x86-64).
#include <array>
#include <cstring>
#include <utility>

#include "cpu/gemm_internal.h"

namespace engine {
namespace gemm {
namespace {

constexpr int MR = 4;
constexpr int NR = 8;

// GCC/Clang vector extension: 4 floats, lowered to SSE on baseline x86-64 (NEON on ARM,
// scalar code elsewhere).
typedef float v4 __attribute__((vector_size(16)));

inline v4 load4(const float* p) {
  v4 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <int M, int AM>
void kernel(int m, int n, index_t K, const float* A, index_t rsa, index_t csa, const float* B, index_t ldb,
            float* C, index_t ldc, const TileParams& p, const float* bias) {
  v4 acc[M][2];
  for (int i = 0; i < M; ++i) acc[i][0] = acc[i][1] = v4{0.f, 0.f, 0.f, 0.f};
  for (index_t k = 0; k < K; ++k) {
    const v4 b0 = load4(B + k * ldb), b1 = load4(B + k * ldb + 4);
    for (int i = 0; i < M; ++i) {
      const float a = AM == ACol ? A[i + k * csa] : A[i * rsa + k];
      const v4 av = {a, a, a, a};
      acc[i][0] += av * b0;
      acc[i][1] += av * b1;
    }
  }
  for (int i = 0; i < M; ++i) {
    float r[NR];
    std::memcpy(r, acc[i], sizeof(r));
    float* c = C + i * ldc;
    for (int j = 0; j < n; ++j) {
      float v = p.alpha * r[j];
      if (p.beta == 1.f) v += c[j];
      else if (p.beta != 0.f) v += p.beta * c[j];
      if (p.bias_mode == BiasCol) v += bias[j];
      else if (p.bias_mode == BiasRow) v += bias[i];
      if (p.res) v += p.res[i * p.ldr + j];
      if (p.relu) v = v < 0.f ? 0.f : v;  // NaN stays NaN (as torch)
      else if (p.clip) v = v < p.lo ? p.lo : (v > p.hi ? p.hi : v);  // NaN stays NaN
      c[j] = v;
    }
  }
}

template <int AM, std::size_t... I>
constexpr auto make_table(std::index_sequence<I...>) {
  return std::array<MicroKernel, sizeof...(I)>{{&kernel<int(I) + 1, AM>...}};
}

template <int AM>
void dispatch(int m, int n, index_t k, const float* A, index_t rsa, index_t csa, const float* B, index_t ldb,
              float* C, index_t ldc, const TileParams& p, const float* bias) {
  static constexpr auto table = make_table<AM>(std::make_index_sequence<MR>{});
  table[m - 1](m, n, k, A, rsa, csa, B, ldb, C, ldc, p, bias);
}

}  // namespace

void dot_portable(int m, int nb, index_t K, const float* A, index_t lda, const float* B,
                  index_t ldb, float* out) {
  for (int i = 0; i < m; ++i)
    for (int r = 0; r < nb; ++r) {
      const float* a = A + i * lda;
      const float* b = B + r * ldb;
      v4 acc0 = {0.f, 0.f, 0.f, 0.f}, acc1 = acc0;
      index_t k = 0;
      for (; k + 8 <= K; k += 8) {
        acc0 += load4(a + k) * load4(b + k);
        acc1 += load4(a + k + 4) * load4(b + k + 4);
      }
      acc0 += acc1;
      float s = acc0[0] + acc0[1] + acc0[2] + acc0[3];
      for (; k < K; ++k) s += a[k] * b[k];
      out[i * 4 + r] = s;
    }
}

const KernelSet& kernels_portable() {
  static const KernelSet ks{Isa::Portable, MR, NR, /*kc=*/256, /*mc=*/4 * 32, /*nc=*/1024,
                            &dispatch<ACol>, &dispatch<ARow>};
  return ks;
}

}  // namespace gemm
}  // namespace engine
