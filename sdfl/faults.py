"""``[[faults]]``: what a scenario breaks, when, and for how long; and the runner's injector.

Kinds (``target`` in brackets; ``duration`` in seconds, optional):

``kill-agent`` [node]          SIGKILL the agent; after ``duration`` (default 2 s) it is started
                               again, resumes from its last checkpoint and rejoins its neighbours.
``stall-agent`` [node]         SIGSTOP the agent for ``duration`` (default 5 s), then SIGCONT: its
                               neighbours must not wait for it beyond their round deadline.
``kill-controller`` [domain]   SIGKILL the domain's controller; after ``duration`` (default 5 s)
                               it is started again, reads its persisted state and re-installs its
                               rules (its switches forward meanwhile: fail mode secure).
``cut-link`` [d1-d2]           take the border link between two domains down for ``duration``
                               (default 10 s); every domain routes around it (ring, mesh).
``stall-controller`` [domain]  SIGSTOP the domain's controller for ``duration`` (default 6 s):
                               no polls, no bans meanwhile; the runner must name the stall.
``stall-inspector`` [domain]   SIGSTOP the domain's inspection service (default 6 s): its
                               reports come late.
``stall-vswitchd`` [ovs]       SIGSTOP ovs-vswitchd (default 6 s): no frame moves anywhere;
                               the runner must name the stall and no round may look fast.

Each fault fires when the network reaches ``at_round`` (every live node finished the round
before). Everything a fault did is logged to ``events.jsonl`` and summarised in
``summary.json["faults"]``, with whether the run survived it.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field

from common.events import Event, of_kind, read_events
from sdfl.records import vswitchd_pid
from common.schema import Field, ScenarioError, coerce, positive

KINDS = {"kill-agent": 2.0, "stall-agent": 5.0, "kill-controller": 5.0, "cut-link": 10.0,
         "stall-controller": 6.0, "stall-inspector": 6.0, "stall-vswitchd": 6.0}
"""Fault kinds and their default durations (seconds)."""
LOG = logging.getLogger(__name__)
AGENT_KINDS = ("kill-agent", "stall-agent")
DOMAIN_KINDS = ("kill-controller", "stall-controller", "stall-inspector")
SERVICE_STALLS = {"stall-controller": "controller", "stall-inspector": "inspector", "stall-vswitchd": "ovs-vswitchd"}
TARGET_EXAMPLES = {"kill-agent": "a node, e.g. d1h2", "stall-agent": "a node, e.g. d1h2",
                   "kill-controller": "a domain, e.g. d2", "cut-link": "a border link, e.g. d1-d2",
                   "stall-controller": "a domain, e.g. d2", "stall-inspector": "a domain, e.g. d2",
                   "stall-vswitchd": "ovs"}


def normalize_fault(entry: dict, where: str) -> dict:
    """One ``[[faults]]`` table checked and completed (its target is checked against the network
    when the run is planned, :func:`resolve_faults`)."""
    if not isinstance(entry, dict):
        raise ScenarioError(f"{where} must be a table of settings")
    kind = entry.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ScenarioError(f"{where}.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    fields = {"kind": Field(str, kind), "target": Field(str, ""), "at_round": Field(int, 1, positive),
              "duration": Field(float, KINDS[kind], positive, "seconds")}
    unknown = sorted(set(entry) - set(fields))
    if unknown:
        raise ScenarioError(f"{where}: unknown key '{unknown[0]}' for a fault (known: {', '.join(fields)})")
    target = entry.get("target")
    if isinstance(target, int) and not isinstance(target, bool) and kind in DOMAIN_KINDS:
        entry = {**entry, "target": f"d{target}"}
    resolved = {key: coerce(entry[key], spec, f"{where}.{key}") if key in entry else spec.default
                for key, spec in fields.items()}
    if not resolved["target"]:
        raise ScenarioError(f"{where}: a {kind} fault needs a target ({TARGET_EXAMPLES[kind]})")
    return resolved


@dataclass(frozen=True)
class Fault:
    kind: str
    target: str
    at_round: int
    duration_s: float
    domain: int = 0  # kill-controller
    link: tuple[int, int] = (0, 0)  # cut-link

    def to_record(self) -> dict:
        return {"kind": self.kind, "target": self.target, "at_round": self.at_round, "duration_s": self.duration_s}


def _domain_number(text: str) -> int | None:
    text = text.strip().lower()
    return int(text[1:]) if text.startswith("d") and text[1:].isdigit() else None


def resolve_faults(entries: list[dict], nodes: list[str], domains: int, links: list[tuple[int, int]],
                   rounds: int) -> list[Fault]:
    """The scenario's faults against its network: every target must exist, every round be run."""
    faults = []
    for i, entry in enumerate(entries):
        where = f"faults.{i}"
        kind, target, at_round = entry["kind"], entry["target"], entry["at_round"]
        if at_round > rounds:
            raise ScenarioError(f"{where}.at_round {at_round} is beyond the run's {rounds} rounds")
        domain, link = 0, (0, 0)
        if kind in AGENT_KINDS:
            if target not in nodes:
                raise ScenarioError(f"{where}.target {target!r} is not a node of this network "
                                    f"({nodes[0]} .. {nodes[-1]})")
        elif kind == "stall-vswitchd":
            if target != "ovs":
                raise ScenarioError(f"{where}.target {target!r}: a stall-vswitchd fault's target is 'ovs'")
        elif kind in DOMAIN_KINDS:
            domain = _domain_number(target) or 0
            if not 1 <= domain <= domains:
                raise ScenarioError(f"{where}.target {target!r} is not a domain of this network (d1 .. d{domains})")
        else:
            ends = [_domain_number(t) for t in target.split("-")]
            if len(ends) != 2 or None in ends:
                raise ScenarioError(f"{where}.target {target!r} is not a border link; write it as d1-d2")
            link = tuple(sorted(ends))
            if link not in links:
                raise ScenarioError(f"{where}.target {target!r}: no border link joins those domains "
                                    f"(links: {', '.join(f'd{a}-d{b}' for a, b in links)})")
        faults.append(Fault(kind, target, at_round, entry["duration"], domain, link))
    return faults


