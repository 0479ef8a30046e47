// The flash attention block (see attention_flash.h), written once over the vector type of
// elementwise_vmath.h and compiled per ISA by attention_flash_{avx512,avx2,portable}.cpp, which
// include it inside their own namespace after EW_W, the standard headers and elementwise_vmath.h.
// The only include here is attention_tiles_impl.h (the micro-kernels), which needs the same context.
//
// Layout: the block's rows run along the vector lanes. Qᵀ (dk × Rp, Rp = rows rounded up to W,
// scale folded in) is packed once per block; a tile's scores are Sᵀ (n keys × Rp), so the score
// micro-kernel broadcasts K elements straight from K (no packing), and the running max, the
// exponentials and the sums are vertical vector operations over W rows at a time. The output
// accumulates transposed too, Oᵀ (dv × Rp): P·V broadcasts V elements straight from V against
// rows of Pᵀ (the same register blocking as the scores), and the rescale by the change of max is
// one vector multiply per accumulator. Lanes past `rows` carry zeros and are never written out.

#include "cpu/attention_tiles_impl.h"

// Keys per tile.
constexpr index_t kTile = 128;

// Oᵀ[c][r0 ..] = alpha·Oᵀ[c][r0 ..] (0 when first) + Σ_j V[j][c] · Pᵀ[j][r0 ..] for MC columns
// from c and NV row vectors from r0 (Ot, alpha and Pt start there).
template <int MC, int NV>
static inline void pv_tile(float* Ot, index_t Rp, const float* alpha, const float* Pt, const float* v, index_t ldv,
                           index_t n, bool first) {
  vf a[MC][NV];
#pragma GCC unroll 4
  for (int k = 0; k < NV; ++k) {
    const vf al = load(alpha + k * W);
#pragma GCC unroll 8
    for (int c = 0; c < MC; ++c) a[c][k] = first ? bcast(0.f) : load(Ot + c * Rp + k * W) * al;
  }
  for (index_t j = 0; j < n; ++j) {
    vf p[NV];
#pragma GCC unroll 4
    for (int k = 0; k < NV; ++k) p[k] = load(Pt + j * Rp + k * W);
#pragma GCC unroll 8
    for (int c = 0; c < MC; ++c) {
      const vf vb = bcast(v[j * ldv + c]);
#pragma GCC unroll 4
      for (int k = 0; k < NV; ++k) a[c][k] += vb * p[k];
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < MC; ++c)
#pragma GCC unroll 4
    for (int k = 0; k < NV; ++k) store(Ot + c * Rp + k * W, a[c][k]);
}

template <int NV>
static void pv_cols(float* Ot, index_t Rp, const float* alpha, const float* Pt, const float* v, index_t ldv, index_t n,
                    index_t dv, bool first) {
  for (index_t c = 0; c < dv; c += kMK)
    with_count<kMK>(std::min<index_t>(kMK, dv - c), [&](auto mc) {
      pv_tile<decltype(mc)::value, NV>(Ot + c * Rp, Rp, alpha, Pt, v + c, ldv, n, first);
    });
}

void flash_block(const FlashBlock& f) {
  const index_t rows = f.rows, dk = f.dk, dv = f.dv;
  const index_t Rp = (rows + W - 1) / W * W, nrv = Rp / W;
  const index_t tile = std::min<index_t>(kTile, f.c1 - f.c0);
  // One scratch area: Qᵀ, Sᵀ, Oᵀ, then per-row max, sum, alpha and the frontiers (int32).
  const size_t nq = static_cast<size_t>(dk) * Rp, ns = static_cast<size_t>(tile) * Rp;
  const size_t no = static_cast<size_t>(dv) * Rp;
  float* Qt = thread_scratch<float, kScratchAttentionFlash>(nq + ns + no + 5 * static_cast<size_t>(Rp) + 64);
  float* St = Qt + nq;
  float* Ot = St + ns;
  float* M = Ot + no;
  float* L = M + Rp;
  float* alpha = L + Rp;
  std::int32_t* lo = reinterpret_cast<std::int32_t*>(alpha + Rp);
  std::int32_t* hi = lo + Rp;

  const float scale = f.scale;
  for (index_t d = 0; d < dk; ++d) {
    float* qt = Qt + d * Rp;
    for (index_t r = 0; r < rows; ++r) qt[r] = f.q[r * f.ldq + d] * scale;
    for (index_t r = rows; r < Rp; ++r) qt[r] = 0.f;
  }
  index_t max_lo = 0, min_hi = f.c1;
  for (index_t r = 0; r < Rp; ++r) {  // padded rows: every key (their lanes stay finite)
    const index_t a = r < rows ? f.lo[r] : f.c0, b = r < rows ? f.hi[r] : f.c1;
    lo[r] = static_cast<std::int32_t>(a), hi[r] = static_cast<std::int32_t>(b);
    max_lo = std::max(max_lo, a), min_hi = std::min(min_hi, b);
    M[r] = -kInf, L[r] = 0.f;
  }
  const bool cap = f.softcap > 0;
  const vf vcap = bcast(f.softcap), vinv = bcast(cap ? 1.f / f.softcap : 1.f), ninf = bcast(-kInf), zero = bcast(0.f);
  const bool drop = f.drop_threshold > 0;
  const vu thresh = (vu)bcasti(static_cast<std::int32_t>(f.drop_threshold));
  const vf dscale = bcast(f.drop_scale);

  bool first = true;
  for (index_t j0 = f.c0; j0 < f.c1; j0 += tile) {
    const index_t n = std::min(tile, f.c1 - j0);
    const float* kt = f.k + j0 * f.ldk;
    index_t r0 = 0;
    for (; r0 + kSNV * W <= Rp; r0 += kSNV * W) score_rows<kSNV>(St + r0, Rp, Qt + r0, kt, f.ldk, dk, n);
    for (; r0 < Rp; r0 += W) score_rows<1>(St + r0, Rp, Qt + r0, kt, f.ldk, dk, n);
    const bool inside = j0 >= max_lo && j0 + n <= min_hi;  // every row attends every key of the tile
    for (index_t rv = 0; rv < nrv; ++rv) {
      float* s = St + rv * W;
      const index_t rb = rv * W, live = std::min<index_t>(W, rows - rb);  // lanes of real rows
      if (cap)
        for (index_t j = 0; j < n; ++j) store(s + j * Rp, vcap * v_tanh(load(s + j * Rp) * vinv));
      bias_scores(s, Rp, n, j0, rb, live, f.mask, f.boolean, f.msq, lo, hi, inside);
      vf mt = ninf;
      for (index_t j = 0; j < n; ++j) mt = vmax(load(s + j * Rp), mt);
      const vf m_old = load(M + rb);
      const vf m_new = vmax(mt, m_old);
      const vf m_use = m_new == ninf ? zero : m_new;  // no key yet: exponentials of -inf are 0
      const vf al = exp_nonpositive(m_old - m_use);  // 0 when m_old is -inf
      vf sum = zero;
      if (drop) {  // the sum is over every probability; P·V sees the kept ones, scaled
        const vu word = attdrop::row_word(f.drop_key, (vu)(iota() + bcasti(static_cast<std::int32_t>(f.row0 + rb))));
        for (index_t j = 0; j < n; ++j) {
          const vf x = load(s + j * Rp);
          const vf p = exp_nonpositive(x - m_use);
          sum += p;
          const vi keep = (vi)((attdrop::bits(f.drop_key, word, j0 + j) >> 8) >= thresh);
          store(s + j * Rp, keep ? p * dscale : zero);
        }
      } else {
        for (index_t j = 0; j < n; ++j) {
          const vf x = load(s + j * Rp);
          const vf p = exp_nonpositive(x - m_use);
          store(s + j * Rp, p);
          sum += p;
        }
      }
      store(M + rb, m_new);
      store(L + rb, load(L + rb) * al + sum);
      store(alpha + rb, al);
    }
    const float* vt = f.v + j0 * f.ldv;
    for (index_t rv = 0; rv < nrv; rv += kSNV)
      with_count<kSNV>(std::min<index_t>(kSNV, nrv - rv), [&](auto nv) {
        pv_cols<decltype(nv)::value>(Ot + rv * W, Rp, alpha + rv * W, St + rv * W, vt, f.ldv, n, dv, first);
      });
    first = false;
  }
  // y = Oᵀ / sum; a row that never saw a finite score gets zeros (and log-sum-exp +inf).
  for (index_t r = 0; r < rows; ++r) {
    const bool none = M[r] == -kInf || !(L[r] > 0.f);
    if (f.lse) f.lse[r] = none ? kInf : M[r] + std::log(L[r]);
    const float inv = none ? 0.f : 1.f / L[r];
    float* yr = f.y + r * f.ldy;
    for (index_t c = 0; c < dv; ++c) yr[c] = none ? 0.f : Ot[c * Rp + r] * inv;
  }
}
