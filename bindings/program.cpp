// Plan executor bindings. The Python planner builds a Program once per input signature;
// run() is the one call per predict(): it checks the caller's arrays, releases the GIL and
// runs every step in C++ with an execution context borrowed from the model's ContextPool.
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

// Owns the Program and keeps alive the arrays whose memory its constant slots point into.
struct PyProgram {
  engine::Program prog;
  std::vector<py::object> keep_alive;
  std::vector<py::ssize_t> out_shape;  // for run_one
};

void check_bytes(const py::array& a, size_t expected, const char* name) {
  if (static_cast<size_t>(a.nbytes()) != expected)
    throw engine::Error(std::string(name) + ": expected " + std::to_string(expected / 4) +
                        " float32 elements, got " + std::to_string(a.size()) + " (shape " + shape_str(a) + ")");
}

}  // namespace

void init_program(py::module_& m) {
  py::class_<engine::ContextPool, std::shared_ptr<engine::ContextPool>>(
      m, "ContextPool", "Execution contexts (arena + slot table) shared by all plans of one model.")
      .def(py::init<int>(), py::arg("max_idle") = 4)
      .def_property_readonly("idle", &engine::ContextPool::idle, "Contexts waiting to be reused.")
      .def_property_readonly("idle_bytes", &engine::ContextPool::idle_bytes, "Arena bytes they hold.");

  py::class_<PyProgram>(m, "Program")
      .def(py::init<>())
      .def("new_slot", [](PyProgram& p) { return p.prog.new_slot(); })
      .def("bind_const", [](PyProgram& p, int slot, py::array arr) {
             p.prog.bind_const(slot, in_ptr(arr, "constant"));
             p.keep_alive.push_back(arr);
           }, py::arg("slot"), py::arg("array"),
           "Point a slot at a constant array (kept alive with the program).")
      .def("bind_arena", [](PyProgram& p, int slot, size_t offset) { p.prog.bind_arena(slot, offset); },
           py::arg("slot"), py::arg("offset"), "Point a slot at a byte offset in the context's arena.")
      .def_property("arena_bytes", [](const PyProgram& p) { return p.prog.arena_bytes(); },
                    [](PyProgram& p, size_t n) { p.prog.set_arena_bytes(n); })
      .def("set_io", [](PyProgram& p, std::vector<int> in, std::vector<size_t> in_bytes,
                        std::vector<int> out, std::vector<size_t> out_bytes) {
             p.prog.set_io(std::move(in), std::move(in_bytes), std::move(out), std::move(out_bytes));
           })
      .def("__len__", [](const PyProgram& p) { return p.prog.size(); })
      .def("step_names", [](const PyProgram& p) {
             std::vector<std::string> n;
             for (size_t i = 0; i < p.prog.size(); ++i) n.push_back(p.prog.step_name(i));
             return n;
           })
      .def("run", [](const PyProgram& p, const std::vector<py::array>& inputs, std::vector<py::array>& outputs,
                     engine::ContextPool& pool) {
             const auto& ib = p.prog.input_bytes();
             const auto& ob = p.prog.output_bytes();
             if (inputs.size() != ib.size() || outputs.size() != ob.size())
               throw engine::Error("run: expected " + std::to_string(ib.size()) + " inputs and " +
                                   std::to_string(ob.size()) + " outputs");
             std::vector<const void*> in(inputs.size());
             std::vector<void*> out(outputs.size());
             for (size_t i = 0; i < inputs.size(); ++i) {
               in[i] = in_ptr(inputs[i], "input");
               check_bytes(inputs[i], ib[i], "input");
             }
             for (size_t i = 0; i < outputs.size(); ++i) {
               out[i] = out_ptr(outputs[i], "output");
               check_bytes(outputs[i], ob[i], "output");
             }
             py::gil_scoped_release nogil;
             p.prog.run(pool, in.data(), out.data());
           }, py::arg("inputs"), py::arg("outputs"), py::arg("pool"))
      .def("set_output_shape", [](PyProgram& p, std::vector<py::ssize_t> shape) { p.out_shape = std::move(shape); },
           "Shape of the single output that run_one allocates.")
      .def("run_one", [](const PyProgram& p, const py::array& x, engine::ContextPool& pool) -> py::object {
             // predict()'s fast path: one float32 C-contiguous input, one output allocated
             // here. Returns None (the caller takes the checked path) for anything else.
             const auto& ib = p.prog.input_bytes();
             if (ib.size() != 1 || p.prog.output_bytes().size() != 1 || !is_f32(x) ||
                 !(x.flags() & py::array::c_style) || static_cast<size_t>(x.nbytes()) != ib[0])
               return py::none();
             py::array_t<float> y(p.out_shape);
             const void* in = x.data();
             void* out = y.mutable_data();
             {
               py::gil_scoped_release nogil;
               p.prog.run(pool, &in, &out);
             }
             return std::move(y);
           }, py::arg("x"), py::arg("pool"))
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
      .def("copy", [](PyProgram& p, int out, int in, size_t bytes) { p.prog.copy(out, in, bytes); });
}
