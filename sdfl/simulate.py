"""``sdfl simulate``: a scenario's DFL and its update-stream defense in one process, no root.

The same scenario file as ``sdfl run``, the same nodes, shards, round body
(:class:`agents.round.RoundBody`), attacks, wire frames and per-domain inspection and FU-HST
(:class:`controllers.inspector.DomainInspection` feeding the controllers' own
:class:`controllers.domain.DomainLogic`, signed decisions through their ledgers), and the
same result files: ``agent-<node>.jsonl``, ``inspector-dN.jsonl``, ``controller-dN.jsonl`` (every score,
verdict and ban), ``rounds.csv``, ``summary.json``, ``report.md``. What it leaves out is the network: no flow
stream, no traffic attacks, no faults, no timing (a round's time is its number), and a ban cuts
a node off from the next round on. It is the reference a network run is compared with, and the
fast loop for a new attack or detector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agents.agent import build_node
from agents.model import evaluate
from agents.simulation import simulate
from agents.wire import FrameError, ModelFrame, decode
from attacks.agent import poisoner_for
from attacks.plan import POISONING, attacking_pairs, malicious_nodes
from attacks.poisoning import CollusionBoard
from common.events import Event
from common.jsonl import JsonLinesWriter
from common.keys import controller_party, inspector_party, run_keys
from common.runconfig import RunConfig
from controllers.defense import DefenseConfig, Log
from controllers.domain import Datagram, DomainLogic
from controllers.features import measured_warmup_rounds
from controllers.inspector import DomainInspection
from controllers.reports import ReportChannel
from sdfl.results import round_rows, summarize, write_rounds_csv
from sdfl.runner import frame_bounds, run_plan, start_rule, write_summary
from sdfl.scoring import score_detection


class SimulatedDefense:
    """Every domain's inspection and controller logic over the frames of one simulated run."""

    def __init__(self, scenario: dict, layout, neighbours: dict[str, list[str]]) -> None:
        config = DefenseConfig.from_scenario(scenario)
        description = layout.to_description("user", monitor=True)
        self.neighbours = neighbours
        self.domain_of = {h.name: h.domain for h in description.hosts}
        self.domains = [d.id for d in description.domains]
        keys = run_keys(b"simulated run: no secret to keep", len(self.domains), {})
        # A round lasts one second of simulated time: its frames arrive at its number.
        self.inspections = {d: DomainInspection(
            description, d, frame_bounds(scenario), 0.5, measured_warmup_rounds(config.warmup_rounds),
            ReportChannel(keys[inspector_party(d)][controller_party(d)]), started=0.0, rule=start_rule(scenario))
            for d in self.domains}
        self.logic = {d: DomainLogic(description, d, keys=keys[controller_party(d)], defense=config,
                                     poll_interval=1.0) for d in self.domains}
        self.address = {d.id: d.coordination.address for d in description.domains}
        self.domain_at = {address: d for d, address in self.address.items()}
        self.inspection = {d.id: d.inspection.address for d in description.domains}
        self.bans: list[dict] = []
        self.inspector_records: dict[int, list[dict]] = {d: [] for d in self.domains}  # as inspector-dN.jsonl
        self.controller_records: dict[int, list[dict]] = {d: [] for d in self.domains}  # as controller-dN.jsonl
        self.notice_bytes = 0

    def __call__(self, round_: int, wire: dict[str, bytes]) -> set[str]:
        decoded: dict[str, ModelFrame | FrameError] = {}
        for sender, data in wire.items():
            try:
                decoded[sender] = decode(data)
            except FrameError as error:  # what the inspection's stream reader makes of it too
                decoded[sender] = error
        for domain in self.domains:
            inspection = self.inspections[domain]
            for sender, frame in decoded.items():
                for receiver in self.neighbours[sender]:
                    if receiver not in wire or domain not in (self.domain_of[sender], self.domain_of[receiver]):
                        continue
                    if isinstance(frame, FrameError):
                        inspection.unreadable(round_, sender, str(frame))
                    else:
                        inspection.frame(round_, sender, receiver, frame)
            for sealed in inspection.reports(round_ + 1.0):
                now = float(round_)
                self._carry_out(now, domain, self.logic[domain].report(now, sealed, self.inspection[domain]))
            self.inspector_records[domain] += inspection.log
            inspection.log.clear()
        # A home ban cuts a node off; another domain's drop rule stops it at that domain's borders.
        cut = {n for d, logic in self.logic.items() for n in logic.banned if self.domain_of[n] == d}
        dropped = {(n, receiver) for d, logic in self.logic.items() for n in logic.remote_drops
                   for receiver, home in self.domain_of.items() if home == d}
        return cut | dropped

    def _carry_out(self, now: float, domain: int, effects: list) -> None:
        """Deliver notices to their domains at once; keep the ban records; no switch to program."""
        for effect in effects:
            if isinstance(effect, Datagram):
                self.notice_bytes += len(effect.data)
                receiver = self.domain_at[effect.address]
                self._carry_out(now, receiver, self.logic[receiver].notice(now, effect.data, self.address[domain]))
            elif isinstance(effect, Log):
                self.controller_records[domain].append(effect.record)
                if effect.record["type"] == Event.BAN:
                    self.bans.append(effect.record)


