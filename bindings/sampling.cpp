// Sampling bindings (issue 19): one call samples a whole batch (engine/lm/sampling.py builds
// the arguments). Arrays are checked here; the kernel checks values and releases nothing it
// was not given.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "checks.h"
#include "cpu/lm_sampling.h"

namespace py = pybind11;
using engine::index_t;
using namespace engine::bind;

namespace {

// Columns of the params array, one row per sequence.
enum Col : int { kTemperature, kTopK, kTopP, kMinP, kPenalty, kCols };

engine::SamplingRow row_params(const double* r) {
  engine::SamplingRow p;
  p.temperature = static_cast<float>(r[kTemperature]);
  const double k = r[kTopK];  // NaN fails the first test, so the cast below is always defined
  ENGINE_CHECK(k >= 0 && k <= 9.0e18 && k == static_cast<double>(static_cast<std::int64_t>(k)),
               "sample: top_k must be a whole number >= 0, got " + std::to_string(r[kTopK]));
  p.top_k = static_cast<std::int64_t>(r[kTopK]);
  p.top_p = static_cast<float>(r[kTopP]);
  p.min_p = static_cast<float>(r[kMinP]);
  p.repetition_penalty = static_cast<float>(r[kPenalty]);
  return p;
}

void check_logits(const py::array& logits) {
  if (logits.ndim() != 2)
    throw engine::Error("logits: expected a 2-D (batch, vocab) array, got shape " + shape_str(logits));
  check_f32(logits, "logits");
}

void check_params(const py::array& params, index_t B) {
  check_typed(params, engine::DType::F64, "params");
  check_shape(params, {B, kCols}, "params");
}

// Each entry None or a 1-D C-contiguous int32 array of ids; `keep` holds a reference to it for
// the call (the kernel runs without the GIL).
void set_history(engine::SamplingRow& p, const py::handle& h, index_t b, std::vector<py::array>& keep) {
  if (h.is_none()) return;
  const std::string name = "histories[" + std::to_string(b) + "]";
  if (!py::isinstance<py::array>(h))
    throw engine::Error(name + ": expected None or an int32 numpy array, got " + std::string(py::str(py::type::of(h))));
  py::array a = py::reinterpret_borrow<py::array>(h);
  keep.push_back(a);
  check_typed(a, engine::DType::I32, name.c_str());
  if (a.ndim() != 1) throw engine::Error(name + ": expected a 1-D array, got shape " + shape_str(a));
  p.history = static_cast<const std::int32_t*>(a.data());
  p.history_len = a.shape(0);
}

}  // namespace

void init_sampling(py::module_& m) {
  m.def("lm_sample",
        [](py::array logits, py::array params, py::list histories, py::array rng) {
          check_logits(logits);
          const index_t B = logits.shape(0), V = logits.shape(1);
          check_params(params, B);
          check_typed(rng, engine::DType::U64, "rng");
          check_shape(rng, {B}, "rng");
          if (!rng.writeable()) throw engine::Error("rng: array is read-only");
          if (static_cast<index_t>(histories.size()) != B)
            throw engine::Error("histories: expected " + std::to_string(B) + " entries, got " +
                                std::to_string(histories.size()));
          std::vector<engine::SamplingRow> rows(static_cast<std::size_t>(B));
          std::vector<py::array> keep;
          const double* pr = static_cast<const double*>(params.data());
          for (index_t b = 0; b < B; ++b) {
            rows[b] = row_params(pr + b * kCols);
            set_history(rows[b], histories[b], b, keep);
          }
          py::array_t<std::int32_t> out(B);
          const float* px = static_cast<const float*>(logits.data());
          auto* ps = static_cast<std::uint64_t*>(rng.mutable_data());
          std::int32_t* po = out.mutable_data();
          {
            py::gil_scoped_release nogil;
            engine::sample_tokens(po, ps, px, V, B, V, rows.data());
          }
          return out;
        },
        py::arg("logits"), py::arg("params"), py::arg("histories"), py::arg("rng"),
        "One token per row of logits (float32 (B, V)). params: float64 (B, 5) = temperature, top_k, "
        "top_p, min_p, repetition_penalty; histories: B entries, None or int32 ids for the penalty; "
        "rng: uint64 (B,) states, advanced in place. Returns int32 (B,). logits are not modified.");

  m.def("lm_sample_support",
        [](py::array logits, py::array params, py::object history) {
          if (logits.ndim() != 1)
            throw engine::Error("logits: expected a 1-D (vocab,) array, got shape " + shape_str(logits));
          check_f32(logits, "logits");
          check_typed(params, engine::DType::F64, "params");
          check_shape(params, {kCols}, "params");
          const index_t V = logits.shape(0);
          engine::SamplingRow p = row_params(static_cast<const double*>(params.data()));
          std::vector<py::array> keep;
          set_history(p, history, 0, keep);
          std::vector<std::int32_t> ids(static_cast<std::size_t>(V));
          std::vector<double> probs(static_cast<std::size_t>(V));
          index_t n;
          {
            py::gil_scoped_release nogil;
            n = engine::sample_support(ids.data(), probs.data(), static_cast<const float*>(logits.data()), V, p);
          }
          py::array_t<std::int32_t> out_ids(n);
          py::array_t<double> out_probs(n);
          std::copy(ids.begin(), ids.begin() + n, out_ids.mutable_data());
          std::copy(probs.begin(), probs.begin() + n, out_probs.mutable_data());
          return py::make_tuple(out_ids, out_probs);
        },
        py::arg("logits"), py::arg("params"), py::arg("history") = py::none(),
        "The kept set of one row after the filters (ids ascending, int32) and each one's probability "
        "(float64), as lm_sample would draw from it.");
}
