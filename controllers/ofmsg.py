"""Translation between the core's plain data and OpenFlow 1.3 messages.

Works on any object with ``ofproto`` and ``ofproto_parser`` attributes: a live datapath, or a
``ProtocolDesc`` in tests, so the exact messages a switch receives are unit-tested.
"""

from __future__ import annotations

from controllers.compat import arp, ethernet, ipv4, packet, tcp, udp
from controllers.core import (
    ALL_TABLES,
    CONTROLLER,
    PACKET_IN_BYTES,
    ArpReply,
    FlowRule,
    FlowStatsEntry,
    PacketInfo,
)


def flow_mod(datapath, rule: FlowRule):
    """The OFPFlowMod that applies ``rule``."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    actions = [
        parser.OFPActionOutput(ofp.OFPP_CONTROLLER, PACKET_IN_BYTES)
        if port == CONTROLLER
        else parser.OFPActionOutput(port)
        for port in rule.outputs
    ]
    instructions = []
    if actions:
        instructions.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions))
    if rule.goto is not None:
        instructions.append(parser.OFPInstructionGotoTable(rule.goto))
    return parser.OFPFlowMod(
        datapath=datapath,
        cookie=rule.cookie,
        # A delete with a cookie removes exactly the rules carrying it (a ban's drop rules);
        # cookie 0 with mask 0 is the wipe of a freshly connected switch.
        cookie_mask=0xFFFFFFFFFFFFFFFF if rule.delete and rule.cookie else 0,
        table_id=ofp.OFPTT_ALL if rule.table == ALL_TABLES else rule.table,
        command=ofp.OFPFC_DELETE if rule.delete else ofp.OFPFC_ADD,
        idle_timeout=rule.idle_timeout,
        hard_timeout=rule.hard_timeout,
        priority=rule.priority,
        buffer_id=ofp.OFP_NO_BUFFER,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        flags=0,
        match=parser.OFPMatch(**dict(rule.match)),
        instructions=instructions,
    )


def arp_reply_out(datapath, reply: ArpReply):
    """A packet-out carrying the proxy-ARP answer."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    frame = packet.Packet()
    frame.add_protocol(
        ethernet.ethernet(dst=reply.requester_mac, src=reply.mac, ethertype=0x0806)
    )
    frame.add_protocol(
        arp.arp(
            opcode=arp.ARP_REPLY,
            src_mac=reply.mac,
            src_ip=reply.ip,
            dst_mac=reply.requester_mac,
            dst_ip=reply.requester_ip,
        )
    )
    frame.serialize()
    return parser.OFPPacketOut(
        datapath=datapath,
        buffer_id=ofp.OFP_NO_BUFFER,
        in_port=ofp.OFPP_CONTROLLER,
        actions=[parser.OFPActionOutput(reply.port)],
        data=bytes(frame.data),
    )


def flow_stats_request(datapath):
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    return parser.OFPFlowStatsRequest(
        datapath, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, parser.OFPMatch()
    )


def flow_entry(message) -> FlowStatsEntry:
    """One OFPFlowStats entry of a stats reply, as plain data."""
    return FlowStatsEntry(
        table_id=message.table_id,
        priority=message.priority,
        cookie=message.cookie,
        packet_count=message.packet_count,
        byte_count=message.byte_count,
        match=dict(message.match.items()),
    )


def packet_info(data: bytes) -> PacketInfo | None:
    """Header fields of a packet-in's data, or None when it is not even Ethernet."""
    frame = packet.Packet(data)
    eth = frame.get_protocol(ethernet.ethernet)
    if eth is None:
        return None
    fields = {"eth_src": eth.src, "eth_dst": eth.dst, "eth_type": eth.ethertype}
    arp_header = frame.get_protocol(arp.arp)
    if arp_header is not None:
        fields.update(arp_op=arp_header.opcode, arp_spa=arp_header.src_ip, arp_tpa=arp_header.dst_ip)
    ip_header = frame.get_protocol(ipv4.ipv4)
    if ip_header is not None:
        fields.update(ipv4_src=ip_header.src, ipv4_dst=ip_header.dst, ip_proto=ip_header.proto)
        transport = frame.get_protocol(tcp.tcp) or frame.get_protocol(udp.udp)
        if transport is not None:
            fields.update(tp_src=transport.src_port, tp_dst=transport.dst_port)
    return PacketInfo(**fields)
