"""The controller's decisions, checked on real OF1.3 messages applied to fake flow tables."""

import pytest

from controllers.core import (
    ARP_REQUEST,
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    MAX_STATS_BACKOFF,
    RESYNC_POLLS,
    TABLE_FLOWS,
    DomainCore,
    PacketInfo,
    RuleKind,
    split_cookie,
)
from controllers.ofmsg import arp_reply_out, flow_entry, flow_mod, flow_stats_request
from controllers.packets import parse_packet_in
from fake_switch import FakeSwitch, protocol_desc
from topologies.layout import make_layout

DP = protocol_desc()


def build_domains(domains=3, hosts=2, graph="ring"):
    layout = make_layout(domains, hosts, graph)
    description = layout.to_description("user")
    cores, switches = {}, {}
    for spec in layout.switches:
        core = DomainCore(description, spec.domain)
        switch = FakeSwitch(spec.dpid)
        for rule in core.base_rules(spec.dpid):
            switch.apply(flow_mod(DP, rule))
        cores[spec.domain], switches[spec.domain] = core, switch
    return layout, cores, switches


def ipv4_packet(layout, src, dst, **extra):
    s, d = layout.host(src), layout.host(dst)
    return {"in_port": s.port, "eth_src": s.mac, "eth_dst": d.mac, "eth_type": ETH_TYPE_IPV4,
            "ipv4_src": s.ip, "ipv4_dst": d.ip, "ip_proto": 17, "udp_src": 4000, "udp_dst": 5000, **extra}


def deliver(layout, switches, src, packet_fields, max_hops=10):
    """Follow the packet across domains; return (domain, port) where it leaves to a host."""
    domain = layout.host(src).domain
    hops = []
    for _ in range(max_hops):
        outputs, _ = switches[domain].process(packet_fields)
        ports = [p for p in outputs if p != "controller"]
        if not ports:
            return None, hops
        assert len(ports) == 1, f"packet duplicated to {ports}"
        border = next((b for b in layout.borders if b.domain == domain and b.port == ports[0]), None)
        if border is None:
            return (domain, ports[0]), hops
        hops.append(border.neighbour)
        domain = border.neighbour
        packet_fields = {**packet_fields, "in_port": border.peer_port}
    raise AssertionError(f"forwarding loop: {hops}")


@pytest.mark.parametrize("graph, domains", [("ring", 3), ("ring", 5), ("mesh", 4), ("line", 4)])
def test_every_host_pair_is_delivered_on_a_shortest_domain_path(graph, domains):
    layout, _, switches = build_domains(domains, 2, graph)
    for src in layout.hosts:
        for dst in layout.hosts:
            if src is dst:
                continue
            where, hops = deliver(layout, switches, src.name, ipv4_packet(layout, src.name, dst.name))
            assert where == (dst.domain, dst.port), f"{src.name} -> {dst.name} ended at {where}"
            if graph == "ring":
                assert len(hops) <= domains // 2
            if graph == "mesh":
                assert len(hops) <= 1


def test_first_packet_of_a_flow_is_forwarded_and_copied_to_the_controller():
    layout, _, switches = build_domains()
    outputs, hits = switches[1].process(ipv4_packet(layout, "d1h1", "d1h2"))
    assert outputs == ["controller", layout.host("d1h2").port]
    assert [split_cookie(h.cookie)[0] for h in hits] == [RuleKind.HOST_IPV4, RuleKind.FLOW_MISS,
                                                          RuleKind.FORWARD_LOCAL]


CT_REPLY, CT_RELATED, CT_INVALID = 0x2A, 0x24, 0x30  # +trk+est+rpl, +trk+rel, +trk+inv


