// GEMM steps.
//   gemm_packed (float32): in [A (M×K), bias (N) or -1], out [C (M×N)]; state PackedMatrixB;
//                          ints [M, act], floats [act_alpha, act_beta]
//   matmul      (float32): in [A, B], out [C]; ints [batch, M, N, K, trans_a, trans_b,
//                          a_batch_stride, b_batch_stride] (elements; 0 = broadcast)
#include "engine/gemm.h"
#include "runtime/kernels/families.h"
#include "runtime/registry.h"

namespace engine {
namespace {

Act act_param(const StepSpec& s, size_t k) {
  const std::int64_t a = s.i(k);
  ENGINE_CHECK(a >= 0 && a <= static_cast<std::int64_t>(Act::Identity), s.name + ": bad activation code");
  return static_cast<Act>(a);
}

StepFn gemm_packed(const StepSpec& s) {
  s.expect(2, 1, 2, 2);
  auto w = s.state_as<PackedMatrixB>();
  const index_t M = s.i(0);
  ENGINE_CHECK(M >= 0, "gemm_packed: M < 0");
  const Act act = act_param(s, 1);
  const float a = static_cast<float>(s.f(0)), b = static_cast<float>(s.f(1));
  const int in = s.in[0], bias = s.in[1], out = s.out[0];
  return [=](void* const* sl) {
    Epilogue ep{bias >= 0 ? slot<const float>(sl, bias) : nullptr, false, act, a, b};
    sgemm_packed(false, M, 1.f, slot<const float>(sl, in), w->K(), *w, 0.f, slot<float>(sl, out), w->N(), ep);
  };
}

StepFn matmul(const StepSpec& s) {
  s.expect(2, 1, 8);
  const index_t batch = s.i(0), M = s.i(1), N = s.i(2), K = s.i(3);
  const bool ta = s.i(4) != 0, tb = s.i(5) != 0;
  const index_t lbs = s.i(6), rbs = s.i(7);
  ENGINE_CHECK(batch >= 0 && M >= 0 && N >= 0 && K >= 0 && lbs >= 0 && rbs >= 0, "matmul: negative size");
  const int lhs = s.in[0], rhs = s.in[1], out = s.out[0];
  return [=](void* const* sl) {
    const float* A = slot<const float>(sl, lhs);
    const float* B = slot<const float>(sl, rhs);
    float* C = slot<float>(sl, out);
    for (index_t i = 0; i < batch; ++i)
      sgemm(ta, tb, M, N, K, 1.f, A + i * lbs, ta ? M : K, B + i * rbs, tb ? K : N, 0.f, C + i * M * N, N);
  };
}

}  // namespace

void register_gemm_steps(KernelRegistry& r) {
  r.add("gemm_packed", DType::F32, gemm_packed);
  r.add("matmul", DType::F32, matmul);
}

}  // namespace engine
