"""HDF5 files read by a forked child process into a small in-memory tree.

Why: the HDF5 C library trusts the bytes it parses; a corrupt or hostile file can make it
loop forever (one flipped byte in a global-heap object's size is enough) or crash. So h5py
runs in a child forked for the purpose: it walks the file, copies the attributes (strings,
numbers and lists of them) and the arrays under the requested groups, and sends them back
through a pipe as JSON plus raw bytes (no pickle). If the child crashes, hangs or runs out
of its memory budget, only the child dies and the caller gets a ModelFormatError.

The child runs only h5py, numpy and json and leaves with os._exit (no atexit handlers, no
flushing of the parent's buffers, nothing of the engine's thread pool). It is forked while
holding h5py's global lock, so no other thread of ours is inside the HDF5 library at that
moment; a lock held by some other native thread is not ours to know, and a child stuck on
one is ended by the same timeout as a looping one. Where there is no fork() (Windows), the
file is read in-process: the checks below still hold, the isolation does not.

    >>> root = h5_tree.read(path_or_bytes, "model.h5", datasets_under=("model_weights/",))
    >>> root.attrs["model_config"], root["model_weights/dense/dense/kernel:0"][()]
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import struct
import time
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..errors import EngineError, ModelFormatError

_HEADER = struct.Struct("<Q")
# A corrupt file can make the HDF5 library loop forever: the child gets this long, plus a
# second per 50 MiB of file (reading and sending a large model's weights takes about that).
TIMEOUT_S = 5.0
# The child's address space may grow this much past what it inherits, plus twice the file:
# the arrays it copies are bounded by the file's size, HDF5's caches are small.
MEMORY_HEADROOM = 1 << 30
_NUMERIC = "fiub"
_HAS_FORK = hasattr(os, "fork")


class Dataset:
    def __init__(self, shape: tuple, dtype: str, data: Optional[np.ndarray], attrs: dict, problem: str = ""):
        self.shape, self.dtype, self.attrs = tuple(shape), np.dtype(dtype), attrs
        self._data, self.problem = data, problem

    def __getitem__(self, key):
        if key != ():
            raise KeyError(key)
        if self._data is None:
            raise ValueError(self.problem or "the array was not read")
        return self._data

    # a dataset where a group is expected (a hostile layout) simply has no members
    def get(self, path: str, default=None):
        return default

    def __contains__(self, path: str) -> bool:
        return False

    def __iter__(self):
        return iter(())


class Group:
    def __init__(self, attrs: Optional[dict] = None):
        self.attrs: dict = attrs or {}
        self.children: dict = {}

    def _walk(self, path: str):
        node = self
        for part in [p for p in path.split("/") if p]:
            if not isinstance(node, Group) or part not in node.children:
                return None
            node = node.children[part]
        return node

    def get(self, path: str, default=None):
        node = self._walk(path)
        return default if node is None else node

    def __getitem__(self, path: str):
        node = self._walk(path)
        if node is None:
            raise KeyError(path)
        return node

    def __contains__(self, path: str) -> bool:
        return self._walk(path) is not None

    def __iter__(self):
        return iter(self.children)


def read(source: Union[bytes, Path], name: str, datasets_under: tuple) -> Group:
    """The tree of an HDF5 file (a path or its bytes); arrays only under `datasets_under`."""
    try:
        import h5py  # imported here, so that the child never imports anything
        from h5py._objects import phil
    except ImportError:
        raise EngineError("reading HDF5 files needs h5py: pip install h5py (or engine[keras])") from None
    size = len(source) if isinstance(source, (bytes, bytearray)) else Path(source).stat().st_size
    opener = (lambda: io.BytesIO(source)) if isinstance(source, (bytes, bytearray)) else (lambda: str(source))
    if not _HAS_FORK:
        return _in_process(opener, name, datasets_under, size)
    r, w = os.pipe()
    try:
        with phil, warnings.catch_warnings():
            # Python >= 3.12 warns on fork() with threads alive; the child is built for it (above)
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError as e:
        os.close(r)
        os.close(w)
        raise EngineError(f"{name}: cannot start the HDF5 reader process ({e})") from None
    if pid == 0:
        _child(r, w, opener, datasets_under, size)  # never returns
    os.close(w)
    data = _receive(r, pid, name, TIMEOUT_S + size / (50 << 20), 2 * size + (64 << 20))
    return _decode(data, name)


def _child(r: int, w: int, opener, datasets_under: tuple, size: int) -> None:
    """Read, send, and exit without running any of the parent's cleanup."""
    code = 0
    try:
        import faulthandler
        faulthandler.disable()  # a crash here is reported by the parent, not dumped
        os.close(r)
        _limit_memory(2 * size + MEMORY_HEADROOM)
        try:
            parts = _encode(*_collect(opener(), datasets_under, size))
        except MemoryError:
            parts = _encode({"error": "the reader ran out of its memory budget"}, [])
        except BaseException as e:  # noqa: BLE001 (reported to the parent)
            parts = _encode({"error": f"{type(e).__name__}: {e}"}, [])
        with os.fdopen(w, "wb") as out:
            for p in parts:
                out.write(p)
    except BaseException:  # noqa: BLE001
        code = 1
    finally:
        os._exit(code)


