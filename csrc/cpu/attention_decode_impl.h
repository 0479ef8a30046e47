// The decode block (see attention_decode.h), written once over the vector type of
// elementwise_vmath.h and compiled per ISA by attention_decode_{avx512,avx2,portable}.cpp, which
// include it inside their own namespace after EW_W, the standard headers and elementwise_vmath.h.
// The only include here is attention_tiles_impl.h (exp_nonpositive, the row-major P·V micro-kernel),
// which needs the same context.
//
// Layout: per row, a tile's scores are a row of S (keys along the lanes), built W keys at a time:
// W dot products accumulate in W vectors (lanes along the head dimension) and fold into one vector
// of W scores. P·V is the row-major micro-kernel: P broadcast from S, rows of V read in place, the
// accumulator (rows × dv) rescaled as each row's max grows.

#include "cpu/attention_tiles_impl.h"

// Keys per tile.
constexpr index_t kDecodeTile = 256;

// One folding step: a and b hold W/G keys each, G lanes of partial sums per key; the result holds
// a's keys then b's, G/2 lanes each (the two halves of every key's lanes added).
template <int G>
static inline vf fold_step(vf a, vf b) {
  constexpr int h = G / 2, ng = W / G;
  vi lo, hi;
  for (int l = 0; l < W; ++l) {
    const int q = l / h, src = q < ng ? 0 : W;
    lo[l] = src + (q % ng) * G + l % h, hi[l] = lo[l] + h;
  }
  return __builtin_shuffle(a, b, lo) + __builtin_shuffle(a, b, hi);
}

// x[0 .. N) hold W/G keys each (G lanes per key) -> x[0] holds all W keys' sums, in order.
template <int N, int G>
static inline void fold(vf* x) {
  if constexpr (G > 1) {
#pragma GCC unroll 8
    for (int i = 0; i < N / 2; ++i) x[i] = fold_step<G>(x[2 * i], x[2 * i + 1]);
    fold<N / 2, G / 2>(x);
  }
}

// acc[k] += Σ_c qv[c]·K[k][c·W ..] over ND vectors of the head dimension (the last holds `tail`
// lanes) for W keys k (from cnt on repeating key cnt − 1 unless Full).
template <int ND, bool Full>
static inline void dot_chunk(vf* acc, const float* q, const float* k, index_t ldk, index_t tail, index_t cnt) {
  vf qv[ND];
#pragma GCC unroll 4
  for (int c = 0; c < ND; ++c) qv[c] = load(q + c * W);  // (q is zero-padded)
#pragma GCC unroll 16
  for (int kk = 0; kk < W; ++kk) {
    const float* kr = k + (Full ? kk : std::min<index_t>(kk, cnt - 1)) * ldk;
#pragma GCC unroll 4
    for (int c = 0; c < ND; ++c)
      acc[kk] += qv[c] * (c == ND - 1 && tail < W ? load_partial(kr + c * W, tail) : load(kr + c * W));
  }
}

// Lane k: Σ_d q[d]·K[k][d] for k < cnt (later lanes repeat key cnt − 1), q zero-padded to a
// multiple of W, K rows of dk floats.
template <bool Full>
static inline vf dot_keys(const float* q, const float* k, index_t ldk, index_t dk, index_t cnt) {
  constexpr int kND = 4;  // head-dimension vectors per pass (q held in registers)
  vf acc[W];
#pragma GCC unroll 16
  for (int kk = 0; kk < W; ++kk) acc[kk] = bcast(0.f);
  for (index_t d = 0; d < dk; d += kND * W) {
    const index_t nd = std::min<index_t>(kND, (dk - d + W - 1) / W), tail = dk - d - (nd - 1) * W;
    with_count<kND>(nd, [&](auto c) { dot_chunk<decltype(c)::value, Full>(acc, q + d, k + d, ldk, tail, cnt); });
  }
  fold<W, W>(acc);
  return acc[0];
}

// `cnt` (<= W) mask values from p as a lane mask: nonzero (bool mask) -> true.
static inline vi mask_true(const std::uint8_t* p, index_t cnt) {
  typedef std::uint8_t vb __attribute__((vector_size(W)));
  vb bytes = {};
  if (cnt == W) std::memcpy(&bytes, p, W);
  else
    for (index_t l = 0; l < cnt; ++l) bytes[l] = p[l];
  return __builtin_convertvector(bytes, vi) != 0;
}

