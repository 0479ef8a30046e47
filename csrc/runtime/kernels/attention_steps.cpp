// Attention and RotaryEmbedding (ONNX opset 23): step factories (see registry.h). Each kernel's inputs, outputs and
// parameters are documented above its factory.
#include "runtime/kernels/families.h"
#include "runtime/registry.h"

namespace engine {

void register_attention_steps(KernelRegistry& r) { (void)r; }

}  // namespace engine