@pytest.mark.parametrize("reply", [
    {"ip_proto": 6, "tcp_src": 22, "tcp_dst": 40000, "tcp_flags": 0x014, "ct_state": CT_REPLY},  # RST-ACK
    {"ip_proto": 6, "tcp_src": 7000, "tcp_dst": 40000, "tcp_flags": 0x011, "ct_state": CT_REPLY},  # FIN-ACK
    {"ip_proto": 1, "icmpv4_type": 3, "ct_state": CT_RELATED},  # port unreachable, answering a UDP flood
    {"ip_proto": 1, "icmpv4_type": 0, "ct_state": CT_REPLY},  # echo reply to an echo request
])
def test_a_hosts_replies_pass_without_a_packet_in_and_are_counted_apart(reply):
    layout, _, switches = build_domains()
    base = {k: v for k, v in ipv4_packet(layout, "d2h1", "d1h1").items() if k not in ("udp_src", "udp_dst")}
    outputs, hits = switches[2].process({**base, **reply})
    assert "controller" not in outputs and outputs
    assert [split_cookie(h.cookie)[0] for h in hits][:2] == [RuleKind.HOST_IPV4, RuleKind.HOST_REPLY]
    syn = {**base, "ip_proto": 6, "tcp_src": 40000, "tcp_dst": 22, "tcp_flags": 0x002}
    assert "controller" in switches[2].process(syn)[0]  # what it initiates is a new flow as before


@pytest.mark.parametrize("forged", [
    {"ip_proto": 1, "icmpv4_type": 0, "ct_state": CT_INVALID},  # an echo reply no one asked for
    {"ip_proto": 6, "tcp_src": 7000, "tcp_dst": 40000, "tcp_flags": 0x014, "ct_state": CT_INVALID},  # a RST
    {"ip_proto": 6, "tcp_src": 7000, "tcp_dst": 40000, "tcp_flags": 0x012},  # a SYN-ACK opening nothing
])
def test_reply_flags_on_a_packet_the_tracker_never_saw_asked_for_are_what_the_host_initiated(forged):
    layout, _, switches = build_domains()
    base = {k: v for k, v in ipv4_packet(layout, "d2h1", "d1h1").items() if k not in ("udp_src", "udp_dst")}
    outputs, hits = switches[2].process({**base, **forged})
    assert "controller" in outputs
    assert [split_cookie(h.cookie)[0] for h in hits][:2] == [RuleKind.HOST_IPV4, RuleKind.FLOW_MISS]


def test_tagged_frames_from_a_host_are_dropped_and_counted():
    layout, _, switches = build_domains()
    for vid in (0x1000 | 100, 0x1000):  # vid 100 and a priority tag (vid 0)
        outputs, hits = switches[1].process({**ipv4_packet(layout, "d1h1", "d2h1"), "vlan_vid": vid})
        assert outputs == [] and split_cookie(hits[0].cookie)[0] is RuleKind.HOST_UNADMITTED


def test_ip_fragments_from_a_host_or_a_neighbour_domain_are_dropped_and_counted():
    """A TCP stream cut into fragments reaches its receiver whole, but the mirror's rule (and
    every port match) sees only the first piece of each segment: fragments are not admitted."""
    layout, _, switches = build_domains()
    for fragment in (1, 3):  # the first piece and a later one
        outputs, hits = switches[1].process({**ipv4_packet(layout, "d1h1", "d2h1"), "ip_frag": fragment})
        assert outputs == [] and split_cookie(hits[0].cookie) == (RuleKind.HOST_UNADMITTED, layout.host("d1h1").key)
        border = next(b for b in layout.borders if b.domain == 1)
        outputs, hits = switches[1].process({**ipv4_packet(layout, "d2h1", "d1h1"), "in_port": border.port,
                                             "ip_frag": fragment})
        assert outputs == [] and split_cookie(hits[0].cookie)[0] is RuleKind.BORDER_UNADMITTED
    outputs, _ = switches[1].process({**ipv4_packet(layout, "d1h1", "d1h2"), "ip_frag": 0})
    assert layout.host("d1h2").port in outputs  # not a fragment: admitted


