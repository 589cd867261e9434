"""A domain's inspection service: the agents' model frames, read off the edge switch's mirror.

The controller's admission rule for (host, agents' port) also outputs every such packet to a
monitor port (:mod:`controllers.core`), a veth whose other end this process reads in the root
namespace. It reassembles each TCP stream, decodes frames with the agents' own wire format
(:mod:`agents.wire`), names the sender by the source address admission vouched for (not by
what the frame claims), and once a round's frames from the domain's senders are in, sends
their update features (:class:`controllers.features.UpdateFeatures`) to the controller::

    python -m controllers.inspector --network network.json --domain 1 --out RUN_DIR

Pure parts (:class:`StreamAssembler`, :class:`RoundCollector`) are unit-tested without root.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agents.wire import DEFAULT_MAX_PAYLOAD, MAGIC, FrameError, FrameReader, ModelFrame

LOG = logging.getLogger("sdfl.inspector")
ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux; Python does not name it
MAX_OUT_OF_ORDER = 64
"""Segments held per stream while a gap is open; beyond that the lost bytes are skipped and
the stream resynchronises at the next frame's magic."""
RECEIVE_BUFFER = 32 * 1024 * 1024
"""A round's models arrive as one burst; a small socket buffer would drop mirrored packets."""


@dataclass
class _Stream:
    next_seq: int | None
    reader: FrameReader
    pending: dict[int, bytes] = field(default_factory=dict)
    failed: bool = False


class StreamAssembler:
    """TCP payloads per (src, sport, dst, dport), in sequence order, into model frames."""

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self.streams: dict[tuple, _Stream] = {}
        self.rejections: list[str] = []

    def feed(self, key: tuple, seq: int, payload: bytes, syn: bool = False) -> list[ModelFrame]:
        stream = self.streams.get(key)
        if syn or stream is None or stream.next_seq is None:
            stream = _Stream(seq + 1 if syn else seq, FrameReader(self.max_payload))
            self.streams[key] = stream
            if syn:
                return []
        if stream.failed or not payload:
            return []
        if seq != stream.next_seq:
            if (seq - stream.next_seq) % 2**32 >= 2**31:
                return []  # behind: a retransmission of bytes already read
            stream.pending[seq] = payload  # ahead: hold it until the gap fills
            if len(stream.pending) <= MAX_OUT_OF_ORDER:
                return []
            return self._resynchronise(key, stream)
        data = bytearray(payload)
        stream.next_seq = (seq + len(payload)) % 2**32
        while stream.next_seq in stream.pending:
            chunk = stream.pending.pop(stream.next_seq)
            data += chunk
            stream.next_seq = (stream.next_seq + len(chunk)) % 2**32
        try:
            return stream.reader.feed(bytes(data))
        except FrameError as error:
            self._fail(key, stream, str(error))
            return []

    def _resynchronise(self, key, stream: _Stream) -> list[ModelFrame]:
        """Give the lost bytes up: restart at the first frame magic after the gap."""
        first = min(stream.pending, key=lambda q: (q - stream.next_seq) % 2**32)
        self.rejections.append(f"{key[0]}:{key[1]}: lost {(first - stream.next_seq) % 2**32} mirrored bytes; "
                               "resynchronising at the next frame")
        data, seq = bytearray(), first
        while seq in stream.pending:
            chunk = stream.pending.pop(seq)
            data += chunk
            seq = (seq + len(chunk)) % 2**32
        stream.next_seq = seq
        stream.reader = FrameReader(self.max_payload)
        start = bytes(data).find(MAGIC)
        if start < 0:
            stream.next_seq = None  # nothing to hold on to: wait for the next segment
            return []
        try:
            return stream.reader.feed(bytes(data[start:]))
        except FrameError as error:
            self._fail(key, stream, str(error))
            return []

    def _fail(self, key, stream: _Stream, reason: str) -> None:
        stream.failed = True
        stream.pending.clear()
        self.rejections.append(f"{key[0]}:{key[1]}: {reason}")


class RoundCollector:
    """Models by round: one per sender (first copy), and which senders each receiver got.

    A round is *complete* when every local sender's model arrived, or ``wait_s`` after its
    first one (a banned or dead sender holds no one up). Frames keep being recorded for the
    round before the newest complete one, so a late copy still counts as received when that
    round serves as the next one's starting point.
    """

    def __init__(self, senders: list[str], wait_s: float) -> None:
        self.senders = set(senders)
        self.wait_s = wait_s
        self.models: dict[int, dict[str, tuple[np.ndarray, int]]] = {}
        self.received: dict[int, dict[str, set[str]]] = {}
        self._first: dict[int, float] = {}
        self.done_up_to = 0

    def add(self, now: float, sender: str, receiver: str, round_: int, vector: np.ndarray, samples: int) -> None:
        if round_ < self.done_up_to:
            return
        self.models.setdefault(round_, {}).setdefault(sender, (vector, samples))
        self.received.setdefault(round_, {}).setdefault(receiver, set()).add(sender)
        if sender in self.senders and round_ > self.done_up_to:
            self._first.setdefault(round_, now)

    def complete(self, now: float) -> list[int]:
        ready = []
        for round_ in sorted(self._first):
            local = self.senders & set(self.models.get(round_, {}))
            if local == self.senders or now - self._first[round_] >= self.wait_s:
                ready.append(round_)
                del self._first[round_]
                self.done_up_to = max(self.done_up_to, round_)
        for old in [r for r in self.models if r < self.done_up_to - 1]:
            self.models.pop(old, None)
            self.received.pop(old, None)
        return ready

    def local_models(self, round_: int) -> dict[str, np.ndarray]:
        return {n: m for n, (m, _) in self.models.get(round_, {}).items() if n in self.senders}


