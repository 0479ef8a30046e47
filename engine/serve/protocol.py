"""The binary socket protocol: frame layout, encoding and decoding, an incremental reader.

Pure functions over bytes, no I/O: socket_server.py and client.py do the reading and writing,
and a load generator can build frames with `encode_request` and read answers with
`FrameReader` + `decode_response`. docs/protocol.md is the specification; this file follows it.

Every frame (little-endian; docs/protocol.md has the byte tables):

    u32 length       bytes after this field (the frame is 4 + length bytes)
    u8  kind         AUTH 1, REQUEST 2, RESPONSE 3, ERROR 4; language models: GENERATE 5,
                     TOKEN 6, END 7, CANCEL 8
    u8  proto        PROTOCOL_VERSION (1)
    u16 flags        ERROR: bit 0 = the server closes the connection after this frame
    u64 request_id   chosen by the client; echoed by the answer; 0 on connection-level errors

A REQUEST or RESPONSE then has a metadata block (model, version, tensor names, datatypes,
shapes) whose length is its first field, then the tensors' raw bytes, each starting at a
multiple of 8 from the frame's first byte: a frame held in its own buffer decodes into numpy
arrays that view it (aligned, no copy). The metadata of a stream of requests repeats, so a
decoder parses each distinct metadata block once and keeps the result (bounded cache).

    import numpy as np
    from engine.serve import protocol
    frame = protocol.encode_request(1, "digits", {"x": np.zeros((1, 8, 8, 1), np.float32)})
    (req,) = protocol.FrameReader().feed(frame)
    rid, model, version, inputs, outputs = protocol.decode_request(req)
"""

from __future__ import annotations

import json
import struct
from typing import NamedTuple, Optional

import numpy as np

from ..errors import EngineError
from .tensors import RequestError, datatype_to_dtype

PROTOCOL_VERSION = 1
AUTH, REQUEST, RESPONSE, ERROR = 1, 2, 3, 4
GENERATE, TOKEN, END, CANCEL = 5, 6, 7, 8  # a generation: GENERATE -> TOKEN per token ... -> END (or ERROR)
KINDS = (AUTH, REQUEST, RESPONSE, ERROR, GENERATE, TOKEN, END, CANCEL)
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
_META = struct.Struct("<II")               # metadata bytes, reserved
_REQ = struct.Struct("<QHHHH")             # version, model_len, n_inputs, n_outputs, reserved
_RESP = struct.Struct("<QHHI32s")          # version, model_len, n_outputs, reserved, sha256
_ERR = struct.Struct("<HHI")               # code, reserved, message_len
_TENSOR = struct.Struct("<HBB")            # name_len, datatype, ndim
_U16 = struct.Struct("<H")
_TOKEN = struct.Struct("<II")              # token id, reserved
_DIMS = [struct.Struct("<" + "Q" * (n + 1)) for n in range(33)]  # ndim dims, then nbytes
MAX_NDIM = len(_DIMS) - 1
META_AT = HEADER_BYTES + _META.size        # 24: where the metadata begins
_PAD = b"\0" * 8
_CACHE_ENTRIES = 4096                      # distinct metadata blocks remembered (per kind)
_CACHE_KEY_BYTES = 2048                    # longer metadata is parsed every time


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


def _arrays(tensors: dict) -> tuple:
    """The arrays as the wire wants them (C order, little-endian) and their signature."""
    arrays, sig = [], []
    for name, a in tensors.items():
        if type(a) is not np.ndarray:
            a = np.asarray(a)
        if not a.flags.c_contiguous or a.dtype.byteorder == ">":
            a = np.ascontiguousarray(a, a.dtype.newbyteorder("<"))
        arrays.append(a)
        sig.append((name, a.dtype, a.shape))
    return arrays, tuple(sig)


_LAYOUTS: dict = {}


