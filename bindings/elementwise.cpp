// Elementwise bindings: activations, broadcasting binary ops, softmax.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <vector>

#include "checks.h"
#include "engine/elementwise.h"

namespace py = pybind11;
using engine::index_t;
using namespace engine::bind;

namespace {

// Left-pads shapes to a common rank and returns element strides with 0 on broadcast dims.
std::vector<index_t> broadcast_strides(const py::array& a, const std::vector<index_t>& out, const char* name) {
  const int nd = static_cast<int>(out.size()), off = nd - static_cast<int>(a.ndim());
  std::vector<index_t> strides(nd, 0);
  index_t stride = 1;
  for (int d = nd - 1; d >= off; --d) {
    index_t dim = a.shape(d - off);
    if (dim != out[d] && dim != 1)
      throw engine::Error(std::string(name) + ": shape " + shape_str(a) + " does not broadcast to the output");
    strides[d] = dim == 1 ? 0 : stride;
    stride *= dim;
  }
  return strides;
}

}  // namespace

void init_elementwise(py::module_& m) {
  m.def("activation", [](py::array y, py::array x, engine::Act act, float a, float b) {
        check_size(y, x.size(), "y");
        const float* px = in_ptr(x, "x");
        float* py_ = out_ptr(y, "y");
        index_t n = x.size();
        py::gil_scoped_release nogil;
        engine::activation(py_, px, n, act, a, b);
      }, py::arg("y"), py::arg("x"), py::arg("act"), py::arg("alpha") = 0.f, py::arg("beta") = 0.f);

  m.def("binary", [](py::array out, py::array a, py::array b, engine::BinaryOp op) {
        std::vector<index_t> shape(out.shape(), out.shape() + out.ndim());
        if (a.ndim() > out.ndim() || b.ndim() > out.ndim())
          throw engine::Error("binary: an input has more dims than the output");
        auto as = broadcast_strides(a, shape, "a"), bs = broadcast_strides(b, shape, "b");
        const float* pa = in_ptr(a, "a");
        const float* pb = in_ptr(b, "b");
        float* po = out_ptr(out, "out");
        py::gil_scoped_release nogil;
        engine::binary(po, pa, pb, op, static_cast<int>(shape.size()), shape.data(), as.data(), bs.data());
      }, py::arg("out"), py::arg("a"), py::arg("b"), py::arg("op"),
      "out = a op b with numpy broadcasting; out must already have the broadcast shape.");

  m.def("softmax", [](py::array y, py::array x, int axis, bool log) {
        int nd = static_cast<int>(x.ndim());
        if (axis < -nd || axis >= nd) throw engine::Error("softmax: axis " + std::to_string(axis) + " out of range for rank " + std::to_string(nd));
        if (axis < 0) axis += nd;
        check_size(y, x.size(), "y");
        index_t outer = 1, inner = 1;
        for (int d = 0; d < axis; ++d) outer *= x.shape(d);
        for (int d = axis + 1; d < nd; ++d) inner *= x.shape(d);
        const float* px = in_ptr(x, "x");
        float* py_ = out_ptr(y, "y");
        index_t len = x.shape(axis);
        py::gil_scoped_release nogil;
        engine::softmax(py_, px, outer, len, inner, log);
      }, py::arg("y"), py::arg("x"), py::arg("axis") = -1, py::arg("log") = false);
}
