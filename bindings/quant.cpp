// quant bindings (issue 19): filled in with the kernels they bind.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void init_quant(py::module_& m) {}
