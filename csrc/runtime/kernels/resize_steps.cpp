// Resize and Einsum steps.
//   resize_nearest (any):     in [x, tables (int64), fill (one element)], out [y];
//                             ints [elem_size, nd, block, out_shape (nd)...]. tables: per dim,
//                             out_shape[d] element offsets into x (-1: extrapolated, write fill)
//   resize_axis (numeric T):  in [x (T|Acc), idx (int32), w (Acc), flags (uint8) or absent],
//                             out [y (T|Acc)]; ints [outer, in_len, out_len, inner, taps];
//                             floats [fill]. Acc = resize_acc_type(T); see ResizeAxis
//   resize_2d (numeric T):    in [x, idx_h, w_h, flags_h or absent, idx_w, w_w, flags_w or absent],
//                             out [y]; ints [outer, H, OH, W, OW, taps_h, taps_w]; floats [fill]:
//                             the last two axes at once (x, y of type T; see resize_2d)
//   einsum_sum (T):           in [x], out [y]; ints [nk, nr, kept shape (nk), kept strides (nk),
//                             reduced shape (nr), reduced strides (nr)]
//   einsum_bmm (T, not f32):  in [A, B], out [C]; ints [batch, M, N, K, a_batch_stride,
//                             b_batch_stride]
#include <cstdint>
#include <vector>

#include "engine/einsum.h"
#include "engine/resize.h"
#include "runtime/kernels/families.h"
#include "runtime/registry.h"

namespace engine {
namespace {

constexpr std::int64_t kMaxDims = 16;

std::vector<index_t> ints_at(const StepSpec& s, size_t from, std::int64_t n) {
  return std::vector<index_t>(s.ints.begin() + static_cast<std::ptrdiff_t>(from),
                              s.ints.begin() + static_cast<std::ptrdiff_t>(from + n));
}

StepFn resize_nearest_step(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 3 && s.out.size() == 1 && s.ints.size() >= 3, "resize_nearest: bad arguments");
  const std::int64_t elem = s.i(0), nd = s.i(1), block = s.i(2);
  ENGINE_CHECK(elem > 0 && elem <= 16 && nd >= 1 && nd <= kMaxDims && block >= 0, "resize_nearest: bad parameters");
  ENGINE_CHECK(s.ints.size() == static_cast<size_t>(3 + nd), "resize_nearest: expected 3 + nd ints");
  ENGINE_CHECK(s.in_types[1] == DType::I64, "resize_nearest: tables must be int64");
  ENGINE_CHECK(s.in[2] >= 0, "resize_nearest: missing fill value");
  std::vector<index_t> shape = ints_at(s, 3, nd);
  for (index_t d : shape) ENGINE_CHECK(d >= 0, "resize_nearest: negative dimension");
  std::vector<index_t> starts(static_cast<size_t>(nd), 0);
  for (std::int64_t d = 1; d < nd; ++d) starts[d] = starts[d - 1] + shape[d - 1];
  const int x = s.in[0], tab = s.in[1], fill = s.in[2], y = s.out[0];
  return [=](void* const* sl) {
    const std::int64_t* base = slot<const std::int64_t>(sl, tab);
    const std::int64_t* tables[kMaxDims];
    for (std::int64_t d = 0; d < nd; ++d) tables[d] = base + starts[d];
    resize_nearest(sl[y], sl[x], sl[fill], tables, shape.data(), static_cast<int>(nd), block,
                   static_cast<size_t>(elem));
  };
}

StepFn resize_axis_step(const StepSpec& s) {
  s.expect(4, 1, 5, 1);
  const DType t = s.dtype, acc = resize_acc_type(t);
  ENGINE_CHECK(resize_axis_supports(t), std::string("resize_axis: unsupported element type ") + dtype_name(t));
  const DType tx = s.in_types[0], ty = s.out_types[0];
  ENGINE_CHECK((tx == t || tx == acc) && (ty == t || ty == acc), "resize_axis: x and y must be the element type or its accumulator type");
  ENGINE_CHECK(s.in_types[1] == DType::I32 && s.in_types[2] == acc, "resize_axis: idx must be int32, w the accumulator type");
  ENGINE_CHECK(s.in[3] < 0 || s.in_types[3] == DType::U8, "resize_axis: flags must be uint8");
  ResizeAxis a;
  a.outer = s.i(0), a.in_len = s.i(1), a.out_len = s.i(2), a.inner = s.i(3), a.taps = s.i(4);
  ENGINE_CHECK(a.outer >= 0 && a.in_len >= 0 && a.out_len >= 0 && a.inner >= 0 && a.taps >= 1,
               "resize_axis: bad sizes");
  ENGINE_CHECK(a.in_len > 0 || a.out_len == 0 || a.outer == 0 || a.inner == 0, "resize_axis: empty source axis");
  ENGINE_CHECK(a.in_len <= INT32_MAX, "resize_axis: source axis too long for int32 indices");
  a.fill = s.f(0);
  const int x = s.in[0], idx = s.in[1], w = s.in[2], flags = s.in[3], y = s.out[0];
  return [=](void* const* sl) {
    ResizeAxis p = a;
    p.idx = slot<const std::int32_t>(sl, idx);
    p.w = sl[w];
    p.flags = flags >= 0 ? slot<const std::uint8_t>(sl, flags) : nullptr;
    resize_axis(sl[y], ty, sl[x], tx, t, p);
  };
}

StepFn resize_2d_step(const StepSpec& s) {
  s.expect(7, 1, 7, 1);
  const DType t = s.dtype, acc = resize_acc_type(t);
  ENGINE_CHECK(resize_axis_supports(t), std::string("resize_2d: unsupported element type ") + dtype_name(t));
  ENGINE_CHECK(s.in_types[0] == t && s.out_types[0] == t, "resize_2d: x and y must be the element type");
  for (int k : {1, 4}) {
    ENGINE_CHECK(s.in_types[k] == DType::I32 && s.in_types[k + 1] == acc,
                 "resize_2d: idx must be int32, w the accumulator type");
    ENGINE_CHECK(s.in[k + 2] < 0 || s.in_types[k + 2] == DType::U8, "resize_2d: flags must be uint8");
  }
  ResizeAxis h, w;
  h.outer = s.i(0), h.in_len = s.i(1), h.out_len = s.i(2), w.in_len = s.i(3), w.out_len = s.i(4);
  h.taps = s.i(5), w.taps = s.i(6);
  w.outer = h.outer, h.inner = w.in_len, w.inner = 1;
  ENGINE_CHECK(h.outer >= 0 && h.in_len >= 0 && h.out_len >= 0 && w.in_len >= 0 && w.out_len >= 0,
               "resize_2d: negative size");
  ENGINE_CHECK(h.taps >= 1 && h.taps <= resize_2d_max_taps() && w.taps >= 1, "resize_2d: bad tap counts");
  ENGINE_CHECK((h.in_len > 0 && w.in_len > 0) || h.outer == 0 || h.out_len == 0 || w.out_len == 0,
               "resize_2d: empty source axis");
  ENGINE_CHECK(h.in_len <= INT32_MAX && w.in_len <= INT32_MAX, "resize_2d: source axis too long for int32 indices");
  h.fill = w.fill = s.f(0);
  const int x = s.in[0], y = s.out[0];
  const std::vector<int> in(s.in.begin(), s.in.end());
  return [=](void* const* sl) {
    ResizeAxis ph = h, pw = w;
    ph.idx = slot<const std::int32_t>(sl, in[1]), ph.w = sl[in[2]];
    ph.flags = in[3] >= 0 ? slot<const std::uint8_t>(sl, in[3]) : nullptr;
    pw.idx = slot<const std::int32_t>(sl, in[4]), pw.w = sl[in[5]];
    pw.flags = in[6] >= 0 ? slot<const std::uint8_t>(sl, in[6]) : nullptr;
    resize_2d(sl[y], sl[x], t, ph, pw);
  };
}

StepFn einsum_sum_step(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 1 && s.out.size() == 1 && s.ints.size() >= 2, "einsum_sum: bad arguments");
  const std::int64_t nk = s.i(0), nr = s.i(1);
  ENGINE_CHECK(nk >= 0 && nr >= 0 && nk + nr <= kMaxDims, "einsum_sum: bad dimension counts");
  ENGINE_CHECK(s.ints.size() == static_cast<size_t>(2 + 2 * (nk + nr)), "einsum_sum: expected 2 + 2*(nk+nr) ints");
  const DType t = s.dtype;
  ENGINE_CHECK(einsum_sum_supports(t) && s.in_types[0] == t && s.out_types[0] == t, "einsum_sum: bad types");
  std::vector<index_t> ks = ints_at(s, 2, nk), kst = ints_at(s, 2 + nk, nk);
  std::vector<index_t> rs = ints_at(s, 2 + 2 * nk, nr), rst = ints_at(s, 2 + 2 * nk + nr, nr);
  for (auto* v : {&ks, &kst, &rs, &rst})
    for (index_t d : *v) ENGINE_CHECK(d >= 0, "einsum_sum: negative size or stride");
  const int x = s.in[0], y = s.out[0];
  return [=](void* const* sl) {
    einsum_sum(sl[y], sl[x], t, static_cast<int>(nk), ks.data(), kst.data(), static_cast<int>(nr), rs.data(),
               rst.data());
  };
}

