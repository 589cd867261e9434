"""``sdfl run``: a scenario from network bring-up to results, as one timeline.

Network and controllers up (:class:`sdfl.emulation.Emulation`), one agent process per DFL node
started in its Mininet host, progress followed from the agents' flushed per-round records,
dead agents noticed and named, traffic attackers started and stopped as the rounds pass, then
results written and everything torn down.

Ground truth goes to ``events.jsonl``: an ``attack_plan`` record before the first round (who
attacks, how, in which rounds) and one ``attack`` record per malicious act window (node, kind,
round, start and stop time): a poisoned frame from its first to its last byte sent, a flood or
scan from the moment the network reached the round until it left it.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from agents.peers import peer_graph
from attacks.plan import POISONING, TRAFFIC, Attack, TrafficTimeline, attacking_pairs, malicious_nodes, resolve_attacks
from attacks.traffic import TrafficSpec
from controllers.defense import DefenseConfig
from controllers.inspector import FrameBounds
from sdfl.emulation import Emulation
from sdfl.faults import FaultInjector, resolve_faults
from common.description import load_description
from common.jsonl import JsonLinesWriter, read_jsonl
from common.keys import agent_party, key_path, write_run_keys
from sdfl.liveness import LivenessWatch
from sdfl.probes import vswitchd_answers
from sdfl.resources import ResourceSampler
from sdfl.results import round_rows, summarize, write_rounds_csv
from sdfl.scoring import ban_intervals, round_ends, score_detection
from topologies.layout import LinkParams, make_layout


class EventLog(JsonLinesWriter):
    """``events.jsonl``: one typed, timestamped record per event of the run."""

    def event(self, event_type: str, /, **fields) -> None:
        self.write({"type": event_type, "time": time.time(), **fields})


def layout_for(scenario: dict):
    net = scenario["network"]
    return make_layout(
        net["domains"], net["hosts_per_domain"], net["domain_graph"],
        host_link=LinkParams(bw_mbit=net["host_bw_mbit"] or None),
        border_link=LinkParams(bw_mbit=net["border_bw_mbit"] or None,
                               delay_ms=net["border_delay_ms"] or None,
                               loss_pct=net["border_loss_pct"] or None),
    )


def agent_records(out: Path, nodes: list[str]) -> list[dict]:
    return [r for n in nodes for r in read_jsonl(out / f"agent-{n}.jsonl") if r.get("type") == "round"]


class TrafficAttackers:
    """The flood and scan processes of a run, each in its attacker's Mininet host."""

    def __init__(self, emulation, out: Path, seed: int, budget_s: float, shapes: tuple) -> None:
        self.shapes = shapes  # the model's, for crafted model frames
        self.emulation = emulation
        self.out = out
        self.seed = seed
        self.budget_s = budget_s
        self.hosts = {h.name: h for h in load_description(emulation.description_path).hosts}
        self.processes: dict[tuple[str, str], subprocess.Popen] = {}

    def start(self, attack: Attack, node: str) -> None:
        spec = TrafficSpec.from_attack(attack.kind, attack.params, self.hosts[node],
                                       self.hosts[attack.params["target"]], self.seed, self.shapes)
        with open(self.out / f"attack-{node}.log", "ab") as log:
            proc = self.emulation.net.get(node).popen(
                [sys.executable, "-m", "attacks.traffic", "--iface", f"{node}-eth0",
                 "--spec", json.dumps(dataclasses.asdict(spec)), "--duration", str(self.budget_s),
                 "--report", str(self.out / "traffic.jsonl")],
                stdout=log, stderr=subprocess.STDOUT)
        self.emulation.record.add_process(proc.pid, f"attack {attack.kind} {node}")
        self.processes[(attack.kind, node)] = proc

    def stop(self, kind: str, node: str) -> None:
        proc = self.processes.pop((kind, node), None)
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for kind, node in list(self.processes):
            self.stop(kind, node)


