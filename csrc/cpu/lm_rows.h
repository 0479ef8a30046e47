// Row kernels of the decoder step (lm_decoder.cpp): biases, rotary embeddings, the FFN
// activations. Each runs over all rows of a step; the step's matrices dominate, so these stay
// plain loops the compiler vectorises where it can.
#pragma once

#include "engine/common.h"

namespace engine {

// y[r*ld + c] += b[c] for r < rows, c < n.
void lm_add_bias(float* y, index_t ld, index_t rows, const float* b, index_t n);

// Rotates, in place, the first rope_dim values of each of `heads` heads (head_dim apart) of
// row r (ld apart) by angles pos[r]·inv_freq[i]: pairs (2i, 2i+1) when interleaved, else
// (i, i + rope_dim/2) (Hugging Face's rotate_half). cs: scratch of rope_dim floats.
void lm_rope(float* x, index_t ld, index_t rows, const index_t* pos, index_t heads, index_t head_dim,
             index_t rope_dim, bool interleaved, const double* inv_freq, float* cs);

// gate[r*ld + c] = silu(gate[r*ld + c]) * up[r*ld + c].
void lm_silu_mul(float* gate, const float* up, index_t ld, index_t rows, index_t n);

// x = gelu_tanh(x) (GPT-2's "gelu_new").
void lm_gelu_tanh(float* x, index_t ld, index_t rows, index_t n);

}  // namespace engine
