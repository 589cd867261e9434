"""The parser of everything a host sends: the header fields decisions need, or a named error."""

import time

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from controllers.packets import PacketError, arp_reply_frame, parse_packet_in, parse_tcp_segment

MAC, OTHER = "00:00:00:00:01:01", "00:00:00:00:02:01"


def frame(*layers):
    packet = Ether(src=MAC, dst=OTHER)
    for layer in layers:
        packet = packet / layer
    return bytes(packet)


def test_a_packet_in_yields_its_addresses_protocol_and_ports():
    info = parse_packet_in(frame(IP(src="10.1.0.1", dst="10.2.0.1"), UDP(sport=5, dport=9))[:128])
    assert (info.eth_src, info.eth_dst, info.ipv4_src, info.ipv4_dst, info.ip_proto, info.tp_src, info.tp_dst) == (
        MAC, OTHER, "10.1.0.1", "10.2.0.1", 17, 5, 9)
    icmp = parse_packet_in(frame(IP(src="10.1.0.1", dst="10.2.0.1"), ICMP(type=0)))
    assert (icmp.ip_proto, icmp.tp_src, icmp.tp_dst) == (1, None, None)
    arp = parse_packet_in(frame(ARP(op=1, hwsrc=MAC, psrc="10.1.0.1", pdst="10.1.0.2")))
    assert (arp.arp_op, arp.arp_spa, arp.arp_tpa) == (1, "10.1.0.1", "10.1.0.2")


@pytest.mark.parametrize("payload", [
    # The packets that hung or crashed os-ken's full parser (issue 15), each read in bounded time.
    frame(IP(src="10.1.0.1", dst="10.1.0.2"), TCP(dport=7000, flags="S", options=[(99, b"")])),
    frame(IP(src="10.1.0.1", dst="10.1.0.2"), UDP(dport=4789), Raw(b"\x01" * 8)),
    frame(IP(src="10.1.0.1", dst="10.1.0.2"), TCP(dport=179), Raw(b"\xff" * 40)),
    frame(IP(src="10.1.0.1", dst="10.1.0.2"), TCP(dport=6653), Raw(b"\x04\x00\x00\x08" * 10)),
])
def test_crafted_payloads_behind_the_ports_are_never_parsed(payload):
    began = time.process_time()
    info = parse_packet_in(payload[:128])
    assert info.ipv4_src == "10.1.0.1" and info.tp_dst in (7000, 4789, 179, 6653)
    assert time.process_time() - began < 0.05


@pytest.mark.parametrize("data, why", [
    (b"\x00" * 13, "shorter than an Ethernet header"),
    (frame(Dot1Q(vlan=100), IP(), UDP()), "802.1Q-tagged"),
    (frame(Dot1Q(vlan=0), IP(), UDP()), "802.1Q-tagged"),
    (frame(IP())[:20], "shorter than an IPv4 header"),
    (frame(IP(ihl=2)), "not an IPv4 header"),
    (frame(IP(proto=6))[:36], "cut off before its ports"),
    (frame(ARP(hwtype=6, hwlen=6, plen=4)), "not IPv4 over Ethernet"),
])
def test_a_malformed_packet_in_is_a_named_error(data, why):
    with pytest.raises(PacketError, match=why):
        parse_packet_in(data)


def test_a_mirrored_segment_ends_where_ipv4_says_not_at_the_ethernet_padding():
    data = frame(IP(src="10.1.0.1", dst="10.1.0.2"), TCP(sport=4, dport=7000, seq=9, flags="PA"), Raw(b"ab"))
    segment = parse_tcp_segment(data + bytes(10))
    assert (segment.src, segment.sport, segment.dst, segment.dport, segment.seq, segment.syn, segment.payload) == (
        "10.1.0.1", 4, "10.1.0.2", 7000, 9, False, b"ab")
    assert parse_tcp_segment(frame(IP(), UDP())) is None
    with pytest.raises(PacketError, match="do not fit"):
        parse_tcp_segment(data[:-4])
    with pytest.raises(PacketError, match="TCP header length"):
        parse_tcp_segment(frame(IP(), TCP(dataofs=15)))


def test_the_proxy_arp_answer_is_a_well_formed_reply():
    answer = Ether(arp_reply_frame("00:00:00:00:03:02", "10.3.0.2", MAC, "10.1.0.1"))
    assert (answer.src, answer.dst, answer[ARP].op, answer[ARP].hwsrc, answer[ARP].psrc, answer[ARP].hwdst,
            answer[ARP].pdst) == ("00:00:00:00:03:02", MAC, 2, "00:00:00:00:03:02", "10.3.0.2", MAC, "10.1.0.1")
