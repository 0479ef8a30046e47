// Recurrent layers (see engine/rnn.h): the packed weight layout.
#include "engine/rnn.h"

#include <cstring>

namespace engine {

RnnLayout rnn_layout(RnnCell cell, bool linear_before_reset, index_t hidden) {
  RnnLayout L;
  L.blocks = (hidden + kRnnBlock - 1) / kRnnBlock;
  if (cell == RnnCell::Gru && !linear_before_reset) {
    L.parts = 2;
    L.groups[0] = 2, L.groups[1] = 1;  // (z, r), then h
  } else {
    L.groups[0] = cell == RnnCell::Gru ? 4 : rnn_gates(cell);  // GRU: z, r, x·Wₕᵀ, h·Rₕᵀ
  }
  for (int p = 0; p < L.parts; ++p) {
    L.tile_blocks[p] = 4 / L.groups[p];  // tile rows of 64 floats: four AVX-512 vectors
    L.offset[p] = L.cols;
    L.cols += L.blocks * L.groups[p] * kRnnBlock;
  }
  return L;
}

namespace {

// The ONNX gate whose W (or R) rows feed column group g of part p, or -1: none (zeros).
int source_gate(RnnCell cell, bool lbr, int p, int g, bool recurrent) {
  if (cell != RnnCell::Gru) return g;
  if (!lbr) return p == 0 ? g : 2;
  if (g < 2) return g;
  return (g == 3) == recurrent ? 2 : -1;  // group 2: W's h rows only; group 3: R's
}

}  // namespace

void rnn_pack_bias(float* dst, const float* wb, const float* rb, RnnCell cell, bool linear_before_reset,
                   index_t hidden, bool keras_layout) {
  const RnnLayout L = rnn_layout(cell, linear_before_reset, hidden);
  const index_t H = hidden;
  std::memset(dst, 0, sizeof(float) * L.cols);
  for (int p = 0; p < L.parts; ++p)
    for (int g = 0; g < L.groups[p]; ++g) {
      int sw = wb ? source_gate(cell, linear_before_reset, p, g, false) : -1;
      int sr = rb ? source_gate(cell, linear_before_reset, p, g, true) : -1;
      if (sw >= 0) sw = rnn_weight_gate(cell, keras_layout, sw);
      if (sr >= 0) sr = rnn_weight_gate(cell, keras_layout, sr);
      for (index_t u = 0; u < H; ++u) {
        float* d = dst + L.offset[p] + ((u / kRnnBlock) * L.groups[p] + g) * kRnnBlock + u % kRnnBlock;
        *d = (sw >= 0 ? wb[sw * H + u] : 0.f) + (sr >= 0 ? rb[sr * H + u] : 0.f);
      }
    }
}

void rnn_pack_weights(float* dst, const float* src, index_t K, RnnCell cell, bool linear_before_reset,
                      index_t hidden, bool recurrent, bool keras_layout) {
  const RnnLayout L = rnn_layout(cell, linear_before_reset, hidden);
  const index_t H = hidden;
  // Element (gate row n, k) of ONNX's G·H × K form: src[n·K + k]; Keras's K × G·H: src[k·G·H + n].
  const index_t row_stride = keras_layout ? 1 : K, k_stride = keras_layout ? rnn_gates(cell) * H : 1;
  std::memset(dst, 0, sizeof(float) * K * L.cols);
  for (int p = 0; p < L.parts; ++p)
    for (int g = 0; g < L.groups[p]; ++g) {
      const int sg = source_gate(cell, linear_before_reset, p, g, recurrent);
      if (sg < 0) continue;
      for (index_t u = 0; u < H; ++u) {
        const index_t j = u / kRnnBlock, i = j / L.tile_blocks[p];
        const index_t c0 = L.tile_col(p, i), ld = L.tile_cols(p, i);
        const index_t col = L.offset[p] + (j * L.groups[p] + g) * kRnnBlock + u % kRnnBlock;
        float* d = dst + K * c0 + (col - c0);  // the tile's K × ld panel
        const float* s = src + (rnn_weight_gate(cell, keras_layout, sg) * H + u) * row_stride;
        for (index_t k = 0; k < K; ++k) d[k * ld] = s[k * k_stride];
      }
    }
}

}  // namespace engine
