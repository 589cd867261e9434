"""FU-HST's update stream across seeds, domain counts, attacker fractions and attacks, fast.

Each cell runs a scenario's DFL in one process (:func:`agents.simulation.simulate`): the
testbed's own nodes, shards, poisoners and wire frames, and per domain the inspection
service's round reports (:func:`controllers.inspector.round_report`) feeding the controllers'
:class:`controllers.defense.DomainDefense`, whose ban notices reach every other domain's
defense through the binary coordination format. What it leaves out is the network: no flow
stream, no timing, and a ban cuts a node off from the next round on. The testbed itself
(``sdfl run``) measures the full stack; this sweep asks whether the detection holds across
settings too many for real runs on two cores.

    .venv/bin/python benchmarks/detection_sweep.py --out runs/detection-sweep.csv
    .venv/bin/python benchmarks/detection_sweep.py --seeds 0 --domains 3 --attacks sign-flip:4
"""

from __future__ import annotations

import argparse
import csv
import itertools
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.agent import build_node  # noqa: E402
from agents.model import evaluate  # noqa: E402
from agents.simulation import simulate  # noqa: E402
from agents.wire import FrameError, decode  # noqa: E402
from attacks.agent import poisoner_for  # noqa: E402
from attacks.plan import attacking_pairs, malicious_nodes, normalize_entry  # noqa: E402
from attacks.poisoning import CollusionBoard  # noqa: E402
from common.keys import controller_party, pair_key  # noqa: E402
from controllers.coordination import NoticeChannel  # noqa: E402
from controllers.defense import Ban, DefenseConfig, DomainDefense, Send  # noqa: E402
from controllers.features import measured_warmup_rounds  # noqa: E402
from controllers.inspector import DomainInspection  # noqa: E402
from controllers.reports import ReportChannel  # noqa: E402
from sdfl.runner import frame_bounds, run_plan  # noqa: E402
from sdfl.scenario import load_scenario  # noqa: E402
from sdfl.scoring import ban_intervals, score_detection  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


class SimulatedDefense:
    """Every domain's inspection and FU-HST over the frames of one simulated run."""

    def __init__(self, scenario: dict, layout, neighbours: dict[str, list[str]]) -> None:
        config = DefenseConfig.from_scenario(scenario)
        description = layout.to_description("user", monitor=True)
        hosts = description.hosts
        self.neighbours = neighbours
        self.domain_of = {h.name: h.domain for h in hosts}
        self.domains = sorted(set(self.domain_of.values()))
        # A round lasts one second of simulated time: its frames arrive at its number.
        key = b"inspection-report-key-of-sweep!!"
        self.inspections = {d: DomainInspection(description, d, frame_bounds(scenario), 0.5,
                                                measured_warmup_rounds(config.warmup_rounds), ReportChannel(key),
                                                started=0.0) for d in self.domains}
        self.report_channels = {d: ReportChannel(key, seq=0) for d in self.domains}
        self.defenses = {d: DomainDefense(d, hosts, config) for d in self.domains}
        # Notices travel as in the testbed: numbered, tagged per receiver, checked on arrival.
        secret = b"detection-sweep"
        self.channels = {d: NoticeChannel(d, {e: pair_key(secret, controller_party(d), controller_party(e))
                                              for e in self.domains if e != d}) for d in self.domains}
        self.bans: list[dict] = []
        self.notice_bytes = 0

    def __call__(self, round_: int, wire: dict[str, bytes]) -> set[str]:
        decoded = {}
        for sender, data in wire.items():
            try:
                decoded[sender] = decode(data)
            except FrameError:
                continue
        cut: set[str] = set()
        for domain in self.domains:
            inspection = self.inspections[domain]
            for sender, frame in decoded.items():
                for receiver in self.neighbours[sender]:
                    if receiver in wire and domain in (self.domain_of[sender], self.domain_of[receiver]):
                        inspection.frame(round_, sender, receiver, frame)
            inspection.log.clear()
            for sealed in inspection.reports(round_ + 1.0):
                report = self.report_channels[domain].open(sealed)
                cut |= self._carry_out(domain, round_, self.defenses[domain].on_round(
                    round_, report.round, report.features, report.violations))
        return cut

    def _carry_out(self, domain: int, now: float, actions: list) -> set[str]:
        cut = set()
        for action in actions:
            if isinstance(action, Ban):
                cut.add(action.node)
            elif isinstance(action, Send):
                for other, data in self.channels[domain].outgoing(action.notice).items():
                    self.notice_bytes += len(data)
                    notice = self.channels[other].incoming(data)
                    cut |= self._carry_out(other, now, self.defenses[other].on_notice(now, notice))
            elif action.record.get("type") == "ban":
                self.bans.append(action.record)
        return cut