def simulate_run(scenario: dict, out: Path | None = None, progress=print, oracle: bool = False) -> dict:
    """Simulate ``scenario``; with ``out``, write the run's result files there. Returns the
    summary (``summary.json``'s content). ``oracle``: no detector; every attacker is cut off
    just before its first attack, the best any ban can do."""
    layout, names, neighbours, attacks, faults = run_plan(scenario)
    dfl = scenario["dfl"]
    left_out = [a.kind for a in attacks if a.category != POISONING] + [f.kind for f in faults]
    if left_out:
        progress(f"not simulated (they need the network): {', '.join(sorted(set(left_out)))}")
    config = RunConfig(scenario, tuple(names), {n: tuple(p) for n, p in neighbours.items()},
                       tuple(a.to_record() for a in attacks if a.category == POISONING))
    nodes = {n: build_node(config, n) for n in names}
    malicious = set(malicious_nodes(attacks))
    poisoners = {n for a in attacks if a.category == POISONING for n in a.nodes}
    board = CollusionBoard()
    defense = _defense(scenario, layout, neighbours, attacks, oracle)
    records = simulate(nodes, neighbours, dfl["rounds"],
                       behaviours={n: poisoner_for(config, nodes[n], board, collusion_wait_s=0.0) for n in poisoners},
                       watch=defense)
    rows = round_rows(records)
    summary = summarize(scenario, rows, names, {}, malicious)
    summary["simulated"] = True
    # A node cut off by a ban stops there: the run is complete when every other one finished.
    summary["dfl"]["cut_off_nodes"] = sorted(set(names) - set(summary["dfl"]["nodes_completed"]))
    summary["complete"] = True
    dataset = nodes[names[0]].dataset
    # Every honest node's last model, one cut off by a false ban included (it stopped there).
    summary["dfl"]["honest_accuracy_of_final_models"] = float(np.mean(
        [evaluate(nodes[n].model, dataset.x_test, dataset.y_test)[0] for n in names if n not in malicious]))
    summary["attacks"] = {"malicious_nodes": sorted(malicious), "malicious_fraction": len(malicious) / len(names),
                          "plan": [a.to_record() for a in attacks], "not_simulated": sorted(set(left_out))}
    if isinstance(defense, SimulatedDefense):
        ends = [float(r) for r in range(1, dfl["rounds"] + 1)]  # a round's time is its number
        summary["detection"] = score_detection(attacking_pairs(attacks), defense.bans, ends, names, malicious,
                                               warmup_rounds=scenario["defense"]["warmup_rounds"])
        summary["overhead"] = {"interdomain_control_bytes_total": defense.notice_bytes,
                               "interdomain_control_bytes_per_round": defense.notice_bytes / dfl["rounds"]}
    for round_ in range(1, dfl["rounds"] + 1):
        accuracy = summary["dfl"]["honest_accuracy_by_round"][round_ - 1]
        if accuracy is not None:
            progress(f"round {round_}/{dfl['rounds']}: honest accuracy {accuracy:.3f}")
    if out is not None:
        _write_results(out, names, records, rows, summary)
        if isinstance(defense, SimulatedDefense):  # what each domain measured and decided, as a run's files
            kept = {"inspector": defense.inspector_records, "controller": defense.controller_records}
            for name, by_domain in kept.items():
                for domain, records_of_domain in by_domain.items():
                    with JsonLinesWriter(out / f"{name}-d{domain}.jsonl") as writer:
                        for record in records_of_domain:
                            writer.write(record)
    return summary


def _defense(scenario: dict, layout, neighbours: dict, attacks: list, oracle: bool):
    """What watches the simulated wire: FU-HST's update stream, the oracle, or nothing."""
    if oracle:
        pairs = attacking_pairs(attacks)
        onset = {node: min(r for n, r in pairs if n == node) for node, _ in pairs}
        return lambda round_, wire: {n for n, first in onset.items() if round_ >= first - 1}
    return SimulatedDefense(scenario, layout, neighbours) if scenario["defense"]["fuhst"] else None


def _write_results(out: Path, names: list[str], records: list[dict], rows: list[dict], summary: dict) -> None:
    """The result files of a run: agent records, rounds.csv, summary.json."""
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        with JsonLinesWriter(out / f"agent-{name}.jsonl") as writer:
            for record in records:
                if record["node"] == name:
                    writer.write(record)
    write_rounds_csv(rows, out / "rounds.csv")
    write_summary(out, summary)
