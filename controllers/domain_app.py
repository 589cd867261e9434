"""The per-domain controller app: thin Ryu/os-ken glue over :class:`controllers.core.DomainCore`.

Run one process per domain::

    SDFL_NETWORK=run/network.json SDFL_DOMAIN=2 SDFL_EVENTS=run/controller-d2.jsonl \\
        osken-manager --ofp-tcp-listen-port 6655 controllers.domain_app

Environment:

``SDFL_NETWORK``  path of the network description (required)
``SDFL_DOMAIN``   this controller's domain id (required)
``SDFL_EVENTS``   JSON-lines file for readiness and per-poll host counters (required)
``SDFL_POLL_INTERVAL``  seconds between flow-stats polls (default 1.0)
``SDFL_WATCH_PORTS``  comma-separated destination ports whose bytes are reported per host
``SDFL_KEYS``     key file (:mod:`common.keys`): the keys this domain shares with every other one
and with its own inspection service; without it the controller neither sends nor accepts
notices, and accepts no inspection report
``SDFL_STATE``    file of the controller's persisted state (default: beside SDFL_EVENTS): bans,
detector, link states, notice counters. A restarted controller reads it back, so bans stay in
force and a replayed notice stays rejected
``SDFL_DEFENSE``  JSON of :class:`controllers.defense.DefenseConfig`: run FU-HST (flow features at
every poll, update features from the inspection service, bans, notices to the other domains)

Border links: a border port going down (or up) is announced to the other domains
(``LINK_DOWN``/``LINK_UP`` notices) and every domain routes around it.

Every handler only translates; a handler that raises is logged and ends the process, so the
runner sees a dead controller instead of a half-alive one. What hosts and local users can send
never raises: packet-ins go through :mod:`controllers.packets`, reports and notices through
their authenticated channels, and what fails there is counted and logged. The poll loop writes a
``heartbeat`` record every poll, by which the runner tells a live controller from a hung one.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import pickle
import socket
import time
from pathlib import Path

from controllers.compat import (
    CONFIG_DISPATCHER,
    MAIN_DISPATCHER,
    BaseApp,
    handler,
    hub,
    ofp_event,
    ofproto_v1_3,
    set_ev_cls,
)
from common.description import NetworkDescription, load_description
from common.jsonl import JsonLinesWriter
from common.keys import inspector_party, peer_controller_keys, read_keys
from controllers.coordination import LINK_TYPES, MessageError, MessageType, Notice, NoticeChannel
from controllers.core import ArpReply, DomainCore, FlowRule
from controllers.defense import Ban, DefenseConfig, DomainDefense, Log, Send, Unban
from controllers.features import flood_violations, flow_features
from controllers.ofmsg import arp_reply_out, flow_entry, flow_mod, flow_stats_request, meter_mods
from controllers.packets import PacketError, parse_packet_in
from controllers.reports import ReportChannel

LOG = logging.getLogger("sdfl.controller")
EXIT_HANDLER_FAILED = 70
LOGGED_REJECTIONS = 20
"""Unparsed packet-ins and rejected reports logged one by one; beyond that, only counted."""


def fail_loudly(method):
    """Log a raising handler with its event and end the process."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception:
            LOG.exception("domain %s: %s failed; stopping the controller", self.core.domain, method.__name__)
            self.event_log.write({"type": "fatal", "time": time.time(), "handler": method.__name__})
            logging.shutdown()
            os._exit(EXIT_HANDLER_FAILED)

    return wrapper


def _required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"controllers.domain_app: environment variable {name} is not set")
    return value


