// lm bindings (issue 19): the native decoder (csrc/cpu/lm_decoder.h). engine/lm/decoder.py
// validates a model's spec and weights with named messages first; the checks here keep the
// native side safe on their own (every pointer it keeps is to an array of the right size,
// held alive by the binding object).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <string>
#include <vector>

#include "checks.h"
#include "cpu/lm_decoder.h"

namespace py = pybind11;
using engine::index_t;
using namespace engine::bind;

namespace {

engine::QuantType quant_type(const std::string& name) {
  for (int id : {0, 1, 2, 3, 8, 12, 14, 30})
    if (name == engine::quant_type_name(static_cast<engine::QuantType>(id))) return static_cast<engine::QuantType>(id);
  throw engine::Error("decoder: unknown weight type '" + name + "'");
}

// The decoder and the arrays it points into.
struct PyLmDecoder {
  std::vector<py::object> keep;
  std::unique_ptr<engine::LmDecoder> dec;
};

struct WeightReader {
  py::dict weights;
  std::vector<py::object>& keep;

  bool has(const std::string& name) const { return weights.contains(py::str(name)); }

  // (array, type, rows, cols): rows·row_bytes(type, cols) bytes, C-contiguous.
  engine::LmMatrix matrix(const std::string& name, index_t rows, index_t cols, bool required = true) {
    engine::LmMatrix m;
    if (!has(name)) {
      if (required) throw engine::Error("decoder: missing weight '" + name + "'");
      return m;
    }
    py::tuple t = weights[py::str(name)].cast<py::tuple>();
    if (t.size() != 2) throw engine::Error("decoder: weight '" + name + "' must be (array, type)");
    py::array a = t[0].cast<py::array>();
    m.type = quant_type(t[1].cast<std::string>());
    const index_t bytes = rows * engine::quant_row_bytes(m.type, cols);
    if (!(a.flags() & py::array::c_style))
      throw engine::Error("decoder: weight '" + name + "' must be C-contiguous");
    if (m.type == engine::QuantType::F32 && !is_f32(a))
      throw engine::Error("decoder: F32 weight '" + name + "' must be a float32 array");
    if (static_cast<index_t>(a.nbytes()) != bytes)
      throw engine::Error("decoder: weight '" + name + "' (" + engine::quant_type_name(m.type) + ", " + std::to_string(rows) +
                          "x" + std::to_string(cols) + ") needs " + std::to_string(bytes) + " bytes, got " +
                          std::to_string(a.nbytes()));
    keep.push_back(a);
    m.data = a.data(), m.rows = rows, m.cols = cols;
    return m;
  }

