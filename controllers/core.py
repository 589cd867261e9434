"""The per-domain controller's decisions, free of any OpenFlow library.

The Ryu/os-ken app (``domain_app.py``) translates events into calls on :class:`DomainCore`
and turns what it returns (:class:`FlowRule`, :class:`ArpReply`, :class:`CountersSnapshot`)
into OpenFlow 1.3 messages and files. Time is always passed in, so tests drive a fake clock.

Table layout of every edge switch (what makes per-source-host accounting exact):

* table 0, *admission*: a local host's untagged IPv4 is admitted only from its own port with
  its own MAC and IP (counted per host; towards a watched port, e.g. the agents', also copied
  to the domain's inspection port when the description has one), committed to the switch's
  connection tracker and passed to table 1 with its connection state; its untagged ARP goes to
  the controller through the host's own meter (proxy ARP, nothing is ever flooded, so rings
  and meshes cannot storm, and an ARP flood reaches the controller at a trickle while its rule
  counts every packet); anything else from a host port (spoofed sources, 802.1Q-tagged frames,
  IPv6 chatter) is dropped and counted. IPv4 arriving on a border port is committed to the
  tracker too and goes straight to forwarding.
* table 1, *flow accounting*: a packet in the reply direction of a tracked connection (the
  other end sent its first packet: the SYN, the echo request) or related to one (an ICMP
  error) is counted as the host's *reply* and forwarded; nothing a sender sets in its headers
  makes a packet a reply. Everything else the host initiated: one microflow rule per (src,
  dst, proto, ports), installed on the first packet; a miss copies the packet head to the
  controller and carries on to forwarding in the same pass, so no packet waits for the
  controller. A host that
  reaches its microflow cap gets one low-priority *overflow* rule instead: its further new
  flows are forwarded and counted there without a packet-in, so a SYN flood or a scan cannot
  bury the controller in packet-ins.
* table 2, *forwarding*: local destinations by exact IPv4, remote domains by their /16 towards
  the next-hop neighbour on the shortest domain path (see :func:`topologies.layout.next_hops`).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from enum import IntEnum

from common.description import NetworkDescription
from common.events import Event, event
from controllers.packets import ETH_TYPE_ARP, ETH_TYPE_IPV4, IP_PROTO_TCP, IP_PROTO_UDP, PacketInfo
from topologies.layout import next_hops

LOG = logging.getLogger(__name__)

CONTROLLER = "controller"
"""Pseudo output port: send the packet (head) to the controller."""

ARP_REQUEST = 1
OFPVID_NONE = 0x0000
"""``vlan_vid`` of a frame without an 802.1Q tag."""
CT_TRACKED, CT_RELATED, CT_REPLY = 0x20, 0x04, 0x08
"""Connection-state bits (``ct_state``) of a tracked packet."""
# What a host sends because someone else sent to it, as the switch's tracker sees it: the
# reply direction of a connection the other end opened, or an error related to one.
IP_FRAGMENT = (1, 1)
"""Open vSwitch's ``ip_frag`` match (a Nicira extension) for any IPv4 fragment."""
REPLY_STATES = ((CT_TRACKED | CT_REPLY, CT_TRACKED | CT_REPLY), (CT_TRACKED | CT_RELATED, CT_TRACKED | CT_RELATED))
ARP_METER_PPS = 20
"""ARP a host may send the controller per second (a burst as large): a handful is honest."""
MAX_STATS_BACKOFF = 8
"""A switch's flow-stats reply is waited for at most this many stats timeouts (24 s by default)."""

TABLE_ADMISSION = 0
TABLE_FLOWS = 1
TABLE_FORWARDING = 2
ALL_TABLES = -1
PACKET_IN_BYTES = 128
ETH_HEADER_BYTES = 14


class RuleKind(IntEnum):
    """What a rule means; stored in the upper half of its cookie."""

    HOST_IPV4 = 1
    HOST_WATCHED_PORT = 12
    HOST_ARP = 2
    HOST_UNADMITTED = 3
    BORDER_IPV4 = 4
    BORDER_UNADMITTED = 5
    ADMISSION_MISS = 6
    FLOW_MISS = 7
    MICROFLOW = 8
    FORWARD_LOCAL = 9
    FORWARD_REMOTE = 10
    FORWARD_MISS = 11
    FLOW_OVERFLOW = 13
    BAN_PORT = 14
    BAN_SOURCE = 15
    HOST_REPLY = 16


