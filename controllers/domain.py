"""One domain's controller logic: events in, effects out, no OpenFlow library and no sockets.

:class:`DomainLogic` owns the domain's forwarding core, its FU-HST defense, its coordination
channel with the other domains, the channel of its inspection service's reports, the flow
windows the defense reads rates from and the state a restarted controller reads back. The
os-ken/Ryu app (:mod:`controllers.domain_app`) translates OpenFlow events and datagrams into
calls here and carries out what comes back, as FAUCET's ``faucet.py`` does over ``valve.py``;
``sdfl simulate`` and the detection benchmark drive the same object without a network.

Effects: :class:`ToSwitch` (a rule, meter or ARP reply for one switch), :class:`StatsRequest`,
:class:`Datagram` (a notice to another domain's controller), :class:`controllers.defense.Log` (a
line of the controller's event file, as the defense's own) and :class:`Persist` (the state to
write before anything else happens). Time is always passed in.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass

from common.description import NetworkDescription
from common.events import Event, event
from common.keys import inspector_party, peer_controller_keys
from controllers.coordination import LINK_TYPES, MessageError, MessageType, Notice, NoticeChannel
from controllers.core import ArpReply, DomainCore, FlowRule, Meter
from controllers.defense import Ban, DefenseConfig, DomainDefense, Log, Send, Unban
from controllers.features import flood_violations, flow_features
from controllers.packets import PacketError, parse_packet_in
from controllers.reports import ReportChannel

LOG = logging.getLogger("sdfl.controller")
LOGGED_REJECTIONS = 20
"""Unparsed packet-ins and rejected reports logged one by one; beyond that, only counted."""


@dataclass(frozen=True)
class ToSwitch:
    """A rule change, an ARP reply, or (a tuple of meters) the switch's whole meter table."""

    dpid: int
    message: FlowRule | ArpReply | tuple[Meter, ...]


@dataclass(frozen=True)
class StatsRequest:
    """Ask the switch for its flow statistics; report the request's xid to :meth:`DomainLogic.stats_requested`."""

    dpid: int


@dataclass(frozen=True)
class Datagram:
    address: tuple[str, int]
    data: bytes


@dataclass(frozen=True)
class Persist:
    state: dict


