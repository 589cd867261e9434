"""The model-exchange frame: compact, versioned, length-prefixed, and checked on the way in.

Only numpy is needed to read it, so a third party that sees the bytes on the wire (the domain
inspection service) decodes exactly what the agents decode. Layout, all big-endian::

    prefix (16 bytes)  magic b"SDFL" | version u8 | flags u8 | header_len u16 | payload_len u64
    header             sender_len u8 | sender utf-8 | round u32 | samples u32 | dtype u8
                       | tensor_count u16 | per tensor: ndim u8, ndim x dim u32
    payload            the tensors' raw little-endian bytes, concatenated in order
    tag (flag 0x01)    16 bytes: HMAC-SHA256 of all the above under the key the sender shares
                       with this receiver (per pair of neighbours, see :mod:`common.keys`)

Every limit is checked before anything is allocated, so an oversized or lying frame costs the
receiver nothing but the 16-byte prefix. A receiver given keys accepts only tagged frames whose
tag verifies under the key of the sender they name: an update claiming to be from d1h2 comes
from d1h2. A reader without keys (the domain's inspection service) skips the tag.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

MAGIC = b"SDFL"
VERSION = 1
PREFIX = struct.Struct(">4sBBHQ")
HEADER_FIXED = struct.Struct(">IIBH")
DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<f2")}
DTYPE_CODES = {dtype: code for code, dtype in DTYPES.items()}
MAX_SENDER_BYTES = 64
MAX_TENSORS = 256
MAX_NDIM = 8
MAX_HEADER_BYTES = 8 + MAX_SENDER_BYTES + HEADER_FIXED.size + MAX_TENSORS * (1 + 4 * MAX_NDIM)
DEFAULT_MAX_PAYLOAD = 64 * 1024 * 1024
FLAG_TAGGED = 0x01
TAG_BYTES = 16


class FrameError(ValueError):
    """A frame that must be rejected; the message is the logged reason."""


@dataclass(frozen=True)
class ModelFrame:
    sender: str
    round: int
    samples: int
    tensors: tuple[np.ndarray, ...]

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(t.shape for t in self.tensors)


def encode(frame: ModelFrame, dtype: str = "<f4", tagged: bool = False) -> bytes:
    """The bytes of ``frame``, tensors converted to ``dtype`` (float32 by default). With
    ``tagged``, the prefix announces a tag: append one per receiver with :func:`tag`."""
    wire_dtype = np.dtype(dtype)
    if wire_dtype not in DTYPE_CODES:
        raise FrameError(f"dtype {dtype} cannot be sent; use one of {[str(d) for d in DTYPE_CODES]}")
    sender = frame.sender.encode("utf-8")
    if not 0 < len(sender) <= MAX_SENDER_BYTES:
        raise FrameError(f"sender id must be 1-{MAX_SENDER_BYTES} bytes of UTF-8")
    if len(frame.tensors) > MAX_TENSORS:
        raise FrameError(f"{len(frame.tensors)} tensors exceed the limit of {MAX_TENSORS}")
    header = [struct.pack(">B", len(sender)), sender,
              HEADER_FIXED.pack(frame.round, frame.samples, DTYPE_CODES[wire_dtype], len(frame.tensors))]
    payload = []
    for tensor in frame.tensors:
        array = np.ascontiguousarray(tensor, dtype=wire_dtype)
        if array.ndim > MAX_NDIM:
            raise FrameError(f"a tensor of {array.ndim} dimensions exceeds the limit of {MAX_NDIM}")
        if array.size == 0:
            raise FrameError(f"tensor {len(payload)} holds no values")
        header.append(struct.pack(f">B{array.ndim}I", array.ndim, *array.shape))
        payload.append(array.tobytes())
    header_bytes = b"".join(header)
    payload_len = sum(len(p) for p in payload)
    flags = FLAG_TAGGED if tagged else 0
    return b"".join([PREFIX.pack(MAGIC, VERSION, flags, len(header_bytes), payload_len), header_bytes, *payload])


def tag(body: bytes, key: bytes) -> bytes:
    """``body`` (an :func:`encode` d frame with ``tagged``) followed by its tag under ``key``."""
    return body + hmac.new(key, body, hashlib.sha256).digest()[:TAG_BYTES]


@dataclass(frozen=True)
class _Prefix:
    header_len: int
    payload_len: int
    tag_len: int

    @property
    def total(self) -> int:
        return PREFIX.size + self.header_len + self.payload_len + self.tag_len


def _parse_prefix(data: bytes, max_payload: int) -> _Prefix:
    magic, version, flags, header_len, payload_len = PREFIX.unpack(data)
    if magic != MAGIC:
        raise FrameError(f"bad magic {magic!r}: not an sdfl model frame")
    if version != VERSION:
        raise FrameError(f"unsupported frame version {version} (this side speaks {VERSION})")
    if header_len > MAX_HEADER_BYTES:
        raise FrameError(f"header of {header_len} bytes exceeds the limit of {MAX_HEADER_BYTES}")
    if payload_len > max_payload:
        raise FrameError(f"payload of {payload_len} bytes exceeds the limit of {max_payload}")
    if flags & ~FLAG_TAGGED:
        raise FrameError(f"unknown flags {flags:#04x}")
    return _Prefix(header_len, payload_len, TAG_BYTES if flags & FLAG_TAGGED else 0)


def _authenticate(frame_bytes: bytes, prefix: _Prefix, frame: ModelFrame, keys: Mapping[str, bytes] | None) -> None:
    """With ``keys``, the frame must carry a tag that verifies under its sender's key."""
    if keys is None:
        return
    if not prefix.tag_len:
        raise FrameError(f"frame claiming to be from {frame.sender!r} is not authenticated (no tag)")
    key = keys.get(frame.sender)
    if key is None:
        raise FrameError(f"no key shared with {frame.sender!r}: not a neighbour")
    body, received = frame_bytes[:-prefix.tag_len], frame_bytes[-prefix.tag_len:]
    if not hmac.compare_digest(received, hmac.new(key, body, hashlib.sha256).digest()[:TAG_BYTES]):
        raise FrameError(f"tag does not verify: frame claiming to be from {frame.sender!r} is forged or altered")