POLLED_APART = 1 << 63
"""Cookie bit of the rules a routine flow-stats poll leaves out: the microflows, most of a large
domain's table (8 x 16: about 300 of 400 rules a switch, and parsing them was half of a
controller's CPU), which the controller knows without asking, as it installs each and the switch
reports each removal. Every :data:`RESYNC_POLLS`-th poll takes them too: the switch's ground truth."""
RESYNC_POLLS = 10
TRANSIT_COUNTS = ("packets", "bytes", "dropped_packets", "banned_bytes")
"""What a switch counts per neighbour arriving over its border (``banned_bytes``: stopped by a ban)."""


def make_cookie(kind: RuleKind, subject: int = 0) -> int:
    """Cookie = kind in the upper 32 bits (microflows' top bit set: :data:`POLLED_APART`),
    subject (host key or neighbour domain) below."""
    return (int(kind) << 32) | subject | (POLLED_APART if kind is RuleKind.MICROFLOW else 0)


def split_cookie(cookie: int) -> tuple[RuleKind | None, int]:
    try:
        return RuleKind((cookie & ~POLLED_APART) >> 32), cookie & 0xFFFFFFFF
    except ValueError:
        return None, cookie & 0xFFFFFFFF


def port_subject(key: int, port: int) -> int:
    """Cookie subject of a per-(host, destination port) rule: port above the host key."""
    return (port << 16) | key


@dataclass(frozen=True)
class FlowRule:
    """A flow-table change. No outputs and no ``goto`` means drop."""

    table: int
    priority: int
    match: tuple[tuple[str, object], ...]
    cookie: int
    outputs: tuple[int | str, ...] = ()
    goto: int | None = None
    idle_timeout: int = 0
    hard_timeout: int = 0
    delete: bool = False
    track_into: int | None = None
    """Commit the packet to the connection tracker (zone: the domain) and continue in this
    table with its connection state (instead of ``goto``)."""
    meter: int | None = None
    notify_removal: bool = False
    """The switch reports the rule's removal (an idle timeout, a delete)."""

    @property
    def kind(self) -> RuleKind | None:
        return split_cookie(self.cookie)[0]


@dataclass(frozen=True)
class Meter:
    """A packet-rate meter of the switch: beyond ``rate_pps`` (and a burst as large), drop."""

    meter_id: int
    rate_pps: int


@dataclass(frozen=True)
class ArpReply:
    """Proxy-ARP answer to send out of ``port``: ``ip`` is at ``mac``."""

    port: int
    mac: str
    ip: str
    requester_mac: str
    requester_ip: str


@dataclass(frozen=True)
class FlowStatsEntry:
    """One entry of a flow-stats reply, as plain data."""

    table_id: int
    priority: int
    cookie: int
    packet_count: int
    byte_count: int
    match: dict


@dataclass
class HostCounters:
    """Cumulative counters of one local host, attributed by its admission rules."""

    packets: int = 0
    bytes: int = 0
    reply_packets: int = 0
    reply_bytes: int = 0
    arp_packets: int = 0
    dropped_packets: int = 0
    dropped_bytes: int = 0
    flows_total: int = 0
    flows_active: int = 0
    distinct_dsts: int = 0
    distinct_dst_ports: int = 0
    packet_ins: int = 0
    overflow_packets: int = 0
    banned_packets: int = 0
    banned_bytes: int = 0
    watched_port_bytes: dict[int, int] = field(default_factory=dict)


