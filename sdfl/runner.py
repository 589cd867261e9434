"""``sdfl run``: a scenario from network bring-up to results, as one timeline.

Network and controllers up (:class:`sdfl.emulation.Emulation`), one agent process per DFL node
started in its Mininet host, progress followed from the agents' flushed per-round records,
dead agents noticed and named, then results written and everything torn down.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from agents.peers import peer_graph
from sdfl.emulation import Emulation
from sdfl.jsonl import JsonLinesWriter, read_jsonl
from sdfl.results import round_rows, summarize, write_rounds_csv
from topologies.layout import LinkParams, make_layout


class EventLog(JsonLinesWriter):
    """``events.jsonl``: one typed, timestamped record per event of the run."""

    def event(self, kind: str, **fields) -> None:
        self.write({"type": kind, "time": time.time(), **fields})


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


def run_experiment(scenario: dict, out: Path, progress=print) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    layout = layout_for(scenario)
    dfl = scenario["dfl"]
    nodes = [h.name for h in layout.hosts]
    neighbours = peer_graph(dfl["peers"], nodes, {h.name: h.domain for h in layout.hosts},
                            list(layout.edges), scenario["seed"], dfl["peers_k"])
    (out / "scenario.json").write_text(json.dumps(scenario, indent=2) + "\n")
    config_path = out / "dfl.json"
    config_path.write_text(json.dumps({"scenario": scenario, "nodes": nodes, "neighbours": neighbours}, indent=2))
    for node in nodes:
        (out / f"agent-{node}.jsonl").unlink(missing_ok=True)
    events = EventLog(out / "events.jsonl")
    dead: dict[str, int] = {}
    try:
        with Emulation(layout, out, scenario["network"]["datapath"], scenario["controller"]["poll_interval"],
                       watched_ports=(dfl["port"],)) as emulation:
            events.event("network_up", datapath=emulation.datapath, **emulation.timings)
            progress(f"network up: {layout.domains} domains x {layout.hosts_per_domain} hosts "
                     f"({emulation.datapath} datapath) in {emulation.timings['bring_up_s']:.1f} s; "
                     f"{len(nodes)} agents, {dfl['rounds']} rounds, {dfl['aggregator']}")
            agents = {}
            for node in nodes:
                with open(out / f"agent-{node}.log", "ab") as log:
                    agents[node] = emulation.net.get(node).popen(
                        [sys.executable, "-m", "agents.agent", "--network", str(emulation.description_path),
                         "--config", str(config_path), "--node", node, "--out", str(out)],
                        stdout=log, stderr=subprocess.STDOUT)
                emulation.record.add_process(agents[node].pid, f"agent {node}")
            events.event("agents_started", nodes=nodes)
            _follow(emulation, agents, out, nodes, dfl, dead, events, progress)
            counters = emulation.fresh_counters(since=time.time())
    finally:
        events.close()
    rows = round_rows(agent_records(out, nodes))
    write_rounds_csv(rows, out / "rounds.csv")
    summary = summarize(scenario, rows, nodes, dead)
    summary["network"] = {
        "datapath": emulation.datapath,
        "bring_up_s": emulation.timings["bring_up_s"],
        "host_ipv4_bytes_total": sum(c["bytes"] for record in counters.values() for c in record["hosts"].values()),
        # IPv4 bytes towards the agents' port, from the controllers' flow counters: the model
        # bytes plus IP/TCP headers (about 3.6 % with a 1500-byte MTU) and any retransmissions.
        "dfl_port_bytes_total": sum(c["watched_port_bytes"].get(str(dfl["port"]), 0)
                                    for record in counters.values() for c in record["hosts"].values()),
    }
    model_bytes = summary["dfl"]["model_bytes_total"]
    summary["network"]["dfl_port_bytes_over_model_bytes"] = (
        summary["network"]["dfl_port_bytes_total"] / model_bytes if model_bytes else None)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _follow(emulation, agents, out, nodes, dfl, dead, events, progress) -> None:
    """Wait for the agents, printing a line per finished round and naming any that die."""
    budget = dfl["rounds"] * (dfl["round_timeout_s"] + 60) + 60
    deadline = time.monotonic() + budget
    reported = 0
    while True:
        emulation.raise_if_controller_died()
        for node, proc in agents.items():
            code = proc.poll()
            if code not in (None, 0) and node not in dead:
                dead[node] = code
                events.event("agent_died", node=node, exit_code=code)
                progress(f"agent {node} died (exit code {code}); see {out / f'agent-{node}.log'}")
        records = agent_records(out, nodes)
        while reported < dfl["rounds"]:
            round_ = reported + 1
            done = [r for r in records if r["round"] == round_]
            if len({r["node"] for r in done}) < len(nodes) - len(dead):
                break
            accuracy = sum(r["accuracy"] for r in done) / max(len(done), 1)
            slowest = max((r["round_time_s"] for r in done), default=0.0)
            progress(f"round {round_}/{dfl['rounds']}: mean accuracy {accuracy:.3f} over "
                     f"{len(done)} nodes, slowest round {slowest:.1f} s")
            reported = round_
        if all(proc.poll() is not None for proc in agents.values()):
            return
        if time.monotonic() > deadline:
            stuck = sorted(n for n, p in agents.items() if p.poll() is None)
            events.event("timeout", nodes=stuck)
            raise RuntimeError(f"agents {stuck} did not finish within {budget:.0f} s")
        time.sleep(0.5)