def _limit_memory(extra: int) -> None:
    """Cap the child's address space at what it inherited plus `extra` (Linux; elsewhere
    the timeout and the parent's answer limit still bound it)."""
    try:
        import resource
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cap = current + extra
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ImportError, OSError, ValueError):
        pass


def _plain(v):
    """An attribute value as JSON: str, number, bool or lists of them (bytes decoded)."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()] if v.ndim else _plain(v.item())
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return _plain(v.item())
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def _collect(source, datasets_under: tuple, max_bytes: int) -> tuple:
    """(header dict, [arrays]) of the HDF5 file: every group's and dataset's attributes, and
    the arrays of the datasets whose path starts with one of `datasets_under`. Links are not
    followed (visititems walks hard links only), so an external link opens no other file."""
    import h5py

    entries, arrays, total = [], [], 0
    f = h5py.File(source, "r")
    try:
        entries.append({"path": "", "kind": "group", "attrs": {k: _plain(f.attrs[k]) for k in f.attrs}})

        def visit(path, obj):
            nonlocal total
            attrs = {k: _plain(obj.attrs[k]) for k in obj.attrs}
            if isinstance(obj, h5py.Group):
                entries.append({"path": path, "kind": "group", "attrs": attrs})
                return
            e = {"path": path, "kind": "dataset", "attrs": attrs, "shape": list(obj.shape), "dtype": obj.dtype.str,
                 "problem": ""}
            wanted = any(path.startswith(p) for p in datasets_under)
            if wanted and obj.dtype.kind not in _NUMERIC:
                e["problem"] = f"type {obj.dtype} is not numeric"
            elif wanted and total + obj.nbytes > max_bytes:
                e["problem"] = f"it claims {obj.nbytes:,} bytes, more than the file can hold"
            elif wanted:
                a = np.ascontiguousarray(obj[()])
                e["dtype"], e["nbytes"] = a.dtype.str, a.nbytes
                total += a.nbytes
                arrays.append(a)
                e["data"] = len(arrays) - 1
            entries.append(e)

        f.visititems(visit)
    finally:
        f.close()
    return {"entries": entries}, arrays


def _encode(header: dict, arrays: list) -> list:
    head = json.dumps(header).encode()
    return [_HEADER.pack(len(head)), head] + [memoryview(a.reshape(-1).view(np.uint8)) for a in arrays]


def _receive(fd: int, pid: int, name: str, timeout: float, limit: int) -> bytearray:
    """The child's whole answer; the child is killed on a timeout, an oversized answer or
    an interruption of ours, and always reaped."""
    data, done = bytearray(), False
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise ModelFormatError(f"{name}: reading the HDF5 file took longer than {timeout:.0f} s "
                                       "(a corrupt or hostile file makes the HDF5 library loop)")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            data += chunk
            if len(data) > limit:
                raise ModelFormatError(f"{name}: the HDF5 reader's answer is larger than the file could hold "
                                       "(corrupt file)")
        done = True
    finally:
        os.close(fd)
        if not done:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        raise ModelFormatError(f"{name}: the HDF5 library crashed reading it (signal {os.WTERMSIG(status)}; a "
                               "corrupt or hostile file)")
    return data


def _decode(data: bytearray, name: str) -> Group:
    if len(data) < _HEADER.size:
        raise ModelFormatError(f"{name}: the HDF5 reader ended without an answer (corrupt file)")
    n = _HEADER.unpack_from(data)[0]
    try:
        header = json.loads(bytes(data[_HEADER.size:_HEADER.size + n]))
    except ValueError:
        raise ModelFormatError(f"{name}: the HDF5 reader's answer is incomplete (corrupt file)") from None
    if "error" in header:
        raise ModelFormatError(f"{name}: not a readable HDF5 file (truncated or corrupt: {header['error']})")
    try:
        return _tree(header, memoryview(data)[_HEADER.size + n:])
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise ModelFormatError(f"{name}: the HDF5 reader's answer is inconsistent ({e})") from None


def _tree(header: dict, blob: memoryview) -> Group:
    root, offset = Group(), 0
    for e in header["entries"]:
        if e["path"] == "":
            root.attrs = e["attrs"]
            continue
        *parents, leaf = e["path"].split("/")
        node = root
        for p in parents:  # visititems lists a group before its members
            node = node.children.setdefault(p, Group())
        if e["kind"] == "group":
            existing = node.children.get(leaf)
            if isinstance(existing, Group):
                existing.attrs = e["attrs"]
            else:
                node.children[leaf] = Group(e["attrs"])
            continue
        data = None
        if "data" in e:
            n = e["nbytes"]
            if offset + n > len(blob):
                raise ValueError(f"'{e['path']}' runs past the end of the answer")
            data = np.frombuffer(blob[offset:offset + n], dtype=np.dtype(e["dtype"])).reshape(e["shape"])
            offset += n
        node.children[leaf] = Dataset(e["shape"], e["dtype"], data, e["attrs"], e.get("problem", ""))
    return root


def _in_process(opener, name: str, datasets_under: tuple, size: int) -> Group:
    try:
        header, arrays = _collect(opener(), datasets_under, size)
    except Exception as e:  # h5py's many error types on corrupt data
        raise ModelFormatError(f"{name}: not a readable HDF5 file (truncated or corrupt: {e})") from None
    return _tree(header, memoryview(b"".join(a.tobytes() for a in arrays)))
