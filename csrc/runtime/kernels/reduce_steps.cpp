// Reductions, ArgMax/ArgMin, CumSum, TopK, normalisations, softmax family, losses: step
// factories (see registry.h). Sizes are element counts; (outer, n, inner) is the input
// viewed with the reduced / scanned / normalised run in the middle.
//   reduce:          in [x], out [y]; ints [op (ReduceOp), outer, n, inner]
//                    (f32 f64 i8..i64 u8..u64; bool: max / min only)
//   arg_reduce:      in [x], out [y int64]; ints [outer, n, inner, is_min, select_last]
//                    (registered per input type: f32 f64 i8..i64 u8..u64)
//   cumsum:          in [x], out [y]; ints [outer, n, inner, exclusive, reverse]
//   topk:            in [x], out [values, indices int64]; ints [rows, n, k, largest]
//                    (contiguous rows; sorted best first)
//   hardmax:         in [x], out [y]; ints [outer, n, inner] (f32 f64)
//   softmax (f64):   in [x], out [y]; ints [outer, n, inner, log] (f32: elementwise_steps)
//   normalize:       in [x, scale?, bias?], out [y] or [y, mean f32, inv_std f32];
//                    ints [rows, groups, cps, seg, mode (NormMode)]; floats [eps]
//                    (see normalize_rows in engine/norm.h; f32 f64, and f16 x / y with f32
//                    scale / bias)
//   batchnorm:       in [x, scale, bias, mean, var], out [y]; ints [N, C, S]; floats [eps]
//   batchnorm_train: same inputs, out [y, running_mean, running_var]; floats [eps, momentum]
//   lrn:             in [x], out [y]; ints [N, C, S, size]; floats [alpha, beta, bias]
//   lp_norm:         in [x], out [y]; ints [outer, n, inner, p (1|2)]
//   nll_loss:        in [log_prob, target (i32|i64), weight?], out [loss];
//                    ints [N, C, D, reduction (none 0, sum 1, mean 2), has_ignore, ignore_index]
#include <cstdint>
#include <string>

#include "engine/norm.h"
#include "engine/reduce.h"
#include "runtime/kernels/families.h"
#include "runtime/registry.h"

