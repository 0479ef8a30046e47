// Every kernel family registers its steps here, once (called by kernel_registry()).
// A new family: add its file in this folder, declare its register function below and call it
// from register_all_kernels below.
#pragma once

namespace engine {

class KernelRegistry;

void register_gemm_steps(KernelRegistry& r);
void register_conv_steps(KernelRegistry& r);
void register_pool_steps(KernelRegistry& r);
void register_elementwise_steps(KernelRegistry& r);
void register_copy_steps(KernelRegistry& r);
void register_math_steps(KernelRegistry& r);
void register_movement_steps(KernelRegistry& r);
void register_reduce_steps(KernelRegistry& r);
void register_nchw_steps(KernelRegistry& r);
void register_rnn_steps(KernelRegistry& r);
void register_attention_steps(KernelRegistry& r);
void register_attention_grad_steps(KernelRegistry& r);
void register_resize_steps(KernelRegistry& r);
void register_optim_steps(KernelRegistry& r);
void register_grad_steps(KernelRegistry& r);

inline void register_all_kernels(KernelRegistry& r) {
  register_gemm_steps(r);
  register_conv_steps(r);
  register_pool_steps(r);
  register_elementwise_steps(r);
  register_copy_steps(r);
  register_math_steps(r);
  register_movement_steps(r);
  register_reduce_steps(r);
  register_nchw_steps(r);
  register_rnn_steps(r);
  register_attention_steps(r);
  register_attention_grad_steps(r);
  register_resize_steps(r);
  register_optim_steps(r);
  register_grad_steps(r);
}

}  // namespace engine
