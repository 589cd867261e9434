"""A tiny OpenFlow 1.3 flow table for tests: applies real OFPFlowMods, looks packets up.

Enough of the pipeline for the controller's rules: exact, masked IPv4 and masked bit matches, priorities,
apply-actions outputs, goto-table, conntrack's commit-and-recirculate (the packet's ``ct_state``
is what the test says the tracker would find: a new connection unless given), meters (noted, never
dropping), per-entry packet counters. Packets without a ``vlan_vid`` are untagged.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from controllers.compat import ofproto_protocol, ofproto_v1_3

CT_NEW = 0x21
"""ct_state of a tracked packet opening a new connection (+trk+new)."""


def protocol_desc():
    return ofproto_protocol.ProtocolDesc(ofproto_v1_3.OFP_VERSION)


@dataclass
class Entry:
    table_id: int
    priority: int
    cookie: int
    match: dict
    outputs: list
    goto: int | None
    meter: int | None = None
    packets: int = 0


def _field_matches(wanted, value) -> bool:
    if value is None:
        return False
    if isinstance(wanted, tuple) and isinstance(wanted[0], int):  # bit field under a mask
        bits, mask = wanted
        return value & mask == bits & mask
    if isinstance(wanted, tuple):
        address, mask = wanted
        net = ipaddress.IPv4Network(f"{address}/{mask}", strict=False)
        return ipaddress.IPv4Address(value) in net
    return wanted == value


class FakeSwitch:
    def __init__(self, dpid: int) -> None:
        self.dpid = dpid
        self.entries: list[Entry] = []
        self.ofp = ofproto_v1_3

    def apply(self, flow_mod) -> None:
        ofp = self.ofp
        flow_mod.serialize()  # every message must encode as valid OF1.3
        if flow_mod.command == ofp.OFPFC_DELETE:
            assert not list(flow_mod.match.items())
            if flow_mod.cookie_mask:
                self.entries = [e for e in self.entries if e.cookie & flow_mod.cookie_mask != flow_mod.cookie]
            else:
                assert flow_mod.table_id == ofp.OFPTT_ALL
                self.entries.clear()
            return
        assert flow_mod.command == ofp.OFPFC_ADD
        outputs, goto, meter = [], None, None
        for instruction in flow_mod.instructions:
            if instruction.type == ofp.OFPIT_APPLY_ACTIONS:
                for action in instruction.actions:
                    if hasattr(action, "recirc_table"):  # NXActionCT: commit, continue there
                        goto = action.recirc_table
                    else:
                        outputs.append("controller" if action.port == ofp.OFPP_CONTROLLER else action.port)
            elif instruction.type == ofp.OFPIT_GOTO_TABLE:
                goto = instruction.table_id
            elif instruction.type == ofp.OFPIT_METER:
                meter = instruction.meter_id
        match = dict(flow_mod.match.items())
        self.entries = [e for e in self.entries if not (
            e.table_id == flow_mod.table_id and e.priority == flow_mod.priority and e.match == match)]
        self.entries.append(Entry(flow_mod.table_id, flow_mod.priority, flow_mod.cookie, match, outputs, goto, meter))

    def lookup(self, table_id: int, packet: dict) -> Entry | None:
        candidates = [e for e in self.entries if e.table_id == table_id
                      and all(_field_matches(v, packet.get(k)) for k, v in e.match.items())]
        return max(candidates, key=lambda e: e.priority, default=None)

    def process(self, packet: dict) -> tuple[list, list[Entry]]:
        """Run ``packet`` (header fields incl. in_port) through the pipeline.

        Returns the outputs (port numbers or "controller") and the entries that matched.
        """
        packet = {"vlan_vid": 0, "ct_state": CT_NEW, **packet}
        outputs, hits, table_id = [], [], 0
        while table_id is not None:
            entry = self.lookup(table_id, packet)
            if entry is None:
                break
            entry.packets += 1
            hits.append(entry)
            outputs += entry.outputs
            table_id = entry.goto
        return outputs, hits
