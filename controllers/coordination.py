"""The inter-domain control protocol: compact binary notices between domain controllers.

Every byte a controller sends another is one of these messages, so the protocol's cost is the
sum of their lengths. Layout, big-endian::

    magic b"SC" | version u8 | type u8 | origin domain u8 | seq u32 | round u16 | count u8
    then ``count`` entries: BAN, UNBAN, SUSPECT: node key u16 | stream u8 | score u16 (x 65535) | m u8 | n u8
                            LINK_DOWN, LINK_UP: domain u8 | domain u8
    then an 8-byte tag: HMAC-SHA256 of all the above under the sender's key for this receiver

``BAN`` and ``UNBAN`` carry the evidence behind the decision (the stream that flagged, its last
score, m of n); ``SUSPECT`` is a round's digest of the origin domain's nodes that drew an
anomalous verdict; ``LINK_DOWN``/``LINK_UP`` report a border link the origin saw fail or come
back, so that every domain routes around it the same way. Empty digests are never sent.

Authentication (:class:`NoticeChannel`): every pair of domains shares a key (derived by the run
from its secret, see :mod:`common.keys`), so a notice verifies only as coming from its origin,
and a domain cannot forge another's notices even to a third. ``seq`` rises with every notice
of an origin and each receiver keeps the highest it accepted: a replayed (or reordered-stale)
notice is rejected. Both are kept in the controller's persisted state across restarts.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from enum import IntEnum

MAGIC = b"SC"
VERSION = 1
HEADER = struct.Struct(">2sBBBIHB")
ENTRY = struct.Struct(">HBHBB")
LINK_ENTRY = struct.Struct(">BB")
MAX_ENTRIES = 255
TAG_BYTES = 8


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


def message_tag(key: bytes, body: bytes) -> bytes:
    """The tag of every control message (notices, inspection reports): truncated HMAC-SHA256."""
    return hmac.new(key, body, hashlib.sha256).digest()[:TAG_BYTES]


class NoticeChannel:
    """One domain's end of the authenticated, replay-protected notice exchange.

    ``keys`` maps every other domain to the key this domain shares with it. ``outgoing``
    numbers a notice and tags a copy for each receiver; ``incoming`` accepts a notice only if
    its tag verifies under the key shared with the origin it names and its ``seq`` is above
    every one accepted from that origin before.
    """

    def __init__(self, domain: int, keys: dict[int, bytes], seq: int = 0, seen: dict[int, int] | None = None) -> None:
        self.domain = domain
        self.keys = dict(keys)
        self.seq = seq
        self.seen: dict[int, int] = dict(seen or {})

    def outgoing(self, notice: Notice) -> dict[int, bytes]:
        """The notice, numbered and from this domain, as bytes for each other domain."""
        self.seq += 1
        body = encode_notice(Notice(notice.type, self.domain, self.seq, notice.round, notice.entries, notice.links))
        return {peer: body + message_tag(key, body) for peer, key in sorted(self.keys.items())}

    def incoming(self, data: bytes) -> Notice:
        if len(data) < HEADER.size + TAG_BYTES:
            raise MessageError(f"{len(data)} bytes is shorter than a header and its {TAG_BYTES}-byte tag")
        body, tag = data[:-TAG_BYTES], data[-TAG_BYTES:]
        notice = decode_notice(body)
        key = self.keys.get(notice.origin)
        if key is None:
            raise MessageError(f"origin domain {notice.origin} is not a peer of domain {self.domain}")
        if not hmac.compare_digest(tag, message_tag(key, body)):
            raise MessageError(f"tag does not verify: forged or altered (claims origin domain {notice.origin})")
        last = self.seen.get(notice.origin, 0)
        if notice.seq <= last:
            raise MessageError(f"replayed: seq {notice.seq} from domain {notice.origin}, "
                               f"already accepted up to {last}")
        self.seen[notice.origin] = notice.seq
        return notice

    def state(self) -> dict:
        return {"seq": self.seq, "seen": {str(k): v for k, v in self.seen.items()}}

    @classmethod
    def restored(cls, domain: int, keys: dict[int, bytes], state: dict) -> NoticeChannel:
        return cls(domain, keys, int(state["seq"]), {int(k): int(v) for k, v in state["seen"].items()})
