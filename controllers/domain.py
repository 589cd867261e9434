"""One domain's controller logic: events in, effects out, no OpenFlow library and no sockets.

:class:`DomainLogic` owns the domain's forwarding core, its FU-HST defense, its ledger of the
domains' signed decisions, the channel of its inspection service's reports, the flow
windows the defense reads rates from and the state a restarted controller reads back. The
os-ken/Ryu app (:mod:`controllers.domain_app`) translates OpenFlow events and datagrams into
calls here and carries out what comes back, as FAUCET's ``faucet.py`` does over ``valve.py``;
``sdfl simulate`` and the detection benchmark drive the same object without a network.

Effects: :class:`ToSwitch` (a rule, meter or ARP reply for one switch), :class:`StatsRequest`,
:class:`Datagram` (a signed decision or heads message to another domain's controller),
:class:`controllers.defense.Log` (a line of the controller's event file, as the defense's own),
:class:`LedgerLine` (a decision appended to the domain's ledger file) and :class:`Persist` (the
state to write before anything else happens). Time is always passed in.

Between domains (:mod:`controllers.ledger`): the domain signs each of its decisions into its own
chain and sends it to every other domain; a receiver appends what verifies and extends its
origin's chain, relays it once to the domains other than its origin (so a decision withheld from
one domain, or signed twice, still reaches it and the two copies meet), and enforces what of the
ledger is in its origin's authority. A restarted controller first asks its peers for what it
missed (a signed heads message), as does one that sees a gap in a chain.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

from common.description import NetworkDescription
from common.events import Event, event
from common.keys import SIGNING, domain_public_keys, inspector_party
from controllers.byzantine import ByzantineController, ByzantinePlan
from controllers.coordination import MessageError, MessageType, Notice, Stream
from controllers.core import ArpReply, DomainCore, FlowRule, Meter
from controllers.defense import Ban, DefenseConfig, DomainDefense, Log, Send, Unban
from controllers.features import flood_violations, flow_features
from controllers.ledger import (HEADS_MAGIC, Authority, Decision, Duplicate, Equivocation, Ledger, decode_decision,
                                decode_heads, default_quorum)
from controllers.packets import PacketError, parse_packet_in
from controllers.reports import ReportChannel

LOG = logging.getLogger("sdfl.controller")
LOGGED_REJECTIONS = 20
DEFENSE_CHECKPOINT_S = 10.0
"""What the detector learnt is saved at most this often (and with every ban or unban): its trees
pickle to about 0.6 MB in 8-9 ms, a fifth of a controller's CPU at 8 x 12 when saved every round.
A restarted controller loses at most this much of its learning, never a ban."""
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
    with_microflows: bool
    """Every rule; otherwise all but those with :data:`controllers.core.POLLED_APART` in their cookie."""


@dataclass(frozen=True)
class Datagram:
    address: tuple[str, int]
    data: bytes


@dataclass(frozen=True)
class Persist:
    """What a restarted controller resumes from. ``with_defense``: write the detector's state
    (``state["defense"]``) too. It is most of the bytes (two forests of trees, about 16 ms to
    pickle) and is written once a round and with each ban or unban it decides, not with every
    notice (at 8 x 12, notices made the controllers pickle their trees 65 times a run each)."""

    state: dict
    with_defense: bool = False


def defense_state_path(state_path: Path) -> Path:
    """The detector's state file, beside the controller's own (:class:`Persist`)."""
    return state_path.with_name(state_path.name + ".defense")


@dataclass(frozen=True)
class LedgerLine:
    """One decision appended to the ledger file (:func:`ledger_line`)."""

    record: dict


def ledger_line(decision: Decision, now: float, refusal: str | None) -> dict:
    """The ledger file's line of a decision: the signed bytes, and what they say for a reader."""
    notice = decision.notice
    return {"origin": decision.origin, "seq": decision.seq, "kind": notice.type.name.lower(),
            "decided_at": decision.decided_at, "held_at": now, "in_force": refusal is None, "refusal": refusal,
            "entry": decision.raw.hex()}


