// Plan executor bindings. The Python planner builds a Program once per input signature;
// run() is the one call per predict(): it checks the caller's arrays, releases the GIL and
// runs every step in C++.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <vector>

#include "checks.h"
#include "runtime/program.h"

namespace py = pybind11;
using engine::index_t;
using namespace engine::bind;

namespace {

// Owns the Program and keeps alive the arrays whose memory its slots point into.
struct PyProgram {
  engine::Program prog;
  std::vector<py::object> keep_alive;
  std::vector<py::ssize_t> out_shape;  // for run_one
};

}  // namespace

void init_program(py::module_& m) {
  py::class_<PyProgram>(m, "Program")
      .def(py::init<>())
      .def("new_slot", [](PyProgram& p) { return p.prog.new_slot(); })
      .def("bind_array", [](PyProgram& p, int slot, py::array arr, index_t offset, index_t size) {
             if (offset < 0 || size < 0 || offset + size > static_cast<index_t>(arr.size()))
               throw engine::Error("bind_array: range [" + std::to_string(offset) + ", " +
                                   std::to_string(offset + size) + ") outside an array of " +
                                   std::to_string(arr.size()) + " elements");
             float* base = out_ptr(arr, "arr");
             p.prog.set_slot(slot, base + offset);
             p.keep_alive.push_back(arr);
           }, py::arg("slot"), py::arg("array"), py::arg("offset"), py::arg("size"),
           "Point a slot at array[offset:offset+size] (a constant or the arena); the array is kept alive.")
      .def("set_io", [](PyProgram& p, std::vector<int> in, std::vector<index_t> in_sizes,
                        std::vector<int> out, std::vector<index_t> out_sizes) {
             p.prog.set_io(std::move(in), std::move(in_sizes), std::move(out), std::move(out_sizes));
           })
      .def("__len__", [](const PyProgram& p) { return p.prog.size(); })
      .def("step_names", [](const PyProgram& p) {
             std::vector<std::string> n;
             for (size_t i = 0; i < p.prog.size(); ++i) n.push_back(p.prog.step_name(i));
             return n;
           })
      .def("run", [](PyProgram& p, const std::vector<py::array>& inputs, std::vector<py::array>& outputs) {
             const auto& isz = p.prog.input_sizes();
             const auto& osz = p.prog.output_sizes();
             if (inputs.size() != isz.size() || outputs.size() != osz.size())
               throw engine::Error("run: expected " + std::to_string(isz.size()) + " inputs and " +
                                   std::to_string(osz.size()) + " outputs");
             std::vector<const float*> in(inputs.size());
             std::vector<float*> out(outputs.size());
             for (size_t i = 0; i < inputs.size(); ++i) {
               check_size(inputs[i], isz[i], "input");
               in[i] = in_ptr(inputs[i], "input");
             }
             for (size_t i = 0; i < outputs.size(); ++i) {
               check_size(outputs[i], osz[i], "output");
               out[i] = out_ptr(outputs[i], "output");
             }
             py::gil_scoped_release nogil;
             p.prog.run(in, out);
           }, py::arg("inputs"), py::arg("outputs"))
      .def("set_output_shape", [](PyProgram& p, std::vector<py::ssize_t> shape) { p.out_shape = std::move(shape); },
           "Shape of the single output that run_one allocates.")
      .def("run_one", [](PyProgram& p, const py::array& x) -> py::object {
             // predict()'s fast path: one float32 C-contiguous input, one output allocated
             // here. Returns None (the caller takes the checked path) for anything else.
             const auto& isz = p.prog.input_sizes();
             if (isz.size() != 1 || p.prog.output_sizes().size() != 1 ||
                 !x.dtype().is(py::dtype::of<float>()) || !(x.flags() & py::array::c_style) ||
                 static_cast<index_t>(x.size()) != isz[0])
               return py::none();
             py::array_t<float> y(p.out_shape);
             const float* in = static_cast<const float*>(x.data());
             float* out = y.mutable_data();
             {
               py::gil_scoped_release nogil;
               p.prog.run({in}, {out});
             }
             return std::move(y);
           }, py::arg("x"))
      .def("gemm_packed", [](PyProgram& p, int out, int in, std::shared_ptr<engine::PackedMatrixB> w,
                             index_t M, std::vector<float> bias, engine::Act act, float a, float b) {
             p.prog.gemm_packed(out, in, std::move(w), M, std::move(bias), act, a, b);
           })
      .def("matmul", [](PyProgram& p, int out, int lhs, int rhs, index_t batch, index_t M, index_t N,
                        index_t K, bool ta, bool tb, index_t lbs, index_t rbs) {
             p.prog.matmul(out, lhs, rhs, batch, M, N, K, ta, tb, lbs, rbs);
           })
      .def("conv2d", [](PyProgram& p, int out, int in, std::shared_ptr<engine::PackedConv2D> w,
                        index_t batch, engine::Act act, float a, float b) {
             p.prog.conv2d(out, in, std::move(w), batch, act, a, b);
           })
      .def("conv2d_maxpool", [](PyProgram& p, int out, int in, std::shared_ptr<engine::PackedConv2D> w,
                                index_t batch, index_t ph, index_t pw, engine::Act act, float a, float b) {
             p.prog.conv2d_maxpool(out, in, std::move(w), batch, ph, pw, act, a, b);
           })
      .def("pool2d", [](PyProgram& p, int out, int in, const engine::Pool2DShape& s, bool is_max) {
             p.prog.pool2d(out, in, s, is_max);
           })
      .def("global_avgpool", [](PyProgram& p, int out, int in, index_t N, index_t HW, index_t C) {
             p.prog.global_avgpool(out, in, N, HW, C);
           })
      .def("binary", [](PyProgram& p, int out, int lhs, int rhs, engine::BinaryOp op,
                        std::vector<index_t> shape, std::vector<index_t> ls, std::vector<index_t> rs) {
             p.prog.binary(out, lhs, rhs, op, std::move(shape), std::move(ls), std::move(rs));
           })
      .def("activation", [](PyProgram& p, int out, int in, index_t n, engine::Act act, float a, float b) {
             p.prog.activation(out, in, n, act, a, b);
           })
      .def("softmax", [](PyProgram& p, int out, int in, index_t outer, index_t axis, index_t inner, bool log) {
             p.prog.softmax(out, in, outer, axis, inner, log);
           })
      .def("copy", [](PyProgram& p, int out, int in, index_t n) { p.prog.copy(out, in, n); });
}
