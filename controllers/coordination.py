"""The inter-domain control protocol: compact binary notices between domain controllers.

Every byte a controller sends another is one of these messages, so the protocol's cost is the
sum of their lengths. Layout, big-endian::

    magic b"SC" | version u8 | type u8 | origin domain u8 | seq u32 | round u16 | count u8
    then ``count`` entries of: node key u16 | stream u8 | score u16 (score x 65535) | m u8 | n u8

``BAN`` and ``UNBAN`` carry the evidence behind the decision (the stream that flagged, its last
score, m of n); ``SUSPECT`` is a round's digest of the origin domain's nodes that drew an
anomalous verdict, so other domains can weigh what they see of them. Empty digests are never
sent. ``seq`` rises with every message of an origin (replay protection builds on it).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

MAGIC = b"SC"
VERSION = 1
HEADER = struct.Struct(">2sBBBIHB")
ENTRY = struct.Struct(">HBHBB")
MAX_ENTRIES = 255


class MessageType(IntEnum):
    BAN = 1
    UNBAN = 2
    SUSPECT = 3


class Stream(IntEnum):
    FLOW = 0
    UPDATE = 1


class MessageError(ValueError):
    """A coordination message that must be rejected; the text is the logged reason."""


@dataclass(frozen=True)
class Evidence:
    node_key: int
    stream: Stream
    score: float
    m: int
    n: int


@dataclass(frozen=True)
class Notice:
    type: MessageType
    origin: int
    seq: int
    round: int
    entries: tuple[Evidence, ...]


def encode_notice(notice: Notice) -> bytes:
    if len(notice.entries) > MAX_ENTRIES:
        raise MessageError(f"{len(notice.entries)} entries exceed the limit of {MAX_ENTRIES}")
    parts = [HEADER.pack(MAGIC, VERSION, notice.type, notice.origin, notice.seq, min(notice.round, 0xFFFF),
                         len(notice.entries))]
    for e in notice.entries:
        parts.append(ENTRY.pack(e.node_key, e.stream, round(min(max(e.score, 0.0), 1.0) * 0xFFFF),
                                min(e.m, 255), min(e.n, 255)))
    return b"".join(parts)


def decode_notice(data: bytes) -> Notice:
    if len(data) < HEADER.size:
        raise MessageError(f"{len(data)} bytes is shorter than the {HEADER.size}-byte header")
    magic, version, type_, origin, seq, round_, count = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise MessageError(f"bad magic {magic!r}: not a coordination message")
    if version != VERSION:
        raise MessageError(f"unsupported version {version} (this side speaks {VERSION})")
    try:
        type_ = MessageType(type_)
    except ValueError:
        raise MessageError(f"unknown message type {type_}") from None
    if len(data) != HEADER.size + count * ENTRY.size:
        raise MessageError(f"message is {len(data)} bytes but {count} entries need "
                           f"{HEADER.size + count * ENTRY.size}")
    entries = []
    for i in range(count):
        key, stream, score, m, n = ENTRY.unpack_from(data, HEADER.size + i * ENTRY.size)
        try:
            stream = Stream(stream)
        except ValueError:
            raise MessageError(f"unknown stream {stream}") from None
        entries.append(Evidence(key, stream, score / 0xFFFF, m, n))
    return Notice(type_, origin, seq, round_, tuple(entries))
