// Thread pool and CPU dispatch controls.
#include <pybind11/pybind11.h>

#include "engine/attention.h"
#include "engine/cpu_features.h"
#include "engine/elementwise.h"
#include "engine/scratch.h"
#include "engine/threadpool.h"

namespace py = pybind11;

void init_system(py::module_& m) {
  m.def("num_threads", &engine::num_threads, "Threads in the engine-wide pool (incl. the caller).");
  m.def("cpu_count", &engine::cpu_count, "CPUs this process may run on (its affinity mask).");
  m.def("set_num_threads", [](int n) {
        if (n < 1) throw engine::Error("set_num_threads: expected n >= 1, got " + std::to_string(n));
        engine::set_num_threads(n);
      }, py::arg("n"));
  m.def("set_thread_serial", &engine::set_thread_serial, py::arg("serial"),
        "Run this thread's kernels inline instead of on the pool (a server instance with one thread).");
  m.def("thread_serial", &engine::thread_serial, "Whether this thread runs its kernels inline.");
  m.def("scratch_bytes", &engine::scratch_bytes, "Kernel scratch held by all threads, in bytes.");
  m.def("thread_scratch_bytes", &engine::thread_scratch_bytes, "Kernel scratch held by the calling thread.");
  m.def("scratch_keep", &engine::scratch_keep, "Per-thread scratch kept between calls, in bytes.");
  m.def("set_scratch_keep", &engine::set_scratch_keep, py::arg("bytes"));
  m.def("release_scratch", [] {
        py::gil_scoped_release nogil;  // waits for the pool's workers
        engine::release_scratch();
      }, "Free the calling thread's and every pool worker's kernel scratch now.");
  m.def("cpu_isa", [] { return std::string(engine::isa_name(engine::cpu_isa())); },
        "Instruction set the kernels use: 'avx512', 'avx2' or 'portable'.");
  m.def("detected_isa", [] { return std::string(engine::isa_name(engine::detected_isa())); });
  m.def("set_isa", [](const std::string& name) {
        engine::Isa isa;
        if (name == "avx512") isa = engine::Isa::Avx512;
        else if (name == "avx2") isa = engine::Isa::Avx2;
        else if (name == "portable") isa = engine::Isa::Portable;
        else throw engine::Error("set_isa: expected 'avx512', 'avx2' or 'portable', got '" + name + "'");
        engine::set_isa(isa);
      }, py::arg("name"), "Cap the ISA (for tests); clamped to what the CPU supports.");
  m.def("set_attention_kernel", [](const std::string& name) {
        engine::AttentionKernel k;
        if (name == "auto") k = engine::AttentionKernel::Auto;
        else if (name == "block") k = engine::AttentionKernel::Block;
        else if (name == "flash") k = engine::AttentionKernel::Flash;
        else throw engine::Error("set_attention_kernel: expected 'auto', 'block' or 'flash', got '" + name + "'");
        engine::set_attention_kernel(k);
      }, py::arg("name"), "Float attention's block kernel (for tests and benchmarks): 'auto', 'block' or 'flash'.");
  m.def("attention_kernel", [] {
        const char* names[] = {"auto", "block", "flash"};
        return std::string(names[static_cast<int>(engine::attention_kernel())]);
      });
}

void init_enums(py::module_& m) {
  py::class_<engine::KernelState, std::shared_ptr<engine::KernelState>>(
      m, "KernelState", "Data a kernel prepared once (packed weights); passed to Program.add_step.");
  py::enum_<engine::Act>(m, "Act")
      .value("none", engine::Act::None).value("relu", engine::Act::Relu)
      .value("leaky_relu", engine::Act::LeakyRelu).value("sigmoid", engine::Act::Sigmoid)
      .value("tanh", engine::Act::Tanh).value("gelu", engine::Act::Gelu)
      .value("gelu_tanh", engine::Act::GeluTanh).value("elu", engine::Act::Elu)
      .value("selu", engine::Act::Selu).value("silu", engine::Act::Silu)
      .value("softplus", engine::Act::Softplus).value("hard_sigmoid", engine::Act::HardSigmoid)
      .value("clip", engine::Act::Clip).value("exp", engine::Act::Exp).value("log", engine::Act::Log)
      .value("sqrt", engine::Act::Sqrt).value("neg", engine::Act::Neg).value("abs", engine::Act::Abs)
      .value("reciprocal", engine::Act::Reciprocal).value("square", engine::Act::Square)
      .value("erf", engine::Act::Erf).value("identity", engine::Act::Identity);
  py::enum_<engine::BinaryOp>(m, "BinaryOp")
      .value("add", engine::BinaryOp::Add).value("sub", engine::BinaryOp::Sub)
      .value("mul", engine::BinaryOp::Mul).value("div", engine::BinaryOp::Div)
      .value("max", engine::BinaryOp::Max).value("min", engine::BinaryOp::Min)
      .value("pow", engine::BinaryOp::Pow);
  // The op layer (engine/ops) keeps the codes as plain ints so it needs no engine._C.
  py::implicitly_convertible<py::int_, engine::Act>();
  py::implicitly_convertible<py::int_, engine::BinaryOp>();
}
