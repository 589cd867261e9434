"""The only parser of bytes a host sent: the headers the domain's decisions need, and no more.

Packet-ins (:func:`parse_packet_in`) and mirrored model segments (:func:`parse_tcp_segment`)
come from hosts, and a hostile host crafts them, so both read fixed-size headers with
:mod:`struct` at offsets checked against the length: no loops over options, no nested
protocol parsers, nothing that can take longer than a few header reads. Every input ends in
a value or in :class:`PacketError`, whose text is the logged reason (``benchmarks/fuzz.py``
fuzzes both). Only untagged Ethernet is parsed: a host's 802.1Q frames are never admitted, so
they are an error here too.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import NamedTuple

ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_ARP = 0x0806
ETH_TYPE_VLAN = (0x8100, 0x88A8, 0x9100)
IP_PROTO_TCP = 6
IP_PROTO_UDP = 17
TCP_SYN = 0x02
ARP_REPLY = 2

ETHERNET = struct.Struct("!6s6sH")
ETHER_TYPE = struct.Struct("!H")
ARP_IPV4 = struct.Struct("!HHBBH6s4s6s4s")
IPV4 = struct.Struct("!BBHHHBBH4s4s")
PORTS = struct.Struct("!HH")
TCP = struct.Struct("!HHIIBB")


class PacketError(ValueError):
    """Bytes that are not a frame the domain acts on; the text says which header failed."""


@dataclass(frozen=True)
class PacketInfo:
    """The header fields of a packet-in the core cares about (absent fields are None)."""

    eth_src: str
    eth_dst: str
    eth_type: int
    arp_op: int | None = None
    arp_spa: str | None = None
    arp_tpa: str | None = None
    ipv4_src: str | None = None
    ipv4_dst: str | None = None
    ip_proto: int | None = None
    tp_src: int | None = None
    tp_dst: int | None = None


class TcpSegment(NamedTuple):
    """One mirrored TCP segment: its stream's addresses and ports, where it sits, what it carries
    (a tuple: the inspection makes one for every segment the mirror passes)."""

    src: str
    sport: int
    dst: str
    dport: int
    seq: int
    syn: bool
    payload: bytes


def _mac(raw: bytes) -> str:
    return raw.hex(":")


def _ether_type(data: bytes) -> int:
    if len(data) < ETHERNET.size:
        raise PacketError(f"{len(data)} bytes is shorter than an Ethernet header")
    eth_type = ETHER_TYPE.unpack_from(data, ETHERNET.size - ETHER_TYPE.size)[0]
    if eth_type in ETH_TYPE_VLAN:
        raise PacketError(f"802.1Q-tagged frame (ethertype {eth_type:#06x}): hosts send untagged frames only")
    return eth_type


def _ipv4(data: bytes, at: int, whole: bool) -> tuple[int, int, int, str, str, int]:
    """``(header_length, total_length, proto, src, dst, fragment_offset)`` of the IPv4 header at
    ``at``; with ``whole``, the datagram must fit the data (a packet-in carries only its head)."""
    if len(data) < at + IPV4.size:
        raise PacketError(f"{len(data) - at} bytes after Ethernet is shorter than an IPv4 header")
    version_ihl, _, total, _, fragment, _, proto, _, src, dst = IPV4.unpack_from(data, at)
    header = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4 or header < IPV4.size:
        raise PacketError(f"not an IPv4 header (version {version_ihl >> 4}, header length {header})")
    if whole and (total < header or at + total > len(data)):
        raise PacketError(f"IPv4 lengths (header {header}, total {total}) do not fit the "
                          f"{len(data) - at} bytes after Ethernet")
    return header, total, proto, socket.inet_ntoa(src), socket.inet_ntoa(dst), fragment & 0x1FFF


def parse_packet_in(data: bytes) -> PacketInfo:
    """A packet-in's Ethernet, ARP or IPv4 fields and TCP/UDP ports (the first fragment's only)."""
    eth_type = _ether_type(data)
    dst, src, _ = ETHERNET.unpack_from(data)
    eth_src, eth_dst = _mac(src), _mac(dst)
    if eth_type == ETH_TYPE_ARP:
        if len(data) < ETHERNET.size + ARP_IPV4.size:
            raise PacketError(f"{len(data)} bytes is too short for an ARP packet")
        hardware, protocol, hlen, plen, op, _, spa, _, tpa = ARP_IPV4.unpack_from(data, ETHERNET.size)
        if (hardware, protocol, hlen, plen) != (1, ETH_TYPE_IPV4, 6, 4):
            raise PacketError(f"ARP for hardware {hardware}, protocol {protocol:#06x}: not IPv4 over Ethernet")
        return PacketInfo(eth_src, eth_dst, eth_type, arp_op=op, arp_spa=socket.inet_ntoa(spa),
                          arp_tpa=socket.inet_ntoa(tpa))
    if eth_type != ETH_TYPE_IPV4:
        return PacketInfo(eth_src, eth_dst, eth_type)
    at = ETHERNET.size
    header, _, proto, src, dst, fragment = _ipv4(data, at, whole=False)
    fields = dict(ipv4_src=src, ipv4_dst=dst, ip_proto=proto)
    if proto in (IP_PROTO_TCP, IP_PROTO_UDP) and fragment == 0:
        if len(data) < at + header + PORTS.size:
            raise PacketError("the transport header is cut off before its ports")
        fields["tp_src"], fields["tp_dst"] = PORTS.unpack_from(data, at + header)
    return PacketInfo(eth_src, eth_dst, eth_type, **fields)


def parse_tcp_segment(data: bytes) -> TcpSegment | None:
    """A whole mirrored Ethernet/IPv4/TCP frame's segment; None for any other protocol.

    The payload ends where the IPv4 total length says (Ethernet pads short frames).
    """
    if _ether_type(data) != ETH_TYPE_IPV4:
        return None
    at = ETHERNET.size
    header, total, proto, src, dst, fragment = _ipv4(data, at, whole=True)
    if proto != IP_PROTO_TCP:
        return None
    if fragment:
        raise PacketError("a non-first IPv4 fragment of a TCP segment")
    at += header
    if total - header < TCP.size:
        raise PacketError(f"{total - header} bytes is shorter than a TCP header")
    sport, dport, seq, _, offset, flags = TCP.unpack_from(data, at)
    tcp_header = (offset >> 4) * 4
    if tcp_header < 20 or tcp_header > total - header:
        raise PacketError(f"TCP header length {tcp_header} does not fit the {total - header}-byte segment")
    return TcpSegment(src, sport, dst, dport, seq, bool(flags & TCP_SYN),
                      bytes(data[at + tcp_header:ETHERNET.size + total]))


def arp_reply_frame(mac: str, ip: str, requester_mac: str, requester_ip: str) -> bytes:
    """The Ethernet frame answering ``requester``'s ARP request: ``ip`` is at ``mac``."""
    own, theirs = bytes.fromhex(mac.replace(":", "")), bytes.fromhex(requester_mac.replace(":", ""))
    return ETHERNET.pack(theirs, own, ETH_TYPE_ARP) + ARP_IPV4.pack(
        1, ETH_TYPE_IPV4, 6, 4, ARP_REPLY, own, socket.inet_aton(ip), theirs, socket.inet_aton(requester_ip))