def test_a_match_field_goes_after_its_prerequisite_on_the_wire():
    """Open vSwitch refuses ip_frag before eth_type (OFPBMC_BAD_PREREQ), and the framework's own
    order puts Nicira fields first."""
    from os_ken.ofproto import ofproto_v1_3 as ofp

    layout, cores, _ = build_domains()
    [rule] = [r for r in cores[1].base_rules(257)
              if dict(r.match).get("ip_frag") and dict(r.match)["in_port"] == layout.host("d1h1").port]
    buffer = bytearray()
    flow_mod(DP, rule).match.serialize(buffer, 0)
    fields, at = [], 4
    while at + 4 <= len(buffer) and buffer[at:at + 4] != bytes(4):
        header = int.from_bytes(buffer[at:at + 4], "big")
        fields.append(header >> 9)  # class and field, without the mask bit and length
        at += 4 + (header & 0xFF)
    eth_type = ofp.OXM_OF_ETH_TYPE >> 9
    ip_frag = (0x0001 << 7) | 26  # NXM_NX_IP_FRAG
    assert eth_type in fields and fields.index(eth_type) < fields.index(ip_frag)


def test_a_hosts_arp_goes_through_its_own_meter():
    layout, cores, switches = build_domains()
    [arp_rule] = [e for e in switches[1].entries if split_cookie(e.cookie)[0] is RuleKind.HOST_ARP
                  and e.match["in_port"] == layout.host("d1h2").port]
    assert arp_rule.meter == layout.host("d1h2").index
    assert {m.meter_id for m in cores[1].base_meters(257)} == {h.index for h in layout.hosts if h.domain == 1}


def test_spoofed_source_and_ipv6_are_dropped_and_counted_at_the_edge():
    layout, _, switches = build_domains()
    spoofed = ipv4_packet(layout, "d1h1", "d2h1", ipv4_src=layout.host("d1h2").ip)
    outputs, hits = switches[1].process(spoofed)
    assert outputs == [] and hits[0].cookie >> 32 == RuleKind.HOST_UNADMITTED
    ipv6 = {"in_port": 1, "eth_src": layout.host("d1h1").mac, "eth_type": 0x86DD}
    outputs, hits = switches[1].process(ipv6)
    assert outputs == [] and hits[0].cookie >> 32 == RuleKind.HOST_UNADMITTED


def test_arp_goes_only_to_the_controller_never_flooded():
    layout, _, switches = build_domains()
    h = layout.host("d1h1")
    request = {"in_port": h.port, "eth_src": h.mac, "eth_type": ETH_TYPE_ARP, "arp_spa": h.ip}
    outputs, _ = switches[1].process(request)
    assert outputs == ["controller"]
    border_arp = {"in_port": 22, "eth_type": ETH_TYPE_ARP, "arp_spa": "10.2.0.1"}
    assert switches[1].process(border_arp)[0] == []


def test_proxy_arp_answers_for_a_remote_host_with_its_real_mac():
    layout, cores, _ = build_domains()
    asker, target = layout.host("d1h1"), layout.host("d3h2")
    from scapy.layers.l2 import ARP, Ether

    request = Ether(dst="ff:ff:ff:ff:ff:ff", src=asker.mac) / ARP(op=1, hwsrc=asker.mac, psrc=asker.ip,
                                                                   pdst=target.ip)
    info = parse_packet_in(bytes(request))
    replies = cores[1].on_packet_in(0.0, 257, asker.port, 0, info)
    assert len(replies) == 1
    out = arp_reply_out(DP, replies[0])
    out.serialize()
    assert [a.port for a in out.actions] == [asker.port]
    answer = Ether(out.data)
    assert (answer.dst, answer[ARP].op, answer[ARP].hwsrc, answer[ARP].psrc, answer[ARP].hwdst,
            answer[ARP].pdst) == (asker.mac, 2, target.mac, target.ip, asker.mac, asker.ip)


def test_arp_for_unknown_or_with_a_forged_sender_is_not_answered():
    layout, cores, _ = build_domains()
    h = layout.host("d1h1")
    unknown = PacketInfo(h.mac, "ff:ff:ff:ff:ff:ff", ETH_TYPE_ARP, ARP_REQUEST, h.ip, "10.9.0.9")
    forged = PacketInfo(h.mac, "ff:ff:ff:ff:ff:ff", ETH_TYPE_ARP, ARP_REQUEST, "10.2.0.1", "10.1.0.2")
    assert cores[1].on_packet_in(0.0, 257, h.port, 0, unknown) == []
    assert cores[1].on_packet_in(0.0, 257, h.port, 0, forged) == []
    assert cores[1].on_packet_in(0.0, 999, h.port, 0, forged) == []  # stranger switch