@dataclass
class CountersSnapshot:
    """Counters as the switch had them when it got the request at ``requested_at``."""

    time: float
    requested_at: float
    domain: int
    dpid: int
    hosts: dict[str, HostCounters]
    transit: dict[int, dict[str, int]] = field(default_factory=dict)
    banned_transit: dict[str, int] = field(default_factory=dict)
    """Packets the border ban rules stopped, by banned node."""
    all_rules: bool = True
    """The reply held the microflows too; otherwise the live ones are the controller's own count."""

    def to_record(self) -> dict:
        return event(
            Event.COUNTERS, self.time,
            requested_at=self.requested_at,
            all_rules=self.all_rules,
            domain=self.domain,
            dpid=self.dpid,
            hosts={name: {**vars(c), "watched_port_bytes": {str(p): b for p, b in c.watched_port_bytes.items()}}
                   for name, c in sorted(self.hosts.items())},
            transit={str(n): t for n, t in sorted(self.transit.items())},
            banned_transit=dict(sorted(self.banned_transit.items())),
        )


@dataclass
class _PendingStats:
    xid: int
    sent_at: float
    with_microflows: bool
    entries: list[FlowStatsEntry] = field(default_factory=list)


def microflow_key(match: dict) -> tuple:
    """A microflow's five-tuple, from its match (as installed, or as a switch reports it)."""
    return (match.get("ipv4_src"), match.get("ipv4_dst"), match.get("ip_proto"),
            match.get("tcp_src", match.get("udp_src")), match.get("tcp_dst", match.get("udp_dst")))


