"""A domain's inspection service: the agents' model frames, read off the edge switch's mirror.

The controller's admission rule for (host, agents' port) also outputs every such packet to a
monitor port (:mod:`controllers.core`), a veth whose other end this process reads in the root
namespace. It reassembles each TCP stream, decodes frames with the agents' own wire format
(:mod:`agents.wire`), names the sender by the source address admission vouched for (not by
what the frame claims), and once a round's frames from the domain's senders are in, sends
their update features (:class:`controllers.features.UpdateFeatures`) to the controller in a
tagged report (:mod:`controllers.reports`)::

    python -m controllers.inspector --network network.json --domain 1 --out RUN_DIR \\
        --keys RUN_DIR/keys/inspector-d1.json --bounds '{"shapes": ..., "last_round": 20, ...}'

(``sdfl run`` forks the same ``main`` from an inspector launcher, :mod:`sdfl.launcher`.)
Everything it reads comes from hosts: segments are parsed by :mod:`controllers.packets`, and a
frame no honest agent could send (:meth:`FrameBounds.violation`) is evidence against the
sender its address names, carried in the next report, and so are two versions of the same
stream bytes (an insertion, :class:`StreamAssembler`); none of it can crash or stall the
service. It writes a ``heartbeat`` record every second (the runner's liveness watch).
Everything but the sockets (:class:`DomainInspection`) is unit-tested without root.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import select
import signal
import socket
import struct
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agents.wire import DEFAULT_MAX_PAYLOAD, MAGIC, FrameError, FrameReader, ModelFrame
from common.description import DescriptionError, NetworkDescription, load_description
from common.events import Event, event
from controllers.packets import PacketError, parse_tcp_segment
from controllers.reports import InspectionReport, ReportChannel

LOG = logging.getLogger("sdfl.inspector")
ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux; Python does not name it
MAX_OUT_OF_ORDER = 64
"""Segments held per stream while a gap is open; beyond that the lost bytes are skipped and
the stream resynchronises at the next frame's magic."""
GAP_WAIT_S = 2.0
"""How long a stream holds segments behind a gap for the bytes that fill it. TCP resends what its
receiver lacks, after 200 ms at least and longer on a loaded machine; bytes still missing after this
the mirror alone lost (the receiver has them: no resend is coming), so the stream skips them. Held
by count alone, a stream that carries one frame a round waited rounds for bytes that never came.
8 x 12 paper.toml (one run each): streams that skipped a gap 98 at 1 s, 3 at 2 s, none at 5 s, so
at 1 s most were resends still on their way; a skip costs a frame, a wait delays its stream's
frames (those held are read when it ends)."""
MAX_STREAMS_PER_SOURCE = 64
"""Streams kept per source address, the least recently fed forgotten first: a host that opens
connections without end (a SYN flood with fresh ports; 1.4 KB a half-open stream) costs its own
streams, no one else's. An honest agent feeds one per neighbour, and one anew after a reconnect."""
MAX_UNCHECKED = 8
"""Segments from before the bytes a stream keeps that it takes for the mirror having lost the
stream, which it then resynchronises on."""
RECHECK_BYTES = 128 * 1024
"""Bytes of each stream kept to check retransmissions against (the payloads themselves, no
copy): six frames of paper.toml's model. A retransmission from further back is not checked."""
RECEIVE_BUFFER = 32 * 1024 * 1024
"""A round's models arrive as one burst; a small socket buffer would drop mirrored packets."""
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)  # Linux
SOL_PACKET, PACKET_STATISTICS = 263, 6  # Linux's; Python names neither
MIRROR_FILTER_EXPRESSION = ("tcp and ((tcp[tcpflags] & tcp-syn) != 0 or "
                            "(ip[2:2] - ((ip[0] & 0xf) << 2) - ((tcp[12] & 0xf0) >> 2)) != 0)")
