// Internal interface between the recurrent time loop (rnn_loop.cpp) and its per-ISA kernels
// (rnn_kernels_{avx512,avx2,portable}.cpp, written once in rnn_kernels_impl.h): a register-
// tiled product for a few batch rows over a range of packed columns, and the gate math on it.
#pragma once

#include "engine/cpu_features.h"
#include "engine/rnn.h"

namespace engine {
namespace rnnk {

// Largest tile: rows (any ISA's mr) and columns (whole blocks of one part, see rnn_loop.cpp).
constexpr int kMaxRows = 8;
constexpr index_t kMaxTileCols = 4 * kRnnBlock;

// What the gate math does with one part's tile.
enum class Phase : int {
  Whole = 0,  // the cell's full update (LSTM, RNN, GRU with linear_before_reset)
  GruZr,      // GRU without linear_before_reset, part 0: z and r; stores z and r ⊙ h_prev
  GruH,       // part 1: the h gate and the state update
};

// Constant for a call (one part).
struct CellParams {
  RnnCell cell;
  Phase phase;
  bool input_forget;
  float clip;             // > 0: clip pre-activations
  RnnActivation f, g, h;
  index_t hidden;
  int groups;             // column groups per block in this part
  const float* bias;      // this part's packed biases (blocks × groups × kRnnBlock)
  const float* p;         // LSTM peepholes (i, o, f; 3·H) or null
};

// One batch row of a tile (H floats each; y, z, rh may be null when unused).
struct CellRow {
  const float* h_prev;
  float* h_next;
  float* c;   // LSTM cell state, updated in place
  float* y;   // this step's Y row, or null
  float* z;   // GRU split: z between the phases
  float* rh;  // GRU split: r ⊙ h_prev, the h gate's left operand
  float* tape = nullptr;  // training (Kernels::cells_tape): this step's tape row (engine/rnn.h)
};

// Backward gate math (rnn_backward.cpp): per step, from dh (and dc), the gate gradients dG of
// the pre-activations, in the weights' column order.
enum class GradPhase : int {
  Whole = 0,  // every cell but GRU without linear_before_reset
  GruH,       // GRU without linear_before_reset: z and h̃ first (h̃'s product with Rₕ comes next)
  GruR,       // then r, from that product (GradRow::t)
};

struct GradParams {
  RnnCell cell;
  GradPhase phase;
  bool input_forget;
  RnnActivation f, g, h;
  index_t hidden;
  int col[4];  // dG's column block of ONNX gate g (rnn_weight_gate)
  // This chunk's bias gradient sums, added to: G·H columns (dG's order), then H more for GRU
  // linear_before_reset's recurrent h bias (dpre_h̃ ⊙ r).
  float* db;
};

// One batch row at one step (H floats each unless said).
struct GradRow {
  const float* tape;  // the step's tape row
  const float* dy;    // the step's dY row, or null
  float* dh;          // in: dh from the later steps; out: dh_prev but for its product with R (GruR: adds t ⊙ r)
  float* dc;          // LSTM: in dc, out dc_prev
  float* dg;          // out: the G·H gate gradients (GruR: only r's)
  float* dgr;         // GRU linear_before_reset: out dpre_h̃ ⊙ r, R's h gradient rows
  const float* t;     // GruR: (dpre_h̃)·Rₕ, the gradient of r ⊙ h_prev
};

struct Kernels {
  int mr;  // rows per tile (<= kMaxRows)
  // c[m][0:ncols] = init[m][0:ncols] (zeros when init is null) + Σ_k a1[m][k]·b1[k·ldb + j]
  // (k < k1) + Σ_k a2[m][k]·b2[k·ldb + j] (k < k2), for m < rows <= mr; ncols a multiple of
  // kRnnBlock, at most kMaxTileCols.
  void (*tile)(int rows, index_t ncols, const float* const* init, const float* const* a1, index_t k1,
               const float* b1, const float* const* a2, index_t k2, const float* b2, index_t ldb, float* c,
               index_t ldc);
  // Gate math for rows[0:rows] over blocks [j0, j0 + nb) of the part; the tile holds those
  // blocks' columns (block j0 + i's group g at column (i·groups + g)·kRnnBlock, row m at m·ldt).
  void (*cells)(const CellParams& p, int rows, const CellRow* row, const float* tile, index_t ldt, index_t j0,
                index_t nb);
  // The same, also writing each row's tape (training; CellRow::tape set).
  void (*cells_tape)(const CellParams& p, int rows, const CellRow* row, const float* tile, index_t ldt,
                     index_t j0, index_t nb);
  // Backward gate math for rows[0:rows] at one step.
  void (*cells_backward)(const GradParams& p, int rows, const GradRow* row);
};

const Kernels& kernels_portable();
const Kernels& kernels_avx2();    // only when the CPU has AVX2 + FMA
const Kernels& kernels_avx512();  // only when the CPU has AVX-512

inline const Kernels& kernels_for(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return kernels_avx512();
    case Isa::Avx2: return kernels_avx2();
    default: return kernels_portable();
  }
}

}  // namespace rnnk
}  // namespace engine