@dataclass
class _Active:
    fault: Fault
    began: float
    ends: float
    ended: float | None = None
    details: dict = field(default_factory=dict)


class FaultInjector:
    """Fires the faults as the rounds pass and undoes them when their time is up.

    ``start_agent(node)`` (from the runner) starts an agent process again and returns it;
    ``agents`` is the runner's live node -> process map, updated on a restart.
    """

    def __init__(self, faults: list[Fault], emulation, agents: dict, start_agent, events) -> None:
        self.pending = sorted(faults, key=lambda f: f.at_round)
        self.emulation = emulation
        self.agents = agents
        self.start_agent = start_agent
        self.events = events
        self.active: list[_Active] = []
        self.done: list[_Active] = []
        self.rejoining: dict[str, float] = {}  # killed agents: node -> when its process was restarted (or 0)

    def busy(self) -> bool:
        """Faults not yet fired or not yet undone (the run is not over while there are)."""
        return bool(self.pending or self.active)

    def owns_exit(self, node: str) -> bool:
        """True while ``node``'s agent is down because a fault killed it (not a death)."""
        return node in self.rejoining

    def reached(self, round_: int) -> None:
        while self.pending and self.pending[0].at_round <= round_:
            self._fire(self.pending.pop(0))

    def tick(self) -> None:
        now = time.time()
        for active in [a for a in self.active if a.ends <= now]:
            self._undo(active)
            active.ended = time.time()
            self.active.remove(active)
            self.done.append(active)
            self.events.event(Event.FAULT_ENDED, **active.fault.to_record(), **active.details)

    def follow_rejoins(self, records: list[dict]) -> list[str]:
        """Restarted agents that have now reported a round: they count as live again."""
        back = [node for node, restarted in self.rejoining.items()
                if restarted and any(r["node"] == node and r["time"] >= restarted for r in records)]
        for node in back:
            del self.rejoining[node]
        return back

    def skipped(self, node: str, round_: int, records: list[dict]) -> bool:
        """Whether ``node`` missed ``round_`` while killed: it came back in a later round."""
        for active in self.done + self.active:
            if active.fault.kind == "kill-agent" and active.fault.target == node:
                after = [r["round"] for r in records if r["node"] == node and r["time"] > active.began]
                if after and min(after) > round_ >= active.fault.at_round:
                    return True
        return False

    def _fire(self, fault: Fault) -> None:
        now = time.time()
        active = _Active(fault, now, now + fault.duration_s)
        if fault.kind == "kill-agent":
            proc = self.agents[fault.target]
            self.rejoining[fault.target] = 0.0
            proc.kill()
            proc.wait()
        elif fault.kind == "stall-agent":
            self.agents[fault.target].send_signal(signal.SIGSTOP)
        elif fault.kind in SERVICE_STALLS:
            os.kill(self._service_pid(fault), signal.SIGSTOP)
        elif fault.kind == "kill-controller":
            active.details["banned_before"] = _banned_now(self.emulation, fault.domain)
            self.emulation.kill_controller(fault.domain)
        else:
            self.emulation.set_border_link(*fault.link, up=False)
        self.active.append(active)
        self.events.event(Event.FAULT, **fault.to_record(), started=now)

    def _undo(self, active: _Active) -> None:
        fault = active.fault
        if fault.kind == "kill-agent":
            self.agents[fault.target] = self.start_agent(fault.target)
            self.rejoining[fault.target] = time.time()
        elif fault.kind == "stall-agent":
            self.agents[fault.target].send_signal(signal.SIGCONT)
        elif fault.kind in SERVICE_STALLS:
            os.kill(self._service_pid(fault), signal.SIGCONT)
        elif fault.kind == "kill-controller":
            self.emulation.restart_controller(fault.domain)
            active.details["restarted"] = time.time()
        else:
            self.emulation.set_border_link(*fault.link, up=True)

    def _service_pid(self, fault: Fault) -> int:
        if fault.kind == "stall-vswitchd":
            return vswitchd_pid()
        return (self.emulation.controllers if fault.kind == "stall-controller" else self.emulation.inspectors)[
            fault.domain].pid

    def undo_all(self) -> None:
        """Undo whatever is still in force (the run is ending early)."""
        for active in list(self.active):
            try:
                self._undo(active)
            except Exception:  # tear-down goes on; the emulation removes what is left
                LOG.exception("could not undo the %s fault on %s", active.fault.kind, active.fault.target)
        self.active.clear()

    def report(self, records: list[dict], controller_records: dict[int, list[dict]], rounds: int,
               stalls: list[dict] = ()) -> list[dict]:
        """Each fault, what happened and whether the run survived it (see the module docstring)."""
        out = []
        for active in sorted(self.done + self.active, key=lambda a: a.began):
            fault = active.fault
            # The others' rounds: a stalled agent's own round time includes the stall.
            during = [r for r in records if active.began <= r["time"] <= (active.ended or float("inf")) + 1.0
                      and not (fault.kind in AGENT_KINDS and r["node"] == fault.target)]
            entry = {**fault.to_record(), "started": active.began, "ended": active.ended,
                     "rounds_during": sorted({r["round"] for r in during}),
                     "slowest_round_during_s": max((r["round_time_s"] for r in during), default=None)}
            finished = {r["node"] for r in records if r["round"] == rounds}
            if fault.kind == "kill-agent":
                mine = [r for r in records if r["node"] == fault.target and r["time"] > active.began]
                entry["rejoined_round"] = min((r["round"] for r in mine), default=None)
                entry["survived"] = active.ended is not None and fault.target in finished
            elif fault.kind == "stall-agent":
                entry["survived"] = active.ended is not None and fault.target in finished
            elif fault.kind in SERVICE_STALLS:
                service = SERVICE_STALLS[fault.kind] + (f" d{fault.domain}" if fault.domain else "")
                entry["stall_named"] = any(s["service"] == service and s["start"] <= active.began + 1.5
                                           and (s["end"] or float("inf")) >= active.began for s in stalls)
                entry["survived"] = active.ended is not None and bool(finished)
            elif fault.kind == "kill-controller":
                restarted = [r for r in of_kind(controller_records.get(fault.domain, []), Event.STARTED)
                             if r["time"] > active.began]
                entry["banned_before"] = active.details.get("banned_before", [])
                entry["banned_after_restart"] = restarted[0]["banned"] if restarted else None
                entry["survived"] = bool(restarted) and set(entry["banned_before"]) <= set(restarted[0]["banned"])
            else:
                entry["domains_rerouted"] = sorted(
                    d for d, rs in controller_records.items()
                    if any(r["time"] >= active.began for r in of_kind(rs, Event.LINK_DOWN)))
                entry["survived"] = (active.ended is not None and bool(finished)
                                     and len(entry["domains_rerouted"]) == len(controller_records))
            out.append(entry)
        return out


def _banned_now(emulation, domain: int) -> list[str]:
    """The domain's bans in force, from its controller's last stats record."""
    stats = read_events(emulation.events_path(domain), Event.DEFENSE_STATS, Event.STARTED)
    return sorted(stats[-1]["banned"]) if stats else []