def _layout(key: tuple, meta: bytes, sig: tuple) -> tuple:
    """(pieces, size): pieces[0] is everything from the metadata-length field to the first
    tensor's data, pieces[i] the zero padding before tensor i's data. Cached by `key`: a
    client sends, and a server answers, the same signature over and over."""
    for name, dtype, shape in sig:
        code = _CODE_BY_NP.get(dtype)
        if code is None:
            raise RequestError(f"tensor '{name}': dtype {dtype} has no protocol datatype")
        if len(shape) > MAX_NDIM:
            raise RequestError(f"tensor '{name}': {len(shape)} dims; the protocol allows {MAX_NDIM}")
        nb = _name(name, "tensor")
        meta += _TENSOR.pack(len(nb), code, len(shape)) + nb + _DIMS[len(shape)].pack(*shape, _nbytes(dtype, shape))
    at = META_AT + len(meta)
    pieces, pad = [], b""
    for _, dtype, shape in sig:
        pad = _PAD[:-at & 7]
        pieces.append(pad)
        at += len(pad) + _nbytes(dtype, shape)
    first = _META.pack(len(meta), 0) + meta + (pieces[0] if pieces else b"")
    pieces[:1] = [first]
    if len(_LAYOUTS) >= _CACHE_ENTRIES:  # many signatures (free dims): start over rather than grow
        _LAYOUTS.clear()
    _LAYOUTS[key] = hit = (tuple(pieces), at)
    return hit


def _nbytes(dtype: np.dtype, shape: tuple) -> int:
    n = dtype.itemsize
    for d in shape:
        n *= d
    return n


def _frame(kind: int, request_id: int, layout: tuple, arrays: list) -> tuple:
    pieces, size = layout
    parts = [_HEADER.pack(size - 4, kind, PROTOCOL_VERSION, 0, request_id), pieces[0]]
    if arrays:
        parts.append(arrays[0])
        for pad, a in zip(pieces[1:], arrays[1:]):
            if pad:
                parts.append(pad)
            parts.append(a)
    return parts, size


def encode_request(request_id: int, model: str, inputs: dict, version: Optional[int] = None,
                   outputs: Optional[list] = None) -> bytes:
    """A whole REQUEST frame, its length prefix included.

        frame = encode_request(7, "digits", {"x": x}, version=2, outputs=["probs"])
    """
    return b"".join(encode_request_parts(request_id, model, inputs, version, outputs)[0])


def encode_request_parts(request_id: int, model: str, inputs: dict, version: Optional[int] = None,
                         outputs: Optional[list] = None) -> tuple:
    """(buffers, frame size): the REQUEST frame in pieces, the arrays by reference, for
    b"".join or sendmsg (len() of an array piece is not its byte count: use the size)."""
    arrays, sig = _arrays(inputs)
    outs = tuple(outputs) if outputs else ()
    key = (REQUEST, model, version or 0, outs, sig)
    layout = _LAYOUTS.get(key)
    if layout is None:
        mb = _name(model, "model")
        meta = [_REQ.pack(version or 0, len(mb), len(sig), len(outs), 0), mb]
        for o in outs:
            ob = _name(o, "output")
            meta.append(_U16.pack(len(ob)) + ob)
        layout = _layout(key, b"".join(meta), sig)
    return _frame(REQUEST, request_id, layout, arrays)


def encode_response_parts(request_id: int, model: str, version: int, sha256: str, outputs: dict) -> tuple:
    """(buffers, frame size): a RESPONSE frame in pieces, as encode_request_parts."""
    arrays, sig = _arrays(outputs)
    key = (RESPONSE, model, version, sha256, sig)
    layout = _LAYOUTS.get(key)
    if layout is None:
        mb = _name(model, "model")
        meta = _RESP.pack(version, len(mb), len(sig), 0, bytes.fromhex(sha256)) + mb
        layout = _layout(key, meta, sig)
    return _frame(RESPONSE, request_id, layout, arrays)


def encode_response(request_id: int, model: str, version: int, sha256: str, outputs: dict) -> bytes:
    return b"".join(encode_response_parts(request_id, model, version, sha256, outputs)[0])


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


def _json_frame(kind: int, request_id: int, obj: dict) -> bytes:
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    return _HEADER.pack(HEADER_BYTES - 4 + len(body), kind, PROTOCOL_VERSION, 0, request_id) + body