class DomainCore:
    """Forwarding, proxy ARP and flow accounting for one domain.

    Parameters
    ----------
    description:
        The network description (:class:`common.description.NetworkDescription`).
    domain:
        This controller's domain id.
    microflow_idle_timeout:
        Seconds after which an unused microflow rule expires.
    max_microflows_per_host:
        Cap on microflow rules a host can make the controller install; beyond it the host's
        new flows are forwarded and counted by its overflow rule (``overflow_packets``), so a
        scan can fill neither the switch's table nor the controller's packet-in queue.
    stats_timeout:
        Seconds after which an unanswered flow-stats request is abandoned and re-sent; doubled
        after each timeout in a row (up to :data:`MAX_STATS_BACKOFF` times), back on a reply.
    install_grace:
        Seconds during which packet-ins of a flow whose microflow was just installed are not
        a new flow: packets that missed the table while the rule was on its way.
    watched_ports:
        TCP destination ports whose IPv4 bytes are reported per host. Each gets its own
        admission rule per host, which every packet passes exactly once, so the count is exact
        (microflow counters miss the packets that arrive before their rule is installed).
    """

    def __init__(
        self,
        description: NetworkDescription,
        domain: int,
        microflow_idle_timeout: int = 10,
        max_microflows_per_host: int = 256,
        stats_timeout: float = 3.0,
        install_grace: float = 2.0,
        watched_ports: tuple[int, ...] = (),
    ) -> None:
        self.domain = domain
        self.microflow_idle_timeout = microflow_idle_timeout
        self.max_microflows_per_host = max_microflows_per_host
        self.stats_timeout = stats_timeout
        self.install_grace = install_grace
        view = description.domain(domain)
        self._switch_by_dpid = {s.dpid: s.name for s in view.switches}
        self._description = description
        self._local = {h.name: h for h in view.hosts}
        self._borders = view.borders
        self._monitor = view.monitor
        self._border_port_to = {b.neighbour: b.port for b in self._borders}
        self._border_at = {(b.switch, b.port): b.neighbour for b in self._borders}
        self._next_hop = dict(view.next_hop)
        self._domains = sorted(d.id for d in description.domains)
        self._links = sorted({tuple(sorted((d.id, b.neighbour))) for d in description.domains for b in d.borders})
        self.down_links: set[tuple[int, int]] = set()
        self._subnets = {d.id: d.subnet for d in description.domains}
        self._pending: dict[int, _PendingStats] = {}
        self._stats_wait: dict[int, float] = {}  # dpid -> how long its next reply is waited for
        self._flows_total: dict[str, int] = {n: 0 for n in self._local}
        self._packet_ins: dict[str, int] = {n: 0 for n in self._local}
        self._microflows: dict[str, set[tuple]] = {n: set() for n in self._local}  # live, by five-tuple
        self._polls: dict[int, int] = {}  # dpid -> flow-stats requests sent
        self._recent_installs: dict[tuple, float] = {}
        self._overflow_sent: dict[str, float] = {}
        self.watched_ports = frozenset(watched_ports)
        self.stats_timeouts = 0
        self.banned: set[str] = set()

    # --- switch life cycle -------------------------------------------------------------
    def switch_name(self, dpid: int) -> str | None:
        """The switch of this domain with that dpid, or None for a stranger."""
        return self._switch_by_dpid.get(dpid)

    def base_rules(self, dpid: int) -> list[FlowRule]:
        """Every rule a freshly connected switch needs, after wiping what it had."""
        switch = self.switch_name(dpid)
        if switch is None:
            raise ValueError(f"dpid {dpid:#x} is not a switch of domain {self.domain}")
        rules = [FlowRule(ALL_TABLES, 0, (), 0, delete=True)]
        local = [h for h in self._local.values() if h.switch == switch]
        for host in sorted(local, key=lambda h: h.port):
            key = host.key
            port = host.port
            admitted = (("in_port", port), ("eth_src", host.mac), ("vlan_vid", OFPVID_NONE),
                        ("eth_type", ETH_TYPE_IPV4), ("ipv4_src", host.ip))
            mirror = (self._monitor.port,) if self._monitor and self._monitor.switch == switch else ()
            rules += [
                FlowRule(
                    TABLE_ADMISSION, 210, admitted + (("ip_proto", IP_PROTO_TCP), ("tcp_dst", watched)),
                    make_cookie(RuleKind.HOST_WATCHED_PORT, port_subject(key, watched)), outputs=mirror,
                    track_into=TABLE_FLOWS,
                )
                for watched in sorted(self.watched_ports)
            ]
            rules += [
                # No IPv4 fragments, counted as unadmitted: honest agents never send one (TCP sizes
                # its segments to the path), and a TCP stream cut into fragments would reach its
                # receiver whole while the mirror sees the first piece of each segment only: the
                # rest carry no ports, match no agents'-port rule, and would evade the inspection.
                FlowRule(TABLE_ADMISSION, 220,
                         (("in_port", port), ("eth_type", ETH_TYPE_IPV4), ("ip_frag", IP_FRAGMENT)),
                         make_cookie(RuleKind.HOST_UNADMITTED, key)),
                FlowRule(TABLE_ADMISSION, 200, admitted, make_cookie(RuleKind.HOST_IPV4, key), track_into=TABLE_FLOWS),
                FlowRule(
                    TABLE_ADMISSION, 200,
                    (("in_port", port), ("eth_src", host.mac), ("vlan_vid", OFPVID_NONE),
                     ("eth_type", ETH_TYPE_ARP), ("arp_spa", host.ip)),
                    make_cookie(RuleKind.HOST_ARP, key), outputs=(CONTROLLER,), meter=self.arp_meter(host),
                ),
                FlowRule(
                    TABLE_ADMISSION, 100, (("in_port", port),),
                    make_cookie(RuleKind.HOST_UNADMITTED, key),
                ),
                FlowRule(
                    TABLE_FORWARDING, 200,
                    (("eth_type", ETH_TYPE_IPV4), ("ipv4_dst", host.ip)),
                    make_cookie(RuleKind.FORWARD_LOCAL, key), outputs=(port,),
                ),
            ]
            # Replies pass without a microflow or packet-in and are counted apart: answering a
            # scan or a flood is not attacking (see controllers.features.flow_features). Above
            # the microflows: an echo reply is the host's reply even if it pinged that peer too.
            rules += [
                FlowRule(TABLE_FLOWS, 110, (("eth_type", ETH_TYPE_IPV4), ("ipv4_src", host.ip),
                                            ("ct_state", state)),
                         make_cookie(RuleKind.HOST_REPLY, key), goto=TABLE_FORWARDING)
                for state in REPLY_STATES
            ]
        monitor_here = bool(self._monitor) and self._monitor.switch == switch
        for border in sorted(self._borders, key=lambda b: b.neighbour):
            if border.switch != switch:
                continue
            # Models arriving from other domains are mirrored too: the inspection service needs
            # everything a local node aggregates to know where its next update starts from.
            rules += [
                FlowRule(
                    TABLE_ADMISSION, 210,
                    (("in_port", border.port), ("eth_type", ETH_TYPE_IPV4), ("ip_proto", IP_PROTO_TCP),
                     ("tcp_dst", watched)),
                    make_cookie(RuleKind.BORDER_IPV4, border.neighbour),
                    outputs=(self._monitor.port,), track_into=TABLE_FORWARDING,
                )
                for watched in (sorted(self.watched_ports) if monitor_here else ())
            ]
            rules += [
                FlowRule(  # nor from a neighbour domain, whose edge should have dropped them
                    TABLE_ADMISSION, 220,
                    (("in_port", border.port), ("eth_type", ETH_TYPE_IPV4), ("ip_frag", IP_FRAGMENT)),
                    make_cookie(RuleKind.BORDER_UNADMITTED, border.neighbour),
                ),
                FlowRule(
                    TABLE_ADMISSION, 200,
                    (("in_port", border.port), ("eth_type", ETH_TYPE_IPV4)),
                    make_cookie(RuleKind.BORDER_IPV4, border.neighbour), track_into=TABLE_FORWARDING,
                ),
                FlowRule(
                    TABLE_ADMISSION, 100, (("in_port", border.port),),
                    make_cookie(RuleKind.BORDER_UNADMITTED, border.neighbour),
                ),
            ]
        rules += self._remote_routes()
        rules += [
            FlowRule(TABLE_ADMISSION, 0, (), make_cookie(RuleKind.ADMISSION_MISS)),
            FlowRule(TABLE_FLOWS, 0, (), make_cookie(RuleKind.FLOW_MISS),
                     outputs=(CONTROLLER,), goto=TABLE_FORWARDING),
            FlowRule(TABLE_FORWARDING, 0, (), make_cookie(RuleKind.FORWARD_MISS)),
        ]
        for host in local:
            self._microflows[host.name] = set()
        for node in sorted(self.banned):
            rules += self._ban_rules(switch, node)
        return rules

    def arp_meter(self, host: dict) -> int:
        """The meter id of a local host's ARP (its index: one switch per domain)."""
        return host.index

    def base_meters(self, dpid: int) -> list[Meter]:
        """The meters a freshly connected switch needs (after wiping what it had)."""
        switch = self.switch_name(dpid)
        return [Meter(self.arp_meter(h), ARP_METER_PPS)
                for h in sorted(self._local.values(), key=lambda h: h.index) if h.switch == switch]

    # --- border links ------------------------------------------------------------------
    def _remote_routes(self) -> list[FlowRule]:
        """Forwarding towards every other domain's /16: out of the border port to the next hop,
        or, for a domain no path reaches now, no rule (table 2's miss drops)."""
        rules = []
        for target in self._domains:
            if target == self.domain:
                continue
            net = ipaddress.IPv4Network(self._subnets[target])
            match = (("eth_type", ETH_TYPE_IPV4), ("ipv4_dst", (str(net.network_address), str(net.netmask))))
            cookie = make_cookie(RuleKind.FORWARD_REMOTE, target)
            neighbour = self._next_hop.get(target)
            if neighbour is None:
                rules.append(FlowRule(TABLE_FORWARDING, 100, (), cookie, delete=True))  # by cookie
            else:
                rules.append(FlowRule(TABLE_FORWARDING, 100, match, cookie,
                                      outputs=(self._border_port_to[neighbour],)))
        return rules

    @property
    def border_links(self) -> list[tuple[int, int]]:
        """Every border link of the network, as (lower, higher) domain ids."""
        return list(self._links)

    def border_neighbour(self, dpid: int, port: int) -> int | None:
        """The neighbour domain behind ``port`` of switch ``dpid``, if it is a border port."""
        return self._border_at.get((self.switch_name(dpid), port))

    def set_link(self, a: int, b: int, up: bool) -> dict[int, list[FlowRule]]:
        """Record that the border link between domains ``a`` and ``b`` went down (or came back)
        and return the forwarding changes, per dpid; empty if nothing changed. Every domain
        applies the same link states to the same graph (:func:`topologies.layout.next_hops`),
        so the routes stay loop-free and agree once the notice has reached them all."""
        link = tuple(sorted((a, b)))
        if link not in self._links or (link in self.down_links) != up:
            return {}
        (self.down_links.discard if up else self.down_links.add)(link)
        live = [edge for edge in self._links if edge not in self.down_links]
        self._next_hop = next_hops(live, len(self._domains), partial=True)[self.domain]
        return {dpid: self._remote_routes() for dpid in self._switch_by_dpid}

    # --- bans --------------------------------------------------------------------------
    def ban(self, node: str) -> dict[int, list[FlowRule]]:
        """Drop rules cutting ``node`` off, per dpid of this domain.

        At the node's home edge switch: everything arriving on its port, whatever source
        address it claims (priority above admission). On every border port of every domain:
        IPv4 with its source address, so its traffic already in flight or routed through a
        domain that has not heard of the ban yet stops at the next border. A spoofer cannot
        get an honest node banned: what a host sends is attributed by its port, and forged
        source addresses never pass admission.
        """
        if not self._description.has_host(node):
            raise ValueError(f"cannot ban {node!r}: not a host of this network")
        self.banned.add(node)
        return {dpid: self._ban_rules(switch, node) for dpid, switch in self._switch_by_dpid.items()}

    def unban(self, node: str) -> dict[int, list[FlowRule]]:
        """Rules deleting the node's drop rules (matched by cookie), per dpid."""
        self.banned.discard(node)
        key = self._description.host(node).key
        deletes = [FlowRule(TABLE_ADMISSION, 0, (), make_cookie(kind, key), delete=True)
                   for kind in (RuleKind.BAN_PORT, RuleKind.BAN_SOURCE)]
        return {dpid: list(deletes) for dpid in self._switch_by_dpid}

    def _ban_rules(self, switch: str, node: str) -> list[FlowRule]:
        host = self._description.host(node)
        key = host.key
        rules = []
        if host.domain == self.domain and host.switch == switch:
            rules.append(FlowRule(TABLE_ADMISSION, 300, (("in_port", host.port),),
                                  make_cookie(RuleKind.BAN_PORT, key)))
        for border in sorted(self._borders, key=lambda b: b.neighbour):
            if border.switch == switch:
                rules.append(FlowRule(TABLE_ADMISSION, 300,
                                      (("in_port", border.port), ("eth_type", ETH_TYPE_IPV4),
                                       ("ipv4_src", host.ip)),
                                      make_cookie(RuleKind.BAN_SOURCE, key)))
        return rules

    # --- packet-in ---------------------------------------------------------------------
    def on_packet_in(
        self, now: float, dpid: int, in_port: int, table_id: int, packet: PacketInfo
    ) -> list[FlowRule | ArpReply]:
        """Answer ARP for any known host; install a microflow for a local host's new flow."""
        switch = self.switch_name(dpid)
        host = self._description.host_on(switch, in_port) if switch is not None else None
        if host is None or host.domain != self.domain:
            LOG.debug("packet-in from dpid %s port %s ignored: no local host there", dpid, in_port)
            return []
        if packet.eth_type == ETH_TYPE_ARP:
            return self._proxy_arp(in_port, host, packet)
        if packet.eth_type == ETH_TYPE_IPV4 and table_id == TABLE_FLOWS:
            return self._account_new_flow(now, host, packet)
        return []

    def _proxy_arp(self, in_port: int, host: dict, packet: PacketInfo) -> list[FlowRule | ArpReply]:
        if packet.arp_op != ARP_REQUEST or packet.arp_spa != host.ip:
            return []
        target = self._description.host_at(packet.arp_tpa or "")
        if target is None or target.ip == host.ip:
            return []
        return [ArpReply(in_port, target.mac, target.ip, host.mac, host.ip)]

    def _account_new_flow(self, now: float, host: dict, packet: PacketInfo) -> list[FlowRule | ArpReply]:
        name = host.name
        self._packet_ins[name] += 1
        key = (packet.ipv4_src, packet.ipv4_dst, packet.ip_proto, packet.tp_src, packet.tp_dst)
        installed_at = self._recent_installs.get(key)
        if installed_at is not None and now - installed_at < self.install_grace:
            return []
        if len(self._microflows[name]) >= self.max_microflows_per_host:
            return self._overflow_rule(now, host)
        self._recent_installs[key] = now
        match: list[tuple[str, object]] = [
            ("eth_type", ETH_TYPE_IPV4),
            ("ipv4_src", packet.ipv4_src),
            ("ipv4_dst", packet.ipv4_dst),
            ("ip_proto", packet.ip_proto),
        ]
        if packet.ip_proto == IP_PROTO_TCP:
            match += [("tcp_src", packet.tp_src), ("tcp_dst", packet.tp_dst)]
        elif packet.ip_proto == IP_PROTO_UDP:
            match += [("udp_src", packet.tp_src), ("udp_dst", packet.tp_dst)]
        self._flows_total[name] += 1
        self._microflows[name].add(microflow_key(dict(match)))
        return [
            FlowRule(
                TABLE_FLOWS, 100, tuple(match),
                make_cookie(RuleKind.MICROFLOW, host.key),
                goto=TABLE_FORWARDING, idle_timeout=self.microflow_idle_timeout, notify_removal=True,
            )
        ]

    def on_flow_removed(self, dpid: int, cookie: int, match: dict) -> None:
        """A rule of ``dpid`` expired or was deleted: a microflow's host has one fewer."""
        kind, subject = split_cookie(cookie)
        host = self._description.host_with_key(subject) if kind is RuleKind.MICROFLOW else None
        if host is not None and host.name in self._microflows and host.switch == self.switch_name(dpid):
            self._microflows[host.name].discard(microflow_key(match))

    def _overflow_rule(self, now: float, host: dict) -> list[FlowRule | ArpReply]:
        """The host's overflow rule, sent once per grace period (packet-ins in flight repeat)."""
        name = host.name
        if now - self._overflow_sent.get(name, -self.install_grace) < self.install_grace:
            return []
        self._overflow_sent[name] = now
        return [FlowRule(TABLE_FLOWS, 50, (("eth_type", ETH_TYPE_IPV4), ("ipv4_src", host.ip)),
                         make_cookie(RuleKind.FLOW_OVERFLOW, host.key),
                         goto=TABLE_FORWARDING, idle_timeout=self.microflow_idle_timeout)]

    # --- statistics --------------------------------------------------------------------
    def stats_request_due(self, now: float, dpid: int) -> bool:
        """Whether to send a new flow-stats request (none pending, or the pending one timed out).

        A switch too loaded to answer within the timeout is waited for twice as long the next
        time: re-asking at a fixed pace made it build every reply twice and have each dropped as
        late (seen at 8 x 16 on one core before each role ran in one session: no reply came in
        time again)."""
        pending = self._pending.get(dpid)
        if pending is None:
            return True
        wait = self._stats_wait.get(dpid, self.stats_timeout)
        if now - pending.sent_at >= wait:
            LOG.warning("flow-stats reply xid %s from dpid %#x timed out after %.0f s; re-requesting",
                        pending.xid, dpid, wait)
            self.stats_timeouts += 1
            self._stats_wait[dpid] = min(2 * wait, MAX_STATS_BACKOFF * self.stats_timeout)
            del self._pending[dpid]
            return True
        return False

    def next_poll_takes_microflows(self, dpid: int) -> bool:
        """Whether the next flow-stats request asks for the microflows too (:data:`POLLED_APART`):
        the first and every :data:`RESYNC_POLLS`-th after it."""
        return self._polls.get(dpid, 0) % RESYNC_POLLS == 0

    def stats_request_sent(self, now: float, dpid: int, xid: int, with_microflows: bool) -> None:
        self._polls[dpid] = self._polls.get(dpid, 0) + 1
        self._pending[dpid] = _PendingStats(xid, now, with_microflows)

    def on_flow_stats_part(
        self, now: float, dpid: int, xid: int, entries: list[FlowStatsEntry], more: bool
    ) -> CountersSnapshot | None:
        """Collect one multipart reply; return the snapshot once the last part arrived."""
        pending = self._pending.get(dpid)
        if pending is None or pending.xid != xid:
            LOG.warning("unexpected flow-stats reply xid %s from dpid %#x dropped", xid, dpid)
            return None
        pending.entries.extend(entries)
        if more:
            return None
        del self._pending[dpid]
        self._stats_wait.pop(dpid, None)
        return self._snapshot(now, pending, dpid)

    def _snapshot(self, now: float, pending: _PendingStats, dpid: int) -> CountersSnapshot:
        switch = self.switch_name(dpid)
        by_key = {h.key: h.name
                  for h in self._local.values() if h.switch == switch}
        hosts = {name: HostCounters() for name in by_key.values()}
        if pending.with_microflows:  # the switch's ground truth replaces what was tracked
            self._microflows.update({name: set() for name in hosts})
        transit: dict[int, dict[str, int]] = {}
        banned_transit: dict[str, int] = {}
        for entry in pending.entries:
            kind, subject = split_cookie(entry.cookie)
            if kind is RuleKind.HOST_WATCHED_PORT:
                subject, watched = subject & 0xFFFF, subject >> 16
            if kind is RuleKind.BAN_SOURCE:
                known = self._description.host_with_key(subject)
                banned = known.name if known else str(subject)
                banned_transit[banned] = banned_transit.get(banned, 0) + entry.packet_count
                neighbour = self._border_at.get((switch, entry.match.get("in_port")))
                if neighbour is not None:  # it crossed the link and was stopped on arrival
                    counts = transit.setdefault(neighbour, dict.fromkeys(TRANSIT_COUNTS, 0))
                    counts["banned_bytes"] += entry.byte_count
                continue
            if kind in (RuleKind.BORDER_IPV4, RuleKind.BORDER_UNADMITTED):
                counts = transit.setdefault(subject, dict.fromkeys(TRANSIT_COUNTS, 0))
                if kind is RuleKind.BORDER_IPV4:
                    counts["packets"] += entry.packet_count
                    counts["bytes"] += entry.byte_count
                else:
                    counts["dropped_packets"] += entry.packet_count
                continue
            name = by_key.get(subject)
            if name is None:
                continue
            counters = hosts[name]
            if kind in (RuleKind.HOST_IPV4, RuleKind.HOST_WATCHED_PORT):
                counters.packets += entry.packet_count
                counters.bytes += entry.byte_count
            if kind is RuleKind.HOST_WATCHED_PORT:
                counters.watched_port_bytes[watched] = entry.byte_count - ETH_HEADER_BYTES * entry.packet_count
            elif kind is RuleKind.HOST_REPLY:
                counters.reply_packets += entry.packet_count
                counters.reply_bytes += entry.byte_count
            elif kind is RuleKind.HOST_ARP:
                counters.arp_packets += entry.packet_count
            elif kind is RuleKind.BAN_PORT:
                counters.banned_packets += entry.packet_count
                counters.banned_bytes += entry.byte_count
            elif kind is RuleKind.FLOW_OVERFLOW:
                counters.overflow_packets += entry.packet_count
            elif kind is RuleKind.HOST_UNADMITTED:
                counters.dropped_packets += entry.packet_count
                counters.dropped_bytes += entry.byte_count
            elif kind is RuleKind.MICROFLOW and pending.with_microflows:
                self._microflows[name].add(microflow_key(entry.match))
        for name, counters in hosts.items():
            live = self._microflows[name]
            counters.flows_total = self._flows_total[name]
            counters.packet_ins = self._packet_ins[name]
            counters.flows_active = len(live)
            counters.distinct_dsts = len({dst for _, dst, _, _, _ in live})
            counters.distinct_dst_ports = len({port for *_, port in live if port is not None})
        self._recent_installs = {k: t for k, t in self._recent_installs.items()
                                 if now - t < self.install_grace}
        return CountersSnapshot(now, pending.sent_at, self.domain, dpid, hosts, transit, banned_transit,
                                pending.with_microflows)

