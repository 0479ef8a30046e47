#include "runtime/program.h"

#include "engine/cpu_features.h"
#include "engine/scratch.h"

#include <chrono>
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

void Program::set_io(std::vector<IoSpec> inputs, std::vector<IoSpec> outputs) {
  for (const IoSpec& io : inputs) binding(io.slot) = {SlotKind::Io, nullptr, 0};
  for (const IoSpec& io : outputs) binding(io.slot) = {SlotKind::Io, nullptr, 0};
  inputs_ = std::move(inputs);
  outputs_ = std::move(outputs);
}

void Program::add_step(const StepSpec& spec) {
  for (int i : spec.in) ENGINE_CHECK(i >= -1 && i < static_cast<int>(bindings_.size()), spec.name + ": bad input slot");
  for (int o : spec.out) ENGINE_CHECK(o >= 0 && o < static_cast<int>(bindings_.size()), spec.name + ": bad output slot");
  StepFactory make = kernel_registry().find(spec.name, spec.dtype, cpu_isa());
  ENGINE_CHECK(make != nullptr, std::string("no kernel '") + spec.name + "' for " + dtype_name(spec.dtype));
  Step step = make(spec);
  names_.push_back(spec.name);
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
  for (size_t i = 0; i < inputs_.size(); ++i) s[inputs_[i].slot] = const_cast<void*>(inputs[i]);
  for (size_t i = 0; i < outputs_.size(); ++i) s[outputs_[i].slot] = outputs[i];
  void* const* slots = s.data();
  for (const Step& step : steps_) step(slots);
}

void Program::run_timed(ContextPool& pool, const void* const* inputs, void* const* outputs,
                        std::vector<double>& times) const {
  std::unique_ptr<ExecContext> ctx = pool.acquire();
  std::byte* base = ctx->arena(arena_bytes_);
  std::vector<void*>& s = ctx->slots;
  s.resize(bindings_.size());
  for (size_t i = 0; i < bindings_.size(); ++i)
    s[i] = bindings_[i].kind == SlotKind::Arena ? static_cast<void*>(base + bindings_[i].offset)
                                                : const_cast<void*>(bindings_[i].ptr);
  for (size_t i = 0; i < inputs_.size(); ++i) s[inputs_[i].slot] = const_cast<void*>(inputs[i]);
  for (size_t i = 0; i < outputs_.size(); ++i) s[outputs_[i].slot] = outputs[i];
  times.assign(steps_.size(), 0.0);
  try {
    for (size_t i = 0; i < steps_.size(); ++i) {
      auto t0 = std::chrono::steady_clock::now();
      steps_[i](s.data());
      times[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
  } catch (...) {
    pool.release(std::move(ctx), arena_bytes_);
    trim_thread_scratch();
    throw;
  }
  pool.release(std::move(ctx), arena_bytes_);
  trim_thread_scratch();  // a top-level call: no kernel of this thread holds its scratch now
}

void Program::run(ContextPool& pool, const void* const* inputs, void* const* outputs) const {
  std::unique_ptr<ExecContext> ctx = pool.acquire();
  try {
    run(*ctx, inputs, outputs);
  } catch (...) {
    pool.release(std::move(ctx), arena_bytes_);
    trim_thread_scratch();
    throw;
  }
  pool.release(std::move(ctx), arena_bytes_);
  trim_thread_scratch();  // a top-level call: no kernel of this thread holds its scratch now
}

}  // namespace engine