def encode_generate(request_id: int, request: dict) -> bytes:
    """A GENERATE frame: the body is a JSON object with OpenAI's fields ("model", "prompt" or
    "messages", "max_tokens", "temperature", "stop", ...) and optionally "version"."""
    return _json_frame(GENERATE, request_id, request)


def encode_token(request_id: int, token_id: int, text: str) -> bytes:
    """A TOKEN frame: one generated token and the text it completes ("" while held back)."""
    tb = text.encode("utf-8")
    return _HEADER.pack(HEADER_BYTES - 4 + _TOKEN.size + len(tb), TOKEN, PROTOCOL_VERSION, 0, request_id) + \
        _TOKEN.pack(token_id, 0) + tb


def encode_end(request_id: int, end: dict) -> bytes:
    """An END frame: JSON {"finish_reason", "text" (the held-back tail), "usage", "model", "version"}."""
    return _json_frame(END, request_id, end)


def encode_cancel(request_id: int) -> bytes:
    """A CANCEL frame: stop the generation `request_id` (it ends with finish_reason "cancelled")."""
    return _HEADER.pack(HEADER_BYTES - 4, CANCEL, PROTOCOL_VERSION, 0, request_id)


# -- decoding -------------------------------------------------------------------------------


def _json_body(frame: Frame, what: str) -> dict:
    try:
        obj = json.loads(bytes(frame.buf[HEADER_BYTES:frame.size]))
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"the {what} frame's body is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"the {what} frame's body must be a JSON object")
    return obj


def decode_generate(frame: Frame) -> dict:
    return _json_body(frame, "GENERATE")


def decode_token(frame: Frame) -> tuple:
    """(token id, text) of a TOKEN frame."""
    if frame.size < HEADER_BYTES + _TOKEN.size:
        raise ProtocolError("malformed TOKEN frame")
    token_id, _ = _TOKEN.unpack_from(frame.buf, HEADER_BYTES)
    return token_id, str(frame.buf[HEADER_BYTES + _TOKEN.size:frame.size], "utf-8")


def decode_end(frame: Frame) -> dict:
    return _json_body(frame, "END")



