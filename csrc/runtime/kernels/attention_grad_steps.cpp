// Attention in training (float32; engine/attention.h): step factories (see registry.h).
//
//   attention_train: in [Q, K, V, attn_mask | -1, counter | -1], out [Y, LSE]
//   attention_grad:  in [Q, K, V, Y, dY, LSE, attn_mask | -1, counter | -1], out [dQ, dK, dV]
//     ints [batch, q_heads, kv_heads, q_len, kv_len, head_dim, v_head_dim, in3d, is_causal, left_window,
//           right_window, mask_kind (0 none, 1 bool, 2 additive), mask_len, mask_sb, mask_sh, mask_sq,
//           mask_elems, seed]
//     floats [scale, dropout rate]
//     Q/K/V/Y and their gradients are (batch, heads, seq, dim), or (batch, seq, heads·dim) when in3d;
//     LSE (batch, q_heads, q_len): each row's log-sum-exp, which attention_grad recomputes the
//     probabilities from. counter: the step (int64[1] or the optimizers' float64 hyper buffer), read
//     at run time; with (seed, step) it draws the dropout mask, in attention_grad again. 0 <= rate < 1.
//   attention_dropout_mask: in [counter | -1], out [M (batch, q_heads, q_len, kv_len)];
//     ints [batch, q_heads, q_len, kv_len, seed]; floats [rate]. M: the multipliers (0 or
//     1/(1 − rate)) the two steps above apply for the same seed and step; for tests.
#include <string>

#include "engine/attention.h"
#include "runtime/kernels/grad_step_util.h"
#include "runtime/registry.h"

namespace engine {
namespace {

using namespace gradstep;

HeadView<float> view(void* p, bool in3d, index_t heads, index_t seq, index_t dim) {
  HeadView<float> v{static_cast<float*>(p), heads * seq * dim, seq * dim, dim};
  if (in3d) v.sb = seq * heads * dim, v.sh = dim, v.sr = heads * dim;
  return v;
}
HeadView<const float> cview(void* p, bool in3d, index_t heads, index_t seq, index_t dim) {
  const HeadView<float> v = view(p, in3d, heads, seq, dim);
  return {v.data, v.sb, v.sh, v.sr};
}

// The parameters both training steps share; `mask_at`/`counter_at`: their input positions.
struct TrainSpec {
  AttentionDims dims;
  AttentionMask mask;
  AttentionOptions opt;
  bool in3d = false;
  int mask_slot = -1;
  StepCounter counter;

  TrainSpec(const StepSpec& s, size_t mask_at, size_t counter_at) {
    s.expect(counter_at + 1, s.out.size(), 18, 2);
    const index_t B = s.i(0), Hq = s.i(1), Hkv = s.i(2), Sq = s.i(3), L = s.i(4), D = s.i(5), Dv = s.i(6);
    ENGINE_CHECK(B >= 0 && Hq >= 0 && Hkv > 0 && Hq % Hkv == 0 && Sq >= 0 && L >= 0 && D >= 0 && Dv >= 0,
                 s.name + ": bad sizes");
    dims = {B, Hq, Hkv, Sq, L, D, Dv};
    in3d = flag(s, 7, "in3d");
    opt.causal = flag(s, 8, "is_causal");
    opt.left_window = std::min<index_t>(s.i(9), L + Sq), opt.right_window = std::min<index_t>(s.i(10), L + Sq);
    ENGINE_CHECK(opt.left_window >= -1 && opt.right_window >= -1, s.name + ": bad window");
    const std::int64_t kind = s.i(11);
    mask_slot = s.in[mask_at];
    ENGINE_CHECK(kind >= 0 && kind <= 2 && (kind == 0) == (mask_slot < 0), s.name + ": bad mask kind");
    mask.boolean = kind == 1;
    mask.len = s.i(12), mask.sb = s.i(13), mask.sh = s.i(14), mask.sq = s.i(15);
    ENGINE_CHECK(mask.len >= 0 && mask.len <= L && mask.sb >= 0 && mask.sh >= 0 && mask.sq >= 0,
                 s.name + ": bad mask layout");
    if (kind && B && Hq && Sq && mask.len)  // the last element the broadcast view reads lies inside the mask
      ENGINE_CHECK((B - 1) * mask.sb + (Hq - 1) * mask.sh + (Sq - 1) * mask.sq + mask.len <= s.i(16),
                   s.name + ": mask layout exceeds the mask");
    if (kind && s.in_types.size() == s.in.size())
      ENGINE_CHECK(s.in_types[mask_at] == (kind == 1 ? DType::Bool : DType::F32),
                   s.name + ": attn_mask must be " + (kind == 1 ? "bool" : "float32"));
    opt.dropout.seed = static_cast<std::uint64_t>(s.i(17));
    opt.scale = s.f(0), opt.dropout.rate = s.f(1);
    ENGINE_CHECK(opt.dropout.rate >= 0 && opt.dropout.rate < 1,
                 s.name + ": dropout rate must be in [0, 1), got " + std::to_string(opt.dropout.rate));
    counter = step_counter(s, counter_at);
    ENGINE_CHECK(!(opt.dropout.rate > 0) || counter.at >= 0, s.name + ": dropout needs the step counter");
    for (size_t k = 0; k < mask_at; ++k) ENGINE_CHECK(s.in[k] >= 0, s.name + ": input " + str(k) + " is required");
    if (s.in_types.size() == s.in.size())
      for (size_t k = 0; k < mask_at; ++k)
        ENGINE_CHECK(s.in_types[k] == DType::F32, s.name + ": input " + str(k) + " must be float32, got " +
                                                      dtype_name(s.in_types[k]));
  }

