#include "runtime/program.h"

#include <cstring>
#include <utility>

namespace engine {

int Program::new_slot() {
  slots_.push_back(nullptr);
  return static_cast<int>(slots_.size()) - 1;
}

void Program::set_slot(int slot, float* ptr) {
  ENGINE_CHECK(slot >= 0 && slot < static_cast<int>(slots_.size()), "program: slot out of range");
  slots_[slot] = ptr;
}

void Program::set_io(std::vector<int> in_slots, std::vector<index_t> in_sizes,
                     std::vector<int> out_slots, std::vector<index_t> out_sizes) {
  ENGINE_CHECK(in_slots.size() == in_sizes.size() && out_slots.size() == out_sizes.size(),
               "program: io slot/size lists differ in length");
  for (int s : in_slots) set_slot(s, nullptr);
  for (int s : out_slots) set_slot(s, nullptr);
  input_slots_ = std::move(in_slots);
  input_sizes_ = std::move(in_sizes);
  output_slots_ = std::move(out_slots);
  output_sizes_ = std::move(out_sizes);
}

void Program::add(std::string name, Step step) {
  names_.push_back(std::move(name));
  steps_.push_back(std::move(step));
}

void Program::run(const std::vector<const float*>& inputs, const std::vector<float*>& outputs) {
  ENGINE_CHECK(inputs.size() == input_slots_.size() && outputs.size() == output_slots_.size(),
               "program: wrong number of inputs or outputs");
  std::lock_guard<std::mutex> lock(run_mu_);
  for (size_t i = 0; i < inputs.size(); ++i) slots_[input_slots_[i]] = const_cast<float*>(inputs[i]);
  for (size_t i = 0; i < outputs.size(); ++i) slots_[output_slots_[i]] = outputs[i];
  float* const* s = slots_.data();
  for (const Step& step : steps_) step(s);
}

void Program::gemm_packed(int out, int in, std::shared_ptr<const PackedMatrixB> w, index_t M,
                          std::vector<float> bias, Act act, float a, float b) {
  ENGINE_CHECK(bias.empty() || static_cast<index_t>(bias.size()) == w->N(), "gemm: bias size != N");
  add("gemm", [=, bias = std::move(bias)](float* const* s) {
    Epilogue ep{bias.empty() ? nullptr : bias.data(), false, act, a, b};
    sgemm_packed(false, M, 1.f, s[in], w->K(), *w, 0.f, s[out], w->N(), ep);
  });
}

void Program::matmul(int out, int lhs, int rhs, index_t batch, index_t M, index_t N, index_t K,
                     bool ta, bool tb, index_t lbs, index_t rbs) {
  add("matmul", [=](float* const* s) {
    for (index_t i = 0; i < batch; ++i)
      sgemm(ta, tb, M, N, K, 1.f, s[lhs] + i * lbs, ta ? M : K, s[rhs] + i * rbs, tb ? K : N, 0.f,
            s[out] + i * M * N, N);
  });
}

void Program::conv2d(int out, int in, std::shared_ptr<const PackedConv2D> w, index_t batch, Act act,
                     float a, float b) {
  add("conv2d", [=](float* const* s) { conv2d_nhwc(s[out], s[in], *w, batch, act, a, b); });
}

void Program::conv2d_maxpool(int out, int in, std::shared_ptr<const PackedConv2D> w, index_t batch,
                             index_t ph, index_t pw, Act act, float a, float b) {
  add("conv2d_maxpool", [=](float* const* s) { conv2d_maxpool_nhwc(s[out], s[in], *w, batch, ph, pw, act, a, b); });
}

void Program::pool2d(int out, int in, const Pool2DShape& shape, bool is_max) {
  shape.validate();
  add(is_max ? "maxpool2d" : "avgpool2d", [=](float* const* s) {
    (is_max ? maxpool2d_nhwc : avgpool2d_nhwc)(s[out], s[in], shape);
  });
}

void Program::global_avgpool(int out, int in, index_t N, index_t HW, index_t C) {
  add("global_avgpool", [=](float* const* s) { global_avgpool_nhwc(s[out], s[in], N, HW, C); });
}

void Program::binary(int out, int lhs, int rhs, BinaryOp op, std::vector<index_t> shape,
                     std::vector<index_t> ls, std::vector<index_t> rs) {
  ENGINE_CHECK(shape.size() == ls.size() && shape.size() == rs.size(), "binary: rank mismatch");
  add("binary", [=, shape = std::move(shape), ls = std::move(ls), rs = std::move(rs)](float* const* s) {
    engine::binary(s[out], s[lhs], s[rhs], op, static_cast<int>(shape.size()), shape.data(), ls.data(), rs.data());
  });
}

void Program::activation(int out, int in, index_t n, Act act, float a, float b) {
  add("activation", [=](float* const* s) { engine::activation(s[out], s[in], n, act, a, b); });
}

void Program::softmax(int out, int in, index_t outer, index_t axis, index_t inner, bool log) {
  add(log ? "log_softmax" : "softmax",
      [=](float* const* s) { engine::softmax(s[out], s[in], outer, axis, inner, log); });
}

void Program::copy(int out, int in, index_t n) {
  add("copy", [=](float* const* s) {
    if (s[out] != s[in]) std::memcpy(s[out], s[in], static_cast<size_t>(n) * sizeof(float));
  });
}

}  // namespace engine