def frame_bounds(scenario: dict) -> FrameBounds:
    """What an honest agent's frame carries in this scenario: the model's shapes on its dataset."""
    from agents.data import load_dataset
    from agents.model import make_mlp, parameter_shapes

    dfl = scenario["dfl"]
    dataset = load_dataset(dfl["dataset"], dfl["dataset_path"], scenario["seed"], dfl["test_fraction"])
    return FrameBounds(parameter_shapes(make_mlp(dataset.n_features, dataset.n_classes, dfl["hidden"])),
                       dfl["rounds"], len(dataset.y_train), dfl["round_timeout_s"])


def run_plan(scenario: dict):
    """What a scenario's run consists of: layout, node names, DFL neighbours, resolved attacks
    and faults."""
    layout = layout_for(scenario)
    dfl = scenario["dfl"]
    nodes = [h.name for h in layout.hosts]
    domain_of = {h.name: h.domain for h in layout.hosts}
    neighbours = peer_graph(dfl["peers"], nodes, domain_of, list(layout.edges), scenario["seed"], dfl["peers_k"])
    attacks = resolve_attacks(scenario["attacks"], nodes, domain_of, dfl["rounds"], scenario["seed"], dfl["port"])
    faults = resolve_faults(scenario["faults"], nodes, layout.domains, sorted(tuple(sorted(e)) for e in layout.edges),
                            dfl["rounds"])
    return layout, nodes, neighbours, attacks, faults


