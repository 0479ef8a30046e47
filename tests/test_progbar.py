"""engine.progbar: the text Keras 3's Progbar shows (frames compared with keras.utils.Progbar
under the same scripted clock), terminal vs non-terminal streams, verbose 0/1/2, throttling,
averaging, and ProgbarLogger inside a CallbackList."""

from __future__ import annotations

import io
import os
import re
import time
import types

import numpy as np
import pytest

from engine import callbacks as cb
from engine import progbar as pb

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported anywhere

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Stream(io.StringIO):
    """A text stream that says whether it is a terminal; counts writes."""

    def __init__(self, tty: bool, encoding: str = "utf-8"):
        super().__init__()
        self._tty = tty
        self._encoding = encoding
        self.writes = 0

    def isatty(self):
        return self._tty

    @property
    def encoding(self):
        return self._encoding

    def write(self, s):
        self.writes += 1
        return super().write(s)


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(pb, "_now", c)
    return c


def frames(text: str) -> list:
    """The lines a terminal shows one after the other: split at \\r (and \\n), \\b and colours removed."""
    text = ANSI.sub("", text).replace("\b", "")
    return [f for f in re.split(r"[\r\n]", text) if f]


def _script(bar, clock, steps, values_at, first=0.5, step=0.012):
    clock.t += first
    for i in range(1, steps + 1):
        if i > 1:
            clock.t += step
        bar.update(i, values_at(i))


def _values(i):
    return [("loss", 1.0 / i), ("accuracy", min(1.0, 0.5 + i / 200))]


# -- against Keras ------------------------------------------------------------------------------

@pytest.fixture
def keras_progbar(monkeypatch, clock):
    pytest.importorskip("keras")
    from keras.src.utils import progbar as kp

    monkeypatch.setattr(kp, "time", types.SimpleNamespace(time=clock))
    return kp.Progbar


@pytest.mark.parametrize("target,steps", [(100, 100), (7, 7), (None, 12), (100, 40)])
@pytest.mark.parametrize("stateful", [None, ["loss"]])
def test_terminal_frames_match_keras(keras_progbar, clock, capsys, target, steps, stateful):
    start = clock.t
    theirs = keras_progbar(target, verbose=1, stateful_metrics=stateful)
    _script(theirs, clock, steps, _values)
    if target is None or steps < target:
        theirs.update(steps, _values(steps), finalize=True)
    keras_out = capsys.readouterr().out

    clock.t = start
    out = Stream(tty=True)
    ours = pb.Progbar(target, verbose=1, stateful_metrics=stateful, file=out)
    _script(ours, clock, steps, _values)
    if target is None or steps < target:
        ours.update(steps, _values(steps), finalize=True)
    assert frames(out.getvalue()) == frames(keras_out)
    assert out.getvalue().endswith("\n") and keras_out.endswith("\n")
    assert len(frames(out.getvalue())) < steps  # throttled: not one frame per step


@pytest.mark.parametrize("values", [_values, lambda i: [("loss", -0.5), ("tiny", 1e-5)]])
def test_verbose2_line_matches_keras(keras_progbar, clock, capsys, values):
    start = clock.t
    theirs = keras_progbar(50, verbose=2)
    _script(theirs, clock, 50, values)
    keras_out = capsys.readouterr().out

    clock.t = start
    out = Stream(tty=False)
    ours = pb.Progbar(50, verbose=2, file=out)
    _script(ours, clock, 50, values)
    assert out.getvalue() == keras_out
    assert out.writes == 1


def test_final_line_matches_keras_text(keras_progbar, clock, capsys):
    """Non-terminal: our one line is Keras's final frame (without colours and \\r)."""
    start = clock.t
    theirs = keras_progbar(100, verbose=1, stateful_metrics=["loss", "accuracy"])
    _script(theirs, clock, 100, _values)
    keras_last = frames(capsys.readouterr().out)[-1]

    clock.t = start
    out = Stream(tty=False)
    ours = pb.Progbar(100, verbose=1, stateful_metrics=["loss", "accuracy"], file=out)
    _script(ours, clock, 100, _values)
    assert out.getvalue() == keras_last + "\n"
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


# -- formats ------------------------------------------------------------------------------------

def test_terminal_line_format(clock):
    out = Stream(tty=True)
    bar = pb.Progbar(100, verbose=1, stateless_metrics=set(), file=out)
    clock.t += 0.5                                     # first step (not used for the estimate)
    bar.update(1, {"accuracy": 0.9, "loss": 0.30213})
    clock.t += 11 * 0.012
    bar.update(12, {"accuracy": 0.9, "loss": 0.30213})
    last = out.getvalue().split("\r")[-1]
    # (the first frame, " 1/100 ... 500ms/step ...", was longer: spaces cover its tail)
    assert ANSI.sub("", last) == " 12/100 " + "━" * 20 + " 1s 12ms/step - accuracy: 0.9000 - loss: 0.3021  "
    assert "\x1b[32m" + "━" * 2 in last  # done part green, rest grey, count and ETA bold, as Keras
    clock.t += 88 * 0.012
    bar.update(100, {"accuracy": 0.95, "loss": 0.2})
    final = out.getvalue().split("\r")[-1]
    assert ANSI.sub("", final) == "100/100 " + "━" * 20 + " 2s 12ms/step - accuracy: 0.9500 - loss: 0.2000\n"