def round_report(collector: RoundCollector, features, round_: int) -> dict[str, dict[str, float]]:
    """Update features of a complete round's local senders, each measured from where it started
    (:func:`controllers.features.fedavg_references`) and against the consensus step of every
    model the domain saw; a sender whose start is unknown is left out."""
    from controllers.features import consensus_step, fedavg_references

    previous = collector.models.get(round_ - 1, {})
    references = fedavg_references(previous, collector.received.get(round_ - 1, {}), sorted(collector.senders))
    step = consensus_step({n: m for n, (m, _) in collector.models.get(round_, {}).items()},
                          {n: m for n, (m, _) in previous.items()})
    return {n: f for n, f in features.round_features(collector.local_models(round_), references, step).items()
            if n in references}


def parse_tcp(frame: bytes):
    """``(src, sport, dst, dport, seq, syn, payload)`` of an Ethernet/IPv4/TCP frame, else None."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    packet = Ether(frame)
    if IP not in packet or TCP not in packet:
        return None
    ip, tcp = packet[IP], packet[TCP]
    payload = bytes(tcp.payload)
    if ip.len is not None:  # drop Ethernet padding beyond the IP datagram
        payload = payload[:max(0, ip.len - ip.ihl * 4 - tcp.dataofs * 4)]
    return ip.src, tcp.sport, ip.dst, tcp.dport, tcp.seq, bool(tcp.flags.S), payload


def run(description: dict, domain: int, out_dir: Path, wait_s: float, baseline_rounds: int) -> int:
    from controllers.features import UpdateFeatures
    from sdfl.jsonl import JsonLinesWriter

    entry = next(d for d in description["domains"] if d["id"] == domain)
    local = [h for h in description["hosts"] if h["domain"] == domain]
    name_of_ip = {h["ip"]: h["name"] for h in description["hosts"]}
    local_names = {h["name"] for h in local}
    controller = (entry["inspection"]["host"], entry["inspection"]["port"])
    assembler = StreamAssembler()
    collector = RoundCollector([h["name"] for h in local], wait_s)
    features = UpdateFeatures(baseline_rounds)
    log = JsonLinesWriter(out_dir / f"inspector-d{domain}.jsonl")
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    raw.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
    raw.bind((entry["monitor"]["interface"], 0))
    raw.settimeout(0.2)
    report = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    running = True

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.write({"type": "inspector_started", "time": time.time(), "domain": domain})
    try:
        while running:
            try:
                parsed = parse_tcp(raw.recv(65535))
            except TimeoutError:
                parsed = None
            now = time.time()
            if parsed is not None:
                src, sport, dst, dport, seq, syn, payload = parsed
                sender, receiver = name_of_ip.get(src), name_of_ip.get(dst)
                relevant = sender is not None and (sender in local_names or receiver in local_names)
                for frame in assembler.feed((src, sport, dst, dport), seq, payload, syn) if relevant else ():
                    if frame.sender != sender:
                        log.write({"type": "sender_mismatch", "time": now, "address_of": sender,
                                   "claimed": frame.sender, "round": frame.round})
                    vector = np.concatenate([t.ravel() for t in frame.tensors]).astype(np.float64)
                    collector.add(now, sender, receiver, frame.round, vector, frame.samples)
            for round_ in collector.complete(now):
                message = {"round": round_, "features": round_report(collector, features, round_)}
                report.sendto(json.dumps(message).encode(), controller)
                log.write({"type": "update_features", "time": now, **message})
            while assembler.rejections:
                log.write({"type": "stream_rejected", "time": now, "why": assembler.rejections.pop(0)})
    finally:
        raw.close()
        report.close()
        log.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="controllers.inspector", description=__doc__.splitlines()[0])
    parser.add_argument("--network", type=Path, required=True)
    parser.add_argument("--domain", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--wait", type=float, default=1.5, help="seconds a round waits for late senders")
    parser.add_argument("--warmup-rounds", type=int, default=4,
                        help="DFL rounds of normal behaviour (round 1 has no measurable update)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from controllers.features import measured_warmup_rounds

    return run(json.loads(args.network.read_text()), args.domain, args.out, args.wait,
               measured_warmup_rounds(args.warmup_rounds))


if __name__ == "__main__":
    sys.exit(main())