MIRROR_FILTER = (
    (0x28, 0, 0, 0x0000000c), (0x15, 0, 24, 0x00000800), (0x30, 0, 0, 0x00000017), (0x15, 0, 22, 0x00000006),
    (0x28, 0, 0, 0x00000014), (0x45, 3, 0, 0x00001fff), (0xb1, 0, 0, 0x0000000e), (0x50, 0, 0, 0x0000001b),
    (0x45, 16, 0, 0x00000002), (0x28, 0, 0, 0x00000010), (0x02, 0, 0, 0x00000004), (0x30, 0, 0, 0x0000000e),
    (0x54, 0, 0, 0x0000000f), (0x64, 0, 0, 0x00000002), (0x07, 0, 0, 0x00000008), (0x60, 0, 0, 0x00000004),
    (0x1c, 0, 0, 0x00000000), (0x02, 0, 0, 0x00000008), (0xb1, 0, 0, 0x0000000e), (0x50, 0, 0, 0x0000001a),
    (0x54, 0, 0, 0x000000f0), (0x74, 0, 0, 0x00000002), (0x07, 0, 0, 0x0000000c), (0x60, 0, 0, 0x00000008),
    (0x1d, 1, 0, 0x00000000), (0x06, 0, 0, 0x00040000), (0x06, 0, 0, 0x00000000),
)
"""The mirror socket's kernel filter, ``tcpdump -dd -y EN10MB`` of :data:`MIRROR_FILTER_EXPRESSION`
(a test compiles it again): IPv4 TCP segments that open a stream or carry bytes. The rest (a
receiver's ACK-only segments, a sixth of what the mirror carried at 8 x 12) is nothing the inspection
reads, and is dropped before it costs a wake-up, a copy and a parse."""


@dataclass
class _Stream:
    next_seq: int
    reader: FrameReader
    whole: bool
    """Read from its SYN on, no byte lost: what fails to parse is what its sender sent."""
    seeking: bool = False
    """Its next bytes may begin mid-frame (joined midway, or bytes lost): read from a frame's magic."""
    pending: dict[int, bytes] = field(default_factory=dict)
    gap_since: float | None = None
    """When the gap in front of :attr:`pending` opened (see :data:`GAP_WAIT_S`)."""
    failed: bool = False
    recent: deque[tuple[int, bytes]] = field(default_factory=deque)
    """The last :data:`RECHECK_BYTES` read, as (seq, payload): what a retransmission must repeat."""
    recent_bytes: int = 0
    behind: dict[int, bytes] = field(default_factory=dict)
    """Segments from before :attr:`recent`: nothing to check them against."""
    reopened: int | None = None
    """A SYN came for this stream after bytes were read: the new connection's first sequence
    number, taken up only when bytes arrive there (a forged SYN must not move the stream)."""


