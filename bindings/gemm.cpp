// GEMM bindings: shapes come from the arrays and are checked before any kernel runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "checks.h"
#include "engine/gemm.h"

namespace py = pybind11;
using engine::index_t;
using namespace engine::bind;

namespace {

engine::Epilogue make_epilogue(const py::object& bias, index_t n, engine::Act act, float a, float b,
                               bool per_row = false) {
  engine::Epilogue ep;
  if (!bias.is_none()) {
    py::array arr = bias.cast<py::array>();
    check_size(arr, n, "bias");
    ep.bias = in_ptr(arr, "bias");
    ep.bias_per_row = per_row;
  }
  ep.act = act;
  ep.act_alpha = a;
  ep.act_beta = b;
  return ep;
}

index_t rows(const py::array& a, bool t) { return t ? a.shape(1) : a.shape(0); }
index_t cols(const py::array& a, bool t) { return t ? a.shape(0) : a.shape(1); }

void check_2d(const py::array& a, const char* name) {
  if (a.ndim() != 2) throw engine::Error(std::string(name) + ": expected a 2-D array, got shape " + shape_str(a));
}

// A 2-D float32 view whose rows are contiguous but may be spaced apart (a column slice of a
// bigger array): returns the leading dimension in elements. Used by the strided test entry.
index_t row_view_ld(const py::array& a, const char* name) {
  check_2d(a, name);
  if (!is_f32(a))
    throw engine::Error(std::string(name) + ": expected a float32 array, got " + std::string(py::str(a.dtype())));
  const py::ssize_t es = sizeof(float);
  if (a.shape(1) > 1 && a.strides(1) != es)
    throw engine::Error(std::string(name) + ": rows must be contiguous (inner stride 4 bytes)");
  if (a.shape(0) > 1 && (a.strides(0) % es != 0 || a.strides(0) / es < a.shape(1)))
    throw engine::Error(std::string(name) + ": row stride must be a positive multiple of 4 bytes >= the row length");
  return a.shape(0) > 1 ? a.strides(0) / es : a.shape(1);
}

}  // namespace

void init_gemm(py::module_& m) {
  m.def("sgemm",
        [](py::array c, py::array a, py::array b, bool ta, bool tb, float alpha, float beta,
           py::object bias, engine::Act act, float act_alpha, float act_beta, bool bias_per_row) {
          check_2d(a, "a"); check_2d(b, "b"); check_2d(c, "c");
          index_t M = rows(a, ta), K = cols(a, ta), N = cols(b, tb);
          if (rows(b, tb) != K)
            throw engine::Error("sgemm: inner dimensions differ: op(a) is " + std::to_string(M) + "x" +
                                std::to_string(K) + ", op(b) is " + std::to_string(rows(b, tb)) + "x" + std::to_string(N));
          check_shape(c, {M, N}, "c");
          const float* pa = in_ptr(a, "a");
          const float* pb = in_ptr(b, "b");
          float* pc = out_ptr(c, "c");
          engine::Epilogue ep = make_epilogue(bias, bias_per_row ? M : N, act, act_alpha, act_beta, bias_per_row);
          py::gil_scoped_release nogil;
          engine::sgemm(ta, tb, M, N, K, alpha, pa, a.shape(1), pb, b.shape(1), beta, pc, N, ep);
        },
        py::arg("c"), py::arg("a"), py::arg("b"), py::arg("trans_a") = false, py::arg("trans_b") = false,
        py::arg("alpha") = 1.f, py::arg("beta") = 0.f, py::arg("bias") = py::none(),
        py::arg("act") = engine::Act::None, py::arg("act_alpha") = 0.f, py::arg("act_beta") = 0.f,
        py::arg("bias_per_row") = false,
        "c = act(alpha*op(a)@op(b) + beta*c + bias), in place into c (float32, C-contiguous). "
        "bias has N entries (one per column), or M with bias_per_row=True.");

  py::class_<engine::PackedMatrixB, engine::KernelState, std::shared_ptr<engine::PackedMatrixB>>(m, "PackedMatrixB")
      .def(py::init([](py::array b, bool tb) {
             check_2d(b, "b");
             const float* pb = in_ptr(b, "b");
             return std::make_shared<engine::PackedMatrixB>(tb, rows(b, tb), cols(b, tb), pb, b.shape(1));
           }),
           py::arg("b"), py::arg("trans_b") = false, "Pack op(b) (K×N) once for sgemm_packed.")
      .def_property_readonly("K", &engine::PackedMatrixB::K)
      .def_property_readonly("N", &engine::PackedMatrixB::N);

  m.def("sgemm_packed",
        [](py::array c, py::array a, const engine::PackedMatrixB& pb, bool ta, float alpha, float beta,
           py::object bias, engine::Act act, float act_alpha, float act_beta) {
          check_2d(a, "a"); check_2d(c, "c");
          index_t M = rows(a, ta), K = cols(a, ta);
          if (K != pb.K())
            throw engine::Error("sgemm_packed: op(a) has " + std::to_string(K) + " columns, packed b has K=" + std::to_string(pb.K()));
          check_shape(c, {M, pb.N()}, "c");
          const float* pa = in_ptr(a, "a");
          float* pc = out_ptr(c, "c");
          engine::Epilogue ep = make_epilogue(bias, pb.N(), act, act_alpha, act_beta);
          py::gil_scoped_release nogil;
          engine::sgemm_packed(ta, M, alpha, pa, a.shape(1), pb, beta, pc, pb.N(), ep);
        },
        py::arg("c"), py::arg("a"), py::arg("packed_b"), py::arg("trans_a") = false, py::arg("alpha") = 1.f,
        py::arg("beta") = 0.f, py::arg("bias") = py::none(), py::arg("act") = engine::Act::None,
        py::arg("act_alpha") = 0.f, py::arg("act_beta") = 0.f);

  m.def("sgemm_strided",
        [](py::array c, py::array a, py::array b, bool ta, bool tb, float alpha, float beta) {
          index_t lda = row_view_ld(a, "a"), ldb = row_view_ld(b, "b"), ldc = row_view_ld(c, "c");
          if (!c.writeable()) throw engine::Error("c: array is read-only");
          index_t M = rows(a, ta), K = cols(a, ta), N = cols(b, tb);
          if (rows(b, tb) != K) throw engine::Error("sgemm_strided: inner dimensions differ");
          check_shape(c, {M, N}, "c");
          const float* pa = static_cast<const float*>(a.data());
          const float* pb = static_cast<const float*>(b.data());
          float* pc = static_cast<float*>(c.mutable_data());
          py::gil_scoped_release nogil;
          engine::sgemm(ta, tb, M, N, K, alpha, pa, lda, pb, ldb, beta, pc, ldc);
        },
        py::arg("c"), py::arg("a"), py::arg("b"), py::arg("trans_a") = false, py::arg("trans_b") = false,
        py::arg("alpha") = 1.f, py::arg("beta") = 0.f,
        "sgemm on row-strided views (rows contiguous, leading dimension >= row length); for tests.");
}
