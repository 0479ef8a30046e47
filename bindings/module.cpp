// engine._C: thin pybind11 bindings over the CPU kernels and the plan executor. Each kernel
// family binds itself in its own file; this one only assembles the module.
#include <pybind11/pybind11.h>

#include "engine/common.h"

namespace py = pybind11;

void init_system(py::module_& m);
void init_enums(py::module_& m);
void init_gemm(py::module_& m);
void init_conv(py::module_& m);
void init_pool(py::module_& m);
void init_elementwise(py::module_& m);
void init_program(py::module_& m);
void init_dynamic(py::module_& m);
void init_rnn(py::module_& m);
void init_quant(py::module_& m);
void init_lm(py::module_& m);
void init_sampling(py::module_& m);

PYBIND11_MODULE(_C, m) {
  m.doc() = "engine native CPU kernels and plan executor";
  // Kernel argument errors surface as engine.errors.KernelError (an EngineError) when the
  // package is importable, plain ValueError otherwise (e.g. the module loaded on its own).
  py::object base = py::reinterpret_borrow<py::object>(PyExc_ValueError);
  try {
    base = py::module_::import("engine.errors").attr("KernelError");
  } catch (py::error_already_set&) {
  }
  py::register_exception<engine::Error>(m, "KernelError", base);
  init_enums(m);
  init_system(m);
  init_gemm(m);
  init_conv(m);
  init_pool(m);
  init_elementwise(m);
  init_program(m);
  init_dynamic(m);
  init_rnn(m);
  init_quant(m);
  init_lm(m);
  init_sampling(m);
}
