"""DFL agents as real processes in Mininet hosts, models crossing the emulated switches."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from common.jsonl import read_jsonl

pytestmark = pytest.mark.mininet


CLEAN = Path(__file__).resolve().parent.parent / "scenarios" / "clean.toml"


def sdfl_run(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    """A run of the clean reference scenario (no attacks, no defense)."""
    args = [sys.executable, "-m", "sdfl", "run", str(CLEAN), "--out", str(out)]
    for override in overrides:
        args += ["--set", override]
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


def test_a_short_run_learns_and_writes_every_result(tmp_path):
    result = sdfl_run(tmp_path, "dfl.rounds=4", "network.hosts_per_domain=2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "round 4/4" in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    dfl = summary["dfl"]
    assert summary["complete"] and dfl["honest_nodes_reporting_final"] == 6
    assert dfl["honest_accuracy_final"] > 0.6
    assert len(dfl["honest_accuracy_by_round"]) == 4 and dfl["model_bytes_total"] > 0
    assert summary["scenario"]["dfl"]["rounds"] == 4
    rows = list(csv.DictReader(open(tmp_path / "rounds.csv")))
    assert len(rows) == 6 * 4 and all(int(r["bytes_sent"]) > 0 for r in rows)
    # the models crossed the switches: the controllers' microflow counters for the agents' port
    # saw the model bytes plus Ethernet/IP/TCP headers, and no more than 5 % on top
    assert 1.0 <= summary["network"]["dfl_port_bytes_over_model_bytes"] <= 1.05
    events = read_jsonl(tmp_path / "events.jsonl")
    assert [e["type"] for e in events][:3] == ["attack_plan", "network_up", "agents_started"]
    assert events[0]["malicious"] == [] and summary["attacks"]["malicious_nodes"] == []


def test_pcap_captures_every_hosts_model_traffic_readably_and_the_run_writes_its_report(tmp_path):
    args = [sys.executable, "-m", "sdfl", "run", str(CLEAN), "--out", str(tmp_path), "--pcap",
            "--set", "dfl.rounds=3", "--set", "network.domains=2", "--set", "network.hosts_per_domain=2"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    for host in ("d1h1", "d1h2", "d2h1", "d2h2"):
        read = subprocess.run(["tshark", "-r", str(tmp_path / "pcap" / f"{host}.pcap"), "-Y", "tcp.dstport == 7000",
                               "-T", "fields", "-e", "ip.src"], capture_output=True, text=True, timeout=120)
        assert read.returncode == 0, read.stderr
        senders = set(read.stdout.split())
        assert len(senders) >= 2  # it sent models and received its neighbours' (one of them in the other domain)
    report = (tmp_path / "report.md").read_text()
    assert "honest accuracy, final round" in report and (tmp_path / "accuracy.png").is_file()


def agent_pid(node: str) -> int | None:
    """The live agent process of ``node``, as the running run's record names it."""
    from sdfl.records import load_records

    for record in load_records():
        for process in record.processes:
            if process.role == f"agent {node}" and process.alive():
                return process.pid
    return None


def test_a_killed_agent_is_named_and_the_others_finish_every_round(tmp_path):
    killed = []

    def kill_after_round_two():
        # Warm rounds take ~0.1 s: poll fast, and record whether the kill really happened.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if len(read_jsonl(tmp_path / "agent-d2h1.jsonl")) >= 2:
                pid = agent_pid("d2h1")
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_after_round_two)
    killer.start()
    result = sdfl_run(tmp_path, "dfl.rounds=6", "network.hosts_per_domain=2", "dfl.round_timeout_s=3")
    killer.join()
    assert killed, "d2h1 finished before it could be killed"
    assert result.returncode == 0, result.stdout + result.stderr
    assert "agent d2h1 died" in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["dfl"]["dead_nodes"]) == ["d2h1"]
    assert summary["dfl"]["nodes_completed"] == ["d1h1", "d1h2", "d2h2", "d3h1", "d3h2"]
    last = [r for r in read_jsonl(tmp_path / "agent-d2h2.jsonl") if r["round"] == 6][0]
    assert last["missing"] == ["d2h1"]