class DomainController(BaseApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        description = load_description(_required_env("SDFL_NETWORK"))
        watched = tuple(int(p) for p in os.environ.get("SDFL_WATCH_PORTS", "").split(",") if p.strip())
        self.core = DomainCore(description, int(_required_env("SDFL_DOMAIN")), watched_ports=watched)
        events = _required_env("SDFL_EVENTS")
        self.event_log = JsonLinesWriter(events)
        self.state_path = Path(os.environ.get("SDFL_STATE") or Path(events).with_suffix(".state"))
        self.poll_interval = float(os.environ.get("SDFL_POLL_INTERVAL", "1.0"))
        self.datapaths: dict[int, object] = {}  # connections that got their rules, by dpid
        self.connections: dict[int, object] = {}  # the connection that claimed each dpid first
        self.rejected = collections.Counter()  # what hosts and local users sent that failed
        self.keys = read_keys(Path(os.environ["SDFL_KEYS"])) if os.environ.get("SDFL_KEYS") else {}
        state = self._load_state()
        self.event_log.write({"type": "started", "time": time.time(), "domain": self.core.domain,
                              "pid": os.getpid(), "poll_interval": self.poll_interval,
                              "restored": state is not None,
                              "banned": sorted(state["banned"]) if state else [],
                              "down_links": sorted(state["down_links"]) if state else []})
        self._start_coordination(description, state)
        self.defense = None
        defense = os.environ.get("SDFL_DEFENSE")
        if defense:
            self._start_defense(description, DefenseConfig.from_json(defense), state)
        self.poller = hub.spawn(self._poll_loop)

    # --- persisted state -----------------------------------------------------------------
    def _load_state(self) -> dict | None:
        """The state a previous process of this controller left (its own file, written by it)."""
        if not self.state_path.exists():
            return None
        with open(self.state_path, "rb") as f:
            state = pickle.load(f)
        self.core.banned = set(state["banned"])
        for link in state["down_links"]:
            self.core.set_link(*link, up=False)
        return state

    def _save_state(self) -> None:
        state = {"banned": sorted(self.core.banned), "down_links": sorted(self.core.down_links),
                 "channel": self.channel.state() if self.channel else None, "defense": self.defense,
                 "reports_seen": self.reports.seen if self.defense is not None else 0}
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(state, f)
        tmp.replace(self.state_path)

    # --- coordination --------------------------------------------------------------------
    def _start_coordination(self, description: NetworkDescription, state: dict | None) -> None:
        domain = self.core.domain
        self.peer_controllers = {d.id: d.coordination.address for d in description.domains if d.id != domain}
        self.notice_bytes = {"sent": 0, "received": 0}
        self.channel = None
        if not self.keys:
            LOG.warning("domain %s: no SDFL_KEYS: notices are neither sent nor accepted", domain)
            return
        keys = peer_controller_keys(self.keys)
        self.channel = (NoticeChannel.restored(domain, keys, state["channel"]) if state and state["channel"]
                        else NoticeChannel(domain, keys))
        self.coordination = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.coordination.bind(description.domain(domain).coordination.address)
        hub.spawn(self._receive_loop, self.coordination, self._on_notice)

    def _announce(self, notice: Notice) -> None:
        """Send a notice to every other domain, each copy tagged for its receiver."""
        if self.channel is None:
            return
        for domain, data in self.channel.outgoing(notice).items():
            self.coordination.sendto(data, self.peer_controllers[domain])
            self.notice_bytes["sent"] += len(data)
            self.event_log.write({"type": "notice_sent", "time": time.time(), "to": domain,
                                  "kind": notice.type.name.lower(), "bytes": len(data)})
        self._save_state()  # a restarted controller must never reuse a sequence number

    # --- FU-HST --------------------------------------------------------------------------
    def _start_defense(self, description: NetworkDescription, config: DefenseConfig, state: dict | None) -> None:
        domain = self.core.domain
        self.defense = (state or {}).get("defense") or DomainDefense(domain, description, config)
        self.detector_cpu_s = 0.0
        # The last polls' counters per host: flow features are rates over ``flow_span_s``, about
        # one round period, in which every honest host sends its models once (one poll apart,
        # a host caught mid-send looks like a burst next to peers caught between rounds).
        span_polls = max(1, round(config.flow_span_s / self.poll_interval))
        self._recent_counters: dict[str, collections.deque] = collections.defaultdict(
            lambda: collections.deque(maxlen=span_polls + 1))
        key = self.keys.get(inspector_party(domain))
        if key is None:
            LOG.warning("domain %s: no key shared with the inspection service: every report is rejected", domain)
        self.reports = ReportChannel(key or b"", seq=0, seen=(state or {}).get("reports_seen", 0))
        self.inspection = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.inspection.bind(description.domain(domain).inspection.address)
        hub.spawn(self._receive_loop, self.inspection, self._on_report)

    def _timed(self, decide, *args) -> list:
        """Run a detector call, adding its CPU time to the defense's account."""
        began = time.process_time()
        actions = decide(*args)
        self.detector_cpu_s += time.process_time() - began
        return actions

    def _carry_out(self, actions: list) -> None:
        changed = False
        for action in actions:
            if isinstance(action, (Ban, Unban)):
                change = self.core.ban if isinstance(action, Ban) else self.core.unban
                self._install(change(action.node))
                changed = True
            elif isinstance(action, Send):
                self._announce(action.notice)
            elif isinstance(action, Log):
                self.event_log.write(action.record)
        if changed:
            self._save_state()

    def _install(self, rules_by_dpid: dict[int, list[FlowRule]]) -> None:
        for dpid, rules in rules_by_dpid.items():
            if dpid in self.datapaths:
                self._send_rules(self.datapaths[dpid], rules)

    def _receive_loop(self, sock, handle) -> None:
        while True:
            data, address = sock.recvfrom(65535)
            handle(data, address)

    @fail_loudly
    def _on_notice(self, data: bytes, address) -> None:
        self.notice_bytes["received"] += len(data)
        try:
            notice = self.channel.incoming(data)
        except MessageError as error:
            self.event_log.write({"type": "notice_rejected", "time": time.time(), "from": list(address),
                                  "bytes": len(data), "why": str(error)})
            LOG.warning("domain %s: rejected a notice from %s: %s", self.core.domain, address, error)
            return
        self.event_log.write({"type": "notice_received", "time": time.time(), "origin": notice.origin,
                              "kind": notice.type.name.lower(), "bytes": len(data)})
        if notice.type in LINK_TYPES:
            for a, b in notice.links:
                # Its own border links a domain knows from its own ports, first hand: a notice
                # racing a port event must not flip them back.
                if self.core.domain not in (a, b):
                    self._link_changed(a, b, notice.type is MessageType.LINK_UP, origin=notice.origin)
        elif self.defense is not None:
            self._carry_out(self._timed(self.defense.on_notice, time.time(), notice))
        self._save_state()

    def _link_changed(self, a: int, b: int, up: bool, origin: int) -> bool:
        """Route around (or back over) the border link a-b; True if that changed anything here."""
        changes = self.core.set_link(a, b, up)
        if changes:
            self._install(changes)
            self.event_log.write({"type": "link_up" if up else "link_down", "time": time.time(),
                                  "link": sorted((a, b)), "origin": origin})
        return bool(changes)

    def _reject(self, kind: str, record: dict) -> None:
        """Count what failed its parser or its tag; log the first few of each kind."""
        self.rejected[kind] += 1
        if self.rejected[kind] <= LOGGED_REJECTIONS:
            self.event_log.write({"type": kind, "time": time.time(), **record})

    @fail_loudly
    def _on_report(self, data: bytes, address) -> None:
        try:
            report = self.reports.open(data) if self.reports.key else None
        except MessageError as error:
            report, why = None, str(error)
        else:
            why = "no key shared with the inspection service"
        if report is None:
            LOG.warning("domain %s: rejected an inspection report from %s: %s", self.core.domain, address, why)
            self._reject("report_rejected", {"from": list(address), "bytes": len(data), "why": why})
            return
        now = time.time()
        self._carry_out(self._timed(self.defense.on_round, now, report.round, report.features, report.violations))
        self._save_state()  # once a round: what the detector learnt survives a restart

    def _defend_with_flows(self, snapshot) -> None:
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
        self._carry_out(self._timed(self.defense.on_poll, snapshot.time, features, violations))
        self._carry_out(self._timed(self.defense.expire, snapshot.time))
        self.event_log.write({"type": "defense_stats", "time": snapshot.time, "detector_cpu_s": self.detector_cpu_s,
                              "notice_bytes_sent": self.notice_bytes["sent"],
                              "notice_bytes_received": self.notice_bytes["received"],
                              "banned": sorted(self.defense.banned_until)})

    def _send_rules(self, datapath, rules: list[FlowRule]) -> None:
        for rule in rules:
            datapath.send_msg(flow_mod(datapath, rule, zone=self.core.domain))

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    @fail_loudly
    def on_switch_features(self, ev):
        datapath = ev.msg.datapath
        if self.core.switch_name(datapath.id) is None:
            LOG.warning("domain %s: ignoring switch with foreign dpid %#x", self.core.domain, datapath.id)
            self._reject("switch_rejected", {"dpid": datapath.id, "why": "not a switch of this domain"})
            datapath.close()
            return
        claimed = self.connections.get(datapath.id)
        if claimed is not None and claimed is not datapath and claimed.is_active:
            # First connection wins: a second one claiming a live switch's dpid is an impostor
            # (or the switch reconnecting before its old connection timed out: it retries).
            self._reject("switch_rejected", {"dpid": datapath.id, "why": "dpid already connected"})
            datapath.close()
            return
        self.connections[datapath.id] = datapath
        for meter_mod in meter_mods(datapath, self.core.base_meters(datapath.id)):
            datapath.send_msg(meter_mod)
        self._send_rules(datapath, self.core.base_rules(datapath.id))
        datapath.send_msg(datapath.ofproto_parser.OFPBarrierRequest(datapath))

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    @fail_loudly
    def on_barrier(self, ev):
        datapath = ev.msg.datapath
        if self.connections.get(datapath.id) is datapath and self.datapaths.get(datapath.id) is not datapath:
            self.datapaths[datapath.id] = datapath
            self.event_log.write({"type": "ready", "time": time.time(), "domain": self.core.domain,
                               "dpid": datapath.id, "switch": self.core.switch_name(datapath.id)})

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    @fail_loudly
    def on_port_status(self, ev):
        msg = ev.msg
        neighbour = self.core.border_neighbour(msg.datapath.id, msg.desc.port_no)
        if neighbour is None:
            return
        ofp = msg.datapath.ofproto
        up = not (msg.desc.state & ofp.OFPPS_LINK_DOWN or msg.desc.config & ofp.OFPPC_PORT_DOWN)
        if self._link_changed(self.core.domain, neighbour, up, origin=self.core.domain):
            self._announce(Notice(MessageType.LINK_UP if up else MessageType.LINK_DOWN, self.core.domain, 0, 0,
                                  links=((self.core.domain, neighbour),)))
            self._save_state()  # also without keys, when nothing is announced

    @set_ev_cls(ofp_event.EventOFPStateChange, [handler.DEAD_DISPATCHER])
    @fail_loudly
    def on_state_change(self, ev):
        datapath = ev.datapath
        if datapath.id is None or self.connections.get(datapath.id) is not datapath:
            return  # a connection that never claimed the dpid: the switch keeps its own
        del self.connections[datapath.id]
        if self.datapaths.pop(datapath.id, None) is not None:
            self.event_log.write({"type": "switch_disconnected", "time": time.time(), "dpid": datapath.id})

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    @fail_loudly
    def on_packet_in(self, ev):
        msg = ev.msg
        if self.datapaths.get(msg.datapath.id) is not msg.datapath:
            return
        try:
            info = parse_packet_in(msg.data)
        except PacketError as error:
            self._reject("packet_in_unparsed", {"dpid": msg.datapath.id, "in_port": msg.match.get("in_port"),
                                                "bytes": len(msg.data), "why": str(error)})
            return
        replies = self.core.on_packet_in(time.time(), msg.datapath.id, msg.match["in_port"], msg.table_id, info)
        for reply in replies:
            if isinstance(reply, ArpReply):
                msg.datapath.send_msg(arp_reply_out(msg.datapath, reply))
            else:
                msg.datapath.send_msg(flow_mod(msg.datapath, reply, zone=self.core.domain))

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    @fail_loudly
    def on_flow_stats(self, ev):
        msg = ev.msg
        more = bool(msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE)
        entries = [flow_entry(stat) for stat in msg.body]
        snapshot = self.core.on_flow_stats_part(time.time(), msg.datapath.id, msg.xid, entries, more)
        if snapshot is not None:
            self.event_log.write(snapshot.to_record())
            if self.defense is not None:
                self._defend_with_flows(snapshot)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    @fail_loudly
    def on_error(self, ev):
        msg = ev.msg
        raise RuntimeError(f"switch {msg.datapath.id:#x} rejected a message: type={msg.type} code={msg.code}")

    @fail_loudly
    def _poll_once(self):
        now = time.time()
        for dpid, datapath in list(self.datapaths.items()):
            if self.core.stats_request_due(now, dpid):
                request = flow_stats_request(datapath)
                datapath.set_xid(request)
                self.core.stats_request_sent(now, dpid, request.xid)
                datapath.send_msg(request)

    def _poll_loop(self):
        while True:
            self._poll_once()
            self.event_log.write({"type": "heartbeat", "time": time.time(), "switches": len(self.datapaths),
                                  "stats_timeouts": self.core.stats_timeouts, "rejected": dict(self.rejected)})
            hub.sleep(self.poll_interval)
