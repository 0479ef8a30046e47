// Movement steps that are more than a strided copy (those are in copy_steps.cpp), every
// element type unless noted. The gather/scatter family registers from gather_steps.cpp.
//   pad:      in [x, value (one element)], out [y]; ints [elem, ndim, x_shape..., out_shape...,
//             then per dim out_shape[d] source indices (-1: the pad value)]
//   trilu:    in [x, k (int64 scalar) | absent], out [y]; ints [elem, batch, rows, cols, upper, k]
//             (k from the input when present)
//   onehot:   in [indices (any numeric), values ([off, on])], out [y]; ints [elem, outer, depth, inner]
//   range:    in [start, delta] (scalars of y's type), out [y]; ints [n, stash_double]
//   dropout:  in [x, ratio | absent, training_mode | absent], out [y] or [y, mask];
//             ints [bytes of x, elements of mask]. Inference only: training_mode true with a
//             ratio > 0 is an error (raised when the step runs).
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "engine/movement.h"
#include "runtime/kernels/families.h"
#include "runtime/registry.h"

namespace engine {

void register_gather_steps(KernelRegistry& r);  // gather_steps.cpp

namespace {

StepFn pad_step(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 2 && s.out.size() == 1 && s.ints.size() >= 2, "pad: bad arguments");
  const std::int64_t elem = s.i(0), nd = s.i(1);
  ENGINE_CHECK(elem > 0 && nd >= 1 && nd <= 16, "pad: bad element size or rank");
  ENGINE_CHECK(s.ints.size() >= static_cast<size_t>(2 + 2 * nd), "pad: missing shapes");
  const index_t* x_shape = s.ints.data() + 2;
  const index_t* out_shape = x_shape + nd;
  size_t table = 0;
  for (int d = 0; d < nd; ++d) {
    ENGINE_CHECK(out_shape[d] >= 0, "pad: negative output dimension");
    table += static_cast<size_t>(out_shape[d]);
  }
  ENGINE_CHECK(s.ints.size() == static_cast<size_t>(2 + 2 * nd) + table,
               "pad: expected one source index per output index");
  ENGINE_CHECK(s.in_types[1] == DType::Any || dtype_size(s.in_types[1]) == static_cast<size_t>(elem),
               "pad: the pad value must have the data's element type");
  auto layout = std::make_shared<const PadLayout>(pad_layout(static_cast<int>(nd), out_shape, x_shape, out_shape + nd));
  const int in = s.in[0], value = s.in[1], out = s.out[0];
  const size_t e = static_cast<size_t>(elem);
  return [=](void* const* sl) { pad(sl[out], sl[in], sl[value], *layout, e); };
}

StepFn trilu_step(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 2 && s.out.size() == 1, "trilu: expected inputs [x, k] and one output");
  ENGINE_CHECK(s.ints.size() == 6, "trilu: expected 6 integer parameters");
  const std::int64_t elem = s.i(0), batch = s.i(1), rows = s.i(2), cols = s.i(3), k0 = s.i(5);
  const bool upper = s.i(4) != 0;
  ENGINE_CHECK(elem > 0 && batch >= 0 && rows >= 0 && cols >= 0, "trilu: bad sizes");
  ENGINE_CHECK(s.in[1] < 0 || s.in_types[1] == DType::I64, "trilu: k must be int64");
  const int in = s.in[0], kin = s.in[1], out = s.out[0];
  const size_t e = static_cast<size_t>(elem);
  return [=](void* const* sl) {
    const index_t k = kin >= 0 ? *slot<const std::int64_t>(sl, kin) : k0;
    trilu(sl[out], sl[in], batch, rows, cols, k, upper, e);
  };
}

StepFn onehot_step(const StepSpec& s) {
  s.expect(2, 1, 4);
  const std::int64_t elem = s.i(0), outer = s.i(1), depth = s.i(2), inner = s.i(3);
  ENGINE_CHECK(elem > 0 && outer >= 0 && depth >= 0 && inner >= 0, "onehot: bad sizes");
  const DType it = s.in_types[0];
  ENGINE_CHECK(it != DType::Bool && it != DType::BF16 && dtype_size(it) > 0, "onehot: indices must be numeric");
  ENGINE_CHECK(s.in_types[1] == DType::Any || dtype_size(s.in_types[1]) == static_cast<size_t>(elem),
               "onehot: values must have the output's element type");
  const int idx = s.in[0], values = s.in[1], out = s.out[0];
  const size_t e = static_cast<size_t>(elem);
  return [=](void* const* sl) { onehot(sl[out], sl[idx], it, sl[values], outer, depth, inner, e); };
}

StepFn range_step(const StepSpec& s) {
  s.expect(2, 1, 2);
  const std::int64_t n = s.i(0);
  const bool stash_double = s.i(1) != 0;
  const DType t = s.out_types[0];
  ENGINE_CHECK(n >= 0, "range: negative length");
  ENGINE_CHECK(range_supports(t), std::string("range: unsupported element type ") + dtype_name(t));
  ENGINE_CHECK(s.in_types[0] == t && s.in_types[1] == t, "range: start and delta must have the output's type");
  const int start = s.in[0], delta = s.in[1], out = s.out[0];
  return [=](void* const* sl) { range(sl[out], t, sl[start], sl[delta], n, stash_double); };
}

double read_float(const void* p, DType t) {
  switch (t) {
    case DType::F64: return *static_cast<const double*>(p);
    case DType::F16: return static_cast<double>(*static_cast<const _Float16*>(p));
    default: return *static_cast<const float*>(p);
  }
}

StepFn dropout_step(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 3 && (s.out.size() == 1 || s.out.size() == 2) && s.ints.size() == 2,
               "dropout: expected inputs [x, ratio, training_mode], outputs [y] or [y, mask], 2 ints");
  const std::int64_t bytes = s.i(0), mask_n = s.i(1);
  ENGINE_CHECK(bytes >= 0 && mask_n >= 0, "dropout: negative size");
  const int in = s.in[0], ratio = s.in[1], training = s.in[2], out = s.out[0];
  const int mask = s.out.size() == 2 ? s.out[1] : -1;
  const DType rt = ratio >= 0 ? s.in_types[1] : DType::F32;
  ENGINE_CHECK(rt == DType::F32 || rt == DType::F64 || rt == DType::F16, "dropout: ratio must be a float");
  ENGINE_CHECK(training < 0 || s.in_types[2] == DType::Bool, "dropout: training_mode must be bool");
  return [=](void* const* sl) {
    if (training >= 0 && *slot<const std::uint8_t>(sl, training) != 0) {
      const double r = ratio >= 0 ? read_float(sl[ratio], rt) : 0.5;
      if (r != 0) throw Error("Dropout: training mode (training_mode=true, ratio " + std::to_string(r) +
                              ") is not supported; this engine runs inference only");
    }
    if (sl[out] != sl[in]) std::memcpy(sl[out], sl[in], static_cast<size_t>(bytes));
    if (mask >= 0) std::memset(sl[mask], 1, static_cast<size_t>(mask_n));
  };
}

}  // namespace

void register_movement_steps(KernelRegistry& r) {
  r.add("pad", DType::Any, pad_step);
  r.add("trilu", DType::Any, trilu_step);
  r.add("onehot", DType::Any, onehot_step);
  r.add("range", DType::Any, range_step);
  r.add("dropout", DType::Any, dropout_step);
  register_gather_steps(r);
}

}  // namespace engine