void decode_block(const DecodeBlock& f) {
  const index_t R = f.rows, dk = f.dk, dv = f.dv;
  const index_t dkp = (dk + W - 1) / W * W, dvp = (dv + W - 1) / W * W;
  const index_t tile = std::min<index_t>(kDecodeTile, f.c1 - f.c0), ls = (tile + W - 1) / W * W;
  // One scratch area: the scaled queries, the scores, the accumulators; per row on the stack: the
  // running max and sum, the tile's max (a vector), alpha and the row's keys in the tile.
  float* Qs = thread_scratch<float, kScratchAttentionDecode>(static_cast<size_t>(R) * (dkp + ls + dvp));
  float* S = Qs + R * dkp;
  float* acc = S + R * ls;
  constexpr index_t kR = DecodeBlock::kMaxRows;
  vf mt[kR];
  float M[kR], L[kR], alpha[kR];
  index_t ka[kR], kb[kR];
  for (index_t r = 0; r < R; ++r) {
    for (index_t d = 0; d < dkp; ++d) Qs[r * dkp + d] = d < dk ? f.q[r][d] * f.scale : 0.f;
    std::fill(acc + r * dvp, acc + (r + 1) * dvp, 0.f);
    M[r] = -kInf, L[r] = 0.f;
  }
  const bool cap = f.softcap > 0;
  const vf vcap = bcast(f.softcap), vinv = bcast(cap ? 1.f / f.softcap : 1.f), ninf = bcast(-kInf), zero = bcast(0.f);

  for (index_t j0 = f.c0; j0 < f.c1; j0 += tile) {
    const index_t n = std::min(tile, f.c1 - j0);
    for (index_t r = 0; r < R; ++r) {
      ka[r] = std::clamp<index_t>(f.lo[r] - j0, 0, n), kb[r] = std::clamp<index_t>(f.hi[r] - j0, 0, n);
      mt[r] = ninf;
    }
    // Scores, W keys at a time for every row (the keys stay in L1 across the rows): -inf outside
    // a row's keys, 0 on blocks it does not reach.
    for (index_t j = 0; j < n; j += W) {
      const index_t cnt = std::min<index_t>(W, n - j);
      const float* kj = f.k + (j0 + j) * f.ldk;
      for (index_t r = 0; r < R; ++r) {
        const index_t la = std::max<index_t>(ka[r] - j, 0), lb = std::min<index_t>(kb[r] - j, cnt);
        float* s = S + r * ls + j;
        if (la >= lb) {
          store(s, zero);
          continue;
        }
        const float* qr = Qs + r * dkp;
        vf x = cnt == W ? dot_keys<true>(qr, kj, f.ldk, dk, W) : dot_keys<false>(qr, kj, f.ldk, dk, cnt);
        if (cap) x = vcap * v_tanh(x * vinv);
        if (const void* mr = f.mask[r]; mr && f.boolean) {  // (mask values exist up to the row's last key)
          x = mask_true(static_cast<const std::uint8_t*>(mr) + j0 + j, lb) ? x : ninf;
        } else if (mr) {
          const float* mk = static_cast<const float*>(mr) + j0 + j;
          x += lb == W ? load(mk) : load_partial(mk, lb);
        }
        if (la > 0 || lb < W) x = (iota() >= bcasti(static_cast<std::int32_t>(la))) & lane_mask(lb) ? x : ninf;
        store(s, x);
        mt[r] = vmax(x, mt[r]);
      }
    }
    for (index_t r = 0; r < R; ++r) {
      alpha[r] = 1.f;  // (a row with no key in the tile keeps its accumulator, and weighs 0)
      const index_t ja = ka[r] / W * W, jb = std::min((kb[r] + W - 1) / W * W, n);
      if (ka[r] >= kb[r]) continue;
      float* s = S + r * ls;
      const float m_new = std::max(M[r], hmax(mt[r]));
      if (m_new == -kInf) {  // every key so far masked out
        std::fill(s + ja, s + jb, 0.f);
        continue;
      }
      const vf vm = bcast(m_new);
      vf sum = zero;
      for (index_t j = ja; j < jb; j += W) {  // (-inf lanes give 0)
        const vf p = exp_nonpositive(load(s + j) - vm);
        store(s + j, p);
        sum += p;
      }
      alpha[r] = std::exp(M[r] - m_new);  // 0 while M[r] is -inf
      L[r] = L[r] * alpha[r] + hsum(sum);
      M[r] = m_new;
    }
    const float* vt = f.v + j0 * f.ldv;
    for (index_t r = 0; r < R; r += kPR)
      with_count<kPR>(std::min<index_t>(kPR, R - r), [&](auto mr) {
        pv_rows<decltype(mr)::value>(acc + r * dvp, dvp, alpha + r, S + r * ls, 1, ls, vt, f.ldv, n, dv, false);
      });
  }
  for (index_t r = 0; r < R; ++r) {
    const float* ar = acc + r * dvp;
    if (f.m) {
      f.m[r] = M[r], f.l[r] = L[r];
      std::copy(ar, ar + dv, f.y[r]);
      continue;
    }
    const bool none = M[r] == -kInf || !(L[r] > 0.f);
    const float inv = none ? 0.f : 1.f / L[r];
    for (index_t c = 0; c < dv; ++c) f.y[r][c] = none ? 0.f : ar[c] * inv;
  }
}