StepFn einsum_bmm_step(const StepSpec& s) {
  s.expect(2, 1, 6);
  const DType t = s.dtype;
  ENGINE_CHECK(einsum_bmm_supports(t) && s.in_types[0] == t && s.in_types[1] == t && s.out_types[0] == t,
               "einsum_bmm: bad types");
  const index_t batch = s.i(0), M = s.i(1), N = s.i(2), K = s.i(3), sa = s.i(4), sb = s.i(5);
  ENGINE_CHECK(batch >= 0 && M >= 0 && N >= 0 && K >= 0 && sa >= 0 && sb >= 0, "einsum_bmm: negative size");
  const int a = s.in[0], b = s.in[1], c = s.out[0];
  return [=](void* const* sl) { einsum_bmm(sl[c], sl[a], sl[b], t, batch, M, N, K, sa, sb); };
}

}  // namespace

void register_resize_steps(KernelRegistry& r) {
  r.add("resize_nearest", DType::Any, resize_nearest_step);
  r.add_each("resize_axis", resize_axis_step, DType::F32, DType::F16, DType::F64, DType::I8, DType::U8, DType::I16,
             DType::U16, DType::I32, DType::U32, DType::I64, DType::U64);
  r.add_each("resize_2d", resize_2d_step, DType::F32, DType::F16, DType::F64, DType::I8, DType::U8, DType::I16,
             DType::U16, DType::I32, DType::U32, DType::I64, DType::U64);
  r.add_each("einsum_sum", einsum_sum_step, DType::F32, DType::F64, DType::I8, DType::U8, DType::I16, DType::U16,
             DType::I32, DType::U32, DType::I64, DType::U64);
  r.add_each("einsum_bmm", einsum_bmm_step, DType::F64, DType::I8, DType::U8, DType::I16, DType::U16, DType::I32,
             DType::U32, DType::I64, DType::U64);
}

}  // namespace engine
