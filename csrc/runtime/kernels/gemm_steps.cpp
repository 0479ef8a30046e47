// GEMM steps.
//   gemm_packed (float32): in [A (M×K), bias (N) or -1], out [C (M×N)]; state PackedMatrixB;
//                          ints [M, act], floats [act_alpha, act_beta]
//   matmul      (float32): in [A, B], out [C]; ints [batch, M, N, K, trans_a, trans_b,
//                          a_batch_stride, b_batch_stride] (elements; 0 = broadcast)
//   linear_gemm (float32, float64, int32, int64, uint32, uint64): ONNX Gemm,
//                          Y = alpha·op(A)·op(B) + beta·Y (+ bias per column, float32 only).
//                          in [A, B or -1, bias (N) or -1], out [Y]; with B = -1 the state is
//                          op(B) pre-packed (PackedMatrixB, float32); ints [M, N, K, trans_a,
//                          trans_b, accumulate (Y already holds C broadcast; else beta is 0)];
//                          floats [alpha, beta]
//   linear_matmul (float32, float64, int32, int64, uint32, uint64): numpy matmul of row-major
//                          M×K and K×N matrices over a broadcast batch. in [A, B], out [Y];
//                          ints [M, N, K, nb, batch_shape (nb)..., a_strides (nb)...,
//                          b_strides (nb)...] (elements; 0 = broadcast)
#include <type_traits>
#include <vector>

#include "engine/gemm.h"
#include "engine/nchw.h"
#include "engine/threadpool.h"
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

// One product of linear_gemm / linear_matmul per element type: sgemm for float32, the typed
// GEMM otherwise. lda / ldb follow the stored (untransposed) layouts.
void product(bool ta, bool tb, index_t M, index_t N, index_t K, double alpha, const float* A, const float* B,
             double beta, float* C, const float* bias) {
  Epilogue ep;
  ep.bias = bias;
  sgemm(ta, tb, M, N, K, static_cast<float>(alpha), A, ta ? M : K, B, tb ? K : N, static_cast<float>(beta), C, N, ep);
}
template <class T>
void product(bool ta, bool tb, index_t M, index_t N, index_t K, double alpha, const T* A, const T* B, double beta,
             T* C, const T*) {
  gemm_strided<T>(M, N, K, alpha, A, ta ? 1 : K, ta ? M : 1, B, tb ? 1 : N, tb ? K : 1, beta, C, N);
}

template <class T>
StepFn linear_gemm_typed(const StepSpec& s) {
  s.expect(3, 1, 6, 2);
  const index_t M = s.i(0), N = s.i(1), K = s.i(2);
  const bool ta = s.i(3) != 0, tb = s.i(4) != 0, acc = s.i(5) != 0;
  ENGINE_CHECK(M >= 0 && N >= 0 && K >= 0, "linear_gemm: negative size");
  const double alpha = s.f(0), beta = acc ? s.f(1) : 0.0;
  const int a = s.in[0], b = s.in[1], bias = s.in[2], y = s.out[0];
  ENGINE_CHECK(a >= 0, "linear_gemm: A is required");
  ENGINE_CHECK((bias < 0 || std::is_same<T, float>::value), "linear_gemm: a bias input is float32 only");
  if (b < 0) {
    ENGINE_CHECK((std::is_same<T, float>::value), "linear_gemm: pre-packed B is float32 only");
    auto w = s.state_as<PackedMatrixB>();
    ENGINE_CHECK(w->K() == K && w->N() == N, "linear_gemm: packed B does not match K×N");
    return [=](void* const* sl) {
      Epilogue ep;
      ep.bias = bias >= 0 ? slot<const float>(sl, bias) : nullptr;
      sgemm_packed(ta, M, static_cast<float>(alpha), slot<const float>(sl, a), ta ? M : K, *w,
                   static_cast<float>(beta), slot<float>(sl, y), N, ep);
    };
  }
  return [=](void* const* sl) {
    product(ta, tb, M, N, K, alpha, slot<const T>(sl, a), slot<const T>(sl, b), beta, slot<T>(sl, y),
            bias >= 0 ? slot<const T>(sl, bias) : nullptr);
  };
}

