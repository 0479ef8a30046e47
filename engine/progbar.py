"""Keras 3's progress bar (keras.utils.Progbar), as `fit / evaluate / predict` print it.

    bar = Progbar(target=100)                     # steps per epoch (None: unknown)
    for step in range(100):
        ...
        bar.update(step + 1, {"loss": 0.30, "accuracy": 0.9})   # or [(name, value), ...]

On a terminal (`file.isatty()`, or a Jupyter kernel writing to sys.stdout) verbose=1 redraws one
line with `\\r` at most every `interval` seconds:

    12/100 ━━━━━━━━━━━━━━━━━━━━ 1s 12ms/step - accuracy: 0.9000 - loss: 0.3021

(count, bar, ETA, time per step, the metrics) and, when the target is reached, the total time
instead of the ETA and a newline. On anything else (a log file, a pipe) nothing is written until
the target is reached; then the final line, without `\\r` or colours. verbose=2 writes one line at
the target: `100/100 - 1s - 12ms/step - loss: 0.3021`. verbose=0 writes nothing.

Per-step cost: an update that prints nothing stores the step and the values and returns; no
string is built. Values are formatted as Keras does (`.4f`, or `.4e` when |v| <= 1e-3).

Averaging (Keras's rule): a metric named in `stateful_metrics` is shown as given; every other one
is averaged over the steps (weighted by the steps each update covers). Passing
`stateless_metrics=set()` instead shows every value as given (what ProgbarLogger does: the logs
already hold running means).
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

_now = time.monotonic  # module-level so tests can substitute a clock

_BOLD, _GREEN, _GREY, _RESET = "\x1b[1m", "\x1b[32m", "\x1b[37m", "\x1b[0m"


def _is_terminal(file) -> bool:
    try:
        if file.isatty():
            return True
    except (AttributeError, ValueError, OSError):
        pass
    # A Jupyter / PyCharm console is not a tty but redraws "\r" lines (Keras checks the same).
    return file is sys.stdout and ("ipykernel" in sys.modules or "PYCHARM_HOSTED" in os.environ)


def _bar_char(file) -> str:
    """'━' (Keras's) if the stream can encode it, else '='."""
    encoding = getattr(file, "encoding", None) or "utf-8"
    try:
        "━".encode(encoding)
        return "━"
    except (LookupError, UnicodeEncodeError):
        return "="


def format_value(value) -> str:
    """A metric value as the progress bar shows it: `.4f`, or `.4e` when |v| <= 1e-3 (nan, inf as is)."""
    return f"{value:.4f}" if abs(value) > 1e-3 else f"{value:.4e}"


def format_time_per_unit(time_per_unit: float, unit_name: str) -> str:
    """' 12ms/step' (Keras's _format_time: s, ms or us)."""
    if time_per_unit >= 1 or time_per_unit == 0:
        return f" {time_per_unit:.0f}s/{unit_name}"
    if time_per_unit >= 1e-3:
        return f" {time_per_unit * 1000.0:.0f}ms/{unit_name}"
    return f" {time_per_unit * 1000000.0:.0f}us/{unit_name}"


def format_eta(eta: float) -> str:
    if eta > 3600:
        return f"{int(eta // 3600)}:{int((eta % 3600) // 60):02d}:{int(eta % 60):02d}"
    if eta > 60:
        return f"{int(eta // 60)}:{int(eta % 60):02d}"
    return f"{int(eta)}s"


class Progbar:
    """Displays a progress bar (keras.utils.Progbar's arguments, plus `file`).

    target: steps expected (None: unknown, shown as `12/Unknown`). width: characters of the bar
    (Keras 3: 20). verbose: 0 silent, 1 bar, 2 one line at the end. interval: least seconds
    between two redraws. stateful_metrics / stateless_metrics: see the module docstring (at most
    one of them). unit_name: 'step' or 'sample'. file: the stream (default sys.stdout)."""

    def __init__(self, target, width=20, verbose=1, interval=0.05, stateful_metrics=None, stateless_metrics=None,
                 unit_name="step", file=None):
        if stateful_metrics is not None and stateless_metrics is not None:
            raise ValueError("Progbar: give at most one of stateful_metrics and stateless_metrics")
        self.target = target
        self.width = width
        self.verbose = verbose
        self.interval = interval
        self.unit_name = unit_name
        self.file = sys.stdout if file is None else file
        if stateless_metrics is not None:
            self.stateful_metrics = None
            self.stateless_metrics = set(stateless_metrics)
        else:
            self.stateful_metrics = set(stateful_metrics or ())
            self.stateless_metrics = None
        # Every value shown as given (ProgbarLogger): only the latest values need keeping.
        self._all_stateful = self.stateless_metrics is not None and not self.stateless_metrics
        self._dynamic_display = _is_terminal(self.file)
        self._char = _bar_char(self.file)
        self._seen_so_far = 0
        self._values = {}          # name -> [sum, count] (shown: sum / count)
        self._values_order = []
        self._pending = None       # all-stateful fast path: the latest values not yet merged
        self._start = _now()
        self._last_update = -math.inf
        self._time_after_first_step = None
        self._prev_total_width = 0

    # -- values --
    def _merge_pending(self):
        pending, self._pending = self._pending, None
        values, order = self._values, self._values_order
        for k, v in pending.items():
            if k not in values:
                order.append(k)
            values[k] = [v, 1]

    def _add_values(self, current, values, finalize):
        if self._all_stateful and isinstance(values, dict):
            pending = self._pending
            if pending is not None and pending is not values and pending.keys() != values.keys():
                self._merge_pending()
            self._pending = values
            return
        if self._pending is not None:
            self._merge_pending()
        items = values.items() if isinstance(values, dict) else values
        store, order = self._values, self._values_order
        stateful, stateless_set = self.stateful_metrics, self.stateless_metrics
        for k, v in items:
            if k not in store:
                order.append(k)
            stateless = (k not in stateful) if stateful is not None else (k in stateless_set)
            if stateless:
                if finalize:
                    store[k] = [v, 1]
                else:
                    base = max(current - self._seen_so_far, 1)
                    entry = store.get(k)
                    if entry is None:
                        store[k] = [v * base, base]
                    else:
                        entry[0] += v * base
                        entry[1] += base
            else:
                store[k] = [v, 1]

    # -- timing --
    def _time_per_unit(self, current, now) -> float:
        if not current:
            return 0.0
        if self._time_after_first_step is not None and current > 1:
            return (now - self._time_after_first_step) / (current - 1)
        return (now - self._start) / current

    # -- the public API --
    def update(self, current, values=None, finalize=None):
        """Step `current` done. values: {name: value} or [(name, value), ...]. finalize: whether
        this is the last update (default: current >= target)."""
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        if values:
            self._add_values(current, values, finalize)
        first_step = current == 1
        verbose = self.verbose
        if verbose == 1 and self._dynamic_display:
            now = _now()
            if not finalize and now - self._last_update < self.interval:
                if first_step:
                    self._time_after_first_step = now
                self._seen_so_far = current
                return
            time_per_unit = self._time_per_unit(current, now)
            if first_step:
                self._time_after_first_step = now
            self._seen_so_far = current
            self._write(self._line(current, now, time_per_unit, finalize, dynamic=True))
            self._last_update = now
            return
        if not finalize or not verbose:
            if first_step:
                self._time_after_first_step = _now()
            self._seen_so_far = current
            return
        now = _now()
        time_per_unit = self._time_per_unit(current, now)
        if first_step:
            self._time_after_first_step = now
        self._seen_so_far = current
        if verbose == 1:
            self._write(self._line(current, now, time_per_unit, finalize, dynamic=False))
        elif verbose == 2 and self.target is not None and self.target > 0:
            self._write(self._line2(current, now, time_per_unit))
        self._last_update = now

    def add(self, n, values=None):
        self.update(self._seen_so_far + n, values)

    # -- formatting (only when something is printed) --
    def _metric_items(self):
        if self._pending is not None:
            self._merge_pending()
        for k in self._values_order:
            total, count = self._values[k]
            if not isinstance(total, float):
                total = float(np.mean(total))
            yield k, total / max(1, count)

    def _line(self, current, now, time_per_unit, finalize, dynamic):
        color = dynamic  # ANSI colours on a terminal only
        target = self.target
        if target is not None and target > 0:
            numdigits = int(math.log10(target)) + 1
            count = f"%{numdigits}d/%d" % (current, target)
            prog_width = min(self.width, max(0, int(self.width * float(current) / target)))
            done, left = self._char * prog_width, self._char * (self.width - prog_width)
            if color:
                bar = (f"{_BOLD}{count}{_RESET} " + (f"{_GREEN}{done}{_RESET}" if done else "")
                       + f"{_GREY}{left}{_RESET}")
            else:
                bar = f"{count} {done}{left}"
            plain_len = len(count) + 1 + self.width
        else:
            bar = f"{int(current):7d}/Unknown"
            plain_len = len(bar)
        if target is not None and target > 0 and not finalize:
            when = format_eta(time_per_unit * (target - current))
        else:
            when = f"{now - self._start:.0f}s"
        info = f" {_BOLD}{when}{_RESET}" if color else f" {when}"
        plain_len += 1 + len(when)
        tail = format_time_per_unit(time_per_unit, self.unit_name)
        for k, v in self._metric_items():
            tail += f" - {k}: {format_value(v)}"
        info += tail
        plain_len += len(tail)
        if not dynamic:
            return bar + info + "\n"
        line = "\r" + bar + info
        if self._prev_total_width > plain_len:
            line += " " * (self._prev_total_width - plain_len)
        self._prev_total_width = plain_len
        if finalize:
            line += "\n"
        return line

    def _line2(self, current, now, time_per_unit):
        numdigits = int(math.log10(self.target)) + 1
        info = f"%{numdigits}d/%d" % (current, self.target)
        info += f" - {now - self._start:.0f}s -{format_time_per_unit(time_per_unit, self.unit_name)}"
        for k, v in self._metric_items():
            # Keras's verbose=2 line compares v (not |v|) with 1e-3.
            info += f" - {k}: " + (f"{v:.4f}" if v > 1e-3 else f"{v:.4e}")
        return info + "\n"

    def _write(self, text):
        self.file.write(text)
        try:
            self.file.flush()
        except (AttributeError, ValueError, OSError):
            pass