def test_kill_9_of_a_run_leaves_readable_partial_results_clean_repairs_the_machine_and_the_next_run_works(tmp_path):
    from conftest import NOTHING_LEFT, leftovers

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "sdfl", "run", str(CLEAN), "--out", str(out),
                             "--set", "dfl.rounds=30", "--set", "network.hosts_per_domain=2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while True:  # mid-run: a few rounds saved, many to go
            try:
                partial = json.loads((out / "summary.json").read_text())
            except (OSError, ValueError):
                partial = {}
            if partial.get("partial", {}).get("rounds_reported", 0) >= 3:
                break
            assert proc.poll() is None and time.monotonic() < deadline, "the run never got to round 3"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    cleaned = subprocess.run([sys.executable, "-m", "sdfl", "clean"], capture_output=True, text=True, timeout=120)
    assert cleaned.returncode == 0, cleaned.stderr
    assert "removed runs:" in cleaned.stdout  # the killed run's record: what it had made is gone with it
    time.sleep(0.5)
    assert leftovers() == NOTHING_LEFT
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["partial"]["rounds_reported"] >= 3
    saved = summary["dfl"]["honest_accuracy_by_round"]
    assert all(a is not None for a in saved[:3]) and saved[-1] is None
    report = subprocess.run([sys.executable, "-m", "sdfl", "report", str(out)], capture_output=True, text=True,
                            timeout=300)
    assert report.returncode == 0, report.stderr
    assert "Incomplete run" in (out / "report.md").read_text()
    again = sdfl_run(tmp_path / "next", "dfl.rounds=2", "network.hosts_per_domain=2")
    assert again.returncode == 0, again.stdout + again.stderr


def test_every_fault_kind_is_survived_and_reported(tmp_path):
    from sdfl_runs import run_scenario

    result, out = run_scenario('''
name = "faults-short"
[network]
domains = 3
hosts_per_domain = 2
domain_graph = "ring"
[dfl]
rounds = 16
round_period_s = 1.0
round_timeout_s = 10.0
checkpoint_every = 1
[defense]
fuhst = true
[[faults]]
kind = "kill-agent"
target = "d1h2"
at_round = 2
duration = 1
[[faults]]
kind = "stall-agent"
target = "d2h2"
at_round = 8
duration = 3
[[faults]]
kind = "kill-controller"
target = "d3"
at_round = 10
duration = 3
[[faults]]
kind = "cut-link"
target = "d1-d2"
at_round = 12
duration = 3
''', tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    faults = summary["faults"]
    assert [(f["kind"], f["target"]) for f in faults] == [("kill-agent", "d1h2"), ("stall-agent", "d2h2"),
                                                          ("kill-controller", "d3"), ("cut-link", "d1-d2")]
    assert all(f["survived"] for f in faults), json.dumps(faults, indent=1)
    assert summary["complete"] and len(summary["dfl"]["nodes_completed"]) == 6 and not summary["dfl"]["dead_nodes"]
    kill, stall, controller, cut = faults
    assert 2 < kill["rejoined_round"] <= 16 and "agent d1h2 rejoined" in result.stdout
    rejoined = [r for r in read_jsonl(out / "agent-d1h2.jsonl") if r.get("type") == "rejoined"]
    assert rejoined and rejoined[0]["checkpoint_round"] >= 1
    neighbours = json.loads((out / "dfl.json").read_text())["neighbours"]["d1h2"]
    for node in neighbours:  # they hear the rejoined agent again, to the end
        last = [r for r in read_jsonl(out / f"agent-{node}.jsonl") if r["round"] == 16][0]
        assert "d1h2" in last["received_from"], (node, last)
    assert stall["slowest_round_during_s"] < 10.0 + 2  # the others kept their 10 s deadline
    assert controller["banned_after_restart"] == []
    assert cut["domains_rerouted"] == [1, 2, 3]
    assert summary["dfl"]["honest_accuracy_final"] > 0.8
