// Row normalisation and inference batch norm compiled for avx2; see norm_impl.h.
#include <cmath>

#include "engine/norm.h"

namespace engine {
namespace nm {
namespace avx2 {
#include "cpu/norm_impl.h"

void rows_f32(float* y, float* mean, float* inv, const float* x, const float* scale, const float* bias, index_t r0,
              index_t r1, index_t groups, index_t cps, index_t seg, double eps, NormMode mode) {
  norm_rows(y, mean, inv, x, scale, bias, r0, r1, groups, cps, seg, eps, mode);
}
void rows_f64(double* y, float* mean, float* inv, const double* x, const double* scale, const double* bias,
              index_t r0, index_t r1, index_t groups, index_t cps, index_t seg, double eps, NormMode mode) {
  norm_rows(y, mean, inv, x, scale, bias, r0, r1, groups, cps, seg, eps, mode);
}
void batch_f32(float* y, const float* x, const float* scale, const float* bias, const float* mean, const float* var,
               index_t r0, index_t r1, index_t C, index_t S, double eps) {
  batch_rows(y, x, scale, bias, mean, var, r0, r1, C, S, eps);
}
void batch_f64(double* y, const double* x, const double* scale, const double* bias, const double* mean,
               const double* var, index_t r0, index_t r1, index_t C, index_t S, double eps) {
  batch_rows(y, x, scale, bias, mean, var, r0, r1, C, S, eps);
}
}  // namespace avx2
}  // namespace nm
}  // namespace engine