template <class T>
StepFn linear_matmul_typed(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 2 && s.out.size() == 1 && s.ints.size() >= 4, "linear_matmul: bad arguments");
  const index_t M = s.i(0), N = s.i(1), K = s.i(2), nb = s.i(3);
  ENGINE_CHECK(M >= 0 && N >= 0 && K >= 0 && nb >= 0 && nb <= 16, "linear_matmul: bad sizes");
  ENGINE_CHECK(s.ints.size() == static_cast<size_t>(4 + 3 * nb), "linear_matmul: expected 4 + 3*nb ints");
  std::vector<index_t> shape(s.ints.begin() + 4, s.ints.begin() + 4 + nb);
  std::vector<index_t> as(s.ints.begin() + 4 + nb, s.ints.begin() + 4 + 2 * nb);
  std::vector<index_t> bs(s.ints.begin() + 4 + 2 * nb, s.ints.end());
  index_t batch = 1;
  for (index_t i = 0; i < nb; ++i) {
    ENGINE_CHECK(shape[i] >= 0 && as[i] >= 0 && bs[i] >= 0, "linear_matmul: negative batch size or stride");
    batch *= shape[i];
  }
  const int a = s.in[0], b = s.in[1], y = s.out[0];
  return [=](void* const* sl) {
    const T* A = slot<const T>(sl, a);
    const T* B = slot<const T>(sl, b);
    T* Y = slot<T>(sl, y);
    auto one = [&](std::int64_t i) {
      index_t ao = 0, bo = 0, rem = i;
      for (index_t d = nb - 1; d >= 0; --d) {
        const index_t k = rem % shape[d];
        rem /= shape[d];
        ao += k * as[d];
        bo += k * bs[d];
      }
      product(false, false, M, N, K, 1.0, A + ao, B + bo, 0.0, Y + i * M * N, static_cast<const T*>(nullptr));
    };
    // Many small products: one per task (each GEMM then runs inline); else the GEMM threads.
    const double flops = 2.0 * double(M) * double(N) * double(K);
    if (batch > 1 && num_threads() > 1 && flops * double(batch) > 2e5 && flops < 4e6)
      parallel_tasks(batch, one);
    else
      for (index_t i = 0; i < batch; ++i) one(i);
  };
}

StepFn linear_gemm(const StepSpec& s) {
  switch (s.dtype) {
    case DType::F64: return linear_gemm_typed<double>(s);
    case DType::I32: return linear_gemm_typed<std::int32_t>(s);
    case DType::I64: return linear_gemm_typed<std::int64_t>(s);
    case DType::U32: return linear_gemm_typed<std::uint32_t>(s);
    case DType::U64: return linear_gemm_typed<std::uint64_t>(s);
    default: return linear_gemm_typed<float>(s);
  }
}

StepFn linear_matmul(const StepSpec& s) {
  switch (s.dtype) {
    case DType::F64: return linear_matmul_typed<double>(s);
    case DType::I32: return linear_matmul_typed<std::int32_t>(s);
    case DType::I64: return linear_matmul_typed<std::int64_t>(s);
    case DType::U32: return linear_matmul_typed<std::uint32_t>(s);
    case DType::U64: return linear_matmul_typed<std::uint64_t>(s);
    default: return linear_matmul_typed<float>(s);
  }
}

}  // namespace

void register_gemm_steps(KernelRegistry& r) {
  r.add("gemm_packed", DType::F32, gemm_packed);
  r.add("matmul", DType::F32, matmul);
  r.add_each("linear_gemm", linear_gemm, DType::F32, DType::F64, DType::I32, DType::I64, DType::U32, DType::U64);
  r.add_each("linear_matmul", linear_matmul, DType::F32, DType::F64, DType::I32, DType::I64, DType::U32, DType::U64);
}

}  // namespace engine