def run_cell(scenario: dict, oracle: bool = False) -> dict:
    """One simulated run: honest accuracy and detection scored as ``sdfl run`` scores them.
    ``oracle``: no detector; every attacker is cut off just before its first attack, the best
    any ban can do (what remains of the gap to the clean run is its lost data)."""
    layout, names, neighbours, attacks, _faults = run_plan(scenario)
    dfl = scenario["dfl"]
    config = {"scenario": scenario, "nodes": names, "attacks": [a.to_record() for a in attacks]}
    board = CollusionBoard()
    nodes = {n: build_node(config, n) for n in names}
    malicious = set(malicious_nodes(attacks))
    defense = None
    if oracle:
        pairs = attacking_pairs(attacks)
        onset = {node: min(r for n, r in pairs if n == node) for node, _ in pairs}
        defense = lambda round_, wire: {n for n, first in onset.items() if round_ >= first - 1}  # noqa: E731
    elif scenario["defense"]["fuhst"]:
        defense = SimulatedDefense(scenario, layout, neighbours)
    began = time.process_time()
    simulate(nodes, neighbours, dfl["rounds"],
             behaviours={n: poisoner_for(config, nodes[n], board, collusion_wait_s=0.0) for n in malicious},
             watch=defense)
    node_cpu = time.process_time() - began
    dataset = nodes[names[0]].dataset
    honest = [n for n in names if n not in malicious]
    row = {"honest_accuracy": float(np.mean([evaluate(nodes[n].model, dataset.x_test, dataset.y_test)[0]
                                             for n in honest])),
           "malicious": " ".join(sorted(malicious)), "cpu_s": round(node_cpu, 1)}
    if isinstance(defense, SimulatedDefense):
        ends = [float(r) for r in range(1, dfl["rounds"] + 1)]  # a round's time is its number
        detection = score_detection(attacking_pairs(attacks), ban_intervals(defense.bans), ends, names, malicious,
                                    scenario["defense"]["warmup_rounds"], defense.bans)
        row.update({"f1": detection["f1"], "false_ban_rate": detection["false_ban_rate"],
                    "honest_banned": " ".join(detection["honest_nodes_ever_banned"]),
                    "time_to_ban_rounds": detection["time_to_ban_rounds_median"],
                    "notice_bytes_per_round": defense.notice_bytes / dfl["rounds"]})
    return row


def attack_entry(spec: str, fraction: float, start_round: int) -> list[dict]:
    """``sign-flip:4`` -> one [[attacks]] entry (kind, then its main parameter); ``none`` -> []."""
    if spec == "none":
        return []
    kind, _, value = spec.partition(":")
    entry = {"kind": kind, "fraction": fraction, "start_round": start_round}
    if value:
        entry[{"sign-flip": "scale", "gaussian": "sigma", "ipm": "epsilon"}[kind]] = float(value)
    return [entry]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", type=Path, default=ROOT / "scenarios" / "paper.toml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--domains", type=int, nargs="+", default=[2, 3, 4, 5])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25])
    parser.add_argument("--attacks", nargs="+", default=["sign-flip:0.5", "sign-flip:1", "sign-flip:4"])
    parser.add_argument("--defenses", nargs="+", default=["fuhst"], help="fuhst, threshold, none")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="scenario override for every cell, as in sdfl run")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "detection-sweep.csv")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # as the agents do: tiny models, and two sweeps side by side do not thrash
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows, clean, oracle = [], {}, {}
    cells = list(itertools.product(args.domains, args.seeds, args.fractions, args.attacks, args.defenses))
    for domains, seed, fraction, attack, defense in cells:
        base = load_scenario(args.scenario, [*args.overrides, f"seed={seed}", f"network.domains={domains}"])
        start = base["attacks"][0]["start_round"] if base["attacks"] else 5
        if (domains, seed) not in clean:
            clean[(domains, seed)] = run_cell({**base, "attacks": [], "defense": {**base["defense"], "fuhst": False}})
        scenario = {**base, "attacks": [normalize_entry(e, "attacks") for e in attack_entry(attack, fraction, start)],
                    "defense": {**base["defense"], "fuhst": defense != "none",
                                "detector": defense if defense != "none" else "fuhst"}}
        if scenario["attacks"] and (domains, seed, fraction) not in oracle:
            oracle[(domains, seed, fraction)] = run_cell(scenario, oracle=True)
        row = {"domains": domains, "seed": seed, "fraction": fraction, "attack": attack, "defense": defense,
               **run_cell(scenario), "clean_accuracy": clean[(domains, seed)]["honest_accuracy"]}
        row["accuracy_gap"] = row["clean_accuracy"] - row["honest_accuracy"]
        if scenario["attacks"]:
            row["oracle_accuracy"] = oracle[(domains, seed, fraction)]["honest_accuracy"]
            row["gap_beyond_oracle"] = row["oracle_accuracy"] - row["honest_accuracy"]
        rows.append(row)
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
        with args.out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
            writer.writeheader()
            writer.writerows(rows)
    for defense in args.defenses:
        chosen = [r for r in rows if r["defense"] == defense and r["attack"] != "none"]
        if chosen and "f1" in chosen[0]:
            print(f"{defense}: {len(chosen)} cells, F1 min {min(r['f1'] for r in chosen):.3f} "
                  f"median {statistics.median(r['f1'] for r in chosen):.3f}, false-ban max "
                  f"{max(r['false_ban_rate'] for r in chosen):.3f}, accuracy gap max "
                  f"{max(r['accuracy_gap'] for r in chosen):.3f} (beyond the oracle's: max "
                  f"{max(r['gap_beyond_oracle'] for r in chosen):.3f})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
