"""The binary socket protocol: frame layout, encoding and decoding, an incremental reader.

Pure functions over bytes, no I/O: socket_server.py and client.py do the reading and writing,
and a load generator can build frames with `encode_request` and read answers with
`FrameReader` + `decode_response`. docs/protocol.md is the specification; this file follows it.

Every frame (little-endian):

    u32 length       bytes after this field (the frame is 4 + length bytes)
    u8  kind         AUTH 1, REQUEST 2, RESPONSE 3, ERROR 4
    u8  proto        PROTOCOL_VERSION (1)
    u16 flags        ERROR: bit 0 = the server closes the connection after this frame
    u64 request_id   chosen by the client; echoed by the answer; 0 on connection-level errors
    ...              the body (below), starting at offset 16

Tensor data is placed at an offset that is a multiple of 8 from the frame's first byte, so a
frame held in its own buffer decodes into numpy arrays that view the buffer (aligned, no copy).

    import numpy as np
    from engine.serve import protocol
    frame = protocol.encode_request(1, "digits", {"x": np.zeros((1, 8, 8, 1), np.float32)})
    (req,) = protocol.FrameReader().feed(frame)
    rid, model, version, inputs, outputs = protocol.decode_request(req)
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Optional

import numpy as np

from ..errors import EngineError
from .tensors import RequestError, datatype_to_dtype

PROTOCOL_VERSION = 1
AUTH, REQUEST, RESPONSE, ERROR = 1, 2, 3, 4
KINDS = (AUTH, REQUEST, RESPONSE, ERROR)
FLAG_CLOSING = 1                 # ERROR: the connection closes after this frame
HEADER_BYTES = 16
MAX_NAME_BYTES = 0xFFFF
DEFAULT_MAX_FRAME_BYTES = 64 << 20

# u8 datatype codes: KServe v2 names (tensors.py) and numpy dtypes
DATATYPE_CODES = {
    "BOOL": 1, "UINT8": 2, "UINT16": 3, "UINT32": 4, "UINT64": 5, "INT8": 6, "INT16": 7,
    "INT32": 8, "INT64": 9, "FP16": 10, "FP32": 11, "FP64": 12, "BF16": 13,
}
_NP_BY_CODE = {c: None if n == "BF16" else np.dtype(datatype_to_dtype(n)) for n, c in DATATYPE_CODES.items()}
_CODE_BY_NP = {dt: c for c, dt in _NP_BY_CODE.items() if dt is not None}
_NAME_BY_CODE = {c: n for n, c in DATATYPE_CODES.items()}

_HEADER = struct.Struct("<IBBHQ")          # length, kind, proto, flags, request_id
_REQ = struct.Struct("<QHHHH")             # version, model_len, n_inputs, n_outputs, reserved
_RESP = struct.Struct("<QHHI32s")          # version, model_len, n_outputs, reserved, sha256
_ERR = struct.Struct("<HHI")               # code, reserved, message_len
_TENSOR = struct.Struct("<HBB")            # name_len, datatype, ndim
_U16 = struct.Struct("<H")
_DIMS = [struct.Struct("<Q" + "Q" * n) for n in range(33)]  # nbytes, then ndim dims
MAX_NDIM = len(_DIMS) - 1
_PAD = b"\0" * 8


class ProtocolError(RequestError):
    """A frame breaks the layout (HTTP 400). `fatal`: the stream cannot be trusted any more
    (bad header or length), so the server answers and closes the connection."""

    def __init__(self, message: str, fatal: bool = False, status: int = 400):
        super().__init__(message)
        self.fatal = fatal
        self.status = status
        self.frames: list = []  # FrameReader.feed: the whole frames that came before the bad one


class ServerError(EngineError):
    """An ERROR frame from the server: `code` mirrors HTTP (400 bad request, 401 unauthorized,
    404 not found, 408 frame timeout, 413 too large, 500 compute failed, 503 unavailable)."""

    def __init__(self, code: int, message: str, request_id: int = 0, closing: bool = False):
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message
        self.request_id = request_id
        self.closing = closing


class Frame:
    """One whole frame: `buf` holds it from its length prefix on (a bytes-like object that
    holds nothing else, or whose start is 8-aligned), `size` its byte count."""
    __slots__ = ("kind", "flags", "request_id", "buf", "size")

    def __init__(self, kind: int, flags: int, request_id: int, buf, size: int):
        self.kind, self.flags, self.request_id, self.buf, self.size = kind, flags, request_id, buf, size

    def __repr__(self) -> str:
        return f"Frame(kind={self.kind}, request_id={self.request_id}, size={self.size})"


class Result(NamedTuple):
    """A RESPONSE: the outputs, the model, the version that served and its file's sha256 (hex)."""
    outputs: dict
    model: str
    version: int
    sha256: str


