// The backward loops' per-ISA table (grad_kernels.h). Only function addresses here: no code
// built for a higher ISA runs before cpu_isa() has chosen it.
#include "cpu/grad_kernels.h"

#include "engine/cpu_features.h"

namespace engine {

#define GRAD_DECLARE(ns)                                                                                            \
  namespace ns {                                                                                                    \
  void act_backward(float*, const float*, const float*, index_t, int, float, float);                               \
  void softmax_rows(float*, const float*, const float*, index_t, index_t, bool);                                   \
  void softmax_cols(float*, const float*, const float*, index_t, index_t, bool);                                   \
  float xent_row(float*, const float*, index_t, index_t, const float*, float);                                     \
  void dropout(float*, std::uint8_t*, const float*, const std::uint8_t*, index_t, index_t, std::uint32_t, float,   \
               std::uint64_t, std::uint64_t);                                                                       \
  void add(float*, const float*, index_t);                                                                          \
  void col_sum(float*, const float*, index_t, index_t, index_t);                                                    \
  void col_sqdev(float*, const float*, const float*, index_t, index_t);                                             \
  void col_dy_xc(float*, float*, const float*, const float*, const float*, index_t, index_t);                       \
  void rows_affine(float*, const float*, const float*, const float*, const float*, index_t, index_t);               \
  void rows_bn_dx(float*, const float*, const float*, const float*, const float*, const float*, const float*,       \
                  index_t, index_t);                                                                                \
  void ln_row(float*, const float*, const float*, const float*, float, float, index_t, bool);                       \
  void ln_params(float*, float*, const float*, const float*, const float*, const float*, index_t, index_t, bool);   \
  void maxpool(float*, const float*, const float*, const gradk::PoolGeom&, index_t, index_t);                       \
  void avgpool(float*, const float*, const gradk::PoolGeom&, index_t, index_t);                                     \
  void dw_data(float*, const float*, const float*, const gradk::DwGeom&, index_t, index_t, bool);                   \
  void dw_filter(float*, const float*, const float*, const gradk::DwGeom&, index_t, index_t);                       \
  }                                                                                                                 \
  constexpr gradk::Kernels ns##_table{ns::act_backward, ns::softmax_rows, ns::softmax_cols, ns::xent_row,           \
                                      ns::dropout,      ns::add,          ns::col_sum,      ns::col_sqdev,          \
                                      ns::col_dy_xc,    ns::rows_affine,  ns::rows_bn_dx,   ns::ln_row,             \
                                      ns::ln_params,    ns::maxpool,      ns::avgpool,      ns::dw_data,            \
                                      ns::dw_filter};
GRAD_DECLARE(grad_portable)
GRAD_DECLARE(grad_avx2)
GRAD_DECLARE(grad_avx512)
#undef GRAD_DECLARE

namespace gradk {

const Kernels& kernels() {
  static constexpr Kernels table[3] = {grad_portable_table, grad_avx2_table, grad_avx512_table};
  return table[static_cast<int>(cpu_isa())];
}

}  // namespace gradk
}  // namespace engine
