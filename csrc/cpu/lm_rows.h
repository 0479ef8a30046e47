// Row kernels of the decoder step (lm_decoder.cpp): biases, rotary embeddings, the FFN
// activations. Each runs over all rows of a step; the activations use the engine's vectorised
// kernels (with std::exp they took ~10% of an 8-sequence step), the rest are plain loops.
#pragma once

#include "engine/common.h"

namespace engine {

// y[r*ld + c] += b[c] for r < rows, c < n.
void lm_add_bias(float* y, index_t ld, index_t rows, const float* b, index_t n);

// The rotations of rows at positions pos[r]: cs[r*rope_dim + i] = cos(pos[r]·inv_freq[i]) and
// cs[r*rope_dim + rope_dim/2 + i] its sine (angles in double), i < rope_dim/2. Once per step:
// every layer rotates by the same angles.
void lm_rope_angles(float* cs, index_t rows, const index_t* pos, index_t rope_dim, const double* inv_freq);

// Rotates, in place, the first rope_dim values of each of `heads` heads (head_dim apart) of
// row r (ld apart) by row r's angles in cs (lm_rope_angles): pairs (2i, 2i+1) when
// interleaved, else (i, i + rope_dim/2) (Hugging Face's rotate_half).
void lm_rope(float* x, index_t ld, index_t rows, index_t heads, index_t head_dim, index_t rope_dim,
             bool interleaved, const float* cs);

// gate[r*ld + c] = silu(gate[r*ld + c]) * up[r*ld + c] (the vectorised activation kernels).
void lm_silu_mul(float* gate, const float* up, index_t ld, index_t rows, index_t n);

// x = gelu_tanh(x) (GPT-2's "gelu_new"), vectorised.
void lm_gelu_tanh(float* x, index_t ld, index_t rows, index_t n);

}  // namespace engine