class Request(NamedTuple):
    request_id: int
    model: str
    version: Optional[int]
    inputs: dict
    outputs: Optional[list]


# -- encoding -------------------------------------------------------------------------------


def _name(s: str, what: str) -> bytes:
    b = s.encode("utf-8")
    if len(b) > MAX_NAME_BYTES:
        raise RequestError(f"{what} name is {len(b)} bytes; the protocol allows {MAX_NAME_BYTES}")
    return b


def _tensor_parts(parts: list, at: int, name: str, a: np.ndarray) -> int:
    """Append one tensor's pieces to `parts` (the frame so far is `at` bytes); return the new size."""
    code = _CODE_BY_NP.get(a.dtype)
    if code is None:
        raise RequestError(f"tensor '{name}': dtype {a.dtype} has no protocol datatype")
    if a.ndim > MAX_NDIM:
        raise RequestError(f"tensor '{name}': {a.ndim} dims; the protocol allows {MAX_NDIM}")
    nb = _name(name, "tensor")
    head = _TENSOR.pack(len(nb), code, a.ndim) + nb
    at += len(head)
    pad = -at & 7
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    dims = _DIMS[a.ndim].pack(a.nbytes, *a.shape)
    parts.append(head + _PAD[:pad] + dims)
    if a.nbytes:
        parts.append(a.reshape(-1).view(np.uint8).data if a.nbytes > 4096 else a.tobytes())
    return at + pad + len(dims) + a.nbytes


def _with_header(kind: int, request_id: int, parts: list, size: int, flags: int = 0) -> list:
    parts[0] = _HEADER.pack(size - 4, kind, PROTOCOL_VERSION, flags, request_id) + parts[0]
    return parts


def encode_request(request_id: int, model: str, inputs: dict, version: Optional[int] = None,
                   outputs: Optional[list] = None) -> bytes:
    """A whole REQUEST frame, its length prefix included.

        frame = encode_request(7, "digits", {"x": x}, version=2, outputs=["probs"])
    """
    return b"".join(encode_request_parts(request_id, model, inputs, version, outputs))


def encode_request_parts(request_id: int, model: str, inputs: dict, version: Optional[int] = None,
                         outputs: Optional[list] = None) -> list:
    """The REQUEST frame as a list of buffers (large tensors by reference, for sendmsg)."""
    mb = _name(model, "model")
    outputs = list(outputs or ())
    body = [_REQ.pack(version or 0, len(mb), len(inputs), len(outputs), 0), mb]
    for o in outputs:
        ob = _name(o, "output")
        body.append(_U16.pack(len(ob)) + ob)
    first = b"".join(body)
    parts = [first]
    size = HEADER_BYTES + len(first)
    for name, a in inputs.items():
        size = _tensor_parts(parts, size, name, np.asarray(a))
    return _with_header(REQUEST, request_id, parts, size)


def encode_response_parts(request_id: int, model: str, version: int, sha256: str, outputs: dict) -> list:
    """A RESPONSE frame as a list of buffers (join them, or hand them to sendmsg)."""
    mb = _name(model, "model")
    parts = [_RESP.pack(version, len(mb), len(outputs), 0, bytes.fromhex(sha256)) + mb]
    size = HEADER_BYTES + len(parts[0])
    for name, a in outputs.items():
        size = _tensor_parts(parts, size, name, a)
    return _with_header(RESPONSE, request_id, parts, size)


def encode_response(request_id: int, model: str, version: int, sha256: str, outputs: dict) -> bytes:
    return b"".join(encode_response_parts(request_id, model, version, sha256, outputs))


def encode_error(request_id: int, code: int, message: str, closing: bool = False) -> bytes:
    """An ERROR frame; `closing` tells the client the server closes the connection next."""
    mb = message.encode("utf-8", "replace")[:60000]
    body = _ERR.pack(code, 0, len(mb)) + mb
    return _HEADER.pack(HEADER_BYTES - 4 + len(body), ERROR, PROTOCOL_VERSION,
                        FLAG_CLOSING if closing else 0, request_id) + body


def encode_auth(token: str, request_id: int = 0) -> bytes:
    """The AUTH frame a connection starts with when the server has a token."""
    tb = token.encode("utf-8")
    return _HEADER.pack(HEADER_BYTES - 4 + len(tb), AUTH, PROTOCOL_VERSION, 0, request_id) + tb


# -- decoding -------------------------------------------------------------------------------


