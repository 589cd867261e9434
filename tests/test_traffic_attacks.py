"""Floods and scans: packets built right (without sending any), paced right (on a fake clock)."""

import ipaddress
import threading

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from attacks.plan import KINDS
from attacks.traffic import DISCARD_PORT, TRAFFIC_KINDS, TrafficSpec, build_packets, send_paced
from common.description import HostSpec

ATTACKER = HostSpec("d1h3", 1, 3, "10.1.0.3", 8, "02:00:00:00:01:03", "d1s1", 3)
VICTIM = HostSpec("d2h4", 2, 4, "10.2.0.4", 8, "02:00:00:00:02:04", "d2s1", 4)


def spec(kind, **params):
    """The kind's defaults, a modest rate, the agents' port and 600-byte payloads where it has them."""
    own = {name: field.default for name, field in KINDS[kind].fields.items()}
    own.update({k: v for k, v in {"dst_port": 7000, "payload_bytes": 600}.items() if k in own})
    return TrafficSpec.from_attack(kind, {**own, "rate_pps": 100.0, **params}, ATTACKER, VICTIM, seed=3)


@pytest.mark.parametrize("kind", [k.name for k in TRAFFIC_KINDS
                                  if not k.connects and k.name not in ("arp-flood", "crafted")])
def test_packets_are_addressed_from_the_attacker_to_the_victim_and_reproducible(kind):
    packets = build_packets(spec(kind))
    assert packets and [bytes(p) for p in packets] == [bytes(p) for p in build_packets(spec(kind))]
    for packet in packets:
        parsed = Ether(bytes(packet))  # what goes on the wire parses back
        assert (parsed[Ether].src, parsed[Ether].dst) == (ATTACKER.mac, VICTIM.mac)
        assert (parsed[IP].src, parsed[IP].dst) == (ATTACKER.ip, VICTIM.ip)


def test_syn_flood_is_many_half_open_connections_to_the_agents_port():
    packets = build_packets(spec("syn-flood"))
    assert all(p[TCP].flags == "S" and p[TCP].dport == 7000 for p in packets)
    assert len({p[TCP].sport for p in packets}) > 200


def test_udp_flood_is_one_fat_flow_and_icmp_flood_is_echo_requests():
    [udp] = build_packets(spec("udp-flood"))
    assert udp[UDP].dport == DISCARD_PORT and len(udp[UDP].payload) == 600
    assert len(bytes(udp)) == 14 + 20 + 8 + 600
    icmp = build_packets(spec("icmp-flood"))
    assert all(p[ICMP].type == 8 and len(p[ICMP].payload) == 600 for p in icmp)
    assert [p[ICMP].seq for p in icmp[:3]] == [0, 1, 2]


def test_port_scan_probes_each_port_of_its_range_once_per_sweep():
    packets = build_packets(spec("port-scan", first_port=20, last_port=90))
    assert [p[TCP].dport for p in packets] == list(range(20, 91))
    assert all(p[TCP].flags == "S" for p in packets)


def test_spoofed_floods_draw_sources_from_10_slash_8_never_the_attackers_own():
    packets = build_packets(spec("syn-flood", spoof=True))
    sources = {p[IP].src for p in packets}
    assert len(sources) > 200 and ATTACKER.ip not in sources
    assert all(ipaddress.ip_address(s) in ipaddress.ip_network("10.0.0.0/8") for s in sources)
    assert {p[Ether].src for p in packets} == {ATTACKER.mac}  # its own port, its own MAC


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown traffic attack 'smurf'"):
        build_packets(TrafficSpec("smurf", "a", "10.0.0.1", "b", "10.0.0.2", 1.0))


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += max(seconds, 1e-4)


def test_pacing_keeps_the_rate_and_stops_at_the_duration():
    clock, sent = FakeClock(), []

    def send(frame):
        sent.append((clock.now, frame))
        clock.now += 1e-5  # sending costs a little time

    report = send_paced(send, [b"a", b"bb"], rate_pps=500, duration_s=4.0, stop=threading.Event(),
                        clock=clock, sleep=clock.sleep)
    assert 1990 <= report.packets <= 2010 and report.bytes == sum(len(f) for _, f in sent)
    assert [f for _, f in sent[:4]] == [b"a", b"bb", b"a", b"bb"]
    per_second = [sum(1 for t, _ in sent if s <= t < s + 1) for s in range(4)]
    assert all(490 <= n <= 510 for n in per_second)


def test_pacing_stops_when_told():
    clock, stop = FakeClock(), threading.Event()

    def send(frame):
        clock.now += 1e-3
        if clock.now > 0.5:
            stop.set()

    report = send_paced(send, [b"x"], rate_pps=1000, duration_s=60, stop=stop, clock=clock, sleep=clock.sleep)
    assert report.packets < 600


def test_an_echo_reply_flood_is_replies_no_one_asked_for():
    packets = build_packets(spec("icmp-flood", icmp_type=0))
    assert {p[ICMP].type for p in packets} == {0}


def test_an_arp_flood_asks_in_the_senders_own_name_for_the_whole_subnet():
    from scapy.layers.l2 import ARP

    packets = build_packets(spec("arp-flood"))
    assert {(p[ARP].op, p[ARP].hwsrc, p[ARP].psrc) for p in packets} == {(1, ATTACKER.mac, ATTACKER.ip)}
    assert len({p[ARP].pdst for p in packets}) == 254


def test_crafted_packets_are_the_ones_that_once_broke_the_defense():
    from scapy.layers.l2 import Dot1Q

    from agents.wire import FrameReader
    from attacks.traffic import CRAFTED

    shapes = ((4, 3), (4,))
    packets = {name: build_packets(TrafficSpec.from_attack(
        "crafted", {"rate_pps": 5.0, "packets": [name], "dst_port": 7000}, ATTACKER, VICTIM, 0, shapes))
        for name in CRAFTED}
    syn = bytes(packets["tcp-zero-length-option"][0])
    assert syn[-4:-2] == b"\x63\x00"  # option 99 with length 0
    assert all(Ether(bytes(p)).haslayer(Dot1Q) for p in packets["vlan-100"] + packets["vlan-0"])
    for name, round_, tensors in (("empty-model-frame", 1, 0), ("far-round-model-frame", 4_000_000_000, 2)):
        segments = [Ether(bytes(p)) for p in packets[name]]
        first = [s for s in segments if s[TCP].sport == segments[0][TCP].sport]
        [frame] = FrameReader().feed(b"".join(bytes(s[TCP].payload) for s in first))
        assert (frame.sender, frame.round, len(frame.tensors)) == ("d1h3", round_, tensors)
        assert len({s[TCP].sport for s in segments}) > 1  # more than one frame: enough evidence to ban
        assert {s[TCP].dport for s in segments} == {7000}  # the agents' port, where the inspector reads


def test_crafted_attempts_each_go_out_once_before_any_is_repeated():
    """A ban after the first violations must not keep a later attempt off the wire."""
    params = {"rate_pps": 5.0, "packets": ["empty-model-frame", "far-round-model-frame"], "dst_port": 7000}
    spec = TrafficSpec.from_attack("crafted", params, ATTACKER, VICTIM, 0, ((40, 30), (30,)))
    connections = []
    for packet in build_packets(spec):
        parsed = Ether(bytes(packet))
        key = (parsed[IP].dst, parsed[TCP].sport)
        if key not in connections:
            connections.append(key)
    empty_to, copies = "10.2.0.250", range(41000, 41004)
    assert connections == [(to, port) for port in copies for to in (empty_to, VICTIM.ip)]