def test_new_flow_installs_one_microflow_and_beyond_the_cap_one_overflow_rule_ends_packet_ins():
    layout, cores, switches = build_domains()
    core = cores[1]
    core.max_microflows_per_host = 2
    h = layout.host("d1h1")
    rules = []
    for port in (5000, 5001, 5002, 5003):
        info = PacketInfo(h.mac, "x", ETH_TYPE_IPV4, ipv4_src=h.ip, ipv4_dst="10.2.0.1",
                          ip_proto=6, tp_src=40000, tp_dst=port)
        rules += core.on_packet_in(0.0, 257, h.port, TABLE_FLOWS, info)
    assert [r.kind for r in rules] == [RuleKind.MICROFLOW, RuleKind.MICROFLOW, RuleKind.FLOW_OVERFLOW]
    for rule in rules:
        switches[1].apply(flow_mod(DP, rule))
    tcp = ipv4_packet(layout, "d1h1", "d2h1", ip_proto=6, tcp_src=40000, tcp_dst=5000)
    outputs, hits = switches[1].process(tcp)
    assert "controller" not in outputs and split_cookie(hits[1].cookie)[0] is RuleKind.MICROFLOW
    scan = ipv4_packet(layout, "d1h1", "d2h1", ip_proto=6, tcp_src=40000, tcp_dst=6000)
    outputs, hits = switches[1].process(scan)
    to_d2 = next(b.port for b in layout.borders if b.domain == 1 and b.neighbour == 2)
    assert outputs == [to_d2] and split_cookie(hits[1].cookie)[0] is RuleKind.FLOW_OVERFLOW
    other = ipv4_packet(layout, "d1h2", "d2h1", ip_proto=6, tcp_src=40000, tcp_dst=6000)
    assert "controller" in switches[1].process(other)[0]  # the cap is per host


def test_packets_that_missed_the_table_while_the_rule_was_on_its_way_are_not_new_flows():
    layout, cores, _ = build_domains()
    core, h = cores[1], layout.host("d1h1")
    info = PacketInfo(h.mac, "x", ETH_TYPE_IPV4, ipv4_src=h.ip, ipv4_dst="10.2.0.1",
                      ip_proto=6, tp_src=40000, tp_dst=5201)
    first = core.on_packet_in(0.0, 257, h.port, TABLE_FLOWS, info)
    straggler = core.on_packet_in(0.01, 257, h.port, TABLE_FLOWS, info)
    assert len(first) == 1 and straggler == []
    later = core.on_packet_in(0.0 + core.install_grace + 1, 257, h.port, TABLE_FLOWS, info)
    assert len(later) == 1  # the rule expired and the flow came back: a new flow again
    core.stats_request_sent(5.0, 257, xid=1, with_microflows=True)
    snapshot = core.on_flow_stats_part(5.0, 257, 1, [], False)
    assert (snapshot.hosts["d1h1"].flows_total, snapshot.hosts["d1h1"].packet_ins) == (2, 3)


def stats_reply_parts(switch, parser, split, request=None):
    """The switch's entries (those ``request``'s cookie and mask select) as real OFPFlowStats,
    split into multipart replies."""
    asked = [e for e in switch.entries
             if request is None or e.cookie & request.cookie_mask == request.cookie & request.cookie_mask]
    stats = [parser.OFPFlowStats(table_id=e.table_id, duration_sec=1, duration_nsec=0, priority=e.priority,
                                 idle_timeout=0, hard_timeout=0, flags=0, cookie=e.cookie,
                                 packet_count=e.packets, byte_count=e.packets * 100,
                                 match=parser.OFPMatch(**e.match), instructions=[])
             for e in asked]
    return [stats[i:i + split] for i in range(0, len(stats), split)]