class DomainLogic:
    """Everything one domain's controller decides.

    ``keys``: the controller's key file (:func:`common.keys.read_keys`); without keys it
    neither sends nor accepts notices, and accepts no inspection report. ``defense``: run
    FU-HST. ``state``: what :class:`Persist` last carried, from a previous process.
    """

    def __init__(self, description: NetworkDescription, domain: int, *, keys: dict[str, bytes],
                 defense: DefenseConfig | None, poll_interval: float, watched_ports: tuple[int, ...] = (),
                 state: dict | None = None) -> None:
        self.core = DomainCore(description, domain, watched_ports=watched_ports)
        self.domain = domain
        self.poll_interval = poll_interval
        self.restored = state is not None
        self.rejected = collections.Counter()  # what hosts and local users sent that failed
        self.notice_bytes = {"sent": 0, "received": 0}
        self.peer_controllers = {d.id: d.coordination.address for d in description.domains if d.id != domain}
        state = state or {}
        self.core.banned = set(state.get("banned", ()))
        for link in state.get("down_links", ()):
            self.core.set_link(*link, up=False)
        self.channel = None
        if keys:
            peers = peer_controller_keys(keys)
            self.channel = (NoticeChannel.restored(domain, peers, state["channel"]) if state.get("channel")
                            else NoticeChannel(domain, peers))
        else:
            LOG.warning("domain %s: no keys: notices are neither sent nor accepted", domain)
        self.defense = None
        if defense is not None:
            self.defense = state.get("defense") or DomainDefense(domain, description, defense)
            self.detector_cpu_s = 0.0
            # The last polls' counters per host: flow features are rates over ``flow_span_s``,
            # about one round period, in which every honest host sends its models once (one
            # poll apart, a host caught mid-send looks like a burst next to peers between rounds).
            span_polls = max(1, round(defense.flow_span_s / poll_interval))
            self._recent_counters: dict[str, collections.deque] = collections.defaultdict(
                lambda: collections.deque(maxlen=span_polls + 1))
            key = keys.get(inspector_party(domain))
            if key is None:
                LOG.warning("domain %s: no key shared with the inspection service: every report is rejected",
                            domain)
            self.reports = ReportChannel(key or b"", seq=0, seen=state.get("reports_seen", 0))

    @property
    def banned(self) -> set[str]:
        return self.core.banned

    def state(self) -> dict:
        return {"banned": sorted(self.core.banned), "down_links": sorted(self.core.down_links),
                "channel": self.channel.state() if self.channel else None, "defense": self.defense,
                "reports_seen": self.reports.seen if self.defense is not None else 0}

    def _persist(self) -> Persist:
        return Persist(self.state())

    def started(self, now: float, pid: int) -> list:
        return [Log(event(Event.STARTED, now, domain=self.domain, pid=pid, poll_interval=self.poll_interval,
                             restored=self.restored, banned=sorted(self.core.banned),
                             down_links=sorted(self.core.down_links)))]

    def reject(self, now: float, kind: Event, record: dict) -> list:
        """Count what failed its parser, its tag or its claim; log the first few of each kind."""
        self.rejected[kind] += 1
        if self.rejected[kind] <= LOGGED_REJECTIONS:
            return [Log(event(kind, now, **record))]
        return []

    # --- switches ------------------------------------------------------------------------
    def owns(self, dpid: int) -> bool:
        return self.core.switch_name(dpid) is not None

    def switch_connected(self, dpid: int) -> list:
        """What a freshly connected switch of this domain gets: its meters, then its rules."""
        return ([ToSwitch(dpid, tuple(self.core.base_meters(dpid)))]
                + [ToSwitch(dpid, r) for r in self.core.base_rules(dpid)])

    def switch_ready(self, now: float, dpid: int) -> list:
        return [Log(event(Event.READY, now, domain=self.domain, dpid=dpid, switch=self.core.switch_name(dpid)))]

    def switch_gone(self, now: float, dpid: int) -> list:
        return [Log(event(Event.SWITCH_DISCONNECTED, now, dpid=dpid))]

    def port_status(self, now: float, dpid: int, port: int, up: bool) -> list:
        """A port of ours went up or down: a border one is routed around and announced."""
        neighbour = self.core.border_neighbour(dpid, port)
        if neighbour is None:
            return []
        effects = self._link_changed(now, self.domain, neighbour, up, origin=self.domain)
        if not effects:
            return []
        notice = Notice(MessageType.LINK_UP if up else MessageType.LINK_DOWN, self.domain, 0, 0,
                        links=((self.domain, neighbour),))
        return effects + self._announce(now, notice) + [self._persist()]

    def packet_in(self, now: float, dpid: int, in_port: int, table_id: int, data: bytes) -> list:
        try:
            packet = parse_packet_in(data)
        except PacketError as error:
            return self.reject(now, Event.PACKET_IN_UNPARSED, {"dpid": dpid, "in_port": in_port, "bytes": len(data),
                                                           "why": str(error)})
        return [ToSwitch(dpid, reply) for reply in self.core.on_packet_in(now, dpid, in_port, table_id, packet)]

    def _install(self, rules_by_dpid: dict[int, list[FlowRule]]) -> list:
        return [ToSwitch(dpid, rule) for dpid, rules in rules_by_dpid.items() for rule in rules]

    def _link_changed(self, now: float, a: int, b: int, up: bool, origin: int) -> list:
        """Route around (or back over) the border link a-b; nothing if that changed nothing here."""
        changes = self.core.set_link(a, b, up)
        if not changes:
            return []
        return self._install(changes) + [Log(event(Event.LINK_UP if up else Event.LINK_DOWN, now,
                                                      link=sorted((a, b)), origin=origin))]

    # --- flow statistics -----------------------------------------------------------------
    def poll(self, now: float, dpids) -> list:
        return [StatsRequest(dpid) for dpid in dpids if self.core.stats_request_due(now, dpid)]

    def stats_requested(self, now: float, dpid: int, xid: int) -> None:
        self.core.stats_request_sent(now, dpid, xid)

    def heartbeat(self, now: float, switches: int) -> list:
        return [Log(event(Event.HEARTBEAT, now, switches=switches, stats_timeouts=self.core.stats_timeouts,
                             rejected=dict(self.rejected)))]

    def flow_stats(self, now: float, dpid: int, xid: int, entries: list, more: bool) -> list:
        snapshot = self.core.on_flow_stats_part(now, dpid, xid, entries, more)
        if snapshot is None:
            return []
        effects = [Log(snapshot.to_record())]
        if self.defense is not None:
            effects += self._defend_with_flows(snapshot)
        return effects

    def _defend_with_flows(self, snapshot) -> list:
        features, violations = {}, {}
        for name, counters in sorted(snapshot.hosts.items()):
            recent = self._recent_counters[name]
            recent.append((snapshot.requested_at, vars(counters)))
            (since, previous), (now, current) = recent[0], recent[-1]
            if now > since:
                features[name] = flow_features(previous, current, now - since)
            if len(recent) > 1:  # against the poll before: one flooding poll, one violation
                (before, last), (now, current) = recent[-2], recent[-1]
                if now > before and (floods := flood_violations(last, current, now - before)):
                    violations[name] = floods
        effects = self._carry_out(snapshot.time, self._timed(self.defense.on_poll, snapshot.time, features,
                                                             violations))
        effects += self._carry_out(snapshot.time, self._timed(self.defense.expire, snapshot.time))
        return effects + [Log(event(Event.DEFENSE_STATS, snapshot.time, detector_cpu_s=self.detector_cpu_s,
                                       notice_bytes_sent=self.notice_bytes["sent"],
                                       notice_bytes_received=self.notice_bytes["received"],
                                       banned=sorted(self.defense.banned_until)))]

    # --- the defense's channels ----------------------------------------------------------
    def _timed(self, decide, *args) -> list:
        """Run a detector call, adding its CPU time to the defense's account."""
        began = time.process_time()
        actions = decide(*args)
        self.detector_cpu_s += time.process_time() - began
        return actions

    def _carry_out(self, now: float, actions: list) -> list:
        effects: list = []
        for action in actions:
            if isinstance(action, (Ban, Unban)):
                change = self.core.ban if isinstance(action, Ban) else self.core.unban
                effects += self._install(change(action.node))
            elif isinstance(action, Send):
                effects += self._announce(now, action.notice)
            elif isinstance(action, Log):
                effects.append(Log(action.record))
        if any(isinstance(a, (Ban, Unban)) for a in actions):
            effects.append(self._persist())
        return effects

    def _announce(self, now: float, notice: Notice) -> list:
        """A notice to every other domain, each copy tagged for its receiver."""
        if self.channel is None:
            return []
        effects: list = []
        for domain, data in self.channel.outgoing(notice).items():
            self.notice_bytes["sent"] += len(data)
            effects += [Datagram(self.peer_controllers[domain], data),
                        Log(event(Event.NOTICE_SENT, now, to=domain, kind=notice.type.name.lower(),
                                     bytes=len(data)))]
        return effects + [self._persist()]  # a restarted controller must never reuse a sequence number

    def notice(self, now: float, data: bytes, address) -> list:
        """A datagram on the coordination port: another domain's notice, or a forgery."""
        self.notice_bytes["received"] += len(data)
        if self.channel is None:
            return self.reject(now, Event.NOTICE_REJECTED, {"from": list(address), "bytes": len(data),
                                                        "why": "no keys shared with the other domains"})
        try:
            notice = self.channel.incoming(data)
        except MessageError as error:
            LOG.warning("domain %s: rejected a notice from %s: %s", self.domain, address, error)
            return [Log(event(Event.NOTICE_REJECTED, now, **{"from": list(address)}, bytes=len(data),
                                 why=str(error)))]
        effects = [Log(event(Event.NOTICE_RECEIVED, now, origin=notice.origin, kind=notice.type.name.lower(),
                                bytes=len(data)))]
        if notice.type in LINK_TYPES:
            for a, b in notice.links:
                # Its own border links a domain knows from its own ports, first hand: a notice
                # racing a port event must not flip them back.
                if self.domain not in (a, b):
                    effects += self._link_changed(now, a, b, notice.type is MessageType.LINK_UP, notice.origin)
        elif self.defense is not None:
            effects += self._carry_out(now, self._timed(self.defense.on_notice, now, notice))
        return effects + [self._persist()]

    def report(self, now: float, data: bytes, address) -> list:
        """A datagram on the inspection port: the inspection service's sealed report, or a forgery."""
        if self.defense is None:
            return self.reject(now, Event.REPORT_REJECTED, {"from": list(address), "bytes": len(data),
                                                            "why": "this controller runs no defense"})
        try:
            report = self.reports.open(data) if self.reports.key else None
        except MessageError as error:
            report, why = None, str(error)
        else:
            why = "no key shared with the inspection service"
        if report is None:
            LOG.warning("domain %s: rejected an inspection report from %s: %s", self.domain, address, why)
            return self.reject(now, Event.REPORT_REJECTED, {"from": list(address), "bytes": len(data), "why": why})
        effects = self._carry_out(now, self._timed(self.defense.on_round, now, report.round, report.features,
                                                   report.violations))
        return effects + [self._persist()]  # once a round: what the detector learnt survives a restart