namespace engine {
namespace {

// Calls fn(T{}) for the C++ type of a numeric element type (not bool, not float16).
template <class Fn>
StepFn with_numeric(DType t, const std::string& what, Fn&& fn) {
  switch (t) {
    case DType::F32: return fn(float{});
    case DType::F64: return fn(double{});
    case DType::I8: return fn(std::int8_t{});
    case DType::U8: return fn(std::uint8_t{});
    case DType::I16: return fn(std::int16_t{});
    case DType::U16: return fn(std::uint16_t{});
    case DType::I32: return fn(std::int32_t{});
    case DType::U32: return fn(std::uint32_t{});
    case DType::I64: return fn(std::int64_t{});
    case DType::U64: return fn(std::uint64_t{});
    default: throw Error(what + ": unsupported element type " + dtype_name(t));
  }
}

template <class Fn>
StepFn with_float(DType t, const std::string& what, Fn&& fn) {
  switch (t) {
    case DType::F32: return fn(float{});
    case DType::F64: return fn(double{});
    default: throw Error(what + ": unsupported element type " + dtype_name(t));
  }
}

void check_sizes(const std::string& what, std::initializer_list<std::int64_t> sizes) {
  for (std::int64_t v : sizes) ENGINE_CHECK(v >= 0, what + ": negative size");
}

void check_flag(const std::string& what, std::int64_t v) {
  ENGINE_CHECK(v == 0 || v == 1, what + ": flag must be 0 or 1");
}

// Inputs and outputs listed must have the kernel's element type.
void check_types(const StepSpec& s, std::initializer_list<int> ins, std::initializer_list<int> outs) {
  for (int i : ins)
    ENGINE_CHECK(s.in[i] < 0 || s.in_types[i] == s.dtype,
                 s.name + ": input " + std::to_string(i) + " must be " + dtype_name(s.dtype));
  for (int o : outs)
    ENGINE_CHECK(s.out_types[o] == s.dtype,
                 s.name + ": output " + std::to_string(o) + " must be " + dtype_name(s.dtype));
}

// -- reductions and scans ------------------------------------------------------------------

StepFn reduce_step(const StepSpec& s) {
  s.expect(1, 1, 4);
  const std::int64_t code = s.i(0);
  const index_t outer = s.i(1), n = s.i(2), inner = s.i(3);
  ENGINE_CHECK(code >= 0 && code <= static_cast<std::int64_t>(ReduceOp::SumSquare), "reduce: bad op code");
  check_sizes("reduce", {outer, n, inner});
  check_types(s, {0}, {0});
  const ReduceOp op = static_cast<ReduceOp>(code);
  const int in = s.in[0], out = s.out[0];
  if (s.dtype == DType::Bool) {
    ENGINE_CHECK(op == ReduceOp::Max || op == ReduceOp::Min, "reduce: bool supports only max and min");
    return [=](void* const* sl) { reduce(slot<bool>(sl, out), slot<const bool>(sl, in), outer, n, inner, op); };
  }
  return with_numeric(s.dtype, "reduce", [&](auto tag) -> StepFn {
    using T = decltype(tag);
    return [=](void* const* sl) { reduce(slot<T>(sl, out), slot<const T>(sl, in), outer, n, inner, op); };
  });
}

StepFn arg_reduce_step(const StepSpec& s) {
  s.expect(1, 1, 5);
  const index_t outer = s.i(0), n = s.i(1), inner = s.i(2);
  check_sizes("arg_reduce", {outer, n, inner});
  ENGINE_CHECK(n >= 1 || outer * inner == 0, "arg_reduce: empty axis");
  check_flag("arg_reduce", s.i(3));
  check_flag("arg_reduce", s.i(4));
  check_types(s, {0}, {});
  ENGINE_CHECK(s.out_types[0] == DType::I64, "arg_reduce: output must be int64");
  const bool is_min = s.i(3) != 0, last = s.i(4) != 0;
  const int in = s.in[0], out = s.out[0];
  return with_numeric(s.dtype, "arg_reduce", [&](auto tag) -> StepFn {
    using T = decltype(tag);
    return [=](void* const* sl) {
      if (outer * inner == 0) return;
      arg_reduce(slot<std::int64_t>(sl, out), slot<const T>(sl, in), outer, n, inner, is_min, last);
    };
  });
}

StepFn cumsum_step(const StepSpec& s) {
  s.expect(1, 1, 5);
  const index_t outer = s.i(0), n = s.i(1), inner = s.i(2);
  check_sizes("cumsum", {outer, n, inner});
  check_flag("cumsum", s.i(3));
  check_flag("cumsum", s.i(4));
  check_types(s, {0}, {0});
  const bool exclusive = s.i(3) != 0, reverse = s.i(4) != 0;
  const int in = s.in[0], out = s.out[0];
  return with_numeric(s.dtype, "cumsum", [&](auto tag) -> StepFn {
    using T = decltype(tag);
    return [=](void* const* sl) {
      cumsum(slot<T>(sl, out), slot<const T>(sl, in), outer, n, inner, exclusive, reverse);
    };
  });
}

StepFn topk_step(const StepSpec& s) {
  s.expect(1, 2, 4);
  const index_t rows = s.i(0), n = s.i(1), k = s.i(2);
  check_sizes("topk", {rows, n, k});
  ENGINE_CHECK(k <= n, "topk: k larger than the axis");
  check_flag("topk", s.i(3));
  check_types(s, {0}, {0});
  ENGINE_CHECK(s.out_types[1] == DType::I64, "topk: indices must be int64");
  const bool largest = s.i(3) != 0;
  const int in = s.in[0], vals = s.out[0], idx = s.out[1];
  return with_numeric(s.dtype, "topk", [&](auto tag) -> StepFn {
    using T = decltype(tag);
    return [=](void* const* sl) {
      topk(slot<T>(sl, vals), slot<std::int64_t>(sl, idx), slot<const T>(sl, in), rows, n, k, largest);
    };
  });
}

// -- softmax family and float16 ----------------------------------------------------------------

StepFn hardmax_step(const StepSpec& s) {
  s.expect(1, 1, 3);
  const index_t outer = s.i(0), n = s.i(1), inner = s.i(2);
  check_sizes("hardmax", {outer, n, inner});
  check_types(s, {0}, {0});
  const int in = s.in[0], out = s.out[0];
  return with_float(s.dtype, "hardmax", [&](auto tag) -> StepFn {
    using T = decltype(tag);
    return [=](void* const* sl) { hardmax(slot<T>(sl, out), slot<const T>(sl, in), outer, n, inner); };
  });
}

StepFn softmax_f64_step(const StepSpec& s) {
  s.expect(1, 1, 4);
  const index_t outer = s.i(0), n = s.i(1), inner = s.i(2);
  check_sizes("softmax", {outer, n, inner});
  check_flag("softmax", s.i(3));
  check_types(s, {0}, {0});
  const bool log = s.i(3) != 0;
  const int in = s.in[0], out = s.out[0];
  return [=](void* const* sl) { softmax_f64(slot<double>(sl, out), slot<const double>(sl, in), outer, n, inner, log); };
}

StepFn normalize_step(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 3 && (s.out.size() == 1 || s.out.size() == 3) && s.ints.size() == 5 &&
                   s.floats.size() == 1,
               "normalize: expected 3 inputs, 1 or 3 outputs, 5 ints and 1 float");
  const index_t rows = s.i(0), groups = s.i(1), cps = s.i(2), seg = s.i(3);
  const std::int64_t mode = s.i(4);
  check_sizes("normalize", {rows, cps, seg});
  ENGINE_CHECK(groups >= 1, "normalize: groups must be >= 1");
  ENGINE_CHECK(mode >= 0 && mode <= static_cast<std::int64_t>(NormMode::Mvn), "normalize: bad mode");
  ENGINE_CHECK(s.in[0] >= 0, "normalize: missing input");
  const bool half = s.dtype == DType::F16;
  check_types(s, {0}, {0});
  for (int i : {1, 2})
    ENGINE_CHECK(s.in[i] < 0 || s.in_types[i] == (half ? DType::F32 : s.dtype),
                 std::string("normalize: scale / bias must be ") + (half ? "float32" : dtype_name(s.dtype)));
  const bool stats = s.out.size() == 3;
  if (stats)
    ENGINE_CHECK(s.out_types[1] == DType::F32 && s.out_types[2] == DType::F32, "normalize: mean / inv_std are float32");
  const double eps = s.f(0);
  const NormMode nm = static_cast<NormMode>(mode);
  const int x = s.in[0], sc = s.in[1], b = s.in[2], y = s.out[0], m = stats ? s.out[1] : -1, v = stats ? s.out[2] : -1;
  if (half)
    return [=](void* const* sl) {
      normalize_rows_f16(slot<std::uint16_t>(sl, y), m < 0 ? nullptr : slot<float>(sl, m),
                         v < 0 ? nullptr : slot<float>(sl, v), slot<const std::uint16_t>(sl, x),
                         sc < 0 ? nullptr : slot<const float>(sl, sc), b < 0 ? nullptr : slot<const float>(sl, b), rows,
                         groups, cps, seg, eps, nm);
    };
  return with_float(s.dtype, "normalize", [&](auto tag) -> StepFn {
    using T = decltype(tag);
    return [=](void* const* sl) {
      normalize_rows(slot<T>(sl, y), m < 0 ? nullptr : slot<float>(sl, m), v < 0 ? nullptr : slot<float>(sl, v),
                     slot<const T>(sl, x), sc < 0 ? nullptr : slot<const T>(sl, sc),
                     b < 0 ? nullptr : slot<const T>(sl, b), rows, groups, cps, seg, eps, nm);
    };
  });
}

StepFn batchnorm_step(const StepSpec& s) {
  s.expect(5, 1, 3, 1);
  const index_t N = s.i(0), C = s.i(1), S = s.i(2);
  check_sizes("batchnorm", {N, C, S});
  check_types(s, {0, 1, 2, 3, 4}, {0});
  const double eps = s.f(0);
  const int x = s.in[0], sc = s.in[1], b = s.in[2], m = s.in[3], v = s.in[4], y = s.out[0];
  return with_float(s.dtype, "batchnorm", [&](auto tag) -> StepFn {
    using T = decltype(tag);
    return [=](void* const* sl) {
      batchnorm(slot<T>(sl, y), slot<const T>(sl, x), slot<const T>(sl, sc), slot<const T>(sl, b),
                slot<const T>(sl, m), slot<const T>(sl, v), N, C, S, eps);
    };
  });
}

StepFn batchnorm_train_step(const StepSpec& s) {
  s.expect(5, 3, 3, 2);
  const index_t N = s.i(0), C = s.i(1), S = s.i(2);
  check_sizes("batchnorm_train", {N, C, S});
  check_types(s, {0, 1, 2, 3, 4}, {0, 1, 2});
  const double eps = s.f(0), momentum = s.f(1);
  const int x = s.in[0], sc = s.in[1], b = s.in[2], m = s.in[3], v = s.in[4];
  const int y = s.out[0], rm = s.out[1], rv = s.out[2];
  return with_float(s.dtype, "batchnorm_train", [&](auto tag) -> StepFn {
    using T = decltype(tag);
    return [=](void* const* sl) {
      batchnorm_train(slot<T>(sl, y), slot<T>(sl, rm), slot<T>(sl, rv), slot<const T>(sl, x), slot<const T>(sl, sc),
                      slot<const T>(sl, b), slot<const T>(sl, m), slot<const T>(sl, v), N, C, S, eps, momentum);
    };
  });
}

StepFn lrn_step(const StepSpec& s) {
  s.expect(1, 1, 4, 3);
  const index_t N = s.i(0), C = s.i(1), S = s.i(2), size = s.i(3);
  check_sizes("lrn", {N, C, S});
  ENGINE_CHECK(size >= 1, "lrn: size must be >= 1");
  check_types(s, {0}, {0});
  const double alpha = s.f(0), beta = s.f(1), bias = s.f(2);
  const int x = s.in[0], y = s.out[0];
  return with_float(s.dtype, "lrn", [&](auto tag) -> StepFn {
    using T = decltype(tag);
    return [=](void* const* sl) { lrn(slot<T>(sl, y), slot<const T>(sl, x), N, C, S, size, alpha, beta, bias); };
  });
}

StepFn lp_norm_step(const StepSpec& s) {
  s.expect(1, 1, 4);
  const index_t outer = s.i(0), n = s.i(1), inner = s.i(2);
  const std::int64_t p = s.i(3);
  check_sizes("lp_norm", {outer, n, inner});
  ENGINE_CHECK(p == 1 || p == 2, "lp_norm: p must be 1 or 2");
  check_types(s, {0}, {0});
  const int x = s.in[0], y = s.out[0];
  return with_float(s.dtype, "lp_norm", [&](auto tag) -> StepFn {
    using T = decltype(tag);
    return [=](void* const* sl) {
      lp_normalize(slot<T>(sl, y), slot<const T>(sl, x), outer, n, inner, static_cast<int>(p));
    };
  });
}

// -- losses -------------------------------------------------------------------------------

StepFn nll_loss_step(const StepSpec& s) {
  s.expect(3, 1, 6);
  const index_t N = s.i(0), C = s.i(1), D = s.i(2);
  const std::int64_t red = s.i(3), ignore = s.i(5);
  check_sizes("nll_loss", {N, C, D});
  ENGINE_CHECK(red >= 0 && red <= 2, "nll_loss: bad reduction");
  check_flag("nll_loss", s.i(4));
  check_types(s, {0, 2}, {0});
  const DType tt = s.in_types[1];
  ENGINE_CHECK(tt == DType::I32 || tt == DType::I64, "nll_loss: target must be int32 or int64");
  const bool has_ignore = s.i(4) != 0;
  const LossReduction reduction = static_cast<LossReduction>(red);
  const int lp = s.in[0], t = s.in[1], w = s.in[2], out = s.out[0];
  return with_float(s.dtype, "nll_loss", [&](auto tag) -> StepFn {
    using T = decltype(tag);
    if (tt == DType::I32)
      return [=](void* const* sl) {
        nll_loss(slot<T>(sl, out), slot<const T>(sl, lp), slot<const std::int32_t>(sl, t),
                 w < 0 ? nullptr : slot<const T>(sl, w), N, C, D, reduction, has_ignore, ignore);
      };
    return [=](void* const* sl) {
      nll_loss(slot<T>(sl, out), slot<const T>(sl, lp), slot<const std::int64_t>(sl, t),
               w < 0 ? nullptr : slot<const T>(sl, w), N, C, D, reduction, has_ignore, ignore);
    };
  });
}

}  // namespace

void register_reduce_steps(KernelRegistry& r) {
  const DType numeric[] = {DType::F32, DType::F64, DType::I8,  DType::U8,  DType::I16,
                           DType::U16, DType::I32, DType::U32, DType::I64, DType::U64};
  for (DType t : numeric) {
    r.add("reduce", t, reduce_step);
    r.add("arg_reduce", t, arg_reduce_step);
    r.add("cumsum", t, cumsum_step);
    r.add("topk", t, topk_step);
  }
  r.add("reduce", DType::Bool, reduce_step);
  r.add_each("hardmax", hardmax_step, DType::F32, DType::F64);
  r.add("softmax", DType::F64, softmax_f64_step);
  r.add_each("normalize", normalize_step, DType::F32, DType::F64, DType::F16);
  r.add_each("batchnorm", batchnorm_step, DType::F32, DType::F64);
  r.add_each("batchnorm_train", batchnorm_train_step, DType::F32, DType::F64);
  r.add_each("lrn", lrn_step, DType::F32, DType::F64);
  r.add_each("lp_norm", lp_norm_step, DType::F32, DType::F64);
  r.add_each("nll_loss", nll_loss_step, DType::F32, DType::F64);
}

}  // namespace engine