def test_multipart_flow_stats_assemble_into_one_snapshot_of_per_host_counters():
    layout, cores, switches = build_domains()
    core, switch = cores[1], switches[1]
    for _ in range(3):
        switch.process(ipv4_packet(layout, "d1h1", "d2h2"))
    switch.process(ipv4_packet(layout, "d1h2", "d1h1", ipv4_src="10.1.0.9"))  # spoofed: dropped
    reset = {**ipv4_packet(layout, "d1h1", "d2h2"), "ip_proto": 6, "tcp_src": 80, "tcp_dst": 4000, "tcp_flags": 0x14,
             "ct_state": CT_REPLY}
    switch.process(reset)
    assert core.stats_request_due(10.0, 257)
    core.stats_request_sent(10.0, 257, xid=7, with_microflows=True)
    assert not core.stats_request_due(10.5, 257)
    parts = stats_reply_parts(switch, DP.ofproto_parser, split=4)
    assert len(parts) > 2
    snapshots = []
    for i, part in enumerate(parts):
        reply = DP.ofproto_parser.OFPFlowStatsReply(DP, flags=0, body=part)
        more = i < len(parts) - 1
        snapshots.append(core.on_flow_stats_part(11.0, 257, 7, [flow_entry(stat) for stat in reply.body], more))
    assert snapshots[:-1] == [None] * (len(parts) - 1)
    hosts = snapshots[-1].hosts
    assert (hosts["d1h1"].packets, hosts["d1h1"].bytes) == (4, 400)
    assert (hosts["d1h1"].reply_packets, hosts["d1h1"].reply_bytes) == (1, 100)
    assert hosts["d1h2"].packets == 0 and hosts["d1h2"].dropped_packets == 1
    assert core.stats_request_due(11.0, 257)


def test_routine_polls_leave_the_microflows_out_as_the_controller_tracks_them_and_a_resync_corrects_it():
    layout, cores, switches = build_domains()
    core, switch, h = cores[1], switches[1], layout.host("d1h1")
    for port in (5000, 5001):
        info = PacketInfo(h.mac, "x", ETH_TYPE_IPV4, ipv4_src=h.ip, ipv4_dst="10.2.0.1",
                          ip_proto=6, tp_src=40000, tp_dst=port)
        for rule in core.on_packet_in(0.0, 257, h.port, TABLE_FLOWS, info):
            assert rule.notify_removal
            switch.apply(flow_mod(DP, rule))
    microflows = [e for e in switch.entries if split_cookie(e.cookie)[0] is RuleKind.MICROFLOW]

    def poll(xid):
        with_microflows = core.next_poll_takes_microflows(257)
        request = flow_stats_request(DP, with_microflows)
        core.stats_request_sent(float(xid), 257, xid=xid, with_microflows=with_microflows)
        entries = [flow_entry(s) for s in stats_reply_parts(switch, DP.ofproto_parser, 1000, request)[0]]
        snapshot = core.on_flow_stats_part(float(xid), 257, xid, entries, False)
        return snapshot.to_record()["all_rules"], len(entries), snapshot.hosts["d1h1"]

    every, taken, counters = poll(1)
    assert every and (counters.flows_active, counters.distinct_dst_ports, counters.distinct_dsts) == (2, 2, 1)
    routine, fewer, counters = poll(2)
    assert not routine and fewer == taken - 2 and (counters.flows_active, counters.distinct_dst_ports) == (2, 2)
    core.on_flow_removed(257, microflows[0].cookie, microflows[0].match)  # the switch reports an expiry
    switch.entries.remove(microflows[0])
    assert poll(3)[2].flows_active == 1
    switch.entries.remove(microflows[1])  # an expiry whose report was lost
    assert [poll(xid)[2].flows_active for xid in range(4, RESYNC_POLLS + 2)] == [1] * (RESYNC_POLLS - 3) + [0]


def test_stray_and_late_stats_replies_are_ignored_and_timeouts_re_request():
    _, cores, _ = build_domains()
    core = cores[2]
    assert core.on_flow_stats_part(0.0, 513, 99, [], False) is None
    core.stats_request_sent(0.0, 513, xid=1, with_microflows=True)
    assert core.on_flow_stats_part(0.1, 513, 2, [], False) is None
    assert not core.stats_request_due(1.0, 513)
    assert core.stats_request_due(core.stats_timeout + 0.1, 513)
    assert core.stats_timeouts == 1