def _read_name(buf, at: int, n: int, end: int, what: str) -> str:
    if at + n > end:
        raise ProtocolError(f"{what} name runs past the end of the frame")
    try:
        return str(buf[at:at + n], "utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} name is not UTF-8") from None


def _read_tensor(buf, at: int, end: int, copy: bool):
    """One tensor at `at`; returns (name, array, next offset)."""
    if at + 4 > end:
        raise ProtocolError("tensor header runs past the end of the frame")
    n, code, ndim = _TENSOR.unpack_from(buf, at)
    name = _read_name(buf, at + 4, n, end, "tensor")
    at = (at + 4 + n + 7) & ~7
    if ndim > MAX_NDIM:
        raise ProtocolError(f"tensor '{name}': {ndim} dims; the protocol allows {MAX_NDIM}")
    st = _DIMS[ndim]
    if at + st.size > end:
        raise ProtocolError(f"tensor '{name}': shape runs past the end of the frame")
    nbytes, *shape = st.unpack_from(buf, at)
    at += st.size
    dt = _NP_BY_CODE.get(code)
    if dt is None:
        if code in _NAME_BY_CODE:
            raise RequestError(f"tensor '{name}': datatype {_NAME_BY_CODE[code]} has no numpy type; send FP32")
        raise ProtocolError(f"tensor '{name}': unknown datatype code {code}")
    count = 1
    for d in shape:
        count *= d
    if count * dt.itemsize != nbytes:
        raise RequestError(f"tensor '{name}': shape {shape} of {_NAME_BY_CODE[code]} is {count * dt.itemsize} "
                           f"bytes, but {nbytes} bytes of data were sent")
    if at + nbytes > end:
        raise ProtocolError(f"tensor '{name}': {nbytes} bytes of data run past the end of the frame")
    a = np.frombuffer(buf, dt, count, at).reshape(shape)
    if copy or not a.flags.aligned:
        a = a.copy()
    return name, a, at + nbytes


def decode_request(frame: Frame) -> Request:
    """A REQUEST frame -> Request(request_id, model, version or None, inputs, outputs or None).
    Input arrays view the frame's buffer (read-only when it is bytes). Raises ProtocolError
    (layout) or RequestError (contents), both status 400."""
    buf, end = frame.buf, frame.size
    if end < HEADER_BYTES + _REQ.size:
        raise ProtocolError("REQUEST frame too short")
    version, mlen, n_in, n_out, _ = _REQ.unpack_from(buf, HEADER_BYTES)
    at = HEADER_BYTES + _REQ.size
    model = _read_name(buf, at, mlen, end, "model")
    at += mlen
    outputs = None
    if n_out:
        outputs = []
        for _ in range(n_out):
            if at + 2 > end:
                raise ProtocolError("output names run past the end of the frame")
            (n,) = _U16.unpack_from(buf, at)
            outputs.append(_read_name(buf, at + 2, n, end, "output"))
            at += 2 + n
    inputs = {}
    for _ in range(n_in):
        name, a, at = _read_tensor(buf, at, end, False)
        if name in inputs:
            raise RequestError(f"input '{name}' sent twice")
        inputs[name] = a
    if at != end:
        raise ProtocolError(f"REQUEST frame has {end - at} bytes after its last tensor")
    return Request(frame.request_id, model, version or None, inputs, outputs)


def decode_response(frame: Frame, copy: bool = True):
    """A RESPONSE or ERROR frame -> (request_id, Result); an ERROR frame raises ServerError
    (with .request_id and .closing). With copy=False the output arrays view the frame."""
    buf, end = frame.buf, frame.size
    if frame.kind == ERROR:
        raise decode_error(frame)
    if frame.kind != RESPONSE:
        raise ProtocolError(f"expected a RESPONSE frame, got kind {frame.kind}", fatal=True)
    if end < HEADER_BYTES + _RESP.size:
        raise ProtocolError("RESPONSE frame too short", fatal=True)
    version, mlen, n_out, _, sha = _RESP.unpack_from(buf, HEADER_BYTES)
    at = HEADER_BYTES + _RESP.size
    model = _read_name(buf, at, mlen, end, "model")
    at += mlen
    outputs = {}
    for _ in range(n_out):
        name, a, at = _read_tensor(buf, at, end, copy)
        outputs[name] = a
    return frame.request_id, Result(outputs, model, version, sha.hex())


