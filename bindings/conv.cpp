// Convolution bindings (NHWC activations, HWIO filters).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "checks.h"
#include "engine/conv.h"

namespace py = pybind11;
using engine::index_t;
using namespace engine::bind;

void init_conv(py::module_& m) {
  py::class_<engine::Conv2DShape>(m, "Conv2DShape")
      .def(py::init<>())
      .def_readwrite("N", &engine::Conv2DShape::N).def_readwrite("H", &engine::Conv2DShape::H)
      .def_readwrite("W", &engine::Conv2DShape::W).def_readwrite("C", &engine::Conv2DShape::C)
      .def_readwrite("OC", &engine::Conv2DShape::OC).def_readwrite("KH", &engine::Conv2DShape::KH)
      .def_readwrite("KW", &engine::Conv2DShape::KW)
      .def_readwrite("stride_h", &engine::Conv2DShape::stride_h).def_readwrite("stride_w", &engine::Conv2DShape::stride_w)
      .def_readwrite("dil_h", &engine::Conv2DShape::dil_h).def_readwrite("dil_w", &engine::Conv2DShape::dil_w)
      .def_readwrite("pad_top", &engine::Conv2DShape::pad_top).def_readwrite("pad_left", &engine::Conv2DShape::pad_left)
      .def_readwrite("pad_bottom", &engine::Conv2DShape::pad_bottom).def_readwrite("pad_right", &engine::Conv2DShape::pad_right)
      .def_readwrite("groups", &engine::Conv2DShape::groups)
      .def_property_readonly("OH", &engine::Conv2DShape::OH)
      .def_property_readonly("OW", &engine::Conv2DShape::OW)
      .def("validate", &engine::Conv2DShape::validate,
           "Raise KernelError naming the first bad field (non-positive size, groups, empty output).");

  py::class_<engine::PackedConv2D, engine::KernelState, std::shared_ptr<engine::PackedConv2D>>(m, "PackedConv2D")
      .def(py::init([](const engine::Conv2DShape& s, py::array filter, py::object bias) {
             s.validate();
             check_shape(filter, {s.KH, s.KW, s.C / s.groups, s.OC}, "filter");
             const float* pf = in_ptr(filter, "filter");
             const float* pbias = nullptr;
             if (!bias.is_none()) {
               py::array b = bias.cast<py::array>();
               check_shape(b, {s.OC}, "bias");
               pbias = in_ptr(b, "bias");
             }
             return std::make_shared<engine::PackedConv2D>(s, pf, pbias);
           }),
           py::arg("shape"), py::arg("filter"), py::arg("bias") = py::none())
      .def_property_readonly("shape", &engine::PackedConv2D::shape)
      .def_property_readonly("algorithm", &engine::PackedConv2D::algorithm,
                             "The algorithm chosen at pack time (pointwise, direct, depthwise, winograd, indirect, im2col).");

  py::enum_<engine::FilterLayout>(m, "FilterLayout")
      .value("HWIO", engine::FilterLayout::HWIO)
      .value("OIHW", engine::FilterLayout::OIHW)
      .value("DataGrad", engine::FilterLayout::DataGrad);

  py::class_<engine::DynamicConv2D, engine::KernelState, std::shared_ptr<engine::DynamicConv2D>>(m, "DynamicConv2D")
      .def(py::init([](engine::Conv2DShape s, engine::FilterLayout layout) {
             s.validate();
             return std::make_shared<engine::DynamicConv2D>(s, layout);
           }),
           py::arg("shape"), py::arg("layout") = engine::FilterLayout::HWIO)
      .def_property_readonly("shape", &engine::DynamicConv2D::shape)
      .def_property_readonly("algorithm", &engine::DynamicConv2D::algorithm,
                             "The algorithm the shape takes (as PackedConv2D would choose it now).")
      .def_property_readonly("workspace_floats", &engine::DynamicConv2D::workspace_floats,
                             "Floats of workspace each call needs (the conv2d_dynamic step's workspace input).");

  m.def("conv2d_nhwc",
        [](py::array y, py::array x, const engine::PackedConv2D& w, engine::Act act, float a, float b,
           py::object residual) {
          const engine::Conv2DShape& s = w.shape();
          if (x.ndim() != 4) throw engine::Error("conv2d_nhwc: x: expected 4-D NHWC, got shape " + shape_str(x));
          index_t n = x.shape(0);
          check_shape(x, {n, s.H, s.W, s.C}, "x");
          check_shape(y, {n, s.OH(), s.OW(), s.OC}, "y");
          const float* px = in_ptr(x, "x");
          float* py_ = out_ptr(y, "y");
          const float* pres = nullptr;
          py::array r;
          if (!residual.is_none()) {
            r = residual.cast<py::array>();
            check_shape(r, {n, s.OH(), s.OW(), s.OC}, "residual");
            pres = in_ptr(r, "residual");
          }
          py::gil_scoped_release nogil;
          engine::conv2d_nhwc(py_, px, w, n, act, a, b, pres);
        },
        py::arg("y"), py::arg("x"), py::arg("packed"), py::arg("act") = engine::Act::None,
        py::arg("act_alpha") = 0.f, py::arg("act_beta") = 0.f, py::arg("residual") = py::none(),
        "y = act(conv(x) + bias [+ residual]); residual is laid out like y and may be y itself.");

  m.def("conv2d_maxpool_nhwc",
        [](py::array y, py::array x, const engine::PackedConv2D& w, index_t pool_h, index_t pool_w,
           engine::Act act, float a, float b) {
          const engine::Conv2DShape& s = w.shape();
          if (x.ndim() != 4) throw engine::Error("conv2d_maxpool_nhwc: x: expected 4-D NHWC, got shape " + shape_str(x));
          if (pool_h < 1 || pool_w < 1 || pool_h > s.OH() || pool_w > s.OW())
            throw engine::Error("conv2d_maxpool_nhwc: pool window " + std::to_string(pool_h) + "x" +
                                std::to_string(pool_w) + " does not fit the conv output");
          index_t n = x.shape(0);
          check_shape(x, {n, s.H, s.W, s.C}, "x");
          check_shape(y, {n, s.OH() / pool_h, s.OW() / pool_w, s.OC}, "y");
          const float* px = in_ptr(x, "x");
          float* py_ = out_ptr(y, "y");
          py::gil_scoped_release nogil;
          engine::conv2d_maxpool_nhwc(py_, px, w, n, pool_h, pool_w, act, a, b);
        },
        py::arg("y"), py::arg("x"), py::arg("packed"), py::arg("pool_h"), py::arg("pool_w"),
        py::arg("act") = engine::Act::None, py::arg("act_alpha") = 0.f, py::arg("act_beta") = 0.f,
        "Conv2D then a non-overlapping max-pool (stride = window, no padding) in one pass.");
}
