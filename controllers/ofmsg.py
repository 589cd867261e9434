"""Translation between the core's plain data and OpenFlow 1.3 messages.

Works on any object with ``ofproto`` and ``ofproto_parser`` attributes: a live datapath, or a
``ProtocolDesc`` in tests, so the exact messages a switch receives are unit-tested.
"""

from __future__ import annotations

from controllers.core import (
    ALL_TABLES,
    CONTROLLER,
    PACKET_IN_BYTES,
    POLLED_APART,
    ArpReply,
    FlowRule,
    FlowStatsEntry,
    Meter,
)
from controllers.packets import arp_reply_frame


CT_COMMIT = 1
"""NX_CT_F_COMMIT: the connection is created (or refreshed) in the tracker."""
AFTER_PREREQUISITES = frozenset({"ip_frag"})
"""Nicira match fields with a prerequisite (``ip_frag``: an IP ``eth_type``). The frameworks
order Nicira fields before the standard ones, and Open vSwitch refuses a field that comes
before its prerequisite (OFPBMC_BAD_PREREQ), so these go last."""


def match_of(parser, fields):
    """The OFPMatch of a rule's ``fields``, in an order Open vSwitch accepts."""
    match = parser.OFPMatch(**dict(fields))
    if AFTER_PREREQUISITES.isdisjoint(dict(fields)):
        return match
    return parser.OFPMatch(_ordered_fields=sorted(match.items(), key=lambda field: field[0] in AFTER_PREREQUISITES))


def flow_mod(datapath, rule: FlowRule, zone: int = 0):
    """The OFPFlowMod that applies ``rule``; tracked connections go to conntrack ``zone``."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    actions = [
        parser.OFPActionOutput(ofp.OFPP_CONTROLLER, PACKET_IN_BYTES)
        if port == CONTROLLER
        else parser.OFPActionOutput(port)
        for port in rule.outputs
    ]
    if rule.track_into is not None:
        actions.append(parser.NXActionCT(flags=CT_COMMIT, zone_src="", zone_ofs_nbits=zone,
                                         recirc_table=rule.track_into, alg=0, actions=[]))
    instructions = []
    if rule.meter is not None:
        instructions.append(parser.OFPInstructionMeter(rule.meter, ofp.OFPIT_METER))
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
        flags=ofp.OFPFF_SEND_FLOW_REM if rule.notify_removal else 0,
        match=match_of(parser, rule.match),
        instructions=instructions,
    )


def meter_mods(datapath, meters: list[Meter]) -> list:
    """Wipe the switch's meters, then add ``meters`` (drop beyond the rate, a burst as large)."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    return [parser.OFPMeterMod(datapath, command=ofp.OFPMC_DELETE, flags=0, meter_id=ofp.OFPM_ALL, bands=[])] + [
        parser.OFPMeterMod(datapath, command=ofp.OFPMC_ADD, flags=ofp.OFPMF_PKTPS | ofp.OFPMF_BURST,
                           meter_id=meter.meter_id,
                           bands=[parser.OFPMeterBandDrop(rate=meter.rate_pps, burst_size=meter.rate_pps)])
        for meter in meters]


def arp_reply_out(datapath, reply: ArpReply):
    """A packet-out carrying the proxy-ARP answer."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    return parser.OFPPacketOut(
        datapath=datapath,
        buffer_id=ofp.OFP_NO_BUFFER,
        in_port=ofp.OFPP_CONTROLLER,
        actions=[parser.OFPActionOutput(reply.port)],
        data=arp_reply_frame(reply.mac, reply.ip, reply.requester_mac, reply.requester_ip),
    )


def flow_stats_request(datapath, with_microflows: bool):
    """Every rule's counters, or (a cookie mask) those of every rule but the microflows."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    return parser.OFPFlowStatsRequest(
        datapath, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0 if with_microflows else POLLED_APART,
        parser.OFPMatch()
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
