// Recurrent-layer bindings: the packed weight layout and workspace size the `rnn` kernel
// expects (engine/rnn.h), so the lowering in engine/ops/rnn.py never restates them.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "checks.h"
#include "engine/rnn.h"

namespace py = pybind11;
using engine::index_t;
using engine::RnnCell;
using namespace engine::bind;

namespace {

RnnCell cell_of(int code) {
  if (code < 0 || code > 2) throw engine::Error("rnn: bad cell code " + std::to_string(code));
  return static_cast<RnnCell>(code);
}

}  // namespace

void init_rnn(py::module_& m) {
  m.def("rnn_pack_weights",
        [](py::array w, int cell, bool linear_before_reset, bool recurrent, bool keras_layout) {
          const RnnCell c = cell_of(cell);
          const index_t G = engine::rnn_gates(c);
          // ONNX: (G·H, K); Keras: (K, G·H)
          const index_t gh_axis = keras_layout ? 1 : 0;
          if (w.ndim() != 2 || w.shape(gh_axis) % G != 0)
            throw engine::Error("rnn_pack_weights: expected W or R of one direction (" +
                                std::string(keras_layout ? "K, G·H" : "G·H, K") + "), got " + shape_str(w));
          const index_t H = w.shape(gh_axis) / G, K = w.shape(1 - gh_axis);
          const float* src = in_ptr(w, "w");
          const engine::RnnLayout L = engine::rnn_layout(c, linear_before_reset, H);
          py::array_t<float> out({K, L.cols});
          float* dst = out.mutable_data();
          {
            py::gil_scoped_release nogil;
            engine::rnn_pack_weights(dst, src, K, c, linear_before_reset, H, recurrent, keras_layout);
          }
          return out;
        },
        py::arg("w"), py::arg("cell"), py::arg("linear_before_reset"), py::arg("recurrent"),
        py::arg("keras_layout") = false,
        "W (recurrent=False) or R of one direction, (G·H, K) in ONNX gate order (keras_layout: Keras's "
        "(K, G·H) kernel or recurrent_kernel), packed for the rnn kernel: (K, cols) float32. cell: 0 RNN, "
        "1 GRU, 2 LSTM.");
  m.def("rnn_pack_bias",
        [](py::array b, int cell, bool linear_before_reset, bool keras_layout) {
          const RnnCell c = cell_of(cell);
          const index_t G = engine::rnn_gates(c);
          if (b.ndim() != 1 || b.shape(0) % (2 * G) != 0)
            throw engine::Error("rnn_pack_bias: expected B of one direction (2·G·H,), got " + shape_str(b));
          const index_t H = b.shape(0) / (2 * G);
          const float* src = in_ptr(b, "b");
          py::array_t<float> out(engine::rnn_layout(c, linear_before_reset, H).cols);
          engine::rnn_pack_bias(out.mutable_data(), src, src + G * H, c, linear_before_reset, H, keras_layout);
          return out;
        },
        py::arg("b"), py::arg("cell"), py::arg("linear_before_reset"), py::arg("keras_layout") = false,
        "B of one direction (Wb then Rb, ONNX gate order, or Keras's with keras_layout) packed for the rnn "
        "kernel: (cols,) float32.");
  m.def("rnn_workspace_floats",
        [](int cell, bool linear_before_reset, index_t seq_len, index_t batch, index_t input, index_t hidden,
           bool masked, bool pack_weights) {
          engine::RnnConfig cfg;
          cfg.cell = cell_of(cell);
          cfg.linear_before_reset = linear_before_reset;
          cfg.seq_len = seq_len, cfg.batch = batch, cfg.input = input, cfg.hidden = hidden;
          cfg.masked = masked;
          cfg.pack_weights = pack_weights;
          return engine::rnn_workspace_floats(cfg);
        },
        py::arg("cell"), py::arg("linear_before_reset"), py::arg("seq_len"), py::arg("batch"), py::arg("input"), py::arg("hidden"),
        py::arg("masked"), py::arg("pack_weights"),
        "Floats of workspace one direction of the rnn kernel needs.");
  m.def("rnn_tape_width",
        [](int cell, index_t hidden, index_t input) { return engine::rnn_tape_width(cell_of(cell), hidden, input); },
        py::arg("cell"), py::arg("hidden"), py::arg("input"),
        "Floats per (time step, batch row) of the tape the rnn kernel writes for training.");
  m.def("rnn_grad_workspace_floats",
        [](int cell, bool linear_before_reset, index_t seq_len, index_t batch, index_t input, index_t hidden) {
          engine::RnnConfig cfg;
          cfg.cell = cell_of(cell);
          cfg.linear_before_reset = linear_before_reset;
          cfg.seq_len = seq_len, cfg.batch = batch, cfg.input = input, cfg.hidden = hidden;
          return engine::rnn_grad_workspace_floats(cfg);
        },
        py::arg("cell"), py::arg("linear_before_reset"), py::arg("seq_len"), py::arg("batch"), py::arg("input"),
        py::arg("hidden"), "Floats of workspace one direction of the rnn_grad kernel needs.");
  m.def("rnn_backward_supports",
        [](int act, float alpha, float beta) {
          if (act < 0 || act >= engine::kRnnActCount) throw engine::Error("rnn: bad activation code");
          return engine::rnn_backward_supports({static_cast<engine::RnnAct>(act), alpha, beta});
        },
        py::arg("act"), py::arg("alpha"), py::arg("beta"),
        "Whether rnn_grad can differentiate this activation (its derivative follows from its output).");
}
