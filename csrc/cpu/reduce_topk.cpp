// TopK over contiguous rows (see engine/reduce.h). Small k: each row keeps its k best in a
// binary heap built in the output row itself (worst at the root, so most candidates cost one
// comparison), then heap-sorts it in place: O(n log k), no memory besides the outputs.
// Large k: a selection (nth_element) over the row's indices in a thread-local buffer that
// grows to the longest row once, then a sort of the k selected: O(n + k log k).
// Order: the larger (smaller) value first, equal values by lower index; NaN ranks above
// every number (numpy's sort order, which the ONNX reference uses). The order is total, so
// the standard algorithms get a valid comparator.
#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "cpu/reduce_kernels.h"
#include "engine/scratch.h"

namespace engine {
namespace {

template <class T>
struct Rank {
  bool largest;
  // a ranks strictly above b in the value order, NaN highest.
  static bool above(T a, T b) { return a > b || (rd::is_nan(a) && !rd::is_nan(b)); }
  // (va, ia) comes before (vb, ib) in the output.
  bool before(T va, std::int64_t ia, T vb, std::int64_t ib) const {
    if (largest ? above(va, vb) : above(vb, va)) return true;
    if (largest ? above(vb, va) : above(va, vb)) return false;
    return ia < ib;  // equal (or both NaN)
  }
};

template <class T>
class RowHeap {
 public:
  RowHeap(T* v, std::int64_t* i, Rank<T> rank) : v_(v), i_(i), rank_(rank) {}

  // Restores the heap below `pos` in [0, size): every parent comes after its children.
  void sift_down(index_t pos, index_t size) {
    for (;;) {
      index_t worst = pos;
      const index_t l = 2 * pos + 1, r = l + 1;
      if (l < size && after(l, worst)) worst = l;
      if (r < size && after(r, worst)) worst = r;
      if (worst == pos) return;
      swap(pos, worst);
      pos = worst;
    }
  }
  void swap(index_t a, index_t b) {
    std::swap(v_[a], v_[b]);
    std::swap(i_[a], i_[b]);
  }
  // Element a comes after element b in the output.
  bool after(index_t a, index_t b) const { return rank_.before(v_[b], i_[b], v_[a], i_[a]); }
  bool beats_root(T v, std::int64_t i) const { return rank_.before(v, i, v_[0], i_[0]); }
  void set(index_t pos, T v, std::int64_t i) {
    v_[pos] = v;
    i_[pos] = i;
  }

 private:
  T* v_;
  std::int64_t* i_;
  Rank<T> rank_;
};

template <class T>
void topk_row(T* vals, std::int64_t* idx, const T* x, index_t n, index_t k, Rank<T> rank) {
  RowHeap<T> h(vals, idx, rank);
  for (index_t i = 0; i < k; ++i) h.set(i, x[i], i);
  for (index_t p = k / 2; p-- > 0;) h.sift_down(p, k);
  // Most candidates lose to the root; a plain compare rules them out (a later index loses a
  // tie; NaN compares false and takes the full test).
  T root = vals[0];
  for (index_t i = k; i < n; ++i) {
    const T v = x[i];
    if (rank.largest ? v <= root : v >= root) continue;
    if (h.beats_root(v, i)) {
      h.set(0, v, i);
      h.sift_down(0, k);
      root = vals[0];
    }
  }
  // Heap sort: the root (worst) goes to the end each round, leaving the best first.
  for (index_t size = k; size > 1; --size) {
    h.swap(0, size - 1);
    h.sift_down(0, size - 1);
  }
}

// Above this k the selection beats the heap.
constexpr index_t kHeapMaxK = 64;

template <class T>
void topk_select(T* vals, std::int64_t* idx, const T* x, index_t n, index_t k, Rank<T> rank) {
  std::int64_t* order = thread_scratch<std::int64_t, kScratchTopK>(static_cast<size_t>(n));
  for (index_t i = 0; i < n; ++i) order[i] = i;
  auto before = [&](std::int64_t a, std::int64_t b) { return rank.before(x[a], a, x[b], b); };
  if (k < n) std::nth_element(order, order + k, order + n, before);
  std::sort(order, order + k, before);
  for (index_t i = 0; i < k; ++i) {
    idx[i] = order[i];
    vals[i] = x[order[i]];
  }
}

}  // namespace

template <class T>
void topk(T* values, std::int64_t* indices, const T* x, index_t rows, index_t n, index_t k, bool largest) {
  ENGINE_CHECK(rows >= 0 && n >= 0 && k >= 0 && k <= n, "topk: bad sizes");
  if (rows == 0 || k == 0) return;
  const Rank<T> rank{largest};
  auto run = [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      if (k <= kHeapMaxK)
        topk_row(values + r * k, indices + r * k, x + r * n, n, k, rank);
      else
        topk_select(values + r * k, indices + r * k, x + r * n, n, k, rank);
    }
  };
  // A row costs about n + k log k comparisons; keep a task above ~kGrain / 4 of them.
  const index_t cost = n + k * 8;
  if (rows * cost <= rd::kGrain / 4) return run(0, rows);
  parallel_for(rows, std::max<index_t>(1, rd::kGrain / 4 / cost), run);
}

#define RD_TOPK(T) template void topk<T>(T*, std::int64_t*, const T*, index_t, index_t, index_t, bool);
RD_TOPK(float)
RD_TOPK(double)
RD_TOPK(std::int8_t)
RD_TOPK(std::uint8_t)
RD_TOPK(std::int16_t)
RD_TOPK(std::uint16_t)
RD_TOPK(std::int32_t)
RD_TOPK(std::uint32_t)
RD_TOPK(std::int64_t)
RD_TOPK(std::uint64_t)
#undef RD_TOPK

}  // namespace engine
