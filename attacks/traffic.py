"""Traffic anomalies crafted with scapy and sent at a paced rate from inside an attacker host.

Packets are built once by :func:`build_packets` (pure, testable without sending), turned into
bytes, and replayed through scapy's layer-2 socket at ``rate_pps``, so the sender's cost is a
system call per packet, not a scapy build. The process runs in the attacker's Mininet host::

    python -m attacks.traffic --iface d1h1-eth0 --spec SPEC_JSON --duration 60 --report FILE

and stops at ``--duration`` or on SIGTERM (the runner ends it on schedule), appending one JSON
line with what it sent to ``FILE``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TRAFFIC_KINDS = ("syn-flood", "udp-flood", "icmp-flood", "port-scan")
DISCARD_PORT = 9
MAX_DISTINCT_PACKETS = 4096
"""Packets built up front; a flood cycles through them (a scan covers its ports in order)."""
SPOOF_NETWORK = (10 << 24, 1 << 24)
"""Spoofed sources are drawn from 10.0.0.0/8, addresses that look like the testbed's own."""


@dataclass(frozen=True)
class TrafficSpec:
    """Everything one attacker process needs: who sends what to whom, how fast."""

    kind: str
    src_mac: str
    src_ip: str
    dst_mac: str
    dst_ip: str
    rate_pps: float
    seed: int = 0
    spoof: bool = False
    dst_port: int = 0
    payload_bytes: int = 0
    first_port: int = 1
    last_port: int = 1024

    @classmethod
    def from_attack(cls, kind: str, params: dict, attacker: dict, victim: dict, seed: int) -> TrafficSpec:
        """A spec from a resolved attack's params and the two hosts' description entries."""
        known = {k: params[k] for k in ("spoof", "dst_port", "payload_bytes", "first_port", "last_port")
                 if k in params}
        return cls(kind, attacker["mac"], attacker["ip"], victim["mac"], victim["ip"], params["rate_pps"],
                   seed, **known)


def _random_ip(rng: np.random.Generator) -> str:
    value = SPOOF_NETWORK[0] + int(rng.integers(1, SPOOF_NETWORK[1] - 1))
    return ".".join(str((value >> shift) & 0xFF) for shift in (24, 16, 8, 0))


def build_packets(spec: TrafficSpec, count: int | None = None) -> list:
    """The scapy packets the attack cycles through (deterministic under ``spec.seed``).

    A SYN flood varies source port and sequence number (every SYN a new half-open connection);
    a UDP flood is one fat flow to the discard port; an ICMP flood is echo requests with rising
    sequence numbers; a scan sends one SYN per port. With ``spoof``, each packet carries a random
    source address from 10.0.0.0/8 (the attacker's MAC stays: it is its own switch port).
    """
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    if spec.kind not in TRAFFIC_KINDS:
        raise ValueError(f"unknown traffic attack {spec.kind!r}; known: {', '.join(TRAFFIC_KINDS)}")
    rng = np.random.default_rng([spec.seed, 0x7AFF1C])
    if spec.kind == "port-scan":
        ports = list(range(spec.first_port, spec.last_port + 1))[:MAX_DISTINCT_PACKETS]
        count = len(ports) if count is None else count
    else:
        count = (1 if spec.kind == "udp-flood" and not spec.spoof else 256) if count is None else count
    payload = Raw(bytes(rng.integers(0, 256, spec.payload_bytes, dtype=np.uint8))) if spec.payload_bytes else None
    udp_source = int(rng.integers(1024, 65536))
    packets = []
    for i in range(count):
        source = _random_ip(rng) if spec.spoof else spec.src_ip
        ip = Ether(src=spec.src_mac, dst=spec.dst_mac) / IP(src=source, dst=spec.dst_ip, id=i & 0xFFFF)
        if spec.kind == "syn-flood":
            packet = ip / TCP(sport=int(rng.integers(1024, 65536)), dport=spec.dst_port, flags="S",
                              seq=int(rng.integers(0, 2**32)))
        elif spec.kind == "udp-flood":
            packet = ip / UDP(sport=udp_source, dport=DISCARD_PORT)
        elif spec.kind == "icmp-flood":
            packet = ip / ICMP(type=8, id=udp_source, seq=i & 0xFFFF)
        else:
            packet = ip / TCP(sport=udp_source, dport=ports[i % len(ports)], flags="S",
                              seq=int(rng.integers(0, 2**32)))
        if payload is not None and spec.kind in ("udp-flood", "icmp-flood"):
            packet = packet / payload
        packets.append(packet)
    return packets


@dataclass
class SendReport:
    packets: int = 0
    bytes: int = 0
    started: float = 0.0
    stopped: float = 0.0


def send_paced(send: Callable[[bytes], object], frames: list[bytes], rate_pps: float, duration_s: float,
               stop: threading.Event, clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> SendReport:
    """Send ``frames`` in a cycle at ``rate_pps`` until ``duration_s`` passed or ``stop`` is set.

    Pacing is by schedule, not by sleeping a fixed gap: after a stall the sender catches up at
    most one burst (``rate/100`` packets), so the long-run rate is the asked one.
    """
    report = SendReport(started=time.time())
    began = clock()
    burst = max(1, int(rate_pps / 100))
    index = 0
    while not stop.is_set():
        elapsed = clock() - began
        if elapsed >= duration_s:
            break
        due = min(int(elapsed * rate_pps) + 1 - report.packets, burst)
        if due <= 0:
            sleep(min(0.01, (report.packets - elapsed * rate_pps) / rate_pps))
            continue
        for _ in range(due):
            frame = frames[index % len(frames)]
            send(frame)
            index += 1
            report.packets += 1
            report.bytes += len(frame)
    report.stopped = time.time()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attacks.traffic", description=__doc__.splitlines()[0])
    parser.add_argument("--iface", required=True, help="the attacker host's interface")
    parser.add_argument("--spec", required=True, help="TrafficSpec as JSON")
    parser.add_argument("--duration", type=float, required=True, help="upper bound on seconds of sending")
    parser.add_argument("--report", type=Path, required=True, help="JSON-lines file to append the totals to")
    args = parser.parse_args(argv)
    try:
        spec = TrafficSpec(**json.loads(args.spec))
    except (TypeError, ValueError) as error:
        parser.error(f"--spec: {error}")
    from scapy.config import conf

    frames = [bytes(p) for p in build_packets(spec)]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sock = conf.L2socket(iface=args.iface)
    try:
        report = send_paced(sock.send, frames, spec.rate_pps, args.duration, stop)
    finally:
        sock.close()
    from sdfl.jsonl import JsonLinesWriter

    with JsonLinesWriter(args.report) as out:
        out.write({"type": "traffic_sent", "kind": spec.kind, "src_ip": spec.src_ip, "dst_ip": spec.dst_ip,
                   "rate_pps": spec.rate_pps, **vars(report)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
