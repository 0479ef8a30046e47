// Pooling bindings (NHWC).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "checks.h"
#include "engine/pool.h"

namespace py = pybind11;
using engine::index_t;
using namespace engine::bind;

void init_pool(py::module_& m) {
  py::class_<engine::Pool2DShape>(m, "Pool2DShape")
      .def(py::init<>())
      .def_readwrite("N", &engine::Pool2DShape::N).def_readwrite("H", &engine::Pool2DShape::H)
      .def_readwrite("W", &engine::Pool2DShape::W).def_readwrite("C", &engine::Pool2DShape::C)
      .def_readwrite("KH", &engine::Pool2DShape::KH).def_readwrite("KW", &engine::Pool2DShape::KW)
      .def_readwrite("stride_h", &engine::Pool2DShape::stride_h).def_readwrite("stride_w", &engine::Pool2DShape::stride_w)
      .def_readwrite("dil_h", &engine::Pool2DShape::dil_h).def_readwrite("dil_w", &engine::Pool2DShape::dil_w)
      .def_readwrite("pad_top", &engine::Pool2DShape::pad_top).def_readwrite("pad_left", &engine::Pool2DShape::pad_left)
      .def_readwrite("pad_bottom", &engine::Pool2DShape::pad_bottom).def_readwrite("pad_right", &engine::Pool2DShape::pad_right)
      .def_readwrite("ceil_mode", &engine::Pool2DShape::ceil_mode)
      .def_readwrite("count_include_pad", &engine::Pool2DShape::count_include_pad)
      .def_property_readonly("OH", &engine::Pool2DShape::OH)
      .def_property_readonly("OW", &engine::Pool2DShape::OW)
      .def("validate", &engine::Pool2DShape::validate,
           "Raise KernelError naming the first bad field (non-positive size, padding, empty output).");

  auto pool = [](bool is_max) {
    return [is_max](py::array y, py::array x, const engine::Pool2DShape& s) {
      s.validate();
      check_shape(x, {s.N, s.H, s.W, s.C}, "x");
      check_shape(y, {s.N, s.OH(), s.OW(), s.C}, "y");
      const float* px = in_ptr(x, "x");
      float* py_ = out_ptr(y, "y");
      py::gil_scoped_release nogil;
      (is_max ? engine::maxpool2d_nhwc : engine::avgpool2d_nhwc)(py_, px, s);
    };
  };
  m.def("maxpool2d_nhwc", pool(true), py::arg("y"), py::arg("x"), py::arg("shape"));
  m.def("avgpool2d_nhwc", pool(false), py::arg("y"), py::arg("x"), py::arg("shape"));
  m.def("global_avgpool_nhwc", [](py::array y, py::array x) {
        if (x.ndim() != 4) throw engine::Error("global_avgpool_nhwc: x: expected 4-D NHWC, got shape " + shape_str(x));
        index_t N = x.shape(0), HW = x.shape(1) * x.shape(2), C = x.shape(3);
        check_shape(y, {N, C}, "y");
        const float* px = in_ptr(x, "x");
        float* py_ = out_ptr(y, "y");
        py::gil_scoped_release nogil;
        engine::global_avgpool_nhwc(py_, px, N, HW, C);
      }, py::arg("y"), py::arg("x"));
}
