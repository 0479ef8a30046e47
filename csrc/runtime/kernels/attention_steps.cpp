// Attention and RotaryEmbedding (ONNX opset 23): step factories (see registry.h). Each kernel's inputs, outputs and
// parameters are documented above its factory.
#include <cstring>
#include <string>

#include "cpu/attention_convert.h"
#include "engine/attention.h"
#include "runtime/kernels/families.h"
#include "runtime/registry.h"

namespace engine {
namespace {

struct Layout {
  index_t sb = 0, sh = 0, sr = 0;
};

// (batch, seq, heads·dim) when in3d, else (batch, heads, seq, dim).
Layout head_layout(bool in3d, index_t heads, index_t seq, index_t dim) {
  return in3d ? Layout{seq * heads * dim, dim, heads * dim} : Layout{heads * seq * dim, seq * dim, dim};
}

template <class T>
HeadView<T> view(void* p, Layout l) {
  return {static_cast<T*>(p), l.sb, l.sh, l.sr};
}

// attention (float32, float64, float16): ONNX Attention. float16 computes in float32 through the
// scratch inputs q32 … qk32 (same layouts as the values they stand for).
//   in  [Q, K, V, attn_mask, past_key, past_value, nonpad_kv_seqlen (int64), q32, k32, v32, mask32, y32, qk32]
//   out [Y, present_key, present_value (if has_present: outputs or scratch), qk_matmul_output (if has_qk)]
//   ints [batch, q_heads, kv_heads, q_len, kv_len (new keys), past_len, head_dim, v_head_dim, in3d, is_causal,
//         left_window, right_window, qk_mode, has_past, has_present, has_qk,
//         mask_kind (0 none, 1 bool, 2 additive), mask_len, mask_sb, mask_sh, mask_sq, mask_elems,
//         q_col, k_col, v_col, row_stride]
//   floats [scale, softcap]
// Q/K/V/Y are (batch, heads, seq, dim), or (batch, seq, heads·dim) when in3d; present_* and the
// past are (batch, kv_heads, seq, dim); qk (batch, q_heads, q_len, past_len + kv_len).
// row_stride > 0 (3-D, float32, no cache): Q, K and V are column ranges starting at q_col, k_col
// and v_col of rows row_stride apart — one fused QKV projection's output, read without a copy.
StepFn attention_step(const StepSpec& s) {
  s.expect(13, s.out.size(), 26, 2);
  const DType dt = s.dtype;
  ENGINE_CHECK(dt == DType::F32 || dt == DType::F64 || dt == DType::F16, "attention: float types only");
  const index_t B = s.i(0), Hq = s.i(1), Hkv = s.i(2), Sq = s.i(3), L = s.i(4), P = s.i(5), D = s.i(6), Dv = s.i(7);
  const bool in3d = s.i(8) != 0, has_past = s.i(13) != 0, has_present = s.i(14) != 0, has_qk = s.i(15) != 0;
  const index_t Lt = P + L;
  ENGINE_CHECK(B >= 0 && Hq >= 0 && Hkv > 0 && Hq % Hkv == 0 && Sq >= 0 && L >= 0 && P >= 0 && D >= 0 && Dv >= 0,
               "attention: bad sizes");
  ENGINE_CHECK(!has_past || has_present, "attention: a past cache needs present buffers");
  ENGINE_CHECK(s.out.size() == static_cast<size_t>(1 + 2 * has_present + has_qk), "attention: output count");
  AttentionOptions opt;
  opt.scale = s.f(0), opt.softcap = s.f(1);
  opt.causal = s.i(9) != 0;
  opt.left_window = std::min<index_t>(s.i(10), Lt + Sq), opt.right_window = std::min<index_t>(s.i(11), Lt + Sq);
  opt.qk_mode = static_cast<int>(s.i(12));
  opt.past_len = P;
  ENGINE_CHECK(opt.left_window >= -1 && opt.right_window >= -1 && opt.qk_mode >= 0 && opt.qk_mode <= 3,
               "attention: bad window or qk mode");
  const std::int64_t mask_kind = s.i(16);
  AttentionMask mask0;
  mask0.boolean = mask_kind == 1;
  mask0.len = s.i(17), mask0.sb = s.i(18), mask0.sh = s.i(19), mask0.sq = s.i(20);
  ENGINE_CHECK(mask_kind >= 0 && mask_kind <= 2 && (mask_kind == 0) == (s.in[3] < 0), "attention: bad mask kind");
  ENGINE_CHECK(mask0.len >= 0 && mask0.len <= Lt && mask0.sb >= 0 && mask0.sh >= 0 && mask0.sq >= 0,
               "attention: bad mask layout");
  if (mask_kind) ENGINE_CHECK(s.in_types[3] == (mask_kind == 1 ? DType::Bool : dt), "attention: attn_mask type");
  for (int i : {0, 1, 2, 4, 5})
    ENGINE_CHECK(s.in[i] < 0 || s.in_types[i] == dt, "attention: Q, K, V and the cache must share one type");
  ENGINE_CHECK(s.in[0] >= 0 && s.in[1] >= 0 && s.in[2] >= 0, "attention: Q, K, V are required");
  ENGINE_CHECK(has_past == (s.in[4] >= 0) && has_past == (s.in[5] >= 0), "attention: past_key and past_value go together");
  ENGINE_CHECK(s.in[6] < 0 || s.in_types[6] == DType::I64, "attention: nonpad_kv_seqlen must be int64");
  const bool f16 = dt == DType::F16;
  if (f16) {
    for (int i : {7, 8, 9, 11}) ENGINE_CHECK(s.in[i] >= 0 && s.in_types[i] == DType::F32, "attention: float16 scratch");
    ENGINE_CHECK(mask_kind != 2 || s.in[10] >= 0, "attention: float16 mask scratch");
    ENGINE_CHECK(!has_qk || s.in[12] >= 0, "attention: float16 qk scratch");
  }

  Layout lq = head_layout(in3d, Hq, Sq, D), lk = head_layout(in3d, Hkv, L, D), lv = head_layout(in3d, Hkv, L, Dv);
  const index_t q_col = s.i(22), k_col = s.i(23), v_col = s.i(24), ld = s.i(25);
  if (ld) {
    ENGINE_CHECK(in3d && dt == DType::F32 && !has_present && Sq == L && q_col >= 0 && k_col >= 0 && v_col >= 0 &&
                     q_col + Hq * D <= ld && k_col + Hkv * D <= ld && v_col + Hkv * Dv <= ld,
                 "attention: bad packed QKV layout");
    lq = {Sq * ld, D, ld}, lk = {L * ld, D, ld}, lv = {L * ld, Dv, ld};
  }
  const Layout ly = head_layout(in3d, Hq, Sq, Dv), lqk = head_layout(false, Hq, Sq, Lt);
  const Layout lpk = head_layout(false, Hkv, Lt, D), lpv = head_layout(false, Hkv, Lt, Dv);
  const Layout lks = has_present ? lpk : lk, lvs = has_present ? lpv : lv;  // where attention reads keys/values
  AttentionDims dims{B, Hq, Hkv, Sq, Lt, D, Dv};
  const size_t es = dtype_size(dt);
  const index_t nq = B * Hq * Sq * D, nks = has_present ? B * Hkv * Lt * D : B * L * Hkv * D;
  const index_t nvs = has_present ? B * Hkv * Lt * Dv : B * L * Hkv * Dv, ny = B * Hq * Sq * Dv;
  const index_t nqk = B * Hq * Sq * Lt;
  const int in_q = s.in[0], in_k = s.in[1], in_v = s.in[2], in_m = s.in[3], in_pk = s.in[4], in_pv = s.in[5],
            in_np = s.in[6], in_q32 = s.in[7], in_k32 = s.in[8], in_v32 = s.in[9], in_m32 = s.in[10],
            in_y32 = s.in[11], in_qk32 = s.in[12];
  const index_t mask_elems = s.i(21);
  ENGINE_CHECK(mask_elems >= 0, "attention: bad mask size");
  if (mask_kind && B && Hq && Sq && mask0.len)  // the last element the broadcast view reads lies inside the mask
    ENGINE_CHECK((B - 1) * mask0.sb + (Hq - 1) * mask0.sh + (Sq - 1) * mask0.sq + mask0.len <= mask_elems,
                 "attention: mask layout exceeds the mask");
  const int out_y = s.out[0], out_pk = has_present ? s.out[1] : -1, out_pv = has_present ? s.out[2] : -1,
            out_qk = has_qk ? s.out.back() : -1;

  // present = concat(past, new) along the sequence, per (batch, kv head).
  auto concat = [=](char* dst, const char* past, const char* cur, Layout lc, index_t dim) {
    const size_t row = static_cast<size_t>(dim) * es;
    for (index_t b = 0; b < B; ++b)
      for (index_t h = 0; h < Hkv; ++h) {
        char* d = dst + static_cast<size_t>((b * Hkv + h) * Lt) * row;
        if (P) std::memcpy(d, past + static_cast<size_t>((b * Hkv + h) * P) * row, P * row);
        for (index_t l = 0; l < L; ++l)
          std::memcpy(d + (P + l) * row, cur + (b * lc.sb + h * lc.sh + l * lc.sr) * es, row);
      }
  };

  return [=](void* const* sl) {
    if (has_present) {
      concat(static_cast<char*>(sl[out_pk]), has_past ? static_cast<const char*>(sl[in_pk]) : nullptr,
             static_cast<const char*>(sl[in_k]), lk, D);
      concat(static_cast<char*>(sl[out_pv]), has_past ? static_cast<const char*>(sl[in_pv]) : nullptr,
             static_cast<const char*>(sl[in_v]), lv, Dv);
    }
    void* ks = has_present ? sl[out_pk] : static_cast<char*>(sl[in_k]) + k_col * es;
    void* vs = has_present ? sl[out_pv] : static_cast<char*>(sl[in_v]) + v_col * es;
    AttentionOptions o = opt;
    o.nonpad_kv_seqlen = in_np >= 0 ? slot<const std::int64_t>(sl, in_np) : nullptr;
    AttentionMask m = mask0;
    m.data = in_m >= 0 ? sl[in_m] : nullptr;
    void* qk = has_qk ? sl[out_qk] : nullptr;
    if (dt == DType::F64) {
      attention<double>(view<double>(sl[out_y], ly), view<double>(qk, lqk), view<const double>(sl[in_q], lq),
                        view<const double>(ks, lks), view<const double>(vs, lvs), dims, m, o);
    } else if (dt == DType::F32) {
      attention<float>(view<float>(sl[out_y], ly), view<float>(qk, lqk),
                       view<const float>(static_cast<float*>(sl[in_q]) + q_col, lq),
                       view<const float>(ks, lks), view<const float>(vs, lvs), dims, m, o);
    } else {
      seq::convert_parallel(sl[in_q32], DType::F32, sl[in_q], DType::F16, nq);
      seq::convert_parallel(sl[in_k32], DType::F32, ks, DType::F16, nks);
      seq::convert_parallel(sl[in_v32], DType::F32, vs, DType::F16, nvs);
      if (m.data && !m.boolean) {
        seq::convert_parallel(sl[in_m32], DType::F32, m.data, DType::F16, mask_elems);
        m.data = sl[in_m32];
      }
      attention<float>(view<float>(sl[in_y32], ly), view<float>(has_qk ? sl[in_qk32] : nullptr, lqk),
                       view<const float>(sl[in_q32], lq), view<const float>(sl[in_k32], lks),
                       view<const float>(sl[in_v32], lvs), dims, m, o);
      seq::convert_parallel(sl[out_y], DType::F16, sl[in_y32], DType::F32, ny);
      if (has_qk) seq::convert_parallel(qk, DType::F16, sl[in_qk32], DType::F32, nqk);
    }
  };
}

// rotary_embedding (float32, float16): ONNX RotaryEmbedding.
//   in  [X, cos_cache, sin_cache, position_ids (int64, optional)], out [Y]
//   ints [batch, seq, heads, head_dim, rot_dim, interleaved, in3d, cache_rows]
// X/Y are (batch, heads, seq, head_dim), or (batch, seq, heads·head_dim) when in3d; the caches
// have cache_rows rows of rot_dim/2 (indexed by position_ids, else by batch·seq + s).
StepFn rotary_step(const StepSpec& s) {
  s.expect(4, 1, 8);
  const DType dt = s.dtype;
  RotaryDims d;
  d.batch = s.i(0), d.seq = s.i(1), d.heads = s.i(2), d.head_dim = s.i(3), d.rot_dim = s.i(4);
  d.interleaved = s.i(5) != 0;
  const bool in3d = s.i(6) != 0;
  const index_t rows = s.i(7);
  ENGINE_CHECK(d.batch >= 0 && d.seq >= 0 && d.heads >= 0 && d.head_dim >= 0 && rows >= 0,
               "rotary_embedding: negative size");
  ENGINE_CHECK(d.rot_dim >= 0 && d.rot_dim % 2 == 0 && d.rot_dim <= d.head_dim, "rotary_embedding: bad rotary dim");
  for (int i : {0, 1, 2}) ENGINE_CHECK(s.in_types[i] == dt && s.in[i] >= 0, "rotary_embedding: input types");
  const bool has_pos = s.in[3] >= 0;
  ENGINE_CHECK(!has_pos || s.in_types[3] == DType::I64, "rotary_embedding: position_ids must be int64");
  ENGINE_CHECK(has_pos || rows == d.batch * d.seq, "rotary_embedding: caches need batch·seq rows");
  const Layout l = head_layout(in3d, d.heads, d.seq, d.head_dim);
  const int in_x = s.in[0], in_c = s.in[1], in_s = s.in[2], in_p = s.in[3], out = s.out[0];
  const index_t npos = d.batch * d.seq;
  return [=](void* const* sl) {
    const std::int64_t* pos = has_pos ? slot<const std::int64_t>(sl, in_p) : nullptr;
    if (pos)
      for (index_t i = 0; i < npos; ++i)
        if (pos[i] < 0 || pos[i] >= rows)
          throw Error("RotaryEmbedding: position_ids value " + std::to_string(pos[i]) + " is outside [0, " +
                      std::to_string(rows) + ") (the cache's rows)");
    if (dt == DType::F32)
      rotary_embedding<float>(view<float>(sl[out], l), view<const float>(sl[in_x], l), slot<const float>(sl, in_c),
                              slot<const float>(sl, in_s), pos, d);
    else
      rotary_embedding<std::uint16_t>(view<std::uint16_t>(sl[out], l), view<const std::uint16_t>(sl[in_x], l),
                                      slot<const std::uint16_t>(sl, in_c), slot<const std::uint16_t>(sl, in_s), pos, d);
  };
}

}  // namespace

void register_attention_steps(KernelRegistry& r) {
  r.add_each("attention", attention_step, DType::F32, DType::F64, DType::F16);
  r.add_each("rotary_embedding", rotary_step, DType::F32, DType::F16);
}

}  // namespace engine