  // The options and mask for one run (the step and the mask's address are known then).
  void bind(void* const* sl, AttentionMask& m, AttentionOptions& o) const {
    m = mask, o = opt;
    m.data = mask_slot >= 0 ? sl[mask_slot] : nullptr;
    o.dropout.step = counter.read(sl);
  }
};

StepFn attention_train(const StepSpec& s) {
  const TrainSpec t(s, 3, 4);
  ENGINE_CHECK(s.out.size() == 2, "attention_train: expected outputs [Y, LSE]");
  const AttentionDims d = t.dims;
  const int q = s.in[0], k = s.in[1], v = s.in[2], y = s.out[0], lse = s.out[1];
  return [=](void* const* sl) {
    AttentionMask m;
    AttentionOptions o;
    t.bind(sl, m, o);
    o.lse = slot<float>(sl, lse);
    attention<float>(view(sl[y], t.in3d, d.q_heads, d.q_len, d.v_head_dim), HeadView<float>{},
                     cview(sl[q], t.in3d, d.q_heads, d.q_len, d.head_dim),
                     cview(sl[k], t.in3d, d.kv_heads, d.kv_len, d.head_dim),
                     cview(sl[v], t.in3d, d.kv_heads, d.kv_len, d.v_head_dim), d, m, o);
  };
}

StepFn attention_grad(const StepSpec& s) {
  const TrainSpec t(s, 6, 7);
  ENGINE_CHECK(s.out.size() == 3, "attention_grad: expected outputs [dQ, dK, dV]");
  const AttentionDims d = t.dims;
  const int q = s.in[0], k = s.in[1], v = s.in[2], y = s.in[3], dy = s.in[4], lse = s.in[5];
  const int dq = s.out[0], dk = s.out[1], dv = s.out[2];
  return [=](void* const* sl) {
    AttentionMask m;
    AttentionOptions o;
    t.bind(sl, m, o);
    const bool in3d = t.in3d;
    attention_backward(view(sl[dq], in3d, d.q_heads, d.q_len, d.head_dim),
                       view(sl[dk], in3d, d.kv_heads, d.kv_len, d.head_dim),
                       view(sl[dv], in3d, d.kv_heads, d.kv_len, d.v_head_dim),
                       cview(sl[q], in3d, d.q_heads, d.q_len, d.head_dim),
                       cview(sl[k], in3d, d.kv_heads, d.kv_len, d.head_dim),
                       cview(sl[v], in3d, d.kv_heads, d.kv_len, d.v_head_dim),
                       cview(sl[y], in3d, d.q_heads, d.q_len, d.v_head_dim),
                       cview(sl[dy], in3d, d.q_heads, d.q_len, d.v_head_dim), slot<const float>(sl, lse), d, m, o);
  };
}

StepFn attention_dropout_mask_step(const StepSpec& s) {
  s.expect(1, 1, 5, 1);
  AttentionDims d;
  d.batch = s.i(0), d.q_heads = s.i(1), d.q_len = s.i(2), d.kv_len = s.i(3);
  ENGINE_CHECK(d.batch >= 0 && d.q_heads >= 0 && d.q_len >= 0 && d.kv_len >= 0, "attention_dropout_mask: bad sizes");
  AttentionDropout drop;
  drop.seed = static_cast<std::uint64_t>(s.i(4)), drop.rate = s.f(0);
  const StepCounter counter = step_counter(s, 0);
  const int out = s.out[0];
  return [=](void* const* sl) {
    AttentionDropout dr = drop;
    dr.step = counter.read(sl);
    attention_dropout_mask(slot<float>(sl, out), d, dr);
  };
}

}  // namespace

void register_attention_grad_steps(KernelRegistry& r) {
  r.add("attention_train", DType::F32, attention_train);
  r.add("attention_grad", DType::F32, attention_grad);
  r.add("attention_dropout_mask", DType::F32, attention_dropout_mask_step);
}

}  // namespace engine
