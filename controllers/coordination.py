"""The inter-domain control protocol: compact binary notices between domain controllers.

Every byte a controller sends another is one of these messages, so the protocol's cost is the
sum of their lengths. Layout, big-endian::

    magic b"SC" | version u8 | type u8 | origin domain u8 | seq u32 | round u16 | count u8
    then ``count`` entries: BAN, UNBAN, ACCUSE, SUSPECT: node key u16 | stream u8 | score u16 (x 65535) | m u8 | n u8
                            LINK_DOWN, LINK_UP: domain u8 | domain u8
    (then, sent between domains, the decision's time, chain link and signature: :mod:`controllers.ledger`)

``BAN`` and ``UNBAN`` (of a domain's own host; of a remote host, the withdrawal of its own
accusation) and ``ACCUSE`` (of a remote host) carry the evidence behind the decision (the stream
that flagged, its last score, m of n); ``SUSPECT`` is a round's digest of the origin domain's nodes that drew an
anomalous verdict; ``LINK_DOWN``/``LINK_UP`` report a border link the origin saw fail or come
back, so that every domain routes around it the same way. Empty digests are never sent.

Every notice a domain sends is a decision it signs into its own hash chain
(:mod:`controllers.ledger`): any domain can check who decided it, and none can forge, alter,
replay or reorder another's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

MAGIC = b"SC"
VERSION = 2
HEADER = struct.Struct(">2sBBBIHB")
ENTRY = struct.Struct(">HBHBB")
LINK_ENTRY = struct.Struct(">BB")
MAX_ENTRIES = 255


class MessageType(IntEnum):
    BAN = 1
    UNBAN = 2
    SUSPECT = 3
    LINK_DOWN = 4
    LINK_UP = 5
    ACCUSE = 6


LINK_TYPES = (MessageType.LINK_DOWN, MessageType.LINK_UP)


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
    entries: tuple[Evidence, ...] = ()
    links: tuple[tuple[int, int], ...] = field(default=())


def encode_notice(notice: Notice) -> bytes:
    """The notice's bytes, without a tag (:meth:`NoticeChannel.outgoing` adds one per receiver)."""
    items = notice.links if notice.type in LINK_TYPES else notice.entries
    if len(items) > MAX_ENTRIES:
        raise MessageError(f"{len(items)} entries exceed the limit of {MAX_ENTRIES}")
    parts = [HEADER.pack(MAGIC, VERSION, notice.type, notice.origin, notice.seq, min(notice.round, 0xFFFF),
                         len(items))]
    if notice.type in LINK_TYPES:
        parts += [LINK_ENTRY.pack(a, b) for a, b in notice.links]
    else:
        parts += [ENTRY.pack(e.node_key, e.stream, round(min(max(e.score, 0.0), 1.0) * 0xFFFF),
                             min(e.m, 255), min(e.n, 255)) for e in notice.entries]
    return b"".join(parts)


def decode_notice(data: bytes) -> Notice:
    """An untagged notice's fields; anything malformed raises :class:`MessageError`."""
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
    entry = LINK_ENTRY if type_ in LINK_TYPES else ENTRY
    if len(data) != HEADER.size + count * entry.size:
        raise MessageError(f"message is {len(data)} bytes but {count} entries need "
                           f"{HEADER.size + count * entry.size}")
    if type_ in LINK_TYPES:
        links = tuple(LINK_ENTRY.unpack_from(data, HEADER.size + i * LINK_ENTRY.size) for i in range(count))
        return Notice(type_, origin, seq, round_, links=links)
    entries = []
    for i in range(count):
        key, stream, score, m, n = ENTRY.unpack_from(data, HEADER.size + i * ENTRY.size)
        try:
            stream = Stream(stream)
        except ValueError:
            raise MessageError(f"unknown stream {stream}") from None
        entries.append(Evidence(key, stream, score / 0xFFFF, m, n))
    return Notice(type_, origin, seq, round_, tuple(entries))
