"""A tiny OpenFlow 1.3 flow table for tests: applies real OFPFlowMods, looks packets up.

Enough of the pipeline for the controller's rules: exact, masked IPv4 and masked bit matches, priorities,
apply-actions outputs and goto-table, per-entry packet counters.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from controllers.compat import ofproto_protocol, ofproto_v1_3


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
        outputs, goto = [], None
        for instruction in flow_mod.instructions:
            if instruction.type == ofp.OFPIT_APPLY_ACTIONS:
                outputs += ["controller" if a.port == ofp.OFPP_CONTROLLER else a.port
                            for a in instruction.actions]
            elif instruction.type == ofp.OFPIT_GOTO_TABLE:
                goto = instruction.table_id
        match = dict(flow_mod.match.items())
        self.entries = [e for e in self.entries if not (
            e.table_id == flow_mod.table_id and e.priority == flow_mod.priority and e.match == match)]
        self.entries.append(Entry(flow_mod.table_id, flow_mod.priority, flow_mod.cookie, match, outputs, goto))

    def lookup(self, table_id: int, packet: dict) -> Entry | None:
        candidates = [e for e in self.entries if e.table_id == table_id
                      and all(_field_matches(v, packet.get(k)) for k, v in e.match.items())]
        return max(candidates, key=lambda e: e.priority, default=None)

    def process(self, packet: dict) -> tuple[list, list[Entry]]:
        """Run ``packet`` (header fields incl. in_port) through the pipeline.

        Returns the outputs (port numbers or "controller") and the entries that matched.
        """
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