def run_experiment(scenario: dict, out: Path, progress=print, pcap: bool = False) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    layout, nodes, neighbours, attacks, faults = run_plan(scenario)
    dfl = scenario["dfl"]
    (out / "scenario.json").write_text(json.dumps(scenario, indent=2) + "\n")
    config_path = out / "dfl.json"
    config_path.write_text(json.dumps({"scenario": scenario, "nodes": nodes, "neighbours": neighbours,
                                       "attacks": [a.to_record() for a in attacks]}, indent=2))
    for stale in [*(out / f"agent-{n}.jsonl" for n in nodes), out / "traffic.jsonl", out / "events.jsonl"]:
        stale.unlink(missing_ok=True)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # a rerun must not resume the last run's agents
    write_run_keys(out, layout.domains, neighbours)
    events = EventLog(out / "events.jsonl")
    events.event("attack_plan", attacks=[a.to_record() for a in attacks], malicious=malicious_nodes(attacks))
    dead: dict[str, int] = {}
    attacks_summary = {"malicious_nodes": malicious_nodes(attacks),
                       "malicious_fraction": len(malicious_nodes(attacks)) / len(nodes),
                       "plan": [a.to_record() for a in attacks]}

    def save_partial(reported: int, records: list[dict]) -> None:
        """A summary of the agents' ``records`` so far, marked incomplete: what a killed run leaves."""
        rows = round_rows(records)
        summary = summarize(scenario, rows, nodes, dead, set(malicious_nodes(attacks)))
        summary.update(complete=False, partial={"rounds_reported": reported, "written": time.time()},
                       attacks=attacks_summary)
        write_summary(out, summary)

    save_partial(0, [])
    bounds = frame_bounds(scenario)
    try:
        defense = DefenseConfig.from_scenario(scenario) if scenario["defense"]["fuhst"] else None
        with Emulation(layout, out, scenario["network"]["datapath"], scenario["defense"]["poll_interval"],
                       watched_ports=(dfl["port"],), defense=defense, pcap=pcap, keyed=True,
                       frame_bounds=bounds) as emulation:
            events.event("network_up", datapath=emulation.datapath, **emulation.timings)
            progress(f"network up: {layout.domains} domains x {layout.hosts_per_domain} hosts "
                     f"({emulation.datapath} datapath) in {emulation.timings['bring_up_s']:.1f} s; "
                     f"{len(nodes)} agents, {dfl['rounds']} rounds, {dfl['aggregator']}")

            poisoners = {n for a in attacks if a.category == POISONING for n in a.nodes}

            def start_agent(node: str) -> subprocess.Popen:
                program = "attacks.agent" if node in poisoners else "agents.agent"  # honest agents hold no attack
                with open(out / f"agent-{node}.log", "ab") as log:
                    proc = emulation.net.get(node).popen(
                        [sys.executable, "-m", program, "--network", str(emulation.description_path),
                         "--config", str(config_path), "--node", node, "--out", str(out),
                         "--keys", str(key_path(out, agent_party(node)))],
                        stdout=log, stderr=subprocess.STDOUT)
                emulation.record.add_process(proc.pid, f"agent {node}")
                return proc

            agents = {node: start_agent(node) for node in nodes}
            events.event("agents_started", nodes=nodes)
            attackers = TrafficAttackers(emulation, out, scenario["seed"],
                                         budget_s=dfl["rounds"] * (dfl["round_timeout_s"] + 60), shapes=bounds.shapes)
            injector = FaultInjector(faults, emulation, agents, start_agent, events)
            sampler = ResourceSampler(lambda: [(p.pid, p.role) for p in emulation.record.processes])
            liveness = ServiceWatch(emulation, out, events, progress)
            try:
                with sampler:
                    _follow(emulation, agents, out, nodes, dfl, dead, events, progress, TrafficTimeline(attacks),
                            attackers, set(malicious_nodes(attacks)), injector, save_partial, liveness)
            finally:
                attackers.stop_all()
                injector.undo_all()
            counters = emulation.fresh_counters(since=time.time())
            events.event("teardown")  # what the controllers send from here on is the network going away
    finally:
        events.close()
    rows = round_rows(agent_records(out, nodes))
    write_rounds_csv(rows, out / "rounds.csv")
    summary = summarize(scenario, rows, nodes, dead, set(malicious_nodes(attacks)))
    summary["attacks"] = {
        **attacks_summary,
        "traffic_sent": [r for r in read_jsonl(out / "traffic.jsonl") if r.get("type") == "traffic_sent"],
    }
    summary["network"] = {
        "datapath": emulation.datapath,
        "bring_up_s": emulation.timings["bring_up_s"],
        "host_ipv4_bytes_total": sum(c["bytes"] for record in counters.values() for c in record["hosts"].values()),
        # What each host sent, as its edge switch counted it: admitted IPv4 and dropped frames.
        "host_ipv4_bytes": {name: c["bytes"] for record in counters.values() for name, c in record["hosts"].items()},
        "host_dropped_bytes": {name: c["dropped_bytes"]
                               for record in counters.values() for name, c in record["hosts"].items()},
        # IPv4 bytes towards the agents' port, from the controllers' flow counters: the model
        # bytes plus IP/TCP headers (about 3.6 % with a 1500-byte MTU) and any retransmissions.
        "dfl_port_bytes_total": sum(c["watched_port_bytes"].get(str(dfl["port"]), 0)
                                    for record in counters.values() for c in record["hosts"].values()),
    }
    summary["resources"] = sampler.report()
    summary["stalls"] = liveness.watch.report(time.time())
    summary["faults"] = injector.report(
        agent_records(out, nodes),
        {d: read_jsonl(out / f"controller-d{d}.jsonl") for d in range(1, layout.domains + 1)}, dfl["rounds"],
        summary["stalls"])
    if scenario["defense"]["fuhst"]:
        summary.update(defense_summary(scenario, out, nodes, attacks, summary))
    model_bytes = summary["dfl"]["model_bytes_total"]
    summary["network"]["dfl_port_bytes_over_model_bytes"] = (
        summary["network"]["dfl_port_bytes_total"] / model_bytes if model_bytes else None)
    write_summary(out, summary)
    return summary


def write_summary(out: Path, summary: dict) -> None:
    """``summary.json``, replaced atomically: a reader (or a kill) never sees half of one."""
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(out / "summary.json")