def _same(a: bytes, b: bytes) -> bool:
    """Two versions of stream bytes agree where both reach."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


class StreamAssembler:
    """TCP payloads per (src, sport, dst, dport), in sequence order, into model frames.

    ``rejections``: every stream given up or found again after lost bytes, for the log.
    ``unreadable``: the (key, why) of the whole streams given up, read from their first byte with
    none lost: their senders sent bytes that are no model frame, which no honest agent does. A
    stream joined midway or past lost bytes is never given up: what fails to parse there may be
    the mirror's doing, and it is read on from the next frame's magic. ``conflicts``: the (key, why) of
    streams that carried two different versions of the same bytes, which no honest TCP sends:
    an insertion attack, where segments the receiver drops (a bad checksum, say) show the mirror
    an honest frame while the receiver takes another (Ptacek and Newsham, 1998)."""

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self.streams: dict[tuple, _Stream] = {}
        self.rejections: list[str] = []
        self.unreadable: list[tuple[tuple, str]] = []
        self.conflicts: list[tuple[tuple, str]] = []
        self.gaps = 0
        """Times a stream went on past bytes the mirror never delivered (each costs a frame at most)."""
        self._fed: dict[str, OrderedDict[tuple, None]] = {}  # per source address, least recently fed first

    def feed(self, key: tuple, seq: int, payload: bytes, syn: bool = False, now: float = 0.0) -> list[ModelFrame]:
        """The frames that the segment at ``seq`` completes; ``now``: when it arrived."""
        self._touch(key)
        stream = self.streams.get(key)
        if syn and stream is not None and stream.recent and not stream.failed:
            stream.reopened = (seq + 1) % 2**32  # the same ports again, or a forged SYN
            return []
        if syn or stream is None or (
                seq == stream.reopened and seq != stream.next_seq and payload):
            whole = syn or stream is not None and seq == stream.reopened
            stream = _Stream((seq + 1) % 2**32 if syn else seq, FrameReader(self.max_payload), whole=whole,
                             seeking=not whole)
            self.streams[key] = stream
            if syn:
                return []
        if stream.failed or not payload:
            return []
        if seq != stream.next_seq:
            behind = (stream.next_seq - seq) % 2**32
            if behind >= 2**31:  # ahead: hold it until the gap fills
                if not stream.pending:
                    stream.gap_since = now
                if not self._hold(key, stream, seq, payload):
                    return []
                if len(stream.pending) <= MAX_OUT_OF_ORDER and now - stream.gap_since < GAP_WAIT_S:
                    return []
                self.gaps += 1
                return self._resynchronise(key, stream, stream.pending, "lost {} mirrored bytes", now)
            start = stream.recent[0][0] if stream.recent else stream.next_seq
            if 0 < (start - seq) % 2**32 < 2**31:  # from before the bytes kept
                stream.behind[seq] = payload
                if len(stream.behind) <= MAX_UNCHECKED:
                    return []
                return self._resynchronise(key, stream, stream.behind, "{} bytes behind what it read", now)
            # A retransmission: it must repeat what was read; what it carries past that is new.
            if not self._repeats(key, stream, seq, payload[:behind]) or len(payload) <= behind:
                return []
            seq, payload = stream.next_seq, payload[behind:]
        self._read(stream, seq, payload)
        data = payload
        if stream.pending:
            data = bytearray(payload)
            self._drain(key, stream, data)
            stream.gap_since = now if stream.pending else None  # what is still held waits behind a new gap
        return self._frames(key, stream, data)

    def _frames(self, key, stream: _Stream, data) -> list[ModelFrame]:
        """The frames ``data``, the stream's next bytes, completes (from a frame's magic on, if seeking)."""
        if stream.seeking:
            start = bytes(data).find(MAGIC)
            if start < 0:
                return []
            stream.seeking = False
            data = data[start:]
        try:
            return stream.reader.feed(data)
        except FrameError as error:
            if stream.whole:
                self._fail(key, stream, str(error))
            else:
                self.rejections.append(f"{key[0]}:{key[1]}: {error}; reading on from the next frame")
                stream.reader = FrameReader(self.max_payload)
                stream.seeking = True
            return []

    def _touch(self, key: tuple) -> None:
        """``key`` is its source's most recently fed stream; the least recent beyond
        :data:`MAX_STREAMS_PER_SOURCE` is forgotten (fed again, it is a stream joined midway)."""
        fed = self._fed.setdefault(key[0], OrderedDict())
        fed[key] = None
        fed.move_to_end(key)
        if len(fed) > MAX_STREAMS_PER_SOURCE:
            self.streams.pop(fed.popitem(last=False)[0], None)

    def _hold(self, key, stream: _Stream, seq: int, payload: bytes) -> bool:
        """Hold a segment that arrived ahead; False (a conflict: the first held stays) if it
        contradicts one held there."""
        held = stream.pending.setdefault(seq, payload)
        if not _same(held, payload):
            self._conflict(key, seq)
            return False
        if len(payload) > len(held):
            stream.pending[seq] = payload
        return True

    def _drain(self, key, stream: _Stream, data: bytearray) -> None:
        """Append to ``data`` the held segments now in order, checking those now behind (one
        that conflicts is dropped)."""
        while stream.pending:
            if stream.next_seq in stream.pending:
                chunk = stream.pending.pop(stream.next_seq)
                self._read(stream, stream.next_seq, chunk)
                data += chunk
                continue
            behind = [q for q in stream.pending if (stream.next_seq - q) % 2**32 < 2**31]
            if not behind:
                return
            for q in behind:
                chunk, back = stream.pending.pop(q), (stream.next_seq - q) % 2**32
                if self._repeats(key, stream, q, chunk[:back]) and len(chunk) > back:
                    self._hold(key, stream, stream.next_seq, chunk[back:])

    @staticmethod
    def _read(stream: _Stream, seq: int, payload: bytes) -> None:
        """Take ``payload`` at ``seq`` (the stream's next) as read, and remember it."""
        stream.next_seq = (seq + len(payload)) % 2**32
        stream.recent.append((seq, payload))
        stream.recent_bytes += len(payload)
        while stream.recent_bytes - len(stream.recent[0][1]) >= RECHECK_BYTES:
            stream.recent_bytes -= len(stream.recent.popleft()[1])

    def _repeats(self, key, stream: _Stream, seq: int, payload: bytes) -> bool:
        """True when ``payload`` at ``seq``, bytes already read, is what was read there (as far as
        :data:`RECHECK_BYTES` reaches back); else a conflict (what was read stays)."""
        for start, chunk in reversed(stream.recent):
            offset = (start - seq) % 2**32  # where the chunk starts in the payload
            if offset >= 2**31:
                offset -= 2**32
            if offset + len(chunk) <= 0:
                break  # the chunks run back in sequence: the rest lie further back
            if offset >= len(payload):
                continue
            lo, hi = max(offset, 0), min(offset + len(chunk), len(payload))
            if not _same(payload[lo:hi], chunk[lo - offset:hi - offset]):
                self._conflict(key, (seq + lo) % 2**32)
                return False
        return True

    def _conflict(self, key, seq: int) -> None:
        """Evidence however the stream was joined: no honest TCP sends it. The stream is read on
        (the version read first stays): an attacker gets no blind spot on a connection its
        receiver keeps, and every conflict again is evidence again."""
        why = (f"sent two different versions of its stream's bytes at sequence {seq}: "
               "what the mirror read may not be what the receiver took")
        self.rejections.append(f"{key[0]}:{key[1]}: {why}")
        self.conflicts.append((key, why))

    def _resynchronise(self, key, stream: _Stream, held: dict[int, bytes], what: str, now: float) -> list[ModelFrame]:
        """Start again from the earliest of the ``held`` segments, at its first frame magic: after
        bytes the mirror lost (segments held ahead of a gap), or when the stream's segments keep
        coming from before what it read (the mirror followed a forged SYN or forged bytes far
        ahead: no honest sender retransmits that far back)."""
        first = min(held, key=lambda q: (q - stream.next_seq) % 2**32)
        distance = min((first - stream.next_seq) % 2**32, (stream.next_seq - first) % 2**32)
        self.rejections.append(f"{key[0]}:{key[1]}: {what.format(distance)}; resynchronising at the next frame")
        held = dict(held)
        stream.pending.clear()
        stream.behind.clear()
        data, stream.next_seq = bytearray(), first
        stream.recent.clear()
        stream.recent_bytes = 0
        while stream.next_seq in held:
            chunk = held.pop(stream.next_seq)
            self._read(stream, stream.next_seq, chunk)
            data += chunk
        stream.pending.update(held)  # what lies beyond a gap still
        stream.gap_since = now if stream.pending else None
        stream.reader = FrameReader(self.max_payload)
        stream.whole, stream.seeking = False, True
        return self._frames(key, stream, bytes(data))

    def _fail(self, key, stream: _Stream, reason: str) -> None:
        stream.failed = True
        stream.pending.clear()
        stream.recent.clear()
        self.rejections.append(f"{key[0]}:{key[1]}: {reason}")
        if stream.whole:
            self.unreadable.append((key, reason))


ROUND_LEAD = 3
"""Rounds a frame may run ahead of the domain's current round: agents keep their own pace, a
round or so apart; a frame further ahead waits for nothing and moves nothing."""


@dataclass(frozen=True)
class FrameBounds:
    """What an honest agent's frame carries, known before the run from the scenario: the
    model's tensor shapes, a round of the run, at most the training set's samples."""

    shapes: tuple[tuple[int, ...], ...]
    last_round: int
    max_samples: int
    round_timeout_s: float = 20.0

    @classmethod
    def from_json(cls, text: str) -> FrameBounds:
        fields = json.loads(text)
        return cls(tuple(tuple(s) for s in fields["shapes"]), int(fields["last_round"]), int(fields["max_samples"]),
                   float(fields["round_timeout_s"]))

    def to_json(self) -> str:
        return json.dumps({"shapes": [list(s) for s in self.shapes], "last_round": self.last_round,
                           "max_samples": self.max_samples, "round_timeout_s": self.round_timeout_s})

    def violation(self, frame: ModelFrame, sender: str) -> str | None:
        """Why no honest agent at ``sender``'s address could have sent ``frame``, or None."""
        if frame.sender != sender:
            return f"names itself {frame.sender[:40]!r} from {sender}'s address"
        if not 1 <= frame.round <= self.last_round:
            return f"round {frame.round} is not a round of this run (1-{self.last_round})"
        shapes = tuple(t.shape for t in frame.tensors)
        if shapes != self.shapes:
            return f"{len(shapes)} tensors of shapes {list(shapes[:4])}, not the model's {list(self.shapes)}"
        if not 1 <= frame.samples <= self.max_samples:
            return f"claims {frame.samples} samples (the training set has {self.max_samples})"
        return None


class RoundCollector:
    """Models by round: one per sender (first copy), and which senders each receiver got.

    The domain's *current round* is the lower median of the highest rounds its live local
    senders published (live: its round rose within ``stale_s``; a banned, dead or stuck sender
    drops out), so a minority of senders can neither drag it ahead nor hold it back. A frame
    more than :data:`ROUND_LEAD` rounds ahead of it, or of a round already reported, is
    ignored. A round is *complete* once the current round has reached it and every local
    sender's model arrived, or ``wait_s`` after it was reached. Frames keep being recorded for
    the newest complete round, so a late copy still counts as received when that round serves
    as the next one's starting point.
    """

    def __init__(self, senders: list[str], wait_s: float, stale_s: float, started: float) -> None:
        self.senders = set(senders)
        self.wait_s = wait_s
        self.stale_s = stale_s
        self.models: dict[int, dict[str, tuple[np.ndarray, int]]] = {}
        self.received: dict[int, dict[str, set[str]]] = {}
        # Every sender counts from the start, at round 0: the first to publish moves nothing alone.
        self.latest: dict[str, tuple[int, float]] = {n: (0, started) for n in senders}
        self._reached: dict[int, float] = {}
        self.done_up_to = 0
        self.ignored = 0

    def current(self, now: float) -> int:
        live = sorted(r for r, rose in self.latest.values() if now - rose <= self.stale_s)
        return live[(len(live) - 1) // 2] if live else 0

    def add(self, now: float, sender: str, receiver: str | None, round_: int, vector: np.ndarray,
            samples: int) -> bool:
        """Record one decoded frame; False when its round lies outside the window. Even then it
        tells how far its sender got: had the mirror lost a majority's frames of a few rounds, their
        later frames would all lie ahead of the window, and the domain's round would never move again."""
        if sender in self.senders and round_ > self.latest.get(sender, (0, 0.0))[0]:
            self.latest[sender] = (round_, now)
        if round_ < self.done_up_to or round_ > max(self.current(now), self.done_up_to) + ROUND_LEAD:
            self.ignored += 1
            return False
        self.models.setdefault(round_, {}).setdefault(sender, (vector, samples))
        if receiver is not None:
            self.received.setdefault(round_, {}).setdefault(receiver, set()).add(sender)
        return True

    def complete(self, now: float) -> list[int]:
        ready = []
        current = self.current(now)
        for round_ in range(self.done_up_to + 1, current + 1):
            self._reached.setdefault(round_, now)
        for round_ in range(self.done_up_to + 1, current + 1):
            local = self.senders & set(self.models.get(round_, {}))
            if local != self.senders and now - self._reached[round_] < self.wait_s:
                break
            del self._reached[round_]
            self.done_up_to = round_
            if round_ in self.models:
                ready.append(round_)
        for old in [r for r in self.models if r < self.done_up_to - 2]:  # remote reports look two back
            self.models.pop(old, None)
            self.received.pop(old, None)
        return ready

    def local_models(self, round_: int) -> dict[str, np.ndarray]:
        return {n: m for n, (m, _) in self.models.get(round_, {}).items() if n in self.senders}


@dataclass(frozen=True)
class StartRule:
    """How the run's honest agents aggregate (the scenario's ``dfl.aggregator``, ``byzantine_f``
    and ``pre_aggregation``): a sender's update is its model minus what this rule made of its
    inputs of the round before, so a node that clips or trims is measured from where it really
    started. A rule nobody can replay from the inputs alone (WFAgg keeps each sender's history,
    bucketing draws each node's buckets at random: :func:`agents.aggregation.replayable`) is
    measured from the FedAvg start instead, an approximation those runs' features carry."""

    aggregator: str = "fedavg"
    f: int = 0
    pre: str = "none"

    def __post_init__(self) -> None:
        from agents.aggregation import make_aggregator

        make_aggregator(self.aggregator, self.f, self.pre)  # an unknown name or a negative f fails here, named

    def aggregate(self):
        from agents.aggregation import make_aggregator, replayable

        if replayable(self.aggregator, self.pre):
            return make_aggregator(self.aggregator, self.f, self.pre)
        return make_aggregator("fedavg")

    @classmethod
    def from_json(cls, text: str) -> StartRule:
        fields = json.loads(text)
        return cls(str(fields["aggregator"]), int(fields["f"]), str(fields["pre"]))

    def to_json(self) -> str:
        return json.dumps({"aggregator": self.aggregator, "f": self.f, "pre": self.pre})


def start_references(previous: dict[str, tuple[np.ndarray, int]], received: dict[str, set[str]],
                     nodes: list[str], aggregate) -> dict[str, np.ndarray]:
    """Where each node's next round starts: ``aggregate`` (an :data:`agents.aggregation.Aggregator`)
    of its own previous model and the previous models it received (``previous``: sender ->
    (model, declared samples)); a node that published nothing in the round before has no
    known start and is left out."""
    from agents.aggregation import Contribution

    references = {}
    for node in nodes:
        if node not in previous:
            continue
        others = [Contribution(n, *previous[n]) for n in sorted(received.get(node, set()) - {node}) if n in previous]
        references[node] = aggregate(Contribution(node, *previous[node]), others)
    return references


def round_report(collector: RoundCollector, features, round_: int, aggregate) -> dict[str, dict[str, float]]:
    """Update features of a complete round's local senders, each measured from where its rule
    ``aggregate`` started it (:func:`start_references`); a sender whose start is unknown is left out."""
    previous = collector.models.get(round_ - 1, {})
    references = start_references(previous, collector.received.get(round_ - 1, {}), sorted(collector.senders),
                                  aggregate)
    return {n: f for n, f in features.round_features(collector.local_models(round_), references).items()
            if n in references}


def remote_report(collector: RoundCollector, features, round_: int, aggregate) -> dict[str, dict[str, float]]:
    """Update features of a complete round's *remote* senders (other domains' hosts whose models
    reached a local host), each measured from the start the domain can reconstruct: its rule
    ``aggregate`` over its previous model and the previous models it was seen to receive,
    which leaves out its own domain's (they never cross this domain's mirror). Approximate, yet a
    flipper's first poisoned update points so far from its home direction that no honest one
    comes near (:data:`controllers.defense.ACCUSE_OFF_HOME`)."""
    current = collector.models.get(round_, {})
    previous = collector.models.get(round_ - 1, {})
    remote = sorted(n for n in current if n not in collector.senders)
    references = start_references(previous, collector.received.get(round_ - 1, {}), remote, aggregate)
    models = {n: current[n][0] for n in remote if n in references}
    if len(models) < 2:  # features are relative to the round's other remote senders
        return {}
    return features.round_features(models, references)


MAX_REASONS = 8
"""Violations a report carries per sender: enough to ban, never a flood of text."""
HEARTBEAT_S = 1.0


@dataclass
class InspectionCounts:
    """What the service read, and what it could not use, since it started (its heartbeat)."""

    segments: int = 0
    dropped: int = 0
    """Mirrored packets the kernel dropped because the socket's buffer was full: bytes of the
    streams that the inspection never saw."""
    gaps: int = 0
    """Streams read on past bytes that never reached the mirror (:attr:`StreamAssembler.gaps`)."""
    unparsed: int = 0
    frames: int = 0
    ignored: int = 0
    violations: int = 0


class DomainInspection:
    """One domain's inspection, from mirrored segments to sealed reports (no sockets: tested pure)."""

    def __init__(self, description: NetworkDescription, domain: int, bounds: FrameBounds, wait_s: float,
                 baseline_rounds: int, channel: ReportChannel, started: float, rule: StartRule = StartRule()) -> None:
        from controllers.features import UpdateFeatures

        local = [h.name for h in description.hosts_in(domain)]
        self.description = description
        self.local = set(local)
        self.bounds = bounds
        self.aggregate = rule.aggregate()
        self.assembler = StreamAssembler()
        self.collector = RoundCollector(local, wait_s, stale_s=bounds.round_timeout_s + 2 * wait_s, started=started)
        self.features = UpdateFeatures(baseline_rounds)
        self.remote_features = UpdateFeatures(baseline_rounds)  # its own senders' homes and sizes
        self.channel = channel
        self.counts = InspectionCounts()
        self.violations: dict[str, list[str]] = {}
        self.log: list[dict] = []

    def segment(self, now: float, data: bytes) -> None:
        """One mirrored frame off the monitor port."""
        self.counts.segments += 1
        try:
            segment = parse_tcp_segment(data)
        except PacketError as error:
            self.counts.unparsed += 1
            if self.counts.unparsed <= MAX_REASONS:
                self.log.append(event(Event.SEGMENT_UNPARSED, now, bytes=len(data), why=str(error)))
            return
        if segment is None:
            return
        source, target = self.description.host_at(segment.src), self.description.host_at(segment.dst)
        sender, receiver = (source.name if source else None), (target.name if target else None)
        if sender is None or not (sender in self.local or receiver in self.local):
            return
        key = (segment.src, segment.sport, segment.dst, segment.dport)
        for frame in self.assembler.feed(key, segment.seq, segment.payload, segment.syn, now):
            self.frame(now, sender, receiver, frame)
        while self.assembler.unreadable:
            _, why = self.assembler.unreadable.pop(0)
            self.unreadable(now, sender, why)
        while self.assembler.conflicts:
            _, why = self.assembler.conflicts.pop(0)
            self._violation(now, sender, why)

    def frame(self, now: float, sender: str, receiver: str | None, frame: ModelFrame) -> None:
        self.counts.frames += 1
        why = self.bounds.violation(frame, sender)
        if why is not None:
            self._violation(now, sender, why)
            return
        vector = np.concatenate([t.ravel() for t in frame.tensors]).astype(np.float64)
        if not self.collector.add(now, sender, receiver, frame.round, vector, frame.samples):
            self.counts.ignored += 1

    def unreadable(self, now: float, sender: str, why: str) -> None:
        """A stream of ``sender``'s, read whole, that is no model frames (NaN or Inf weights,
        random bytes, a frame beyond any model's size): no honest agent sends one."""
        self._violation(now, sender, f"sent bytes that are no model frame: {why}")

    def _violation(self, now: float, sender: str, why: str) -> None:
        self.counts.violations += 1
        self.log.append(event(Event.FRAME_VIOLATION, now, sender=sender, why=why))
        reasons = self.violations.setdefault(sender, []) if sender in self.local else []
        if len(reasons) < MAX_REASONS:
            reasons.append(why)

    def reports(self, now: float) -> list[bytes]:
        """Sealed reports of the rounds that completed, each carrying the violations so far, and
        of the violations seen since if no round completed (numbered by the last one that did)."""
        sealed = []
        for round_ in self.collector.complete(now):
            # Remote senders' frames may cross the border after the local ones completed the
            # round: they are judged a round later, when every late frame is in.
            features = round_report(self.collector, self.features, round_, self.aggregate)
            received = self.collector.received.get(round_ - 1, {})
            report = InspectionReport(round_, features, self.violations,
                                      remote_report(self.collector, self.remote_features, round_ - 1, self.aggregate),
                                      {n: sorted(received.get(n, ())) for n in features})
            self.violations = {}
            sealed.append(self.channel.seal(report))
            self.log.append(event(Event.UPDATE_FEATURES, now, round=round_, features=report.features,
                             violations=report.violations, remote=report.remote, inputs=report.inputs))
        if self.violations:  # evidence waits for no round: a round short of a sender may wait long
            report = InspectionReport(self.collector.done_up_to, {}, self.violations)
            self.violations = {}
            sealed.append(self.channel.seal(report))
            self.log.append(event(Event.UPDATE_FEATURES, now, round=report.round, features={},
                                  violations=report.violations, remote={}, inputs={}))
        while self.assembler.rejections:
            self.log.append(event(Event.STREAM_REJECTED, now, why=self.assembler.rejections.pop(0)))
        return sealed


MAX_MIRRORED_FRAME = 14 + 65535
"""The largest IPv4 datagram behind its Ethernet header: what the inspection port's GRO
(:func:`topologies.builder.coalescing_commands`) coalesces a stream's segments into, at most."""
BURST = 256
"""Mirrored frames read per wake-up: a round's models arrive as one burst."""
BOOKKEEPING_S = 0.05
"""The round bookkeeping (completion, reports, the log) runs at most this often, not after every
wake-up: on a loaded machine the mirror trickles in a packet or two a wake-up, and at 8 x 12 the
bookkeeping after each cost more than the packets (``benchmarks/inspection_speed.py``: 6 us a
segment parsed; the service's whole CPU came to about 40 us a segment)."""


GATHER_S = 0.025
"""After a burst's first frame the reader sleeps this long before it drains the socket: the
userspace datapath forwards a round's models a segment or two at a time, so a reader that drained
at once woke up for about every few, and the wake-ups cost more than the segments. 8 x 12
inspection CPU (one run each): 8.5 s at 5 ms, 5.4 s at 25 ms, 5.6 s at 50 ms, 4.2 s at 100 ms; a
report waits as long, and paper.toml's rounds last 60 ms: at 50 ms the bans fell in round 6
rather than 5 more often (F1 0.968 in three runs of five)."""


def read_burst(raw: socket.socket, wait_s: float, gather_s: float = GATHER_S,
               sleep: Callable[[float], None] = time.sleep) -> list[bytes]:
    """Wait up to ``wait_s`` for a frame on the non-blocking ``raw``, let the rest of its burst
    arrive for ``gather_s``, then take what is queued, up to :data:`BURST`."""
    if not select.select([raw], [], [], wait_s)[0]:
        return []
    sleep(gather_s)
    burst: list[bytes] = []
    while len(burst) < BURST:
        try:
            burst.append(raw.recv(MAX_MIRRORED_FRAME))
        except BlockingIOError:
            break
    return burst


def attach_mirror_filter(raw: socket.socket) -> None:
    """Attach :data:`MIRROR_FILTER` to the packet socket ``raw`` (the kernel copies the program)."""
    program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in MIRROR_FILTER))
    raw.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                   struct.pack("HL", len(MIRROR_FILTER), ctypes.addressof(program)))


