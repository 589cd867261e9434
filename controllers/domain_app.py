"""The per-domain controller app: thin Ryu/os-ken glue over :class:`controllers.domain.DomainLogic`.

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
link states, report counters, and beside it (suffix ``.defense``) the detector's. A restarted
controller reads them back, so bans stay in force
``SDFL_LEDGER``   the domain's ledger file (default: SDFL_EVENTS with suffix ``.ledger``): every
signed decision it holds, appended as a JSON line (:mod:`controllers.ledger`); a restarted
controller reads it back, then catches up from its peers
``SDFL_DEFENSE``  JSON of :class:`controllers.defense.DefenseConfig`: run FU-HST (flow features at
every poll, update features from the inspection service, bans, notices to the other domains)
``SDFL_BYZANTINE`` JSON of :class:`controllers.byzantine.ByzantinePlan`: this controller is a
compromised one (a scenario's ``byzantine-domain`` attack) and commits its acts

Border links: a border port going down (or up) is announced to the other domains
(``LINK_DOWN``/``LINK_UP`` decisions) and every domain routes around it.

Every handler only translates events into calls on the domain logic and its effects into
OpenFlow messages, datagrams and file lines; a handler that raises is logged and ends the process, so the
runner sees a dead controller instead of a half-alive one. What hosts and local users can send
never raises: packet-ins go through :mod:`controllers.packets`, reports and notices through
their authenticated channels, and what fails there is counted and logged. The poll loop writes a
``heartbeat`` record every poll, by which the runner tells a live controller from a hung one.
"""

from __future__ import annotations

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
from common.description import load_description
from common.events import Event, event
from common.jsonl import JsonLinesWriter
from common.keys import read_keys
from controllers.byzantine import ByzantinePlan
from controllers.core import ArpReply, FlowRule
from controllers.defense import DefenseConfig, Log
from controllers.domain import Datagram, DomainLogic, LedgerLine, Persist, StatsRequest, ToSwitch, defense_state_path
from controllers.ledger import read_ledger
from controllers.ofmsg import arp_reply_out, flow_entry, flow_mod, flow_stats_request, meter_mods

LOG = logging.getLogger("sdfl.controller")
EXIT_HANDLER_FAILED = 70


def fail_loudly(method):
    """Log a raising handler with its event and end the process."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception:
            LOG.exception("domain %s: %s failed; stopping the controller", self.logic.domain, method.__name__)
            self.event_log.write(event(Event.FATAL, time.time(), handler=method.__name__))
            logging.shutdown()
            os._exit(EXIT_HANDLER_FAILED)

    return wrapper


def _read_pickle(path: Path):
    """What this controller's previous process pickled at ``path`` (its own file), or None."""
    if not path.exists():
        return None
    with open(path, "rb") as f:
        return pickle.load(f)


