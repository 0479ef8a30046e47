#include "runtime/program.h"

#include <cstdlib>
#include <cstring>
#include <utility>

namespace engine {

// -- ExecContext / ContextPool ------------------------------------------------------------

ExecContext::~ExecContext() { std::free(arena_); }

std::byte* ExecContext::arena(size_t bytes) {
  if (bytes > capacity_) {
    std::free(arena_);
    arena_ = nullptr;
    capacity_ = 0;
    const size_t rounded = (bytes + 63) / 64 * 64;
    arena_ = static_cast<std::byte*>(std::aligned_alloc(64, rounded));
    if (!arena_) throw std::bad_alloc();
    capacity_ = rounded;
  }
  return arena_;
}

void ExecContext::shrink_to(size_t bytes) {
  if (capacity_ > bytes) {
    std::free(arena_);
    arena_ = nullptr;
    capacity_ = 0;
  }
}

std::unique_ptr<ExecContext> ContextPool::acquire() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!idle_.empty()) {
      auto ctx = std::move(idle_.back());
      idle_.pop_back();
      return ctx;
    }
  }
  return std::make_unique<ExecContext>();
}

void ContextPool::release(std::unique_ptr<ExecContext> ctx, size_t bytes_used) {
  if (ctx->arena_capacity() > kShrinkAbove && ctx->arena_capacity() / 4 > bytes_used) ctx->shrink_to(bytes_used);
  std::lock_guard<std::mutex> lk(mu_);
  if (static_cast<int>(idle_.size()) < max_idle_) idle_.push_back(std::move(ctx));
  // else: dropped here, its arena freed (more threads ran at once than we keep contexts for)
}

size_t ContextPool::idle() const {
  std::lock_guard<std::mutex> lk(mu_);
  return idle_.size();
}

size_t ContextPool::idle_bytes() const {
  std::lock_guard<std::mutex> lk(mu_);
  size_t total = 0;
  for (const auto& c : idle_) total += c->arena_capacity();
  return total;
}

// -- Program -------------------------------------------------------------------------------

int Program::new_slot() {
  bindings_.emplace_back();
  return static_cast<int>(bindings_.size()) - 1;
}

Program::SlotBinding& Program::binding(int slot) {
  ENGINE_CHECK(slot >= 0 && slot < static_cast<int>(bindings_.size()), "program: slot out of range");
  return bindings_[slot];
}

void Program::bind_const(int slot, const void* ptr) {
  ENGINE_CHECK(ptr != nullptr, "program: null constant");
  binding(slot) = {SlotKind::Const, ptr, 0};
}

void Program::bind_arena(int slot, size_t offset) { binding(slot) = {SlotKind::Arena, nullptr, offset}; }

void Program::set_io(std::vector<int> in_slots, std::vector<size_t> in_bytes, std::vector<int> out_slots,
                     std::vector<size_t> out_bytes) {
  ENGINE_CHECK(in_slots.size() == in_bytes.size() && out_slots.size() == out_bytes.size(),
               "program: io slot/size lists differ in length");
  for (int s : in_slots) binding(s) = {SlotKind::Io, nullptr, 0};
  for (int s : out_slots) binding(s) = {SlotKind::Io, nullptr, 0};
  input_slots_ = std::move(in_slots);
  input_bytes_ = std::move(in_bytes);
  output_slots_ = std::move(out_slots);
  output_bytes_ = std::move(out_bytes);
}

void Program::add(std::string name, Step step) {
  names_.push_back(std::move(name));
  steps_.push_back(std::move(step));
}

void Program::run(ExecContext& ctx, const void* const* inputs, void* const* outputs) const {
  std::byte* base = ctx.arena(arena_bytes_);
  std::vector<void*>& s = ctx.slots;
  s.resize(bindings_.size());
  for (size_t i = 0; i < bindings_.size(); ++i) {
    const SlotBinding& b = bindings_[i];
    s[i] = b.kind == SlotKind::Arena ? static_cast<void*>(base + b.offset) : const_cast<void*>(b.ptr);
  }
  for (size_t i = 0; i < input_slots_.size(); ++i) s[input_slots_[i]] = const_cast<void*>(inputs[i]);
  for (size_t i = 0; i < output_slots_.size(); ++i) s[output_slots_[i]] = outputs[i];
  void* const* slots = s.data();
  for (const Step& step : steps_) step(slots);
}

