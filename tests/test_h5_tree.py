"""engine/formats/h5_tree.py: HDF5 read in a forked child, so that a file that makes the HDF5
library hang, crash or eat memory ends as a ModelFormatError, quickly, in this process."""

from __future__ import annotations

import os
import signal
import struct
import sys
import time

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

import engine  # noqa: E402
from engine.formats import h5_tree  # noqa: E402

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="the child reader needs fork()")


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.h5"
    with h5py.File(path, "w") as f:
        f.attrs["note"] = "hello"
        f.attrs["sizes"] = np.array([1, 2, 3])
        g = f.create_group("w")
        g.attrs["names"] = [b"a", b"b"]
        g.create_dataset("a", data=np.arange(6, dtype=np.float32).reshape(2, 3))
        f.create_dataset("other", data=np.ones(4))
        f.create_dataset("text", data=np.array([b"x"], dtype="S1"))
    return path


@pytest.fixture
def children(monkeypatch):
    """The pids the reader forks, to check that each was reaped."""
    pids, fork = [], os.fork

    def recording_fork():
        pid = fork()
        if pid:
            pids.append(pid)
        return pid
    monkeypatch.setattr(os, "fork", recording_fork)
    yield pids
    for pid in pids:  # reaped: no such child any more
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _check_tree(root):
    assert root.attrs == {"note": "hello", "sizes": [1, 2, 3]}
    assert root["w"].attrs["names"] == ["a", "b"]
    np.testing.assert_array_equal(root["w/a"][()], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert root["other"].shape == (4,) and root["other"].problem == ""
    with pytest.raises(ValueError):  # outside datasets_under: described, not read
        root["other"][()]
    assert "w/missing" not in root and root.get("w/a/deeper") is None


@needs_fork
def test_tree_from_path_and_bytes(small, children):
    _check_tree(h5_tree.read(small, "small.h5", ("w/",)))
    _check_tree(h5_tree.read(small.read_bytes(), "small.h5", ("w/",)))
    assert len(children) == 2


def test_tree_in_process_where_there_is_no_fork(small, monkeypatch):
    monkeypatch.setattr(h5_tree, "_HAS_FORK", False)
    _check_tree(h5_tree.read(small, "small.h5", ("w/",)))
    with pytest.raises(engine.ModelFormatError, match="cut.h5: not a readable HDF5 file"):
        h5_tree.read(small.read_bytes()[:1000], "cut.h5", ("w/",))


def test_non_numeric_and_oversized_arrays_are_described_not_read(small):
    root = h5_tree.read(small, "small.h5", ("text", "w/"))
    assert "not numeric" in root["text"].problem
    # a budget smaller than the array: refused before it is read
    header, arrays = h5_tree._collect(str(small), ("w/",), 10)
    problems = {e["path"]: e.get("problem") for e in header["entries"]}
    assert arrays == [] and "claims 24 bytes" in problems["w/a"]


@needs_fork
def test_truncated_file(small, children):
    data = small.read_bytes()
    for cut in (0, 8, 100, len(data) // 2, len(data) - 1):
        t0 = time.monotonic()
        with pytest.raises(engine.ModelFormatError, match="cut.h5: "):
            h5_tree.read(data[:cut], "cut.h5", ("w/",))
        assert time.monotonic() - t0 < 10


@needs_fork
def test_a_hanging_reader_is_killed(small, children, monkeypatch):
    monkeypatch.setattr(h5_tree, "TIMEOUT_S", 0.5)
    monkeypatch.setattr(h5_tree, "_collect", lambda *a: time.sleep(120))
    t0 = time.monotonic()
    with pytest.raises(engine.ModelFormatError, match="hang.h5: reading the HDF5 file took longer than"):
        h5_tree.read(small, "hang.h5", ("w/",))
    assert time.monotonic() - t0 < 10 and len(children) == 1


@needs_fork
@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGABRT])
def test_a_crashing_reader_is_reported(small, children, monkeypatch, sig):
    monkeypatch.setattr(h5_tree, "_collect", lambda *a: os.kill(os.getpid(), sig))
    with pytest.raises(engine.ModelFormatError, match=f"crash.h5: the HDF5 library crashed reading it \\(signal {sig}"):
        h5_tree.read(small, "crash.h5", ("w/",))


@needs_fork
def test_a_reader_that_dies_without_an_answer(small, children, monkeypatch):
    monkeypatch.setattr(h5_tree, "_collect", lambda *a: os._exit(3))
    with pytest.raises(engine.ModelFormatError, match="ended without an answer"):
        h5_tree.read(small, "gone.h5", ("w/",))


@needs_fork
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the memory cap is Linux's RLIMIT_AS")
def test_a_reader_that_eats_memory_is_stopped(small, children, monkeypatch):
    monkeypatch.setattr(h5_tree, "MEMORY_HEADROOM", 64 << 20)
    monkeypatch.setattr(h5_tree, "_collect", lambda *a: bytearray(1 << 30))
    with pytest.raises(engine.ModelFormatError, match="ran out of its memory budget"):
        h5_tree.read(small, "greedy.h5", ("w/",))


@needs_fork
def test_an_oversized_answer_is_refused(small, children, monkeypatch):
    big = np.zeros(1 << 20, np.uint8)  # far more than twice a tiny file, past the 64 MiB slack
    monkeypatch.setattr(h5_tree, "_collect", lambda *a: ({"entries": []}, [big] * 80))
    with pytest.raises(engine.ModelFormatError, match="larger than the file could hold"):
        h5_tree.read(small, "bloat.h5", ("w/",))


@needs_fork
def test_a_real_hostile_file_that_makes_hdf5_loop(tmp_path, children, monkeypatch):
    """A Keras .h5 whose global heap object for keras_version claims 0xF9 bytes instead of 6
    (one flipped byte, found by the corrupt-file test): the HDF5 library (h5py 3.16) then
    loops forever reading the attribute. Whatever the library does with it, the load ends
    with a ModelFormatError within the (shortened) timeout."""
    from keras_util import keras, perturb
    L = keras.layers
    # names fixed: the file's layout, and so what the flip does, depends on the config's length
    k = keras.Sequential([keras.Input((5,), name="input_layer_139"), L.Dense(4, activation="relu", name="hidden"),
                          L.Dense(2, name="head")], name="sequential_137")
    perturb(k)
    k.save(tmp_path / "m.h5")
    data = bytearray((tmp_path / "m.h5").read_bytes())
    heap = data.find(b"GCOL")
    version = keras.__version__.encode()
    spots = [i for i in range(heap, len(data)) if data.startswith(version + b"\0", i)
             and struct.unpack_from("<Q", data, i - 8)[0] == len(version)]
    assert spots, "no global heap object holds the keras version"
    monkeypatch.setattr(h5_tree, "TIMEOUT_S", 1.0)
    for i in spots:
        bad = bytearray(data)
        bad[i - 8] ^= 0xFF
        (tmp_path / "hostile.h5").write_bytes(bad)
        t0 = time.monotonic()
        with pytest.raises(engine.ModelFormatError, match="hostile.h5: "):
            engine.load(tmp_path / "hostile.h5")
        assert time.monotonic() - t0 < 15
