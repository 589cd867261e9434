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
import json
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from agents.aggregation import short_neighbourhoods
from agents.data import CLASSES
from agents.peers import peer_graph
from attacks.plan import (CONTROLLER, POISONING, TRAFFIC, Attack, TrafficTimeline, attacking_pairs, malicious_nodes,
                          resolve_attacks)
from attacks.traffic import TrafficSpec
from controllers.byzantine import ByzantinePlan
from controllers.defense import DefenseConfig
from controllers.inspector import FrameBounds, StartRule
from controllers.launch import ControllerRuntime
from controllers.ledger import LedgerAuditError, audit_run
from sdfl.cluster import ClusterPlan, preflight
from sdfl.emulation import Emulation
from sdfl.faults import FaultInjector, resolve_faults
from common.events import Event, event, of_kind, read_events
from common.barrier import READY_DIR, START_FILE, ready_nodes, release
from common.description import load_description
from common.jsonl import JsonLinesWriter, read_jsonl
from common.keys import agent_party, key_path, write_run_keys
from common.runconfig import RunConfig
from common.schema import ScenarioError
from sdfl.launcher import Launcher, LaunchedProcess
from sdfl.liveness import LivenessWatch
from sdfl.pace import pace as progress_pace
from sdfl.probes import vswitchd_answers
from sdfl.resources import ResourceSampler
from sdfl.results import border_summary, round_rows, summarize, write_rounds_csv
from sdfl.scoring import ban_intervals, round_ends, score_byzantine, score_detection
from topologies.layout import LinkParams, make_layout, next_hops


BARRIER_BASE_S, BARRIER_PER_AGENT_S = 60.0, 3.0
"""How long the start barrier waits for the agents to be ready: importing torch takes seconds
each, tens of seconds with dozens starting together on two cores."""
START_MARGIN_S = 0.5
"""Round 1 begins this long after the barrier is released: every agent has read it by then."""


class EventLog(JsonLinesWriter):
    """``events.jsonl``: one typed, timestamped record per event of the run."""

    def event(self, kind: Event, /, **fields) -> None:
        self.write(event(kind, time.time(), **fields))


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
    return [r for n in nodes for r in read_events(out / f"agent-{n}.jsonl", Event.ROUND)]