def defense_summary(scenario: dict, out: Path, nodes: list[str], attacks: list[Attack], summary: dict) -> dict:
    """``detection``, ``overhead`` and ``traffic`` figures of a run with FU-HST on."""
    rounds = scenario["dfl"]["rounds"]
    records = agent_records(out, nodes)
    by_domain = {d: read_jsonl(out / f"controller-d{d}.jsonl") for d in range(1, scenario["network"]["domains"] + 1)}
    controller = [r for records_of_domain in by_domain.values() for r in records_of_domain]
    intervals = ban_intervals(controller)
    ends = round_ends(records, rounds)
    malicious = set(malicious_nodes(attacks))
    detection = score_detection(attacking_pairs(attacks), intervals, ends, nodes, malicious,
                                scenario["defense"]["warmup_rounds"],
                                [r for r in controller if r.get("type") == "ban"])
    teardown = min((r["time"] for r in read_jsonl(out / "events.jsonl") if r.get("type") == "teardown"),
                   default=float("inf"))
    # Notices sent as the network is dismantled (its border ports go down) are not the run's.
    sent_notices = [r for r in controller if r.get("type") == "notice_sent" and r["time"] < teardown]
    control_bytes = sum(r["bytes"] for r in sent_notices)
    control_by_round = [0] * rounds  # a notice counts in the round during which it was sent
    for notice in sent_notices:
        control_by_round[min(bisect.bisect_left(ends, notice["time"]), rounds - 1)] += notice["bytes"]
    # Each controller reports its cumulative detector CPU time; the last report is its total.
    detector_cpu = sum(max((r["detector_cpu_s"] for r in records_of_domain if r.get("type") == "defense_stats"),
                           default=0.0) for records_of_domain in by_domain.values())
    agents_cpu = sum(max((r.get("cpu_s", 0.0) for r in records if r["node"] == n), default=0.0) for n in nodes)
    sent = {(r["src_ip"], r["kind"]): r for r in read_jsonl(out / "traffic.jsonl") if r.get("type") == "traffic_sent"}
    ip_of = {h.name: h.ip for h in load_description(out / "network.json").hosts}
    mitigation = []
    for attack in attacks:
        if attack.category != TRAFFIC:
            continue
        for node in attack.nodes:
            onset = sent.get((ip_of[node], attack.kind), {}).get("started")
            if onset is not None and node in intervals:
                mitigation.append(min(a for a, _ in intervals[node]) - onset)
    model_bytes = summary["dfl"]["model_bytes_total"]
    return {
        "detection": detection,
        "overhead": {
            "interdomain_control_bytes_total": control_bytes,
            "interdomain_control_bytes_per_round": control_bytes / rounds,
            "interdomain_control_bytes_by_round": control_by_round,
            "detector_cpu_s": detector_cpu,
            "agents_cpu_s": agents_cpu,
            "detector_cpu_fraction": detector_cpu / agents_cpu if agents_cpu else None,
            "control_vs_dfl_bytes_fraction": control_bytes / model_bytes if model_bytes else None,
        },
        "traffic": {"time_to_mitigate_s": mitigation,
                    "time_to_mitigate_s_median": statistics.median(mitigation) if mitigation else None},
    }


class ServiceWatch:
    """The run's services under a :class:`sdfl.liveness.LivenessWatch`: each controller and
    inspection service by its heartbeat file, ovs-vswitchd by a control request once a second."""

    def __init__(self, emulation, out: Path, events, progress) -> None:
        self.emulation, self.out, self.events, self.progress = emulation, out, events, progress
        self.watch = LivenessWatch()
        self._probed = 0.0

    def tick(self) -> None:
        now = time.time()
        signs = {}
        for domain in self.emulation.controllers:
            name = f"controller d{domain}"
            if domain in self.emulation.stopped_controllers:
                self.watch.forget(name)
            else:
                signs[name] = self.emulation.events_path(domain)
        for domain in self.emulation.inspectors:
            signs[f"inspector d{domain}"] = self.out / f"inspector-d{domain}.jsonl"
        for service, path in signs.items():
            if path.exists():
                self._say(self.watch.alive(service, path.stat().st_mtime), service, "live")
        if now - self._probed >= 1.0:
            self._probed = now
            if vswitchd_answers():
                self._say(self.watch.alive("ovs-vswitchd", time.time()), "ovs-vswitchd", "live")
        for message in self.watch.check(time.time()):
            self._say(message, message.split(" stalled")[0], "stalled")

    def _say(self, message: str | None, service: str, state: str) -> None:
        if message:
            self.progress(message)
            self.events.event("service_stalled" if state == "stalled" else "service_live", service=service)


