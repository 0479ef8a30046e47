// The executor: a flat list of bound kernel calls over a table of buffer slots. The Python
// planner decides every buffer and parameter once per input signature; a Program is then
// immutable. run() borrows an ExecContext (the arena for intermediates and the per-call slot
// table), binds the caller's input/output pointers and calls the steps in order: no
// allocation once the context has grown to the plan's size, no shape logic, no Python.
// Many threads may run one Program at once, each with its own context.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/common.h"
#include "engine/dtype.h"
#include "runtime/registry.h"

namespace engine {

// Scratch for one call at a time: the arena that holds a plan's intermediates (grown on
// demand, 64-byte aligned) and the slot table resolved for that call.
class ExecContext {
 public:
  ExecContext() = default;
  ExecContext(const ExecContext&) = delete;
  ExecContext& operator=(const ExecContext&) = delete;
  ~ExecContext();

  std::byte* arena(size_t bytes);  // at least `bytes`, grown (contents lost) if smaller
  size_t arena_capacity() const { return capacity_; }
  void shrink_to(size_t bytes);    // frees the arena if it is larger than `bytes`
  std::vector<void*> slots;

 private:
  std::byte* arena_ = nullptr;
  size_t capacity_ = 0;
};

// A model's contexts, shared by all its plans: acquire() hands out an idle context (or a new
// one), release() takes it back. At most `max_idle` idle contexts are kept; an arena much
// larger than the call that used it last is freed, so one huge batch does not pin its memory.
class ContextPool {
 public:
  explicit ContextPool(int max_idle = 4) : max_idle_(max_idle < 1 ? 1 : max_idle) {}
  std::unique_ptr<ExecContext> acquire();
  void release(std::unique_ptr<ExecContext> ctx, size_t bytes_used);
  size_t idle() const;
  size_t idle_bytes() const;

  // An idle arena above this size is freed when the call that used it needed under a quarter.
  static constexpr size_t kShrinkAbove = size_t(16) << 20;

 private:
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<ExecContext>> idle_;
  int max_idle_;
};

class Program {
 public:
  using Step = StepFn;

  int new_slot();
  void bind_const(int slot, const void* ptr);  // memory owned elsewhere (weights), fixed
  void bind_arena(int slot, size_t offset);    // byte offset into the context's arena
  void set_arena_bytes(size_t bytes) { arena_bytes_ = bytes; }
  size_t arena_bytes() const { return arena_bytes_; }
  // Slots bound per call, with the element type and byte size each buffer must have.
  struct IoSpec {
    int slot;
    DType dtype;
    size_t bytes;
  };
  void set_io(std::vector<IoSpec> inputs, std::vector<IoSpec> outputs);
  const std::vector<IoSpec>& inputs() const { return inputs_; }
  const std::vector<IoSpec>& outputs() const { return outputs_; }

  // Appends the step the kernel registry makes for `spec` (KernelError if there is no such
  // kernel or a parameter is wrong).
  void add_step(const StepSpec& spec);
  size_t size() const { return steps_.size(); }
  const std::string& step_name(size_t i) const { return names_[i]; }

  // Runs every step with `ctx` as scratch. Const: the Program itself is never written.
  void run(ExecContext& ctx, const void* const* inputs, void* const* outputs) const;
  // Borrows a context from `pool` for the call.
  void run(ContextPool& pool, const void* const* inputs, void* const* outputs) const;
  // As run, also timing each step (seconds into `times`, one per step): for profiling only.
  void run_timed(ContextPool& pool, const void* const* inputs, void* const* outputs,
                 std::vector<double>& times) const;

 private:
  enum class SlotKind : unsigned char { Unbound, Const, Arena, Io };
  struct SlotBinding {
    SlotKind kind = SlotKind::Unbound;
    const void* ptr = nullptr;  // Const
    size_t offset = 0;          // Arena
  };
  SlotBinding& binding(int slot);

  std::vector<SlotBinding> bindings_;
  std::vector<Step> steps_;
  std::vector<std::string> names_;
  std::vector<IoSpec> inputs_, outputs_;
  size_t arena_bytes_ = 0;
};

}  // namespace engine