class DomainLogic:
    """Everything one domain's controller decides.

    ``keys``: the controller's key file (:func:`common.keys.read_keys`); without keys it
    neither sends nor accepts decisions, and accepts no inspection report. ``defense``: run
    FU-HST. ``state``: what :class:`Persist` last carried, from a previous process; ``ledger``:
    the decisions its ledger file holds; ``byzantine``: the acts of a compromised controller
    (:mod:`controllers.byzantine`, a scenario's attack), committed as its inspection reports rounds.
    """

    def __init__(self, description: NetworkDescription, domain: int, *, keys: dict[str, bytes],
                 defense: DefenseConfig | None, poll_interval: float, watched_ports: tuple[int, ...] = (),
                 state: dict | None = None, ledger: tuple[bytes, ...] = (),
                 byzantine: ByzantinePlan | None = None) -> None:
        self.core = DomainCore(description, domain, watched_ports=watched_ports)
        self.domain = domain
        self.poll_interval = poll_interval
        self.restored = state is not None
        self.rejected = collections.Counter()  # what hosts and local users sent that failed
        self.notice_bytes = {"sent": 0, "received": 0}
        self._duplicates_logged: set[tuple[int, int]] = set()  # (origin, seq) whose duplicate is logged
        self.peer_controllers = {d.id: d.coordination.address for d in description.domains if d.id != domain}
        self._peer_at = {address: peer for peer, address in self.peer_controllers.items()}
        state = state or {}
        self.core.banned = set(state.get("banned", ()))
        for link in state.get("down_links", ()):
            self.core.set_link(*link, up=False)
        self.ledger = None
        self.remote_drops: dict = {}
        if SIGNING in keys:
            self.ledger = Ledger(domain, keys[SIGNING], domain_public_keys(keys), ledger)
            self.authority = Authority(description, domain, (defense.accusation_quorum if defense else 0)
                                       or default_quorum(len(description.domains)))
            self.remote_drops = self.authority.in_force(self.ledger)[0]
        else:
            LOG.warning("domain %s: no keys: decisions are neither sent nor accepted", domain)
        self.byzantine = None
        if byzantine is not None:
            if self.ledger is None or defense is None:
                raise ValueError("a Byzantine controller signs decisions (keys) and acts on its rounds (a defense)")
            self.byzantine = ByzantineController(byzantine, description, domain, self.ledger, self.authority,
                                                 list(self.peer_controllers), self.core.border_links)
        self.defense = None
        if defense is not None:
            self.defense = state.get("defense") or DomainDefense(domain, description, defense)
            self.detector_cpu_s = 0.0
            self._checkpointed_at = -math.inf
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
                "defense": self.defense, "reports_seen": self.reports.seen if self.defense is not None else 0}

    def _persist(self, with_defense: bool = False) -> Persist:
        return Persist(self.state(), with_defense)

    def started(self, now: float, pid: int) -> list:
        """The start's record; first, every peer is asked for what this controller missed (a
        restarted one may have persisted nothing before it died; a first start costs a heads
        message per peer)."""
        catch_up = self._ask_peers(now) if self.ledger else []
        return catch_up + [Log(event(Event.STARTED, now, domain=self.domain, pid=pid, poll_interval=self.poll_interval,
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
        return [StatsRequest(dpid, self.core.next_poll_takes_microflows(dpid)) for dpid in dpids
                if self.core.stats_request_due(now, dpid)]

    def stats_requested(self, now: float, dpid: int, xid: int, with_microflows: bool) -> None:
        self.core.stats_request_sent(now, dpid, xid, with_microflows)

    def flow_removed(self, dpid: int, cookie: int, match: dict) -> None:
        self.core.on_flow_removed(dpid, cookie, match)

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
        if self.byzantine is not None:
            actions = self._shielded(now, actions)
        for action in actions:
            if isinstance(action, (Ban, Unban)):
                change = self.core.ban if isinstance(action, Ban) else self.core.unban
                effects += self._install(change(action.node))
            elif isinstance(action, Send):
                effects += self._announce(now, action.notice)
            elif isinstance(action, Log):
                effects.append(Log(action.record))
        if any(isinstance(a, (Ban, Unban)) for a in actions):
            self._checkpointed_at = now
            effects.append(self._persist(with_defense=True))
        return effects

    def _announce(self, now: float, notice: Notice) -> list:
        """This domain's decision, signed into its chain and sent to every other domain."""
        if self.ledger is None:
            return []
        decision = self.ledger.decide(notice, now)
        return ([LedgerLine(ledger_line(decision, now, self.authority.refusal(decision)))]
                + self._send_to(now, decision, sorted(self.peer_controllers)) + self._enforce(now)
                + [self._persist()])

    def _send_to(self, now: float, decision: Decision, peers) -> list:
        return [effect for peer in peers for effect in self._sent(now, peer, decision)]

    def _sent(self, now: float, peer: int, decision: Decision) -> list:
        return self._datagram(now, peer, decision.raw, decision.notice.type.name.lower())

    def _datagram(self, now: float, peer: int, data: bytes, kind: str) -> list:
        """Bytes to another domain's controller, counted and logged (the inter-domain cost)."""
        self.notice_bytes["sent"] += len(data)
        return [Datagram(self.peer_controllers[peer], data),
                Log(event(Event.NOTICE_SENT, now, to=peer, kind=kind, bytes=len(data)))]

    def _ask_peers(self, now: float) -> list:
        heads = self.ledger.heads_message()
        return [effect for peer in sorted(self.peer_controllers)
                for effect in self._datagram(now, peer, heads, "heads")]

    def _shielded(self, now: float, actions: list) -> list:
        """A compromised controller's defense, less the bans of its own attackers it shields."""
        round_ = self.defense.round
        shielded = {a.node for a in actions if isinstance(a, Ban) and self.byzantine.shields(round_, a.node)}
        if not shielded:
            return actions
        names = {self.byzantine.description.host(node).key: node for node in shielded}
        kept = [a for a in actions if not (
            (isinstance(a, Ban) and a.node in shielded)
            or (isinstance(a, Log) and a.record["type"] == Event.BAN and a.record["node"] in shielded)
            or (isinstance(a, Send) and a.notice.type is MessageType.BAN
                and any(e.node_key in names for e in a.notice.entries)))]
        return kept + [Log(event(Event.BYZANTINE_ACT, now, act="shield", round=round_, origin=self.domain, seq=0,
                                 to=[], kind="ban", expected="dropped", target=node)) for node in sorted(shielded)]

    def _byzantine_acts(self, now: float, round_: int) -> list:
        """A compromised controller's acts of the round, each logged as ground truth."""
        effects: list = []
        for act in self.byzantine.acts(now, round_):
            if act.appended is not None:
                effects.append(LedgerLine(ledger_line(act.appended, now, self.authority.refusal(act.appended))))
            for peer, raw in act.sends:
                effects += self._sent(now, peer, decode_decision(raw))
            effects.append(Log(event(Event.BYZANTINE_ACT, now, **act.record)))
        return effects

    def notice(self, now: float, data: bytes, address) -> list:
        """A datagram on the coordination port: another domain's decision (first hand or
        relayed), its heads message, or a forgery."""
        self.notice_bytes["received"] += len(data)
        origin = {"from": list(address), "bytes": len(data), **_claimed(data)}
        if self.ledger is None:
            return self.reject(now, Event.NOTICE_REJECTED, {**origin, "why": "no keys shared with the other domains"})
        try:
            if data[:len(HEADS_MAGIC)] == HEADS_MAGIC:
                return self._heads(now, data)
            received = self.ledger.receive(data)
        except Duplicate as duplicate:
            # Relays make duplicates the normal case: logged once per decision (the log stays
            # bounded by the ledger), counted always.
            self.rejected[Event.NOTICE_DUPLICATE] += 1
            held = (origin["claimed_origin"], origin["claimed_seq"])
            if held in self._duplicates_logged:
                return []
            self._duplicates_logged.add(held)
            return [Log(event(Event.NOTICE_DUPLICATE, now, **origin, why=str(duplicate)))]
        except Equivocation as proof:
            LOG.warning("domain %s: %s", self.domain, proof)
            return [Log(event(Event.NOTICE_REJECTED, now, **origin, why=str(proof))),
                    Log(event(Event.EQUIVOCATION, now, origin=proof.other.origin, seq=proof.other.seq,
                              held=proof.held.raw.hex(), other=proof.other.raw.hex()))] + self._enforce(now)
        except MessageError as error:
            LOG.warning("domain %s: rejected a notice from %s: %s", self.domain, address, error)
            return [Log(event(Event.NOTICE_REJECTED, now, **origin, why=str(error)))]
        effects: list = []
        if received.gap_in is not None:  # ask every peer: the origin may be withholding
            effects += self._ask_peers(now)
        for decision in received.appended:
            refusal = self.authority.refusal(decision)
            effects += [LedgerLine(ledger_line(decision, now, refusal)),
                        Log(event(Event.NOTICE_RECEIVED, now, origin=decision.origin, seq=decision.seq,
                                  kind=decision.notice.type.name.lower(), bytes=len(decision.raw)))]
            if refusal is not None:
                effects.append(Log(event(Event.DECISION_REFUSED, now, origin=decision.origin, seq=decision.seq,
                                         kind=decision.notice.type.name.lower(), why=refusal)))
            relay_to = [p for p in sorted(self.peer_controllers) if p != decision.origin]
            effects += self._send_to(now, decision, relay_to)
        return effects + self._enforce(now) + [self._persist()]

    def _heads(self, now: float, data: bytes) -> list:
        """A peer's heads: send it what it lacks, and ask back if it holds what we lack."""
        heads = decode_heads(data, self.ledger.verifiers)
        if heads.requester not in self.peer_controllers:
            raise MessageError(f"heads message of domain {heads.requester}, not a peer of domain {self.domain}")
        missing = self.ledger.missing(heads)
        asked_back = self.ledger.behind(heads)
        effects = [e for raw in missing for e in self._sent(now, heads.requester, decode_decision(raw))]
        if asked_back:
            effects += self._datagram(now, heads.requester, self.ledger.heads_message(), "heads")
        return effects + [Log(event(Event.LEDGER_SYNC, now, peer=heads.requester, sent=len(missing),
                                    asked_back=asked_back))]

    def _enforce(self, now: float) -> list:
        """Carry out what of the ledger is in force here: remote hosts dropped at this domain's
        borders, border links of other domains routed around. Its own links it knows first hand."""
        dropped, down = self.authority.in_force(self.ledger)
        effects: list = []
        for node, drop in dropped.items():
            if node not in self.remote_drops:
                effects += self._install(self.core.ban(node)) + [Log(event(
                    Event.BAN, now, domain=self.domain, node=node, stream=drop.evidence.stream.name.lower(),
                    round=drop.decision.notice.round, score=drop.evidence.score,
                    evidence=[drop.evidence.m, drop.evidence.n], features={},
                    origin=drop.by[0] if len(drop.by) == 1 else list(drop.by),
                    decided_at=drop.decision.decided_at))]
        for node in self.remote_drops:
            if node not in dropped:
                effects += self._install(self.core.unban(node)) + [Log(event(
                    Event.UNBAN, now, domain=self.domain, node=node, origin=None))]
        self.remote_drops = dropped
        for link in self.core.border_links:
            if self.domain not in link and (link in down) != (link in self.core.down_links):
                effects += self._link_changed(now, *link, up=link not in down, origin=list(link))
        return effects

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
        remote = {n: f for n, f in report.remote.items() if n not in self.remote_drops}  # of round - 1
        # Remote senders dropped on their updates: poisoned from their evidence's first round on.
        poisoned = {n: drop.decision.notice.round - drop.evidence.n + 1 for n, drop in self.remote_drops.items()
                    if drop.evidence.stream is Stream.UPDATE and drop.decision.notice.round}
        effects = self._carry_out(now, self._timed(self.defense.on_round, now, report.round, report.features,
                                                   report.violations, remote, report.inputs, poisoned))
        if self.byzantine is not None:
            effects += self._byzantine_acts(now, report.round)
        checkpoint = (now - self._checkpointed_at >= DEFENSE_CHECKPOINT_S
                      or any(isinstance(e, Persist) and e.with_defense for e in effects))  # a ban's
        if checkpoint:
            self._checkpointed_at = now
        return effects + [self._persist(with_defense=checkpoint)]


def _claimed(data: bytes) -> dict:
    """The origin and number a datagram claims, for the log of its rejection (if it has them)."""
    try:
        decision = decode_decision(data)
    except MessageError:
        return {}
    return {"claimed_origin": decision.origin, "claimed_seq": decision.seq}
