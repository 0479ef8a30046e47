// The executor: a flat list of bound kernel calls over a table of buffer slots. The Python
// planner decides every buffer and parameter once per input signature; run() then only
// binds the caller's input/output pointers and calls the steps in order: no allocation,
// no shape logic, no Python.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/common.h"
#include "engine/conv.h"
#include "engine/elementwise.h"
#include "engine/gemm.h"
#include "engine/pool.h"

namespace engine {

class Program {
 public:
  using Step = std::function<void(float* const* slots)>;

  int new_slot();
  void set_slot(int slot, float* ptr);
  // Slots bound per call, with the element count each must have.
  void set_io(std::vector<int> input_slots, std::vector<index_t> input_sizes,
              std::vector<int> output_slots, std::vector<index_t> output_sizes);
  const std::vector<index_t>& input_sizes() const { return input_sizes_; }
  const std::vector<index_t>& output_sizes() const { return output_sizes_; }

  void add(std::string name, Step step);
  size_t size() const { return steps_.size(); }
  const std::string& step_name(size_t i) const { return names_[i]; }

  // Runs every step. Serialised: one plan owns one set of intermediate buffers.
  void run(const std::vector<const float*>& inputs, const std::vector<float*>& outputs);

  // Step builders (each captures its sizes; slots are resolved at run time).
  void gemm_packed(int out, int in, std::shared_ptr<const PackedMatrixB> w, index_t M,
                   std::vector<float> bias, Act act, float a, float b);
  void matmul(int out, int lhs, int rhs, index_t batch, index_t M, index_t N, index_t K,
              bool trans_a, bool trans_b, index_t lhs_batch_stride, index_t rhs_batch_stride);
  void conv2d(int out, int in, std::shared_ptr<const PackedConv2D> w, index_t batch, Act act,
              float a, float b);
  void conv2d_maxpool(int out, int in, std::shared_ptr<const PackedConv2D> w, index_t batch,
                      index_t pool_h, index_t pool_w, Act act, float a, float b);
  void pool2d(int out, int in, const Pool2DShape& s, bool is_max);
  void global_avgpool(int out, int in, index_t N, index_t HW, index_t C);
  void binary(int out, int lhs, int rhs, BinaryOp op, std::vector<index_t> shape,
              std::vector<index_t> lhs_strides, std::vector<index_t> rhs_strides);
  void activation(int out, int in, index_t n, Act act, float a, float b);
  void softmax(int out, int in, index_t outer, index_t axis, index_t inner, bool log);
  void copy(int out, int in, index_t n);

 private:
  std::vector<float*> slots_;
  std::vector<Step> steps_;
  std::vector<std::string> names_;
  std::vector<int> input_slots_, output_slots_;
  std::vector<index_t> input_sizes_, output_sizes_;
  std::mutex run_mu_;
};

}  // namespace engine