def _parse_body(header: bytes, payload: bytes, expected_shapes=None) -> ModelFrame:
    try:
        (sender_len,) = struct.unpack_from(">B", header, 0)
        sender = header[1:1 + sender_len].decode("utf-8")
        offset = 1 + sender_len
        round_, samples, dtype_code, count = HEADER_FIXED.unpack_from(header, offset)
        offset += HEADER_FIXED.size
        shapes = []
        for _ in range(count):
            (ndim,) = struct.unpack_from(">B", header, offset)
            if ndim > MAX_NDIM:
                raise FrameError(f"a tensor of {ndim} dimensions exceeds the limit of {MAX_NDIM}")
            shapes.append(struct.unpack_from(f">{ndim}I", header, offset + 1))
            offset += 1 + 4 * ndim
    except struct.error:
        raise FrameError("header is shorter than its fields say") from None
    except UnicodeDecodeError:
        raise FrameError("sender id is not valid UTF-8") from None
    if not sender:
        raise FrameError("empty sender id")
    if offset != len(header):
        raise FrameError(f"header has {len(header) - offset} bytes beyond its fields")
    if count > MAX_TENSORS:
        raise FrameError(f"{count} tensors exceed the limit of {MAX_TENSORS}")
    dtype = DTYPES.get(dtype_code)
    if dtype is None:
        raise FrameError(f"unknown dtype code {dtype_code}")
    sizes = [math.prod(shape) for shape in shapes]  # exact: a 64-bit product of hostile dimensions wraps
    if 0 in sizes:  # numpy refuses to shape nothing into dimensions whose product overflows
        raise FrameError(f"tensor {sizes.index(0)} holds no values")
    if sum(sizes) * dtype.itemsize != len(payload):
        raise FrameError(f"payload is {len(payload)} bytes but the shapes need {sum(sizes) * dtype.itemsize}")
    if expected_shapes is not None and tuple(map(tuple, shapes)) != tuple(map(tuple, expected_shapes)):
        raise FrameError(f"shapes {shapes} do not match the model's {list(expected_shapes)}")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes Inf, refused below
        flat = np.frombuffer(payload, dtype=dtype).astype(np.float32)
    if not np.isfinite(flat).all():
        raise FrameError("payload holds NaN or Inf (as float32)")
    tensors, start = [], 0
    for shape, size in zip(shapes, sizes):
        tensors.append(flat[start:start + size].reshape(shape))
        start += size
    return ModelFrame(sender, round_, samples, tuple(tensors))


def decode(data: bytes, max_payload: int = DEFAULT_MAX_PAYLOAD, expected_shapes=None,
           keys: Mapping[str, bytes] | None = None) -> ModelFrame:
    """Exactly one frame from ``data``; anything malformed (or, with ``keys``, unauthenticated)
    raises :class:`FrameError`."""
    if len(data) < PREFIX.size:
        raise FrameError(f"{len(data)} bytes is shorter than the {PREFIX.size}-byte prefix")
    prefix = _parse_prefix(data[:PREFIX.size], max_payload)
    if len(data) != prefix.total:
        raise FrameError(f"frame is {len(data)} bytes but its prefix says {prefix.total}")
    return _frame(bytes(data), prefix, expected_shapes, keys)


def _frame(frame_bytes: bytes, prefix: _Prefix, expected_shapes, keys) -> ModelFrame:
    header_end = PREFIX.size + prefix.header_len
    frame = _parse_body(frame_bytes[PREFIX.size:header_end],
                        frame_bytes[header_end:header_end + prefix.payload_len], expected_shapes)
    _authenticate(frame_bytes, prefix, frame, keys)
    return frame


class FrameReader:
    """Incremental decoder for a byte stream (a socket, or a reassembled TCP stream).

    ``feed`` returns the frames completed so far. After a :class:`FrameError` the stream has
    lost its framing and the reader refuses further input.
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD, expected_shapes=None,
                 keys: Mapping[str, bytes] | None = None) -> None:
        self.max_payload = max_payload
        self.expected_shapes = expected_shapes
        self.keys = keys
        self._buffer = bytearray()
        self._prefix: _Prefix | None = None
        self.failed: str | None = None

    @property
    def pending_bytes(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[ModelFrame]:
        if self.failed:
            raise FrameError(f"stream already rejected: {self.failed}")
        self._buffer += data
        frames = []
        try:
            while True:
                if self._prefix is None:
                    if len(self._buffer) < PREFIX.size:
                        break
                    self._prefix = _parse_prefix(bytes(self._buffer[:PREFIX.size]), self.max_payload)
                total = self._prefix.total
                if len(self._buffer) < total:
                    break
                frames.append(_frame(bytes(self._buffer[:total]), self._prefix, self.expected_shapes, self.keys))
                del self._buffer[:total]
                self._prefix = None
        except FrameError as error:
            self.failed = str(error)
            self._buffer.clear()
            raise
        return frames