def socket_drops(raw: socket.socket) -> int:
    """Packets the kernel dropped for ``raw``'s full buffer since the last call (reading resets it)."""
    _, drops = struct.unpack("II", raw.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    return drops


def run(description: NetworkDescription, domain: int, out_dir: Path, inspection: DomainInspection) -> int:
    from common.jsonl import JsonLinesWriter

    view = description.domain(domain)
    controller = view.inspection.address
    log = JsonLinesWriter(out_dir / f"inspector-d{domain}.jsonl")
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    raw.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
    attach_mirror_filter(raw)
    raw.bind((view.monitor.interface, 0))
    raw.setblocking(False)
    report = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    running = True

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def heartbeat(now: float) -> None:
        inspection.counts.dropped += socket_drops(raw)
        inspection.counts.gaps = inspection.assembler.gaps
        log.write(event(Event.HEARTBEAT, now, round=inspection.collector.current(now), **vars(inspection.counts)))

    log.write(event(Event.INSPECTOR_STARTED, time.time(), domain=domain))
    beat = booked = 0.0
    gather = GATHER_S
    try:
        while running:
            burst = read_burst(raw, 0.2, gather)
            now = time.time()
            for data in burst:
                inspection.segment(now, data)
            gather = 0.0 if len(burst) == BURST else GATHER_S  # a backlog is drained without a pause
            if now - booked < BOOKKEEPING_S:
                continue
            booked = now
            for sealed in inspection.reports(now):
                report.sendto(sealed, controller)
            for record in inspection.log:
                log.write(record)
            inspection.log.clear()
            if now - beat >= HEARTBEAT_S:
                beat = now
                heartbeat(now)
    finally:
        heartbeat(time.time())  # the run's summary reads the last one
        raw.close()
        report.close()
        log.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="controllers.inspector", description=__doc__.splitlines()[0])
    parser.add_argument("--network", type=Path, required=True)
    parser.add_argument("--domain", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--keys", type=Path, required=True, help="the inspector's key file (common.keys)")
    parser.add_argument("--bounds", required=True, help="FrameBounds as JSON: what an honest frame carries")
    parser.add_argument("--rule", default=StartRule().to_json(),
                        help="StartRule as JSON: how honest agents aggregate (default FedAvg)")
    parser.add_argument("--wait", type=float, default=1.5, help="seconds a round waits for late senders")
    parser.add_argument("--warmup-rounds", type=int, default=4,
                        help="DFL rounds of normal behaviour (round 1 has no measurable update)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from common.keys import controller_party, read_keys
    from controllers.features import measured_warmup_rounds

    try:
        rule = StartRule.from_json(args.rule)
    except (ValueError, KeyError, TypeError) as error:
        parser.error(f"--rule: {error}")
    try:
        description = load_description(args.network)
    except DescriptionError as error:
        parser.error(str(error))
    try:
        key = read_keys(args.keys)[controller_party(args.domain)]
    except (ValueError, KeyError) as error:
        parser.error(f"--keys: {error}")
    inspection = DomainInspection(description, args.domain, FrameBounds.from_json(args.bounds), args.wait,
                                  measured_warmup_rounds(args.warmup_rounds), ReportChannel(key), time.time(), rule)
    return run(description, args.domain, args.out, inspection)


if __name__ == "__main__":
    sys.exit(main())