def _write_pickle(path: Path, value) -> None:
    """Replace ``path`` whole: a controller killed mid-write leaves the previous file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(value, f)
    tmp.replace(path)


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
        domain = int(_required_env("SDFL_DOMAIN"))
        events = _required_env("SDFL_EVENTS")
        self.event_log = JsonLinesWriter(events)
        self.state_path = Path(os.environ.get("SDFL_STATE") or Path(events).with_suffix(".state"))
        ledger_path = Path(os.environ.get("SDFL_LEDGER") or Path(events).with_suffix(".ledger"))
        held = tuple(bytes.fromhex(line["entry"]) for line in read_ledger(ledger_path))
        self.ledger_file = JsonLinesWriter(ledger_path)
        defense = os.environ.get("SDFL_DEFENSE")
        self.logic = DomainLogic(
            description, domain,
            keys=read_keys(Path(os.environ["SDFL_KEYS"])) if os.environ.get("SDFL_KEYS") else {},
            defense=DefenseConfig.from_json(defense) if defense else None,
            poll_interval=float(os.environ.get("SDFL_POLL_INTERVAL", "1.0")),
            watched_ports=tuple(int(p) for p in os.environ.get("SDFL_WATCH_PORTS", "").split(",") if p.strip()),
            state=self._load_state(), ledger=held,
            byzantine=(ByzantinePlan.from_json(os.environ["SDFL_BYZANTINE"]) if os.environ.get("SDFL_BYZANTINE")
                       else None))
        self.datapaths: dict[int, object] = {}  # connections that got their rules, by dpid
        self.connections: dict[int, object] = {}  # the connection that claimed each dpid first
        self.sockets: dict[str, socket.socket] = {}
        view = description.domain(domain)
        if self.logic.ledger is not None:  # listening first: the peers' answers to a catch-up come at once
            self._listen("coordination", view.coordination.address, self._on_notice)
        if self.logic.defense is not None:
            self._listen("inspection", view.inspection.address, self._on_report)
        self._apply(self.logic.started(time.time(), os.getpid()))
        self.poller = hub.spawn(self._poll_loop)

    def _load_state(self) -> dict | None:
        """The state a previous process of this controller left (its own files, written by it)."""
        state = _read_pickle(self.state_path)
        defense = _read_pickle(defense_state_path(self.state_path))
        if defense is not None:
            state = {**(state or {}), "defense": defense}
        return state

    def _save_state(self, state: dict, with_defense: bool) -> None:
        """The state apart from the detector's, and the detector's when :class:`Persist` says so."""
        if with_defense:
            _write_pickle(defense_state_path(self.state_path), state.get("defense"))
        _write_pickle(self.state_path, {k: v for k, v in state.items() if k != "defense"})

    def _listen(self, name: str, address: tuple[str, int], handle) -> None:
        sock = self.sockets[name] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(address)
        hub.spawn(self._receive_loop, sock, handle)

    def _receive_loop(self, sock, handle) -> None:
        while True:
            data, address = sock.recvfrom(65535)
            handle(data, address)

    # --- effects out ---------------------------------------------------------------------
    def _apply(self, effects: list, connection=None) -> None:
        """Carry out the logic's effects; switch messages go to ``connection`` or the ready switch
        of their dpid (none yet: its base rules will carry the state). State is written last, once."""
        persist, with_defense = None, False
        for effect in effects:
            if isinstance(effect, ToSwitch):
                datapath = connection or self.datapaths.get(effect.dpid)
                if datapath is not None:
                    self._send(datapath, effect.message)
            elif isinstance(effect, Log):
                self.event_log.write(effect.record)
            elif isinstance(effect, LedgerLine):
                self.ledger_file.write(effect.record)
            elif isinstance(effect, Datagram):
                self.sockets["coordination"].sendto(effect.data, effect.address)
            elif isinstance(effect, StatsRequest):
                datapath = self.datapaths[effect.dpid]
                request = flow_stats_request(datapath, effect.with_microflows)
                datapath.set_xid(request)
                self.logic.stats_requested(time.time(), effect.dpid, request.xid, effect.with_microflows)
                datapath.send_msg(request)
            elif isinstance(effect, Persist):
                persist, with_defense = effect, with_defense or effect.with_defense
        if persist is not None:
            self._save_state(persist.state, with_defense)

    def _send(self, datapath, message) -> None:
        if isinstance(message, FlowRule):
            datapath.send_msg(flow_mod(datapath, message, zone=self.logic.domain))
        elif isinstance(message, ArpReply):
            datapath.send_msg(arp_reply_out(datapath, message))
        else:
            for meter_mod in meter_mods(datapath, list(message)):
                datapath.send_msg(meter_mod)

    # --- events in -----------------------------------------------------------------------
    @fail_loudly
    def _on_notice(self, data: bytes, address) -> None:
        self._apply(self.logic.notice(time.time(), data, address))

    @fail_loudly
    def _on_report(self, data: bytes, address) -> None:
        self._apply(self.logic.report(time.time(), data, address))

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    @fail_loudly
    def on_switch_features(self, ev):
        datapath = ev.msg.datapath
        if not self.logic.owns(datapath.id):
            LOG.warning("domain %s: ignoring switch with foreign dpid %#x", self.logic.domain, datapath.id)
            self._apply(self.logic.reject(time.time(), Event.SWITCH_REJECTED,
                                          {"dpid": datapath.id, "why": "not a switch of this domain"}))
            datapath.close()
            return
        claimed = self.connections.get(datapath.id)
        if claimed is not None and claimed is not datapath and claimed.is_active:
            # First connection wins: a second one claiming a live switch's dpid is an impostor
            # (or the switch reconnecting before its old connection timed out: it retries).
            self._apply(self.logic.reject(time.time(), Event.SWITCH_REJECTED,
                                          {"dpid": datapath.id, "why": "dpid already connected"}))
            datapath.close()
            return
        self.connections[datapath.id] = datapath
        self._apply(self.logic.switch_connected(datapath.id), connection=datapath)
        datapath.send_msg(datapath.ofproto_parser.OFPBarrierRequest(datapath))

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    @fail_loudly
    def on_barrier(self, ev):
        datapath = ev.msg.datapath
        if self.connections.get(datapath.id) is datapath and self.datapaths.get(datapath.id) is not datapath:
            self.datapaths[datapath.id] = datapath
            self._apply(self.logic.switch_ready(time.time(), datapath.id))

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    @fail_loudly
    def on_port_status(self, ev):
        msg = ev.msg
        ofp = msg.datapath.ofproto
        up = not (msg.desc.state & ofp.OFPPS_LINK_DOWN or msg.desc.config & ofp.OFPPC_PORT_DOWN)
        self._apply(self.logic.port_status(time.time(), msg.datapath.id, msg.desc.port_no, up))

    @set_ev_cls(ofp_event.EventOFPStateChange, [handler.DEAD_DISPATCHER])
    @fail_loudly
    def on_state_change(self, ev):
        datapath = ev.datapath
        if datapath.id is None or self.connections.get(datapath.id) is not datapath:
            return  # a connection that never claimed the dpid: the switch keeps its own
        del self.connections[datapath.id]
        if self.datapaths.pop(datapath.id, None) is not None:
            self._apply(self.logic.switch_gone(time.time(), datapath.id))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    @fail_loudly
    def on_packet_in(self, ev):
        msg = ev.msg
        if self.datapaths.get(msg.datapath.id) is not msg.datapath:
            return
        self._apply(self.logic.packet_in(time.time(), msg.datapath.id, msg.match.get("in_port"), msg.table_id,
                                         msg.data))

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    @fail_loudly
    def on_flow_stats(self, ev):
        msg = ev.msg
        more = bool(msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE)
        self._apply(self.logic.flow_stats(time.time(), msg.datapath.id, msg.xid,
                                          [flow_entry(stat) for stat in msg.body], more))

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    @fail_loudly
    def on_flow_removed(self, ev):
        msg = ev.msg
        if self.datapaths.get(msg.datapath.id) is msg.datapath:
            self.logic.flow_removed(msg.datapath.id, msg.cookie, dict(msg.match.items()))

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    @fail_loudly
    def on_error(self, ev):
        msg = ev.msg
        raise RuntimeError(f"switch {msg.datapath.id:#x} rejected a message: type={msg.type} code={msg.code}")

    @fail_loudly
    def _poll_once(self):
        self._apply(self.logic.poll(time.time(), list(self.datapaths)))

    def _poll_loop(self):
        while True:
            self._poll_once()
            self._apply(self.logic.heartbeat(time.time(), len(self.datapaths)))
            hub.sleep(self.logic.poll_interval)
