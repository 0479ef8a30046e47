// Quantized matmul bindings (issue 19): weights are the raw ggml blocks of a GGUF tensor
// (uint8, N rows of quant_row_bytes(type, K) bytes), or float32 (N, K) for F32.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>

#include "checks.h"
#include "engine/quant.h"

namespace py = pybind11;
using engine::index_t;
using engine::QuantType;
using namespace engine::bind;

namespace {

QuantType parse_type(const std::string& name) {
  static constexpr QuantType kAll[] = {QuantType::F32, QuantType::F16, QuantType::BF16, QuantType::Q4_0,
                                       QuantType::Q4_1, QuantType::Q8_0, QuantType::Q4_K, QuantType::Q6_K};
  std::string names;
  for (QuantType t : kAll) {
    if (name == engine::quant_type_name(t)) return t;
    names += (names.empty() ? "" : ", ") + std::string(engine::quant_type_name(t));
  }
  throw engine::Error("wtype: unknown weight type '" + name + "' (expected one of " + names + ")");
}

void check_dims(index_t N, index_t K) {
  if (N < 0) throw engine::Error("N: expected N >= 0, got " + std::to_string(N));
  if (K <= 0) throw engine::Error("K: expected K > 0, got " + std::to_string(K));
}

// The weight bytes: uint8 holding exactly N rows, or (F32 only) a float32 array of N*K values.
const void* weight_ptr(const py::array& w, QuantType t, index_t N, index_t K) {
  const index_t row = engine::quant_row_bytes(t, K);
  if (t == QuantType::F32 && is_f32(w)) {
    check_f32(w, "w");
    check_size(w, N * K, "w");
    return w.data();
  }
  if (array_dtype(w) != engine::DType::U8)
    throw engine::Error(std::string("w: expected a uint8 array of raw ") + engine::quant_type_name(t) +
                        " blocks" + (t == QuantType::F32 ? " or a float32 array" : "") + ", got " +
                        std::string(py::str(w.dtype())));
  if (!(w.flags() & py::array::c_style))
    throw engine::Error("w: expected a C-contiguous array (use np.ascontiguousarray)");
  if (static_cast<index_t>(w.size()) != N * row)
    throw engine::Error("w: expected " + std::to_string(N * row) + " bytes (N=" + std::to_string(N) + " rows of " +
                        std::to_string(row) + " bytes of " + engine::quant_type_name(t) + " at K=" +
                        std::to_string(K) + "), got " + std::to_string(w.size()));
  return w.data();
}

}  // namespace

void init_quant(py::module_& m) {
  m.def("quant_row_bytes",
        [](const std::string& wtype, index_t K) { return engine::quant_row_bytes(parse_type(wtype), K); },
        py::arg("wtype"), py::arg("K"), "Bytes of one row of K values of weight type wtype (K a multiple of its block).");

  m.def("quant_dequantize",
        [](py::array w, const std::string& wtype, index_t N, index_t K) {
          const QuantType t = parse_type(wtype);
          check_dims(N, K);
          const void* pw = weight_ptr(w, t, N, K);
          py::array_t<float> out({N, K});
          float* po = out.mutable_data();
          py::gil_scoped_release nogil;
          engine::quant_dequantize_rows(pw, t, K, 0, N, po);
          return out;
        },
        py::arg("w"), py::arg("wtype"), py::arg("N"), py::arg("K"),
        "float32 (N, K) from N rows of raw ggml blocks (bit-exact with ggml's dequantisation).");

  m.def("quant_matmul",
        [](py::array x, py::array w, const std::string& wtype, index_t N, index_t K, py::object out, bool accumulate) {
          const QuantType t = parse_type(wtype);
          check_dims(N, K);
          engine::quant_row_bytes(t, K);  // K a whole number of blocks, before the shapes that use it
          if (x.ndim() != 2 || x.shape(1) != K)
            throw engine::Error("x: expected a 2-D float32 array (M, K=" + std::to_string(K) + "), got shape " +
                                shape_str(x));
          const float* px = in_ptr(x, "x");
          const index_t M = x.shape(0);
          const void* pw = weight_ptr(w, t, N, K);
          py::array y;
          if (out.is_none()) {
            y = py::array_t<float>({M, N});
            if (accumulate) std::fill_n(static_cast<float*>(y.mutable_data()), M * N, 0.f);  // adds to zeros
          } else {
            y = out.cast<py::array>();
            check_shape(y, {M, N}, "out");
          }
          float* py_ = out_ptr(y, "out");
          {
            py::gil_scoped_release nogil;
            engine::quant_matmul(px, K, M, K, pw, t, N, py_, N, accumulate);
          }
          return y;
        },
        py::arg("x"), py::arg("w"), py::arg("wtype"), py::arg("N"), py::arg("K"), py::arg("out") = py::none(),
        py::arg("accumulate") = false,
        "out[m, n] (+)= sum_k x[m, k] W[n, k]: x float32 (M, K), W N rows of raw ggml blocks (or float32 (N, K) "
        "for F32). Returns out (a new (M, N) array when None).");

  py::class_<engine::QuantPacked>(m, "QuantPacked",
                                  "Weights repacked for the few-row AVX-512 VNNI kernels (docs/quant-kernels.md).")
      .def(py::init([](py::array w, const std::string& wtype, index_t N, index_t K) {
             const QuantType t = parse_type(wtype);
             check_dims(N, K);
             if (!engine::QuantPacked::supports(t))
               throw engine::Error(std::string("wtype: no packed layout for ") + engine::quant_type_name(t) +
                                   " (Q4_0, Q4_1, Q8_0 and Q4_K pack)");
             const void* pw = weight_ptr(w, t, N, K);
             py::gil_scoped_release nogil;
             return new engine::QuantPacked(pw, t, N, K);
           }),
           py::arg("w"), py::arg("wtype"), py::arg("N"), py::arg("K"))
      .def_property_readonly("nbytes", &engine::QuantPacked::bytes)
      .def_property_readonly("shape", [](const engine::QuantPacked& p) { return py::make_tuple(p.rows(), p.cols()); })
      .def_property_readonly("wtype", [](const engine::QuantPacked& p) { return std::string(engine::quant_type_name(p.type())); })
      .def(
          "matmul",
          [](const engine::QuantPacked& p, py::array x, py::array w, py::object out, bool accumulate) {
            const index_t N = p.rows(), K = p.cols();
            if (x.ndim() != 2 || x.shape(1) != K)
              throw engine::Error("x: expected a 2-D float32 array (M, K=" + std::to_string(K) + "), got shape " +
                                  shape_str(x));
            const float* px = in_ptr(x, "x");
            const index_t M = x.shape(0);
            const void* pw = weight_ptr(w, p.type(), N, K);
            py::array y;
            if (out.is_none()) {
              y = py::array_t<float>({M, N});
              if (accumulate) std::fill_n(static_cast<float*>(y.mutable_data()), M * N, 0.f);
            } else {
              y = out.cast<py::array>();
              check_shape(y, {M, N}, "out");
            }
            float* py_ = out_ptr(y, "out");
            {
              py::gil_scoped_release nogil;
              engine::quant_matmul_packed(px, K, M, p, pw, py_, N, accumulate);
            }
            return y;
          },
          py::arg("x"), py::arg("w"), py::arg("out") = py::none(), py::arg("accumulate") = false,
          "quant_matmul with these packed weights; w: the raw blocks they came from (read only where the CPU or "
          "ISA cap has no packed kernels).");
  m.def("quant_packed_active", &engine::quant_packed_active,
        "Whether quant_matmul_packed runs the packed kernels here (AVX-512 VNNI at the current ISA cap).");
}