def test_a_switch_that_answers_late_is_waited_for_longer_each_time_until_it_answers():
    _, cores, _ = build_domains()
    core, timeout = cores[2], cores[2].stats_timeout
    core.stats_request_sent(0.0, 513, xid=1, with_microflows=True)
    assert core.stats_request_due(timeout, 513)  # the first wait: one timeout
    core.stats_request_sent(timeout, 513, xid=2, with_microflows=True)
    assert not core.stats_request_due(timeout + 1.5 * timeout, 513)  # now twice as long
    assert core.stats_request_due(3 * timeout, 513)
    core.stats_request_sent(3 * timeout, 513, xid=3, with_microflows=True)
    assert not core.stats_request_due(6 * timeout, 513)  # four times
    assert core.on_flow_stats_part(6.5 * timeout, 513, 3, [], False) is not None  # it answered
    core.stats_request_sent(7 * timeout, 513, xid=4, with_microflows=True)
    assert core.stats_request_due(8 * timeout, 513)  # back to one timeout
    for xid in range(5, 15):  # never more than MAX_STATS_BACKOFF timeouts
        sent = 100 * timeout * xid
        core.stats_request_sent(sent, 513, xid=xid, with_microflows=True)
        assert core.stats_request_due(sent + MAX_STATS_BACKOFF * timeout, 513)
    assert core.stats_timeouts == 13


def test_unknown_domain_is_a_clear_error():
    layout = make_layout(2, 1, "line")
    with pytest.raises(ValueError, match="domain 5 is not in the network description"):
        DomainCore(layout.to_description(), 5)


def test_watched_ports_are_counted_exactly_by_their_own_admission_rule():
    layout = make_layout(2, 2, "line")
    core = DomainCore(layout.to_description(), 1, watched_ports=(7000,))
    switch = FakeSwitch(257)
    for rule in core.base_rules(257):
        switch.apply(flow_mod(DP, rule))
    model = ipv4_packet(layout, "d1h1", "d2h1", ip_proto=6, tcp_src=40000, tcp_dst=7000)
    other = ipv4_packet(layout, "d1h1", "d2h1", ip_proto=6, tcp_src=40000, tcp_dst=22)
    for fields in (model, model, other):
        outputs, _ = switch.process(fields)
        assert outputs[-1] == 21 + 1  # still forwarded towards domain 2
    core.stats_request_sent(1.0, 257, xid=3, with_microflows=True)
    parts = stats_reply_parts(switch, DP.ofproto_parser, split=100)
    snapshot = core.on_flow_stats_part(1.0, 257, 3, [flow_entry(s) for s in parts[0]], False)
    h1 = snapshot.hosts["d1h1"]
    # the fake switch counts 100 bytes a packet: IPv4 bytes are 100 - 14 per packet
    assert h1.watched_port_bytes == {7000: 2 * 86} and (h1.packets, h1.bytes) == (3, 300)
    assert snapshot.hosts["d1h2"].watched_port_bytes == {7000: 0}
    assert snapshot.to_record()["hosts"]["d1h1"]["watched_port_bytes"] == {"7000": 172}


