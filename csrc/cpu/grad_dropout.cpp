// Dropout in training mode (engine/grad.h): checks, the keep threshold and scale, threading.
// The Philox draws and the masking loop are in grad_act_impl.h; pieces start on multiples of
// 16 elements, so every Philox block (4 elements) is drawn whole by one thread and the mask
// does not depend on the thread count.
#include <cmath>
#include <string>

#include "cpu/grad_kernels.h"
#include "cpu/grad_util.h"
#include "engine/grad.h"

namespace engine {
namespace {

void run(float* y, std::uint8_t* mask_out, const float* x, const std::uint8_t* mask_in, index_t n, double rate,
         std::uint64_t seed, std::uint64_t step, const char* what) {
  ENGINE_CHECK(n >= 0, std::string(what) + ": n < 0");
  ENGINE_CHECK(rate >= 0 && rate < 1, std::string(what) + ": rate must be in [0, 1), got " + std::to_string(rate));
  const auto thresh = static_cast<std::uint32_t>(std::ceil(rate * 16777216.0));  // 2^24
  const auto scale = static_cast<float>(1.0 / (1.0 - rate));
  const auto& k = gradk::kernels();
  gradu::split_elems(n, mask_in ? 1 << 16 : 1 << 14, [&](index_t i0, index_t i1) {
    k.dropout(y, mask_out, x, mask_in, i0, i1, thresh, scale, seed, step);
  });
}

}  // namespace

void dropout_forward(float* y, std::uint8_t* mask, const float* x, index_t n, double rate, std::uint64_t seed,
                     std::uint64_t step) {
  run(y, mask, x, nullptr, n, rate, seed, step, "dropout_fwd");
}

void dropout_backward(float* dx, const float* dy, const std::uint8_t* mask, index_t n, double rate,
                      std::uint64_t seed, std::uint64_t step) {
  run(dx, nullptr, dy, mask, n, rate, seed, step, "dropout_grad");
}

}  // namespace engine
