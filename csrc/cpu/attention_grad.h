// One query tile of the attention backward (flash-attention-2), float32: for a tile of query rows of
// one head it walks the keys [c0, c1) in blocks and, per block, recomputes the scores S = scale·Q·Kᵀ
// and the probabilities P = exp(S − lse) (bias and frontiers as the forward; dropout drawn again),
// then dP = dO·Vᵀ (times the dropout multipliers), dS = P∘(dP − Δ)·scale with Δ = rowsum(dO∘O),
// dV += (P∘dropout)ᵀ·dO, dK += dSᵀ·Q, dQ += dS·K. Buffers are O(rows·(block + head dims)): the
// score matrix is never whole. Compiled per ISA (attention_grad_impl.h); the driver that splits a
// whole backward into tiles is attention_grad.cpp.
#pragma once

#include <cstdint>

#include "engine/common.h"

namespace engine {

struct GradTile {
  const float* q = nullptr;     // query row r at q + r·ldq (dim floats)
  const float* o = nullptr;     // the forward's output row r at o + r·ldo (vdim floats)
  const float* dout = nullptr;  // its gradient, row r at dout + r·lddo
  const float* k = nullptr;     // key j at k + j·ldk (j from 0: absolute key index)
  const float* v = nullptr;     // value j at v + j·ldv
  float* dq = nullptr;          // row r at dq + r·lddq: written, the sum over keys [c0, c1)
  float* dk = nullptr;          // key j's gradient at dk + j·lddk: added to
  float* dv = nullptr;          // value j's gradient at dv + j·lddv: added to
  index_t ldq = 0, ldo = 0, lddo = 0, ldk = 0, ldv = 0, lddq = 0, lddk = 0, lddv = 0;
  index_t rows = 0, dim = 0, vdim = 0;
  float scale = 1.f;
  const float* lse = nullptr;   // row r's log-sum-exp from the forward (+inf: no key)
  const index_t* lo = nullptr;  // per row: keys [lo, hi) before mask values
  const index_t* hi = nullptr;
  index_t c0 = 0, c1 = 0;       // the keys to visit; c0 < c1
  const void* mask = nullptr;   // as FlashBlock (attention_flash.h)
  bool boolean = false;
  index_t msq = 0;
  std::uint32_t drop_threshold = 0;  // dropout as FlashBlock: 0 none
  float drop_scale = 1.f;
  std::uint64_t drop_key = 0;
  index_t row0 = 0;
};

namespace att_grad_avx512 { void grad_tile(const GradTile& t); }
namespace att_grad_avx2 { void grad_tile(const GradTile& t); }
namespace att_grad_portable { void grad_tile(const GradTile& t); }

}  // namespace engine
