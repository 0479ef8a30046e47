// Backward steps for training, layer family (float32, NHWC; engine/grad.h). Optional outputs
// are chosen by a mask in ints (bit k set: output k wanted); the out list holds the wanted
// ones only, in order. accumulate 1: add into the outputs instead of overwriting them.
//
//   bias_grad:           in [dy (rows×cols)], out [db]; ints [rows, cols, accumulate]
//   matmul_grad:         in [dc, a | -1, b | -1], out [da?, db?]; ints [batch, M, N, K, trans_a,
//                        trans_b, a_batch_stride, b_batch_stride, outputs (1 da, 2 db),
//                        accumulate] (the matmul step's layout; a 0 stride is a broadcast
//                        operand, whose gradient is summed over the batch). da needs b, db a.
//   dense_grad:          in [dy (M×N), x (M×K) | -1, w | -1], out [dx?, dw?, db?];
//                        ints [M, K, N, w_transposed (0: w is K×N, Keras; 1: N×K, torch),
//                        outputs (1 dx, 2 dw, 4 db), accumulate]. dx needs w, dw x.
#include <string>

#include "engine/grad.h"
#include "runtime/registry.h"

namespace engine {
namespace {

std::string str(std::int64_t v) { return std::to_string(v); }

void check_f32(const StepSpec& s) {
  if (s.in_types.size() != s.in.size()) return;  // callers that do not state types
  for (size_t k = 0; k < s.in.size(); ++k)
    ENGINE_CHECK(s.in[k] < 0 || s.in_types[k] == DType::F32,
                 s.name + ": input " + str(static_cast<std::int64_t>(k)) + " must be float32, got " +
                     dtype_name(s.in_types[k]));
}

bool flag(const StepSpec& s, size_t k, const char* what) {
  ENGINE_CHECK(s.i(k) == 0 || s.i(k) == 1, s.name + ": " + what + " must be 0 or 1, got " + str(s.i(k)));
  return s.i(k) != 0;
}

// Output slots for a mask over n outputs: -1 where not wanted. The out list must hold one slot
// per set bit.
std::vector<int> masked_outputs(const StepSpec& s, std::int64_t mask, int n) {
  ENGINE_CHECK(mask > 0 && mask < (1 << n), s.name + ": outputs mask must be 1 to " + str((1 << n) - 1) + ", got " +
                                                str(mask));
  std::vector<int> slots(n, -1);
  size_t used = 0;
  for (int k = 0; k < n; ++k)
    if (mask >> k & 1) {
      ENGINE_CHECK(used < s.out.size(), s.name + ": outputs mask " + str(mask) + " wants " + str(__builtin_popcountll(mask)) +
                                            " outputs, got " + str(static_cast<std::int64_t>(s.out.size())));
      slots[k] = s.out[used++];
    }
  ENGINE_CHECK(used == s.out.size(), s.name + ": outputs mask " + str(mask) + " wants " + str(static_cast<std::int64_t>(used)) +
                                         " outputs, got " + str(static_cast<std::int64_t>(s.out.size())));
  return slots;
}

void need_input(const StepSpec& s, size_t k, const char* what, const char* for_what) {
  ENGINE_CHECK(s.in[k] >= 0, s.name + ": " + for_what + " needs " + what + " (input " + str(static_cast<std::int64_t>(k)) + ")");
}

float* out_ptr(void* const* sl, int k) { return k >= 0 ? slot<float>(sl, k) : nullptr; }
const float* in_ptr(void* const* sl, int k) { return k >= 0 ? slot<const float>(sl, k) : nullptr; }

StepFn bias_grad(const StepSpec& s) {
  s.expect(1, 1, 3);
  const index_t rows = s.i(0), cols = s.i(1);
  ENGINE_CHECK(rows >= 0 && cols >= 0, "bias_grad: negative size");
  const bool acc = flag(s, 2, "accumulate");
  ENGINE_CHECK(s.in[0] >= 0, "bias_grad: dy is required");
  check_f32(s);
  const int dy = s.in[0], db = s.out[0];
  return [=](void* const* sl) { column_sums(slot<float>(sl, db), slot<const float>(sl, dy), rows, cols, acc); };
}

StepFn matmul_grad(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 3 && s.ints.size() == 10 && s.floats.empty(),
               "matmul_grad: expected inputs [dc, a, b] and 10 ints [batch, M, N, K, trans_a, trans_b, "
               "a_batch_stride, b_batch_stride, outputs, accumulate]");
  MatMulGrad g;
  g.batch = s.i(0), g.M = s.i(1), g.N = s.i(2), g.K = s.i(3);
  g.trans_a = flag(s, 4, "trans_a"), g.trans_b = flag(s, 5, "trans_b");
  g.a_stride = s.i(6), g.b_stride = s.i(7);
  g.validate();
  const auto outs = masked_outputs(s, s.i(8), 2);
  const bool acc = flag(s, 9, "accumulate");
  ENGINE_CHECK(s.in[0] >= 0, "matmul_grad: dc is required");
  if (outs[0] >= 0) need_input(s, 2, "b", "da");
  if (outs[1] >= 0) need_input(s, 1, "a", "db");
  check_f32(s);
  const int dc = s.in[0], a = s.in[1], b = s.in[2], da = outs[0], db = outs[1];
  return [=](void* const* sl) {
    matmul_backward(out_ptr(sl, da), out_ptr(sl, db), slot<const float>(sl, dc), in_ptr(sl, a), in_ptr(sl, b), g, acc);
  };
}

StepFn dense_grad(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 3 && s.ints.size() == 6 && s.floats.empty(),
               "dense_grad: expected inputs [dy, x, w] and 6 ints [M, K, N, w_transposed, outputs, accumulate]");
  MatMulGrad g;
  g.M = s.i(0), g.K = s.i(1), g.N = s.i(2);
  g.trans_b = flag(s, 3, "w_transposed");
  g.validate();
  const auto outs = masked_outputs(s, s.i(4), 3);
  const bool acc = flag(s, 5, "accumulate");
  ENGINE_CHECK(s.in[0] >= 0, "dense_grad: dy is required");
  if (outs[0] >= 0) need_input(s, 2, "w", "dx");
  if (outs[1] >= 0) need_input(s, 1, "x", "dw");
  check_f32(s);
  const int dy = s.in[0], x = s.in[1], w = s.in[2], dx = outs[0], dw = outs[1], db = outs[2];
  return [=](void* const* sl) {
    const float* gy = slot<const float>(sl, dy);
    if (dx >= 0 || dw >= 0) matmul_backward(out_ptr(sl, dx), out_ptr(sl, dw), gy, in_ptr(sl, x), in_ptr(sl, w), g, acc);
    if (db >= 0) column_sums(slot<float>(sl, db), gy, g.M, g.N, acc);
  };
}

}  // namespace

void register_grad_layer_steps(KernelRegistry& r) {
  r.add("bias_grad", DType::F32, bias_grad);
  r.add("matmul_grad", DType::F32, matmul_grad);
  r.add("dense_grad", DType::F32, dense_grad);
}

}  // namespace engine
