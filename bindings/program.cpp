// Plan executor bindings. The Python planner builds a Program once per input signature
// (slots, then one add_step per kernel call, each resolved through the kernel registry);
// run() is the one call per predict(): it checks the caller's arrays, releases the GIL and
// runs every step in C++ with an execution context borrowed from the model's ContextPool.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <tuple>
#include <vector>

#include "checks.h"
#include "runtime/program.h"

namespace py = pybind11;
using engine::DType;
using engine::index_t;
using namespace engine::bind;

namespace {

// Owns the Program and keeps alive the arrays whose memory its constant slots point into.
struct PyProgram {
  engine::Program prog;
  std::vector<py::object> keep_alive;
  std::vector<py::ssize_t> out_shape;  // for run_one
};

using IoTuple = std::tuple<int, int, size_t>;  // (slot, dtype code, bytes)

DType to_dtype(int code) {
  if (!engine::dtype_valid(code)) throw engine::Error("unknown element type code " + std::to_string(code));
  return static_cast<DType>(code);
}

std::vector<engine::Program::IoSpec> io_specs(const std::vector<IoTuple>& t) {
  std::vector<engine::Program::IoSpec> out;
  for (const auto& [slot, code, bytes] : t) out.push_back({slot, to_dtype(code), bytes});
  return out;
}

const void* checked_in(const py::array& a, const engine::Program::IoSpec& io, const char* what) {
  check_typed(a, io.dtype, what);
  if (static_cast<size_t>(a.nbytes()) != io.bytes)
    throw engine::Error(std::string(what) + ": expected " + std::to_string(io.bytes / engine::dtype_size(io.dtype)) +
                        " elements, got " + std::to_string(a.size()) + " (shape " + shape_str(a) + ")");
  return a.data();
}

py::dtype numpy_dtype(DType t) {
  switch (t) {
    case DType::F32: return py::dtype::of<float>();
    case DType::F64: return py::dtype::of<double>();
    case DType::F16: return py::dtype("float16");
    case DType::I8: return py::dtype::of<std::int8_t>();
    case DType::I16: return py::dtype::of<std::int16_t>();
    case DType::I32: return py::dtype::of<std::int32_t>();
    case DType::I64: return py::dtype::of<std::int64_t>();
    case DType::U8: return py::dtype::of<std::uint8_t>();
    case DType::U16: return py::dtype::of<std::uint16_t>();
    case DType::U32: return py::dtype::of<std::uint32_t>();
    case DType::U64: return py::dtype::of<std::uint64_t>();
    case DType::Bool: return py::dtype::of<bool>();
    default: throw engine::Error(std::string("no numpy type for ") + engine::dtype_name(t));
  }
}

}  // namespace