def decode_error(frame: Frame) -> ServerError:
    buf, end = frame.buf, frame.size
    if end < HEADER_BYTES + _ERR.size:
        return ServerError(400, "malformed ERROR frame", frame.request_id, True)
    code, _, n = _ERR.unpack_from(buf, HEADER_BYTES)
    at = HEADER_BYTES + _ERR.size
    msg = str(buf[at:min(end, at + n)], "utf-8", "replace")
    return ServerError(code, msg, frame.request_id, bool(frame.flags & FLAG_CLOSING))


def decode_auth(frame: Frame) -> bytes:
    return bytes(frame.buf[HEADER_BYTES:frame.size])


# -- reading a stream -----------------------------------------------------------------------


class FrameReader:
    """Splits a byte stream into frames. feed(data) returns the frames completed by `data`
    (possibly none); a partial frame is kept for the next feed. A header that is not this
    protocol, or a frame over max_frame_bytes, raises ProtocolError(fatal=True): the stream
    cannot be resynchronised after it.

        reader = FrameReader()
        for frame in reader.feed(sock.recv(65536)):
            rid, result = decode_response(frame)

    Whole frames inside `data` are returned as views of it (no copy) when they start 8-aligned;
    the others are copied into a buffer of their own, so tensor data is always aligned. So do
    not reuse `data`'s buffer after feeding it (pass what recv() returns). On a fatal error the
    frames completed before the bad one are on the exception, as `.frames`.
    """

    __slots__ = ("max_frame_bytes", "_part", "_have", "_head")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES):
        self.max_frame_bytes = max_frame_bytes
        self._part: Optional[bytearray] = None  # the frame being assembled, at its full size
        self._have = 0                          # bytes of it received
        self._head = b""                        # < 16 bytes of a header not yet complete

    @property
    def partial(self) -> int:
        """Bytes held of a frame not yet complete (0 between frames)."""
        return self._have if self._part is not None else len(self._head)

    def _check(self, length: int, kind: int, proto: int) -> int:
        size = length + 4
        if proto != PROTOCOL_VERSION or kind not in KINDS:
            raise ProtocolError(f"not a protocol frame (kind {kind}, protocol version {proto}; "
                                f"expected version {PROTOCOL_VERSION})", fatal=True)
        if size < HEADER_BYTES:
            raise ProtocolError(f"frame length {length} is shorter than the header", fatal=True)
        if size > self.max_frame_bytes:
            raise ProtocolError(f"frame of {size} bytes exceeds the limit of {self.max_frame_bytes}",
                                fatal=True, status=413)
        return size

    def feed(self, data) -> list:
        frames = []
        mv = memoryview(data)
        n = len(mv)
        at = 0
        if self._part is not None or self._head:
            at = self._continue(mv, frames)
            if at is None:
                return frames
        unpack = _HEADER.unpack_from
        while n - at >= HEADER_BYTES:
            length, kind, proto, flags, rid = unpack(mv, at)
            size = length + 4
            if size > self.max_frame_bytes or size < HEADER_BYTES or proto != PROTOCOL_VERSION or kind not in KINDS:
                try:
                    self._check(length, kind, proto)
                except ProtocolError as e:
                    e.frames = frames
                    raise
            if n - at < size:
                break
            if at == 0 and size == n:
                buf = data
            elif at & 7 == 0:
                buf = mv[at:at + size]
            else:
                buf = bytearray(mv[at:at + size])
            frames.append(Frame(kind, flags, rid, buf, size))
            at += size
        if at < n:
            if n - at < HEADER_BYTES:
                self._head = bytes(mv[at:])
            else:
                size = unpack(mv, at)[0] + 4  # checked in the loop
                self._part = bytearray(size)
                self._have = n - at
                self._part[:self._have] = mv[at:]
        return frames

    def _continue(self, mv: memoryview, frames: list) -> Optional[int]:
        """Feed `mv` to the frame in progress; the offset after it, or None if all was used."""
        at = 0
        if self._part is None:  # complete the header first
            take = min(HEADER_BYTES - len(self._head), len(mv))
            head = self._head + bytes(mv[:take])
            if len(head) < HEADER_BYTES:
                self._head = head
                return None
            self._head = b""
            size = self._check(*_HEADER.unpack_from(head)[:3])
            self._part = bytearray(size)
            self._part[:HEADER_BYTES] = head
            self._have = HEADER_BYTES
            at = take
        part, have = self._part, self._have
        take = min(len(part) - have, len(mv) - at)
        part[have:have + take] = mv[at:at + take]
        self._have = have + take
        if self._have < len(part):
            return None
        _, kind, _, flags, rid = _HEADER.unpack_from(part)
        frames.append(Frame(kind, flags, rid, part, len(part)))
        self._part = None
        self._have = 0
        at += take
        return at if at < len(mv) else None