class _Meta:
    """Reads a metadata block, checking every length against where the block ends."""
    __slots__ = ("buf", "at", "end")

    def __init__(self, buf, at: int, end: int):
        self.buf, self.at, self.end = buf, at, end

    def take(self, st: struct.Struct, what: str) -> tuple:
        if self.at + st.size > self.end:
            raise ProtocolError(f"{what} runs past the end of the metadata")
        v = st.unpack_from(self.buf, self.at)
        self.at += st.size
        return v

    def text(self, n: int, what: str) -> str:
        if self.at + n > self.end:
            raise ProtocolError(f"{what} runs past the end of the metadata")
        try:
            s = str(self.buf[self.at:self.at + n], "utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(f"{what} is not UTF-8") from None
        self.at += n
        return s

    def tensors(self, n: int, data_at: int) -> tuple:
        """n descriptors -> ((name, dtype, count, offset, shape), ...) and the frame's end."""
        out, names = [], set()
        for _ in range(n):
            nlen, code, ndim = self.take(_TENSOR, "a tensor descriptor")
            name = self.text(nlen, "a tensor name")
            if ndim > MAX_NDIM:
                raise ProtocolError(f"tensor '{name}': {ndim} dims; the protocol allows {MAX_NDIM}")
            *shape, nbytes = self.take(_DIMS[ndim], f"tensor '{name}' shape")
            dt = _NP_BY_CODE.get(code)
            if dt is None:
                if code in _NAME_BY_CODE:
                    raise RequestError(f"tensor '{name}': datatype {_NAME_BY_CODE[code]} has no numpy type; "
                                       "send FP32")
                raise ProtocolError(f"tensor '{name}': unknown datatype code {code}")
            count = 1
            for d in shape:
                count *= d
            if count * dt.itemsize != nbytes:
                raise RequestError(f"tensor '{name}': shape {shape} of {_NAME_BY_CODE[code]} is "
                                   f"{count * dt.itemsize} bytes, but {nbytes} bytes of data were sent")
            if name in names:
                raise RequestError(f"tensor '{name}' sent twice")
            names.add(name)
            data_at += -data_at & 7
            out.append((name, dt, count, data_at, tuple(shape)))
            data_at += nbytes
        if self.at != self.end:
            raise ProtocolError(f"the metadata has {self.end - self.at} bytes after its last tensor")
        return tuple(out), data_at


def _meta_key(frame: Frame) -> tuple:
    """(key, metadata end) of a REQUEST/RESPONSE frame; the key is the metadata's bytes."""
    buf, size = frame.buf, frame.size
    if size < META_AT:
        raise ProtocolError("frame too short for its metadata")
    (mlen, _) = _META.unpack_from(buf, HEADER_BYTES)
    end = META_AT + mlen
    if end > size:
        raise ProtocolError(f"metadata of {mlen} bytes runs past the end of the frame")
    return (bytes(buf[HEADER_BYTES:end]) if mlen <= _CACHE_KEY_BYTES else None), end


def _remember(cache: dict, key, value) -> None:
    if key is not None:
        if len(cache) >= _CACHE_ENTRIES:
            cache.clear()
        cache[key] = value


def _views(frame: Frame, tensors: tuple, data_end: int, copy: bool) -> dict:
    if data_end != frame.size:
        raise ProtocolError(f"the frame is {frame.size} bytes, its tensors say {data_end}")
    buf, out = frame.buf, {}
    for name, dt, count, at, shape in tensors:
        a = np.frombuffer(buf, dt, count, at).reshape(shape)
        if copy or not a.flags.aligned:
            a = a.copy()
        out[name] = a
    return out


_REQUESTS: dict = {}
_RESPONSES: dict = {}


def decode_request(frame: Frame) -> Request:
    """A REQUEST frame -> Request(request_id, model, version or None, inputs, outputs or None).
    Input arrays view the frame's buffer (read-only when it is bytes). Raises ProtocolError
    (layout) or RequestError (contents), both status 400."""
    key, end = _meta_key(frame)
    hit = _REQUESTS.get(key) if key is not None else None
    if hit is None:
        m = _Meta(frame.buf, META_AT, end)
        version, mlen, n_in, n_out, _ = m.take(_REQ, "the request header")
        model = m.text(mlen, "the model name")
        outputs = tuple(m.text(m.take(_U16, "an output name")[0], "an output name") for _ in range(n_out))
        tensors, data_end = m.tensors(n_in, end)
        hit = (model, version or None, list(outputs) if outputs else None, tensors, data_end)
        _remember(_REQUESTS, key, hit)
    model, version, outputs, tensors, data_end = hit
    return Request(frame.request_id, model, version, _views(frame, tensors, data_end, False),
                   list(outputs) if outputs else None)


def decode_response(frame: Frame, copy: bool = True):
    """A RESPONSE or ERROR frame -> (request_id, Result); an ERROR frame raises ServerError
    (with .request_id and .closing). With copy=False the output arrays view the frame."""
    if frame.kind == ERROR:
        raise decode_error(frame)
    if frame.kind != RESPONSE:
        raise ProtocolError(f"expected a RESPONSE frame, got kind {frame.kind}", fatal=True)
    key, end = _meta_key(frame)
    hit = _RESPONSES.get(key) if key is not None else None
    if hit is None:
        m = _Meta(frame.buf, META_AT, end)
        version, mlen, n_out, _, sha = m.take(_RESP, "the response header")
        model = m.text(mlen, "the model name")
        tensors, data_end = m.tensors(n_out, end)
        hit = (model, version, sha.hex(), tensors, data_end)
        _remember(_RESPONSES, key, hit)
    model, version, sha, tensors, data_end = hit
    return frame.request_id, Result(_views(frame, tensors, data_end, copy), model, version, sha)


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
        if self._part is None and not self._head and len(data) >= HEADER_BYTES:
            length, kind, proto, flags, rid = _HEADER.unpack_from(data)
            if length + 4 == len(data) and proto == PROTOCOL_VERSION and kind in KINDS \
                    and length + 4 <= self.max_frame_bytes:  # the usual case: one whole frame
                return [Frame(kind, flags, rid, data, length + 4)]
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
