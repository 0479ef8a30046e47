// Kernels whose output size depends on the data, called between native segments
// (engine/runtime/dynamic.py): count first, then fill an exactly-sized result.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <vector>

#include "checks.h"
#include "engine/nonzero.h"

namespace py = pybind11;
using engine::index_t;
using namespace engine::bind;

void init_dynamic(py::module_& m) {
  m.def("nonzero", [](py::array x) {
        if (!(x.flags() & py::array::c_style)) throw engine::Error("nonzero: expected a C-contiguous array");
        const engine::DType t = array_dtype(x);
        if (t == engine::DType::Any) throw engine::Error("nonzero: unsupported element type " + std::string(py::str(x.dtype())));
        std::vector<index_t> shape(x.shape(), x.shape() + x.ndim());
        const int ndim = static_cast<int>(x.ndim());
        index_t count;
        {
          py::gil_scoped_release nogil;
          count = engine::nonzero_count(x.data(), static_cast<index_t>(x.size()), t);
        }
        py::array_t<std::int64_t> out({static_cast<py::ssize_t>(ndim), static_cast<py::ssize_t>(count)});
        std::int64_t* o = out.mutable_data();
        {
          py::gil_scoped_release nogil;
          engine::nonzero_indices(o, count, x.data(), shape.data(), ndim, t);
        }
        return out;
      }, py::arg("x"), "Coordinates of x's non-zero elements: int64 (ndim, count), row-major order.");
}