class TrafficAttackers:
    """The flood and scan processes of a run, each in its attacker's Mininet host."""

    def __init__(self, emulation, out: Path, seed: int, budget_s: float, shapes: tuple) -> None:
        self.shapes = shapes  # the model's, for crafted model frames
        self.emulation = emulation
        self.out = out
        self.seed = seed
        self.budget_s = budget_s
        self.description = load_description(emulation.description_path)
        self.processes: dict[tuple[str, str], subprocess.Popen] = {}

    def start(self, attack: Attack, node: str) -> None:
        spec = TrafficSpec.from_attack(attack.kind, attack.params, self.description.host(node),
                                       self.description.host(attack.params["target"]), self.seed, self.shapes)
        with open(self.out / f"attack-{node}.log", "ab") as log:
            proc = self.emulation.net.get(node).popen(
                [sys.executable, "-m", "attacks.traffic", "--iface", f"{node}-eth0",
                 "--spec", spec.to_json(), "--duration", str(self.budget_s),
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


def start_rule(scenario: dict) -> StartRule:
    """How this scenario's honest agents aggregate: the inspection measures updates from there."""
    dfl = scenario["dfl"]
    return StartRule(dfl["aggregator"], dfl["byzantine_f"], dfl["pre_aggregation"])


def run_plan(scenario: dict):
    """What a scenario's run consists of: layout, node names, DFL neighbours, resolved attacks
    and faults."""
    layout = layout_for(scenario)
    dfl = scenario["dfl"]
    nodes = [h.name for h in layout.hosts]
    domain_of = {h.name: h.domain for h in layout.hosts}
    neighbours = peer_graph(dfl["peers"], nodes, domain_of, list(layout.edges), scenario["seed"], dfl["peers_k"])
    need, short = short_neighbourhoods(dfl["aggregator"], dfl["byzantine_f"], neighbours, dfl["pre_aggregation"],
                                       dfl["bucket_size"])
    if short:
        fewest = min(short, key=short.get)
        raise ScenarioError(
            f"dfl.aggregator = {dfl['aggregator']!r} with dfl.byzantine_f = {dfl['byzantine_f']} needs "
            f"{need} inputs at every node (its own model and its neighbours', or their buckets); "
            f"{len(short)} of {len(nodes)} nodes have fewer under dfl.peers = {dfl['peers']!r} "
            f"({fewest}: {short[fewest]}): "
            "lower dfl.byzantine_f or choose denser peers")
    attacks = resolve_attacks(scenario["attacks"], nodes, domain_of, dfl["rounds"], scenario["seed"], dfl["port"])
    compromised = [a.params["domain"] for a in attacks if a.category == CONTROLLER]
    if compromised and not scenario["defense"]["fuhst"]:
        raise ScenarioError("a byzantine-domain attack acts as its domain's inspection reports each round: "
                            "set defense.fuhst = true")
    if len(set(compromised)) < len(compromised):
        raise ScenarioError(f"domains {sorted(compromised)}: one byzantine-domain entry per domain")
    for index, attack in enumerate(attacks):
        if attack.kind == "backdoor" and attack.params["target_class"] >= CLASSES[dfl["dataset"]]:
            raise ScenarioError(f"attacks.{index}.target_class {attack.params['target_class']} is not a class of "
                                f"{dfl['dataset']} (0 .. {CLASSES[dfl['dataset']] - 1})")
    faults = resolve_faults(scenario["faults"], nodes, layout.domains, sorted(tuple(sorted(e)) for e in layout.edges),
                            dfl["rounds"])
    if ClusterPlan.from_scenario(scenario) and (faults or any(a.category == TRAFFIC for a in attacks)):
        raise ScenarioError("a run split over servers (cluster.servers) takes no [[faults]] and no traffic attacks "
                            "yet: they signal and start processes on this machine only")
    return layout, nodes, neighbours, attacks, faults


def byzantine_plans(attacks: list[Attack]) -> dict[int, ByzantinePlan]:
    """The compromised domains' controllers and what they do."""
    return {a.params["domain"]: ByzantinePlan(a.rounds, tuple(a.params["acts"]), tuple(a.params["targets"]))
            for a in attacks if a.category == CONTROLLER}


def run_experiment(scenario: dict, out: Path, progress=print, pcap: bool = False) -> dict:
    """Run ``scenario`` on the emulated network into ``out``; returns its summary."""
    return Experiment(scenario, out, progress, pcap).run()


class Experiment:
    """One ``sdfl run`` in named steps: prepare the run folder, bring the network up, start the
    agents, follow the rounds (attacks and faults on their schedule), summarize."""

    def __init__(self, scenario: dict, out: Path, progress=print, pcap: bool = False) -> None:
        self.scenario, self.out, self.progress, self.pcap = scenario, out, progress, pcap
        self.layout, self.nodes, self.neighbours, self.attacks, self.faults = run_plan(scenario)
        self.dfl = scenario["dfl"]
        self.malicious = set(malicious_nodes(self.attacks))
        self.poisoners = {n for a in self.attacks if a.category == POISONING for n in a.nodes}
        self.dead: dict[str, int] = {}
        self.config_path = out / "dfl.json"
        self.ready_s: float | None = None
        self.attacks_summary = {"malicious_nodes": malicious_nodes(self.attacks),
                                "malicious_fraction": len(self.malicious) / len(self.nodes),
                                "plan": [a.to_record() for a in self.attacks]}
        self.events: EventLog | None = None
        self.cluster = ClusterPlan.from_scenario(scenario)
        if self.cluster and pcap:
            raise ScenarioError("--pcap captures on this machine's interfaces: not with cluster.servers")
        self.launchers: dict[str | None, Launcher] = {}  # by server (None: no cluster)
        self.cluster_report: dict = {}

    def run(self) -> dict:
        self.prepare()
        bounds = frame_bounds(self.scenario)
        defense = DefenseConfig.from_scenario(self.scenario) if self.scenario["defense"]["fuhst"] else None
        net = self.scenario["network"]
        # The launcher imports torch and loads the data set while the controllers' interpreter
        # is probed and the network comes up.
        self.launchers[self.cluster.servers[0] if self.cluster else None] = Launcher(
            self.out / "launcher.log", self.config_path)
        try:
            controller = ControllerRuntime.probe(net["controller"], net["controller_python"] or None)
            self.progress(f"controllers: {controller.framework.value} {controller.version} on Python "
                          f"{controller.python_version} ({controller.python})")
            if self.cluster:
                self.start_remote_launchers(controller)
            with Emulation(self.layout, self.out, datapath=net["datapath"],
                           poll_interval=self.scenario["defense"]["poll_interval"], watched_ports=(self.dfl["port"],),
                           defense=defense, pcap=self.pcap, keyed=True, frame_bounds=bounds,
                           start_rule=start_rule(self.scenario), controller=controller,
                           byzantine=byzantine_plans(self.attacks), cluster=self.cluster,
                           progress=self.progress) as emulation:
                for server, launcher in self.launchers.items():
                    self.track_launcher(emulation.record, server, launcher)
                if self.cluster:
                    self.cluster_report = emulation.cluster_report()
                self.events.event(Event.NETWORK_UP, datapath=emulation.datapath, **emulation.timings)
                self.progress(f"network up: {self.layout.domains} domains x {self.layout.hosts_per_domain} hosts "
                              f"({emulation.datapath} datapath) in {emulation.timings['bring_up_s']:.1f} s; "
                              f"{len(self.nodes)} agents, {self.dfl['rounds']} rounds, {self.dfl['aggregator']}")
                followed = self.follow(emulation, bounds)
                counters = emulation.fresh_counters(since=time.time())
                self.events.event(Event.TEARDOWN)  # what the controllers send from here on is the network going away
        finally:
            for launcher in self.launchers.values():
                launcher.close()
            self.events.close()
        return self.summarize(emulation, counters, *followed)

    def start_remote_launchers(self, controller: ControllerRuntime) -> None:
        """The other servers checked (:func:`sdfl.cluster.preflight`), then an agent launcher on each."""
        plan = self.cluster
        self.progress(f"cluster: {len(plan.servers)} servers ({', '.join(plan.servers)}), domains placed "
                      + ", ".join(f"d{d} on {s}" for d, s in plan.placement().items()) + f"; {plan.link} tunnels")
        preflight(plan, self.out, sorted({sys.executable, controller.python}))
        for server in plan.remote_servers:
            self.launchers[server] = Launcher(self.out / f"launcher-{server}.log", self.config_path,
                                                   plan=plan, server=server)

    @staticmethod
    def track_launcher(record, server: str | None, launcher: Launcher) -> None:
        if launcher.remote:
            record.add_remote_process(server, *launcher.remote_pid, "agent launcher")
            record.add_process(launcher.process.pid, f"ssh to the agent launcher on {server}")
        else:
            record.add_process(launcher.process.pid, "agent launcher")

    def prepare(self) -> None:
        """The run folder: scenario and DFL config, no result of an earlier run, fresh keys."""
        out = self.out
        out.mkdir(parents=True, exist_ok=True)
        (out / "scenario.json").write_text(json.dumps(self.scenario, indent=2) + "\n")
        self.config_path.write_text(RunConfig(self.scenario, tuple(self.nodes), self.neighbours,
                                              tuple(a.to_record() for a in self.attacks)).to_json())
        for stale in [*(out / f"agent-{n}.jsonl" for n in self.nodes), out / "traffic.jsonl", out / "events.jsonl",
                      out / START_FILE]:
            stale.unlink(missing_ok=True)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # a rerun must not resume the last run's agents
        shutil.rmtree(out / READY_DIR, ignore_errors=True)
        write_run_keys(out, self.layout.domains, self.neighbours)
        self.events = EventLog(out / "events.jsonl")
        self.events.event(Event.ATTACK_PLAN, attacks=self.attacks_summary["plan"],
                          malicious=malicious_nodes(self.attacks))
        self.save_partial(0, [])

    def save_partial(self, reported: int, records: list[dict]) -> None:
        """A summary of the agents' ``records`` so far, marked incomplete: what a killed run leaves."""
        summary = summarize(self.scenario, round_rows(records), self.nodes, self.dead, self.malicious)
        summary.update(complete=False, partial={"rounds_reported": reported, "written": time.time()},
                       attacks=self.attacks_summary)
        write_summary(self.out, summary)

    def start_agent(self, emulation, node: str) -> LaunchedProcess:
        """Fork the node's agent into its Mininet host (:mod:`sdfl.launcher`)."""
        program = "attacks.agent" if node in self.poisoners else "agents.agent"  # honest agents hold no attack
        launcher = self.launchers[self.cluster.server_of(self.layout.host(node).domain) if self.cluster else None]
        agent = launcher.start(
            node, emulation.net.get(node).pid, program,
            ["--network", str(emulation.description_path), "--config", str(self.config_path), "--node", node,
             "--out", str(self.out), "--keys", str(key_path(self.out, agent_party(node))), "--barrier"],
            self.out / f"agent-{node}.log")
        if not launcher.remote:  # one on another server ends with its launcher
            emulation.record.add_process(agent.pid, f"agent {node}")
        return agent

    def release_start(self, emulation, agents: dict, began: float) -> None:
        """The start barrier (:mod:`common.barrier`): round 1 begins for all together once every
        agent started at ``began`` (monotonic) is ready or has exited; one neither within the
        limit is stopped, and counts as dead."""
        limit_s = BARRIER_BASE_S + BARRIER_PER_AGENT_S * len(agents)
        while True:
            emulation.raise_if_controller_died()
            ready = ready_nodes(self.out)
            waiting = [n for n, proc in agents.items() if n not in ready and proc.poll() is None]
            if not waiting:
                break
            if time.monotonic() - began > limit_s:
                self.progress(f"agents {', '.join(waiting)} not ready after {limit_s:.0f} s: stopped")
                for node in waiting:
                    agents[node].kill()
                break
            time.sleep(0.1)
        absent = sorted(set(agents) - ready)
        release(self.out, time.time() + START_MARGIN_S, absent)
        self.ready_s = time.monotonic() - began
        self.events.event(Event.AGENTS_READY, nodes=sorted(ready), absent=absent, seconds=self.ready_s)
        self.progress(f"{len(ready)}/{len(agents)} agents ready in {self.ready_s:.1f} s: round 1 begins for all")

    def follow(self, emulation, bounds: FrameBounds):
        """Start the agents and follow them to the end; the sampler, watch and injector's reports."""
        began = time.monotonic()
        agents = {node: self.start_agent(emulation, node) for node in self.nodes}
        self.events.event(Event.AGENTS_STARTED, nodes=self.nodes)
        self.release_start(emulation, agents, began)
        attackers = TrafficAttackers(emulation, self.out, self.scenario["seed"],
                                     budget_s=self.dfl["rounds"] * (self.dfl["round_timeout_s"] + 60),
                                     shapes=bounds.shapes)
        injector = FaultInjector(self.faults, emulation, agents, lambda node: self.start_agent(emulation, node),
                                 self.events)
        sampler = ResourceSampler(lambda: [(p.pid, p.role) for p in emulation.record.processes])
        liveness = ServiceWatch(emulation, self.out, self.events, self.progress)
        try:
            with sampler:
                RoundFollower(self, emulation, agents=agents, attackers=attackers, injector=injector,
                              liveness=liveness).run()
        finally:
            attackers.stop_all()
            injector.undo_all()
        return sampler, liveness, injector

    def summarize(self, emulation, counters: dict, sampler, liveness, injector) -> dict:
        out, dfl = self.out, self.dfl
        rows = round_rows(agent_records(out, self.nodes))
        write_rounds_csv(rows, out / "rounds.csv")
        summary = summarize(self.scenario, rows, self.nodes, self.dead, self.malicious)
        summary["attacks"] = {
            **self.attacks_summary,
            "traffic_sent": read_events(out / "traffic.jsonl", Event.TRAFFIC_SENT),
        }
        summary["network"] = network_summary(emulation, counters, dfl["port"])
        summary["network"]["agents_ready_s"] = self.ready_s  # from their start to the barrier
        summary["network"].update(border_summary(counters, agent_records(out, self.nodes),
                                                 {h.name: h.domain for h in self.layout.hosts},
                                                 next_hops(list(self.layout.edges), self.layout.domains)))
        if self.cluster:
            summary["cluster"] = {**self.cluster_report, "resources_sampled_on": self.cluster.servers[0]}
        summary["resources"] = sampler.report()
        summary["stalls"] = liveness.watch.report(time.time())
        summary["faults"] = injector.report(
            agent_records(out, self.nodes),
            {d: read_jsonl(out / f"controller-d{d}.jsonl") for d in range(1, self.layout.domains + 1)}, dfl["rounds"],
            summary["stalls"])
        summary["ledger"] = ledger_summary(out)
        if self.scenario["defense"]["fuhst"]:
            summary.update(defense_summary(self.scenario, out, self.nodes, self.attacks, summary))
        model_bytes = summary["dfl"]["model_bytes_total"]
        summary["network"]["dfl_port_bytes_over_model_bytes"] = (
            summary["network"]["dfl_port_bytes_total"] / model_bytes if model_bytes else None)
        write_summary(out, summary)
        return summary


def network_summary(emulation, counters: dict, dfl_port: int) -> dict:
    """What the edge switches counted of the run, per host and in total."""
    hosts = [(name, c) for record in counters.values() for name, c in record["hosts"].items()]
    return {
        "datapath": emulation.datapath,
        "controller": emulation.controller.to_dict(),  # framework, version, interpreter
        "bring_up_s": emulation.timings["bring_up_s"],
        "host_ipv4_bytes_total": sum(c["bytes"] for _, c in hosts),
        # What each host sent, as its edge switch counted it: admitted IPv4 and dropped frames.
        "host_ipv4_bytes": {name: c["bytes"] for name, c in hosts},
        "host_dropped_bytes": {name: c["dropped_bytes"] for name, c in hosts},
        # IPv4 bytes towards the agents' port, from the controllers' flow counters: the model
        # bytes plus IP/TCP headers (about 3.6 % with a 1500-byte MTU) and any retransmissions.
        "dfl_port_bytes_total": sum(c["watched_port_bytes"].get(str(dfl_port), 0) for _, c in hosts),
    }


def write_summary(out: Path, summary: dict) -> None:
    """``summary.json``, replaced atomically: a reader (or a kill) never sees half of one."""
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(out / "summary.json")


def ledger_summary(out: Path) -> dict:
    """What ``sdfl ledger verify`` finds in the run's ledger files: every chain and signature
    checked, each domain's decisions, the refused ones, and any equivocation proven across files."""
    try:
        found, _ = audit_run(out)
    except LedgerAuditError as error:
        return {"verified": False, "error": str(error)}
    except ValueError as error:  # no ledger at all
        return {"verified": None, "error": str(error)}
    return {"verified": True, "decisions": {str(origin): len(chain) for origin, chain in found.chains.items()},
            "refused": len(found.refusals),
            "equivocations": [{"file": name, "origin": proof.other.origin, "seq": proof.other.seq}
                              for name, proof in found.equivocations]}


INSPECTION_COUNTS = ("segments", "frames", "gaps", "dropped", "unparsed", "violations")


def inspection_summary(out: Path, domains: int) -> dict:
    """What each domain's inspection service read off its mirror (its last heartbeat,
    :class:`controllers.inspector.InspectionCounts`), and in total: a stream read on past bytes the
    mirror never delivered (``gaps``) or a packet its socket dropped cost frames the update features
    never saw."""
    by_domain = {}
    for domain in range(1, domains + 1):
        beats = read_events(out / f"inspector-d{domain}.jsonl", Event.HEARTBEAT)
        if beats:
            by_domain[str(domain)] = {k: beats[-1].get(k, 0) for k in INSPECTION_COUNTS}
    return {**{k: sum(c[k] for c in by_domain.values()) for k in INSPECTION_COUNTS}, "by_domain": by_domain}


def defense_summary(scenario: dict, out: Path, nodes: list[str], attacks: list[Attack], summary: dict) -> dict:
    """``detection``, ``overhead`` and ``traffic`` figures of a run with FU-HST on."""
    rounds = scenario["dfl"]["rounds"]
    records = agent_records(out, nodes)
    by_domain = {d: read_jsonl(out / f"controller-d{d}.jsonl") for d in range(1, scenario["network"]["domains"] + 1)}
    controller = [r for records_of_domain in by_domain.values() for r in records_of_domain]
    intervals = ban_intervals(controller)
    ends = round_ends(records, rounds)
    malicious = set(malicious_nodes(attacks))
    detection = score_detection(attacking_pairs(attacks), controller, ends, nodes, malicious,
                                warmup_rounds=scenario["defense"]["warmup_rounds"])
    teardown = min((r["time"] for r in read_events(out / "events.jsonl", Event.TEARDOWN)),
                   default=float("inf"))
    # Notices sent as the network is dismantled (its border ports go down) are not the run's.
    sent_notices = [r for r in of_kind(controller, Event.NOTICE_SENT) if r["time"] < teardown]
    control_bytes = sum(r["bytes"] for r in sent_notices)
    control_by_round = [0] * rounds  # a notice counts in the round during which it was sent
    for notice in sent_notices:
        control_by_round[min(bisect.bisect_left(ends, notice["time"]), rounds - 1)] += notice["bytes"]
    # Each controller reports its cumulative detector CPU time; the last report is its total.
    detector_cpu = sum(max((r["detector_cpu_s"] for r in of_kind(records_of_domain, Event.DEFENSE_STATS)),
                           default=0.0) for records_of_domain in by_domain.values())
    agents_cpu = sum(max((r.get("cpu_s", 0.0) for r in records if r["node"] == n), default=0.0) for n in nodes)
    inspection_cpu = summary.get("resources", {}).get("cpu_s_by_role", {}).get("inspector", 0.0)
    sent = {(r["src_ip"], r["kind"]): r for r in read_events(out / "traffic.jsonl", Event.TRAFFIC_SENT)}
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
    # A remote domain's ban record carries when its origin signed the decision (controllers.ledger).
    latency = [r["time"] - r["decided_at"] for r in of_kind(controller, Event.BAN) if r.get("decided_at")]
    byzantine = {}
    compromised = sorted(a.params["domain"] for a in attacks if a.category == CONTROLLER)
    if compromised:  # FU-HST on the honest domains' attackers, and what the compromised ones achieved
        home = {h.name: h.domain for h in load_description(out / "network.json").hosts}
        honest_nodes = [n for n in nodes if home[n] not in compromised]
        detection["honest_domains"] = score_detection(
            {pair: kinds for pair, kinds in attacking_pairs(attacks).items() if pair[0] in honest_nodes},
            [r for d, records_of_domain in by_domain.items() if d not in compromised for r in records_of_domain],
            ends, honest_nodes, malicious & set(honest_nodes), warmup_rounds=scenario["defense"]["warmup_rounds"])
        byzantine = {"byzantine": [score_byzantine(by_domain, d, home, malicious, until=teardown) for d in compromised]}
        # What the compromised domains' hosts learn is theirs to lose: the honest domains' own figure.
        final = [r["accuracy"] for r in records if r["round"] == rounds and r["node"] in honest_nodes
                 and r["node"] not in malicious]
        detection["honest_domains"]["honest_accuracy_final"] = statistics.fmean(final) if final else None
    return {
        **byzantine,
        "detection": detection,
        "inspection": inspection_summary(out, scenario["network"]["domains"]),
        "overhead": {
            "interdomain_control_bytes_total": control_bytes,
            "interdomain_control_bytes_per_round": control_bytes / rounds,
            "interdomain_control_bytes_by_round": control_by_round,
            "detector_cpu_s": detector_cpu,
            "agents_cpu_s": agents_cpu,
            "detector_cpu_fraction": detector_cpu / agents_cpu if agents_cpu else None,
            # What the update stream costs whole: the inspection services' CPU beside the trees'.
            "inspection_cpu_s": inspection_cpu,
            "defense_cpu_fraction": (detector_cpu + inspection_cpu) / agents_cpu if agents_cpu else None,
            "control_vs_dfl_bytes_fraction": control_bytes / model_bytes if model_bytes else None,
            "decision_to_enforcement_s_max": max(latency, default=None),
            "decision_to_enforcement_s_median": statistics.median(latency) if latency else None,
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
            self.events.event(Event.SERVICE_STALLED if state == "stalled" else Event.SERVICE_LIVE, service=service)


class RoundFollower:
    """Waits for the agents, printing a line per finished round and naming any that die; logs
    poisoning as the agents report it, runs the traffic attacks and the faults on the round
    schedule."""

    def __init__(self, experiment: Experiment, emulation, *, agents: dict, attackers: TrafficAttackers,
                 injector: FaultInjector, liveness: ServiceWatch) -> None:
        self.experiment, self.emulation, self.agents = experiment, emulation, agents
        self.attackers, self.injector, self.liveness = attackers, injector, liveness
        self.timeline = TrafficTimeline(experiment.attacks)
        self.events, self.progress, self.dfl = experiment.events, experiment.progress, experiment.dfl
        self.reported = 0
        self.poisoned: set[tuple[str, int]] = set()
        self.began = time.monotonic()

    def run(self) -> None:
        budget = self.dfl["rounds"] * (self.dfl["round_timeout_s"] + 60) + 60
        deadline = time.monotonic() + budget
        self.to_round(1)
        while True:
            self.emulation.raise_if_controller_died()
            self.liveness.tick()
            self.injector.tick()
            self.name_the_dead()
            records = agent_records(self.experiment.out, self.experiment.nodes)
            for node in self.injector.follow_rejoins(records):
                self.events.event(Event.AGENT_REJOINED, node=node)
                self.progress(f"agent {node} rejoined from its checkpoint")
            self.log_poisoning(records)
            self.report_finished_rounds(records)
            if all(proc.poll() is not None for proc in self.agents.values()) and not self.injector.busy():
                self.finish()
                return
            if time.monotonic() > deadline:
                stuck = sorted(n for n, p in self.agents.items() if p.poll() is None)
                self.events.event(Event.TIMEOUT, nodes=stuck)
                raise RuntimeError(f"agents {stuck} did not finish within {budget:.0f} s")
            time.sleep(0.2)

    def to_round(self, round_: int) -> None:
        start, stop, records = self.timeline.advance(round_, time.time())
        for record in records:
            self.events.event(Event.ATTACK, **record)
        for attack, node in stop:
            self.attackers.stop(attack.kind, node)
        for attack, node in start:
            self.attackers.start(attack, node)
            self.progress(f"round {round_}: {node} starts a {attack.kind} towards {attack.params['target']} "
                          f"at {attack.params['rate_pps']:g} packets/s")
        for fault in [f for f in self.injector.pending if f.at_round <= round_]:
            self.progress(f"round {round_}: fault {fault.kind} {fault.target} for {fault.duration_s:g} s")
        self.injector.reached(round_)

    def name_the_dead(self) -> None:
        dead = self.experiment.dead
        for node, proc in self.agents.items():
            code = proc.poll()
            if code not in (None, 0) and node not in dead and not self.injector.owns_exit(node):
                dead[node] = code
                self.events.event(Event.AGENT_DIED, node=node, exit_code=code)
                self.progress(f"agent {node} died (exit code {code}); see {self.experiment.out / f'agent-{node}.log'}")

    def log_poisoning(self, records: list[dict]) -> None:
        for r in records:
            if r.get("attack") and (r["node"], r["round"]) not in self.poisoned:
                self.poisoned.add((r["node"], r["round"]))
                self.events.event(Event.ATTACK, node=r["node"], kind=r["attack"], category=POISONING, round=r["round"],
                                  start=r["sending_from"], stop=r["sent_by"])

    def report_finished_rounds(self, records: list[dict]) -> None:
        """A line per round every live agent has finished, in order; the next round's schedule."""
        rounds = self.dfl["rounds"]
        while self.reported < rounds:
            round_ = self.reported + 1
            done = [r for r in records if r["round"] == round_]
            have = {r["node"] for r in done}
            if [n for n in self.experiment.nodes if n not in have and n not in self.experiment.dead
                    and not self.injector.owns_exit(n) and not self.injector.skipped(n, round_, records)]:
                return
            honest = [r for r in done if r["node"] not in self.experiment.malicious]
            accuracy = sum(r["accuracy"] for r in honest) / max(len(honest), 1)
            slowest = max((r["round_time_s"] for r in done), default=0.0)
            pace = (f"slowest round {slowest:.1f} s" if any(r["received_from"] for r in done)
                    else "no model moved: every node aggregated alone")
            self.progress(f"round {round_}/{rounds}: honest accuracy {accuracy:.3f} over {len(honest)} nodes, {pace} "
                          f"({progress_pace(round_, rounds, time.monotonic() - self.began)})")
            self.reported = round_
            self.experiment.save_partial(round_, records)
            if round_ < rounds:
                self.to_round(round_ + 1)

    def finish(self) -> None:
        stop, final = self.timeline.finish(time.time())
        for record in final:
            self.events.event(Event.ATTACK, **record)
        for attack, node in stop:
            self.attackers.stop(attack.kind, node)