def test_non_terminal_prints_only_the_final_line(clock):
    out = Stream(tty=False)
    bar = pb.Progbar(10, verbose=1, stateless_metrics=set(), file=out)
    for i in range(1, 10):
        clock.t += 1.0
        bar.update(i, {"loss": 0.5})
        assert out.getvalue() == ""           # nothing while running
    clock.t += 1.0
    bar.update(10, {"loss": 0.25})
    assert out.getvalue() == "10/10 " + "━" * 20 + " 10s 1s/step - loss: 0.2500\n"
    assert out.writes == 1


def test_verbose0_prints_nothing(clock):
    for tty in (True, False):
        out = Stream(tty=tty)
        bar = pb.Progbar(5, verbose=0, file=out)
        for i in range(1, 6):
            bar.update(i, [("loss", 1.0)])
        assert out.getvalue() == "" and out.writes == 0


def test_verbose2_format(clock):
    out = Stream(tty=True)  # verbose=2 is one line, terminal or not
    bar = pb.Progbar(100, verbose=2, stateless_metrics=set(), file=out)
    clock.t += 0.1
    bar.update(1, {"loss": 9.0})
    clock.t += 99 * 0.012
    bar.update(100, {"loss": 0.3021})
    assert out.getvalue() == "100/100 - 1s - 12ms/step - loss: 0.3021\n"


def test_unknown_target(clock):
    out = Stream(tty=True)
    bar = pb.Progbar(None, verbose=1, file=out)
    clock.t += 2
    bar.update(5, [("loss", 1.0)])
    assert frames(out.getvalue())[-1].startswith("      5/Unknown 2s")
    bar.update(5, [("loss", 1.0)], finalize=True)
    assert out.getvalue().endswith("\n")


def test_value_and_time_formats():
    assert pb.format_value(0.30213) == "0.3021"
    assert pb.format_value(1e-4) == "1.0000e-04"
    assert pb.format_value(-2.5) == "-2.5000"
    assert pb.format_value(0.0) == "0.0000e+00"
    assert pb.format_value(float("nan")) == "nan"
    assert pb.format_value(float("inf")) == "inf"
    assert pb.format_time_per_unit(0.012, "step") == " 12ms/step"
    assert pb.format_time_per_unit(2.4, "step") == " 2s/step"
    assert pb.format_time_per_unit(3e-6, "sample") == " 3us/sample"
    assert pb.format_time_per_unit(0, "step") == " 0s/step"
    assert pb.format_eta(42.9) == "42s"
    assert pb.format_eta(65) == "1:05"
    assert pb.format_eta(3605) == "1:00:05"


def test_eta_while_running(clock):
    out = Stream(tty=True)
    bar = pb.Progbar(1000, verbose=1, file=out)
    bar.update(1)
    clock.t += 99 * 0.5
    bar.update(100)
    assert " 7:30 500ms/step" in frames(out.getvalue())[-1]  # 900 steps left at 0.5 s


def test_stateless_values_are_averaged_over_steps(clock):
    out = Stream(tty=False)
    bar = pb.Progbar(4, verbose=1, stateful_metrics=["lr"], file=out)
    bar.update(1, [("loss", 4.0), ("lr", 0.1)])
    bar.update(3, [("loss", 1.0), ("lr", 0.05)])      # counts for 2 steps
    bar.update(4, [("loss", 9.0), ("lr", 0.01)])      # finalize: shown as given
    assert out.getvalue().endswith(" - loss: 9.0000 - lr: 0.0100\n")
    bar = pb.Progbar(4, verbose=1, stateful_metrics=["lr"], file=out)
    bar.update(1, [("loss", 4.0)])
    bar.update(3, [("loss", 1.0)])
    assert [v for k, v in bar._metric_items()] == [pytest.approx(2.0)]  # (4·1 + 1·2) / 3
    bar.add(1, [("loss", 9.0)])
    assert bar._seen_so_far == 4


def test_stateful_and_stateless_exclusive():
    with pytest.raises(ValueError):
        pb.Progbar(3, stateful_metrics=["a"], stateless_metrics=["b"])


def test_ascii_stream_falls_back_to_equals(clock):
    out = Stream(tty=False, encoding="ascii")
    bar = pb.Progbar(2, verbose=1, file=out)
    bar.update(2, [("loss", 1.0)])
    assert out.getvalue().startswith("2/2 " + "=" * 20 + " ")
    out.getvalue().encode("ascii")


def test_shorter_frame_is_padded_over_the_previous(clock):
    out = Stream(tty=True)
    bar = pb.Progbar(3, verbose=1, stateless_metrics=set(), interval=0, file=out)
    bar.update(1, {"a_long_metric_name": 1.0})
    bar.update(2, {"b": 1.0}, finalize=False)  # new key appended: longer
    first, second = frames(out.getvalue())
    assert len(second) >= len(first)