void init_program(py::module_& m) {
  py::class_<engine::ContextPool, std::shared_ptr<engine::ContextPool>>(
      m, "ContextPool", "Execution contexts (arena + slot table) shared by all plans of one model.")
      .def(py::init<int>(), py::arg("max_idle") = 4)
      .def_property_readonly("idle", &engine::ContextPool::idle, "Contexts waiting to be reused.")
      .def_property_readonly("idle_bytes", &engine::ContextPool::idle_bytes, "Arena bytes they hold.");

  m.def("kernels", [] {
        std::vector<std::pair<std::string, std::string>> out;
        for (const auto& [name, t] : engine::kernel_registry().entries()) out.emplace_back(name, engine::dtype_name(t));
        return out;
      }, "Every (kernel, element type) pair in the dispatch table ('any' = every type).");

  py::class_<PyProgram>(m, "Program")
      .def(py::init<>())
      .def("new_slot", [](PyProgram& p) { return p.prog.new_slot(); })
      .def("bind_const", [](PyProgram& p, int slot, py::array arr) {
             if (!(arr.flags() & py::array::c_style))
               throw engine::Error("constant: expected a C-contiguous array");
             p.prog.bind_const(slot, arr.data());
             p.keep_alive.push_back(arr);
           }, py::arg("slot"), py::arg("array"),
           "Point a slot at a constant array (kept alive with the program).")
      .def("bind_arena", [](PyProgram& p, int slot, size_t offset) { p.prog.bind_arena(slot, offset); },
           py::arg("slot"), py::arg("offset"), "Point a slot at a byte offset in the context's arena.")
      .def_property("arena_bytes", [](const PyProgram& p) { return p.prog.arena_bytes(); },
                    [](PyProgram& p, size_t n) { p.prog.set_arena_bytes(n); })
      .def("set_io", [](PyProgram& p, const std::vector<IoTuple>& in, const std::vector<IoTuple>& out) {
             p.prog.set_io(io_specs(in), io_specs(out));
           }, py::arg("inputs"), py::arg("outputs"), "Per-call slots: lists of (slot, dtype code, bytes).")
      .def("add_step", [](PyProgram& p, std::string name, int dtype, std::vector<int> in, std::vector<int> out,
                          std::vector<int> in_types, std::vector<int> out_types, std::vector<std::int64_t> ints,
                          std::vector<double> floats, std::shared_ptr<engine::KernelState> state) {
             engine::StepSpec s;
             s.name = std::move(name);
             s.dtype = dtype == 0 ? DType::Any : to_dtype(dtype);
             s.in = std::move(in);
             s.out = std::move(out);
             for (int t : in_types) s.in_types.push_back(t == 0 ? DType::Any : to_dtype(t));
             for (int t : out_types) s.out_types.push_back(t == 0 ? DType::Any : to_dtype(t));
             s.ints = std::move(ints);
             s.floats = std::move(floats);
             s.state = std::move(state);
             p.prog.add_step(s);
           }, py::arg("name"), py::arg("dtype"), py::arg("inputs"), py::arg("outputs"), py::arg("input_types"),
           py::arg("output_types"), py::arg("ints"), py::arg("floats"), py::arg("state") = nullptr,
           "Append the registry's step for (name, dtype); KernelError if none or a parameter is bad.")
      .def("__len__", [](const PyProgram& p) { return p.prog.size(); })
      .def("step_names", [](const PyProgram& p) {
             std::vector<std::string> n;
             for (size_t i = 0; i < p.prog.size(); ++i) n.push_back(p.prog.step_name(i));
             return n;
           })
      .def("run", [](const PyProgram& p, const std::vector<py::array>& inputs, std::vector<py::array>& outputs,
                     engine::ContextPool& pool) {
             const auto& ins = p.prog.inputs();
             const auto& outs = p.prog.outputs();
             if (inputs.size() != ins.size() || outputs.size() != outs.size())
               throw engine::Error("run: expected " + std::to_string(ins.size()) + " inputs and " +
                                   std::to_string(outs.size()) + " outputs");
             std::vector<const void*> in(inputs.size());
             std::vector<void*> out(outputs.size());
             for (size_t i = 0; i < inputs.size(); ++i) in[i] = checked_in(inputs[i], ins[i], "input");
             for (size_t i = 0; i < outputs.size(); ++i) {
               checked_in(outputs[i], outs[i], "output");
               if (!outputs[i].writeable()) throw engine::Error("output: array is read-only");
               out[i] = outputs[i].mutable_data();
             }
             py::gil_scoped_release nogil;
             p.prog.run(pool, in.data(), out.data());
           }, py::arg("inputs"), py::arg("outputs"), py::arg("pool"))
      .def("run_timed", [](const PyProgram& p, const std::vector<py::array>& inputs, std::vector<py::array>& outputs,
                           engine::ContextPool& pool) {
             const auto& ins = p.prog.inputs();
             const auto& outs = p.prog.outputs();
             if (inputs.size() != ins.size() || outputs.size() != outs.size())
               throw engine::Error("run_timed: wrong number of inputs or outputs");
             std::vector<const void*> in(inputs.size());
             std::vector<void*> out(outputs.size());
             for (size_t i = 0; i < inputs.size(); ++i) in[i] = checked_in(inputs[i], ins[i], "input");
             for (size_t i = 0; i < outputs.size(); ++i) {
               checked_in(outputs[i], outs[i], "output");
               out[i] = outputs[i].mutable_data();
             }
             std::vector<double> times;
             {
               py::gil_scoped_release nogil;
               p.prog.run_timed(pool, in.data(), out.data(), times);
             }
             return times;
           }, py::arg("inputs"), py::arg("outputs"), py::arg("pool"), "As run; returns each step's seconds.")
      .def("set_output_shape", [](PyProgram& p, std::vector<py::ssize_t> shape) { p.out_shape = std::move(shape); },
           "Shape of the single output that run_one allocates.")
      .def("run_one", [](const PyProgram& p, const py::array& x, engine::ContextPool& pool) -> py::object {
             // predict()'s fast path: one C-contiguous input of the declared type and size, one
             // output allocated here. Returns None (the caller takes the checked path) otherwise.
             const auto& ins = p.prog.inputs();
             const auto& outs = p.prog.outputs();
             if (ins.size() != 1 || outs.size() != 1 || array_dtype(x) != ins[0].dtype ||
                 !(x.flags() & py::array::c_style) || static_cast<size_t>(x.nbytes()) != ins[0].bytes)
               return py::none();
             py::array y(numpy_dtype(outs[0].dtype), p.out_shape);
             const void* in = x.data();
             void* out = y.mutable_data();
             {
               py::gil_scoped_release nogil;
               p.prog.run(pool, &in, &out);
             }
             return std::move(y);
           }, py::arg("x"), py::arg("pool"));
}
