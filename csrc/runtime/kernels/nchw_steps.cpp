// ONNX Conv/ConvTranspose/pools (N-d, NCHW), Gemm, MatMul, Einsum, Resize: step factories (see registry.h). Each kernel's inputs, outputs and
// parameters are documented above its factory.
#include "runtime/kernels/families.h"
#include "runtime/registry.h"

namespace engine {

void register_nchw_steps(KernelRegistry& r) { (void)r; }

}  // namespace engine