def test_a_ban_drops_the_attacker_only_everywhere_and_a_spoofer_cannot_ban_an_honest_node():
    layout, cores, switches = build_domains(domains=3, hosts=2, graph="ring")
    for domain, core in cores.items():
        for dpid, rules in core.ban("d1h2").items():
            for rule in rules:
                switches[domain].apply(flow_mod(DP, rule))
    attacker, honest = layout.host("d1h2"), layout.host("d1h1")
    # From its own port: dropped whatever it claims to be, counted on the ban rule.
    for claimed_ip in (attacker.ip, honest.ip):
        outputs, hits = switches[1].process(ipv4_packet(layout, "d1h2", "d2h1", ipv4_src=claimed_ip))
        assert outputs == [] and split_cookie(hits[0].cookie)[0] is RuleKind.BAN_PORT
    # The honest neighbour on the same switch still reaches every domain.
    assert deliver(layout, switches, "d1h1", ipv4_packet(layout, "d1h1", "d3h2"))[0] == (3, layout.host("d3h2").port)
    # In flight from before the ban: stopped at the next domain's border by source address.
    border = next(b for b in layout.borders if b.domain == 1 and b.neighbour == 2)
    in_flight = {**ipv4_packet(layout, "d1h2", "d2h1"), "in_port": border.peer_port}
    outputs, hits = switches[2].process(in_flight)
    assert outputs == [] and split_cookie(hits[0].cookie)[0] is RuleKind.BAN_SOURCE
    honest_in_flight = {**ipv4_packet(layout, "d1h1", "d2h1"), "in_port": border.peer_port}
    assert switches[2].process(honest_in_flight)[0] == [layout.host("d2h1").port]
    # The ban counters show what it stopped; the ban survives a switch reconnect; unban lifts it.
    core = cores[1]
    core.stats_request_sent(1.0, 257, xid=3, with_microflows=True)
    entries = [flow_entry(s) for s in stats_reply_parts(switches[1], DP.ofproto_parser, split=1000)[0]]
    assert core.on_flow_stats_part(1.0, 257, 3, entries, False).hosts["d1h2"].banned_packets == 2
    cores[2].stats_request_sent(1.0, 513, xid=4, with_microflows=True)
    entries = [flow_entry(s) for s in stats_reply_parts(switches[2], DP.ofproto_parser, split=1000)[0]]
    arrived = cores[2].on_flow_stats_part(1.0, 513, 4, entries, False)
    assert arrived.transit[1]["banned_bytes"] == 100 and arrived.banned_transit["d1h2"] == 1  # stopped at d2's border
    assert any(r.kind is RuleKind.BAN_PORT for r in core.base_rules(257))
    for rule in core.unban("d1h2")[257]:
        switches[1].apply(flow_mod(DP, rule))
    assert switches[1].process(ipv4_packet(layout, "d1h2", "d2h1"))[0] == ["controller", border.port]  # a new flow
    assert not any(split_cookie(e.cookie)[0] in (RuleKind.BAN_PORT, RuleKind.BAN_SOURCE)
                   for e in switches[1].entries)
    with pytest.raises(ValueError, match="cannot ban 'd9h9'"):
        core.ban("d9h9")


def test_a_cut_border_link_is_routed_around_once_every_domain_knows_and_restored_after():
    layout, cores, switches = build_domains(domains=4, hosts=1, graph="ring")  # 1-2-3-4-1
    assert deliver(layout, switches, "d1h1", ipv4_packet(layout, "d1h1", "d2h1"))[1] == [2]
    border_port = next(b.port for b in layout.borders if b.domain == 1 and b.neighbour == 2)
    assert cores[1].border_neighbour(layout.switches[0].dpid, border_port) == 2
    for domain, core in cores.items():  # d1 saw its port go down; its notice reaches the others
        for dpid, rules in core.set_link(1, 2, up=False).items():
            for rule in rules:
                switches[domain].apply(flow_mod(DP, rule))
    assert cores[3].set_link(2, 1, up=False) == {}  # already known: nothing to change
    for src, dst, path in [("d1h1", "d2h1", [4, 3, 2]), ("d2h1", "d1h1", [3, 4, 1]), ("d4h1", "d2h1", [3, 2])]:
        arrived, hops = deliver(layout, switches, src, ipv4_packet(layout, src, dst))
        assert arrived == (layout.host(dst).domain, layout.host(dst).port) and hops == path
    for domain, core in cores.items():
        for rules in core.set_link(1, 2, up=True).values():
            for rule in rules:
                switches[domain].apply(flow_mod(DP, rule))
    assert deliver(layout, switches, "d1h1", ipv4_packet(layout, "d1h1", "d2h1"))[1] == [2]


def test_a_cut_that_splits_a_line_drops_traffic_to_the_far_side_instead_of_looping():
    layout, cores, switches = build_domains(domains=3, hosts=1, graph="line")  # 1-2-3
    for domain, core in cores.items():
        for rules in core.set_link(2, 3, up=False).values():
            for rule in rules:
                switches[domain].apply(flow_mod(DP, rule))
    assert deliver(layout, switches, "d1h1", ipv4_packet(layout, "d1h1", "d3h1"))[0] is None
    assert deliver(layout, switches, "d1h1", ipv4_packet(layout, "d1h1", "d2h1"))[0] == (2, layout.host("d2h1").port)