def test_keys_first_seen_order_kept(clock):
    out = Stream(tty=False)
    bar = pb.Progbar(2, verbose=1, stateless_metrics=set(), file=out)
    bar.update(1, {"loss": 1.0, "accuracy": 0.5})
    bar.update(2, {"accuracy": 0.75, "loss": 0.5, "val_loss": 0.25})
    assert out.getvalue().endswith("- loss: 0.5000 - accuracy: 0.7500 - val_loss: 0.2500\n")


# -- throttling and cost ------------------------------------------------------------------------

def test_terminal_redraw_is_throttled(clock):
    out = Stream(tty=True)
    bar = pb.Progbar(10000, verbose=1, interval=0.05, stateless_metrics=set(), file=out)
    logs = {"loss": 0.5}
    for i in range(1, 9999):
        clock.t += 1e-4            # 10 000 steps a second: a redraw every 500 steps
        bar.update(i, logs)
    assert 15 <= out.writes <= 25
    bar.update(10000, logs)
    assert out.getvalue().endswith("\n")


def test_quiet_updates_cost_microseconds():
    """Updates that print nothing build no strings: a few attribute stores per step."""
    out = Stream(tty=False)
    logs = {"loss": 0.5, "accuracy": 0.9}
    n = 20000
    bar = pb.Progbar(n + 1, verbose=1, stateless_metrics=set(), file=out)
    t = time.perf_counter()
    for i in range(1, n + 1):
        bar.update(i, logs, finalize=False)
    per_call = (time.perf_counter() - t) / n
    assert out.writes == 0
    assert per_call < 10e-6, per_call


# -- ProgbarLogger ------------------------------------------------------------------------------

def _fit(stream, verbose, epochs=2, steps=3, validate=True):
    logger = cb.ProgbarLogger(file=stream)
    cbs = cb.CallbackList([logger], add_history=True, model=types.SimpleNamespace(stop_training=False),
                          verbose=verbose, epochs=epochs, steps=steps)
    cbs.on_train_begin()
    for epoch in range(epochs):
        cbs.on_epoch_begin(epoch)
        for b in range(steps if steps is not None else 4):
            cbs.on_train_batch_begin(b)
            cbs.on_train_batch_end(b, {"loss": np.float32(0.5), "accuracy": np.float64(0.25)})
        if validate:  # validation inside fit: silent
            cbs.on_test_begin()
            cbs.on_test_batch_end(0, {"loss": 9.0})
            cbs.on_test_end({"loss": 9.0})
        cbs.on_epoch_end(epoch, {"loss": 0.5, "accuracy": 0.25, "val_loss": 0.125, "val_accuracy": 1.0})
    cbs.on_train_end()
    return cbs


def test_progbar_logger_non_terminal(clock):
    out = Stream(tty=False)
    _fit(out, verbose=1)
    line = ("3/3 " + "━" * 20 + " 0s 0s/step - accuracy: 0.2500 - loss: 0.5000 - val_accuracy: 1.0000 - "
            "val_loss: 0.1250\n")
    assert out.getvalue() == "Epoch 1/2\n" + line + "Epoch 2/2\n" + line


def test_progbar_logger_verbose2(clock):
    out = Stream(tty=True)
    _fit(out, verbose=2, epochs=1)
    assert out.getvalue() == ("3/3 - 0s - 0s/step - accuracy: 0.2500 - loss: 0.5000 - val_accuracy: 1.0000 - "
                              "val_loss: 0.1250\n")


def test_progbar_logger_terminal(clock):
    out = Stream(tty=True)
    _fit(out, verbose="auto", epochs=1)
    shown = frames(out.getvalue())
    assert shown[0].startswith("1/3 ") and shown[-1].startswith("3/3 ")
    assert out.getvalue().count("\r") == 2  # the first batch, then the end of the epoch (throttled between)
    assert "9.0000" not in out.getvalue()


def test_progbar_logger_unknown_steps(clock):
    out = Stream(tty=False)
    _fit(out, verbose=1, epochs=2, steps=None, validate=False)
    lines = out.getvalue().splitlines()
    assert lines[1].startswith("4/4 ") and lines[3].startswith("4/4 ")  # the first epoch's count becomes the target


def test_progbar_logger_evaluate_and_predict_print(clock):
    out = Stream(tty=False)
    logger = cb.ProgbarLogger(file=out)
    cbs = cb.CallbackList([logger], verbose=1, epochs=1, steps=2)
    cbs.on_test_begin()
    cbs.on_test_batch_end(0, {"loss": 1.0})
    cbs.on_test_batch_end(1, {"loss": 0.5})
    cbs.on_test_end({"loss": 0.5})
    cbs.on_predict_begin()
    cbs.on_predict_batch_end(0, {"outputs": np.zeros(3)})
    cbs.on_predict_batch_end(1, {"outputs": np.zeros(3)})
    cbs.on_predict_end()
    assert out.getvalue() == ("2/2 " + "━" * 20 + " 0s 0s/step - loss: 0.5000\n"
                              "2/2 " + "━" * 20 + " 0s 0s/step\n")