void Program::run(ContextPool& pool, const void* const* inputs, void* const* outputs) const {
  std::unique_ptr<ExecContext> ctx = pool.acquire();
  try {
    run(*ctx, inputs, outputs);
  } catch (...) {
    pool.release(std::move(ctx), arena_bytes_);
    throw;
  }
  pool.release(std::move(ctx), arena_bytes_);
}

// -- step builders -------------------------------------------------------------------------

namespace {
inline float* f32(void* const* s, int i) { return static_cast<float*>(s[i]); }
}  // namespace

void Program::gemm_packed(int out, int in, std::shared_ptr<const PackedMatrixB> w, index_t M,
                          std::vector<float> bias, Act act, float a, float b) {
  ENGINE_CHECK(bias.empty() || static_cast<index_t>(bias.size()) == w->N(), "gemm: bias size != N");
  add("gemm", [=, bias = std::move(bias)](void* const* s) {
    Epilogue ep{bias.empty() ? nullptr : bias.data(), false, act, a, b};
    sgemm_packed(false, M, 1.f, f32(s, in), w->K(), *w, 0.f, f32(s, out), w->N(), ep);
  });
}

void Program::matmul(int out, int lhs, int rhs, index_t batch, index_t M, index_t N, index_t K,
                     bool ta, bool tb, index_t lbs, index_t rbs) {
  add("matmul", [=](void* const* s) {
    for (index_t i = 0; i < batch; ++i)
      sgemm(ta, tb, M, N, K, 1.f, f32(s, lhs) + i * lbs, ta ? M : K, f32(s, rhs) + i * rbs, tb ? K : N, 0.f,
            f32(s, out) + i * M * N, N);
  });
}

void Program::conv2d(int out, int in, std::shared_ptr<const PackedConv2D> w, index_t batch, Act act,
                     float a, float b) {
  add("conv2d", [=](void* const* s) { conv2d_nhwc(f32(s, out), f32(s, in), *w, batch, act, a, b); });
}

void Program::conv2d_maxpool(int out, int in, std::shared_ptr<const PackedConv2D> w, index_t batch,
                             index_t ph, index_t pw, Act act, float a, float b) {
  add("conv2d_maxpool",
      [=](void* const* s) { conv2d_maxpool_nhwc(f32(s, out), f32(s, in), *w, batch, ph, pw, act, a, b); });
}

void Program::pool2d(int out, int in, const Pool2DShape& shape, bool is_max) {
  shape.validate();
  add(is_max ? "maxpool2d" : "avgpool2d", [=](void* const* s) {
    (is_max ? maxpool2d_nhwc : avgpool2d_nhwc)(f32(s, out), f32(s, in), shape);
  });
}

void Program::global_avgpool(int out, int in, index_t N, index_t HW, index_t C) {
  add("global_avgpool", [=](void* const* s) { global_avgpool_nhwc(f32(s, out), f32(s, in), N, HW, C); });
}

void Program::binary(int out, int lhs, int rhs, BinaryOp op, std::vector<index_t> shape,
                     std::vector<index_t> ls, std::vector<index_t> rs) {
  ENGINE_CHECK(shape.size() == ls.size() && shape.size() == rs.size(), "binary: rank mismatch");
  add("binary", [=, shape = std::move(shape), ls = std::move(ls), rs = std::move(rs)](void* const* s) {
    engine::binary(f32(s, out), f32(s, lhs), f32(s, rhs), op, static_cast<int>(shape.size()), shape.data(),
                   ls.data(), rs.data());
  });
}

void Program::activation(int out, int in, index_t n, Act act, float a, float b) {
  add("activation", [=](void* const* s) { engine::activation(f32(s, out), f32(s, in), n, act, a, b); });
}

void Program::softmax(int out, int in, index_t outer, index_t axis, index_t inner, bool log) {
  add(log ? "log_softmax" : "softmax",
      [=](void* const* s) { engine::softmax(f32(s, out), f32(s, in), outer, axis, inner, log); });
}

void Program::copy(int out, int in, size_t bytes) {
  add("copy", [=](void* const* s) {
    if (s[out] != s[in]) std::memcpy(s[out], s[in], bytes);
  });
}

}  // namespace engine