  const float* vector(const std::string& name, index_t n, bool required = true) {
    if (!has(name)) {
      if (required) throw engine::Error("decoder: missing weight '" + name + "'");
      return nullptr;
    }
    py::array a = weights[py::str(name)].cast<py::array>();
    check_f32(a, name.c_str());
    check_size(a, n, name.c_str());
    keep.push_back(a);
    return static_cast<const float*>(a.data());
  }
};

std::unique_ptr<PyLmDecoder> make_decoder(py::dict spec, py::dict weights, index_t max_sequences, index_t max_context,
                                          index_t block_tokens, index_t blocks) {
  engine::LmSpec s;
  auto i = [&](const char* k) { return spec[k].cast<index_t>(); };
  s.vocab = i("vocab_size"), s.hidden = i("hidden"), s.n_layers = i("n_layers"), s.n_heads = i("n_heads");
  s.n_kv_heads = i("n_kv_heads"), s.head_dim = i("head_dim"), s.intermediate = i("intermediate");
  s.rms_norm = spec["norm"].cast<std::string>() == "rms";
  s.norm_eps = spec["norm_eps"].cast<double>();
  s.swiglu = spec["mlp"].cast<std::string>() == "swiglu";
  s.rope = spec["position"].cast<std::string>() == "rope";
  s.rope_theta = spec["rope_theta"].cast<double>();
  s.rope_dim = s.rope ? (i("rope_dim") ? i("rope_dim") : s.head_dim) : 0;
  s.rope_interleaved = spec["rope_interleaved"].cast<bool>();
  const bool bias = spec["linear_bias"].cast<bool>(), layer_norm = !s.rms_norm;
  ENGINE_CHECK(s.vocab > 0 && s.hidden > 0 && s.n_layers > 0 && s.head_dim > 0 && s.intermediate > 0,
               "decoder: sizes must be positive");

  auto holder = std::make_unique<PyLmDecoder>();
  WeightReader w{weights, holder->keep};
  const index_t D = s.hidden, hd = s.head_dim, H = s.n_heads, KV = s.n_kv_heads, F = s.intermediate;
  engine::LmWeights lw;
  lw.tok_embeddings = w.matrix("tok_embeddings", s.vocab, D);
  if (!spec["tied_embeddings"].cast<bool>()) lw.output = w.matrix("output", s.vocab, D);
  if (!s.rope) {
    py::array p = weights["pos_embeddings"].cast<py::array>();
    s.positions = p.ndim() == 2 ? p.shape(0) : 0;
    lw.pos_embeddings = w.vector("pos_embeddings", s.positions * D);
  }
  lw.norm = w.vector("norm", D);
  if (layer_norm) lw.norm_bias = w.vector("norm_bias", D);
  for (index_t l = 0; l < s.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    engine::LmLayer L;
    L.attn_norm = w.vector(p + "attn_norm", D);
    L.ffn_norm = w.vector(p + "ffn_norm", D);
    if (layer_norm) L.attn_norm_bias = w.vector(p + "attn_norm_bias", D), L.ffn_norm_bias = w.vector(p + "ffn_norm_bias", D);
    if (w.has(p + "wqkv")) {
      L.wqkv = w.matrix(p + "wqkv", (H + 2 * KV) * hd, D);
      L.bqkv = w.vector(p + "bqkv", (H + 2 * KV) * hd, bias);
    } else {
      L.wq = w.matrix(p + "wq", H * hd, D), L.wk = w.matrix(p + "wk", KV * hd, D), L.wv = w.matrix(p + "wv", KV * hd, D);
      L.bq = w.vector(p + "bq", H * hd, bias), L.bk = w.vector(p + "bk", KV * hd, bias);
      L.bv = w.vector(p + "bv", KV * hd, bias);
    }
    L.wo = w.matrix(p + "wo", D, H * hd);
    if (s.swiglu) L.w_gate = w.matrix(p + "w_gate", F, D);
    L.w_up = w.matrix(p + "w_up", F, D);
    L.w_down = w.matrix(p + "w_down", D, F);
    // Biases: required with linear_bias, taken when present otherwise (Qwen2: Q/K/V only).
    L.bo = w.vector(p + "bo", D, bias), L.b_up = w.vector(p + "b_up", F, bias), L.b_down = w.vector(p + "b_down", D, bias);
    lw.layers.push_back(L);
  }
  holder->dec = std::make_unique<engine::LmDecoder>(s, std::move(lw), max_sequences, max_context, block_tokens, blocks);
  return holder;
}

using I64 = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;

}  // namespace

void init_lm(py::module_& m) {
  py::class_<PyLmDecoder>(m, "LmDecoder")
      .def(py::init(&make_decoder), py::arg("spec"), py::arg("weights"), py::arg("max_sequences"),
           py::arg("max_context"), py::arg("block_tokens"), py::arg("blocks"))
      .def("open", [](PyLmDecoder& d) { return d.dec->open(); })
      .def("close", [](PyLmDecoder& d, index_t s) { d.dec->close(s); })
      .def("length", [](PyLmDecoder& d, index_t s) { return d.dec->length(s); })
      .def("truncate", [](PyLmDecoder& d, index_t s, index_t n) { d.dec->truncate(s, n); })
      .def("kv_usage", [](PyLmDecoder& d) { return py::make_tuple(d.dec->blocks_in_use(), d.dec->blocks_total()); })
      .def(
          "forward",
          [](PyLmDecoder& d, I64 seqs, I64 counts, I64 tokens, bool all_logits) {
            const index_t vocab = d.dec->vocab();
            const index_t B = seqs.size();
            if (counts.size() != B) throw engine::Error("decoder.forward: seqs and counts differ in length");
            index_t T = 0;
            for (index_t b = 0; b < B; ++b) T += counts.data()[b] > 0 ? counts.data()[b] : 0;
            if (T != static_cast<index_t>(tokens.size()))
              throw engine::Error("decoder.forward: counts add up to " + std::to_string(T) + ", got " +
                                  std::to_string(tokens.size()) + " tokens");
            const index_t R = engine::LmDecoder::logit_rows(counts.data(), B, all_logits);
            py::array_t<float> out({R, vocab});
            float* o = out.mutable_data();
            {
              py::gil_scoped_release nogil;
              d.dec->forward(seqs.data(), counts.data(), B, tokens.data(), all_logits, o);
            }
            return out;
          },
          py::arg("seqs"), py::arg("counts"), py::arg("tokens"), py::arg("all_logits"));
}
