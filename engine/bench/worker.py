"""A bench worker: one process per framework, driven by the coordinator (engine/bench/runner.py)
over its stdin/stdout with length-prefixed pickles.

    python -m engine.bench.worker      # started by runner.Worker, never by hand

Why a process each: CPU time and peak RSS are then the framework's own (getrusage of this
process), thread pools of two frameworks never compete inside one process, and a peer that
crashes ends its worker only. The framework's own chatter on stdout is sent to stderr so it
cannot corrupt the message stream.

Messages are (command, *args) tuples; the answer is ("ok", result) or ("error", text).
"""

from __future__ import annotations

import os
import pickle
import resource
import struct
import sys
import time

_HEADER = struct.Struct("<Q")


def write_msg(f, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(_HEADER.pack(len(data)) + data)
    f.flush()


def read_msg(f):
    head = f.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError
    # Only ever the other end of our own pipe (coordinator <-> its worker), never a file.
    return pickle.loads(f.read(_HEADER.unpack(head)[0]))  # our own process pair


class _State:
    def __init__(self):
        self.peer = None
        self.feeds = {}  # batch -> feed dict


def _timed(state, batch, runs, seconds):
    """Run `runs` times (or until `seconds` have passed when runs is None): each latency, and the
    CPU seconds this process used over the same span (all threads)."""
    feeds, run = state.feeds[batch], state.peer.run
    lat = []
    clock = time.perf_counter
    cpu0, t_start = time.process_time(), clock()
    while (len(lat) < runs) if runs is not None else (clock() - t_start < seconds or not lat):
        t0 = clock()
        run(feeds)
        lat.append(clock() - t0)
    return {"latencies_s": lat, "cpu_s": time.process_time() - cpu0, "wall_s": clock() - t_start}


def _handle(state, cmd, *args):
    if cmd == "load":
        from .peers import PEERS, Engine
        name, path, threads = args
        state.peer = Engine() if name == "engine" else PEERS[name]
        t0 = time.perf_counter()
        state.peer.load(path, threads)
        return {"load_s": time.perf_counter() - t0, "version": state.peer.version()}
    if cmd == "signature":
        return state.peer.signature()
    if cmd == "feeds":
        batch, feeds = args
        state.feeds[batch] = feeds
        return None
    if cmd == "outputs":
        return [a.copy() for a in state.peer.run(state.feeds[args[0]])]
    if cmd == "run":
        return _timed(state, *args)
    if cmd == "stats":
        return {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}  # KiB on Linux
    if cmd == "load_test":
        from .loadgen import Workload, run_load
        workload, kwargs = args
        return run_load(Workload(**workload), **kwargs)
    raise ValueError(f"unknown bench worker command {cmd!r}")


def main() -> int:
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # prints by the framework go to stderr, not into the message stream
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer
    state = _State()
    while True:
        try:
            msg = read_msg(inp)
        except EOFError:
            return 0
        try:
            answer = ("ok", _handle(state, *msg))
        except Exception as e:  # noqa: BLE001  any framework error goes back to the coordinator as text
            answer = ("error", f"{type(e).__name__}: {e}")
        write_msg(out, answer)


if __name__ == "__main__":
    raise SystemExit(main())