def _follow(emulation, agents, out, nodes, dfl, dead, events, progress, timeline, attackers, malicious,
            injector, save_partial, liveness) -> None:
    """Wait for the agents, printing a line per finished round and naming any that die;
    log poisoning as the agents report it, run the traffic attacks and the faults on the round
    schedule."""
    budget = dfl["rounds"] * (dfl["round_timeout_s"] + 60) + 60
    deadline = time.monotonic() + budget
    reported = 0
    poisoned: set[tuple[str, int]] = set()

    def to_round(round_: int) -> None:
        start, stop, records = timeline.advance(round_, time.time())
        for record in records:
            events.event("attack", **record)
        for attack, node in stop:
            attackers.stop(attack.kind, node)
        for attack, node in start:
            attackers.start(attack, node)
            progress(f"round {round_}: {node} starts a {attack.kind} towards {attack.params['target']} "
                     f"at {attack.params['rate_pps']:g} packets/s")
        for fault in [f for f in injector.pending if f.at_round <= round_]:
            progress(f"round {round_}: fault {fault.kind} {fault.target} for {fault.duration_s:g} s")
        injector.reached(round_)

    to_round(1)
    while True:
        emulation.raise_if_controller_died()
        liveness.tick()
        injector.tick()
        for node, proc in agents.items():
            code = proc.poll()
            if code not in (None, 0) and node not in dead and not injector.owns_exit(node):
                dead[node] = code
                events.event("agent_died", node=node, exit_code=code)
                progress(f"agent {node} died (exit code {code}); see {out / f'agent-{node}.log'}")
        records = agent_records(out, nodes)
        for node in injector.follow_rejoins(records):
            events.event("agent_rejoined", node=node)
            progress(f"agent {node} rejoined from its checkpoint")
        for r in records:
            if r.get("attack") and (r["node"], r["round"]) not in poisoned:
                poisoned.add((r["node"], r["round"]))
                events.event("attack", node=r["node"], kind=r["attack"], category=POISONING, round=r["round"],
                             start=r["sending_from"], stop=r["sent_by"])
        while reported < dfl["rounds"]:
            round_ = reported + 1
            done = [r for r in records if r["round"] == round_]
            have = {r["node"] for r in done}
            waiting = [n for n in nodes if n not in have and n not in dead and not injector.owns_exit(n)
                       and not injector.skipped(n, round_, records)]
            if waiting:
                break
            honest = [r for r in done if r["node"] not in malicious]
            accuracy = sum(r["accuracy"] for r in honest) / max(len(honest), 1)
            slowest = max((r["round_time_s"] for r in done), default=0.0)
            pace = (f"slowest round {slowest:.1f} s" if any(r["received_from"] for r in done)
                    else "no model moved: every node aggregated alone")
            progress(f"round {round_}/{dfl['rounds']}: honest accuracy {accuracy:.3f} over {len(honest)} nodes, {pace}")
            reported = round_
            save_partial(reported, records)
            if round_ < dfl["rounds"]:
                to_round(round_ + 1)
        if all(proc.poll() is not None for proc in agents.values()) and not injector.busy():
            stop, final = timeline.finish(time.time())
            for record in final:
                events.event("attack", **record)
            for attack, node in stop:
                attackers.stop(attack.kind, node)
            return
        if time.monotonic() > deadline:
            stuck = sorted(n for n, p in agents.items() if p.poll() is None)
            events.event("timeout", nodes=stuck)
            raise RuntimeError(f"agents {stuck} did not finish within {budget:.0f} s")
        time.sleep(0.2)
