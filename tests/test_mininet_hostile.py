"""Issue 15's attempts against the real stack, from inside Mininet hosts and on the machine: the
run completes, every controller and inspection service stays live, the senders (never their
victims) are banned, stalls of ovs-vswitchd, a controller and an inspector are named, and the
honest nodes end the run exchanging every model."""

from __future__ import annotations

import json

import pytest

from common.jsonl import read_jsonl
from sdfl_runs import run_scenario

pytestmark = pytest.mark.mininet

SCENARIO = """
name = "hostile"
[network]
domains = 3
hosts_per_domain = 4
domain_graph = "ring"
[dfl]
rounds = 18
round_period_s = 2.0
[defense]
fuhst = true
[[attacks]]
kind = "crafted"
nodes = ["d1h2"]
target = "d2h2"
start_round = 5
packets = ["tcp-zero-length-option", "vxlan", "tcp-179", "tcp-6653", "vlan-100", "vlan-0"]
[[attacks]]
kind = "crafted"
nodes = ["d2h3"]
target = "d3h1"
start_round = 6
packets = ["empty-model-frame", "far-round-model-frame"]
rate_pps = 400  # every frame on the wire before its first violations ban it
[[attacks]]
kind = "icmp-flood"
nodes = ["d3h2"]
target = "d1h1"
icmp_type = 0
rate_pps = 8000
start_round = 6
stop_round = 8
[[attacks]]
kind = "connect-flood"
nodes = ["d1h4"]
target = "d2h1"
start_round = 6
stop_round = 9
[[attacks]]
kind = "arp-flood"
nodes = ["d3h4"]
target = "d3h1"
start_round = 9
stop_round = 10
[[faults]]
kind = "stall-vswitchd"
target = "ovs"
at_round = 12
[[faults]]
kind = "stall-controller"
target = "d2"
at_round = 14
[[faults]]
kind = "stall-inspector"
target = "d3"
at_round = 15
"""
ATTACKERS = {"d1h2", "d2h3", "d3h2", "d1h4", "d3h4"}
BANNED = {"d2h3", "d3h2", "d1h4", "d3h4"}  # the crafted parser-breakers of d1h2 flood nothing


def test_hostile_packets_and_stalled_services_leave_the_defense_live_and_the_senders_banned(tmp_path):
    result, out = run_scenario(SCENARIO, tmp_path, timeout=900)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"], result.stdout
    for domain in (1, 2, 3):  # no handler failed, and both services beat to the end
        records = read_jsonl(out / f"controller-d{domain}.jsonl")
        assert not [r for r in records if r["type"] == "fatal"]
        teardown = next(r["time"] for r in read_jsonl(out / "events.jsonl") if r["type"] == "teardown")
        beats = [r["time"] for r in read_jsonl(out / f"inspector-d{domain}.jsonl") if r["type"] == "heartbeat"]
        assert beats[-1] > teardown - 5

    detection = summary["detection"]
    banned = {b["node"] for b in detection["bans"]}
    assert BANNED <= banned, detection["bans"]
    assert detection["honest_nodes_ever_banned"] == []  # d2h1, d1h1 and d3h1 answered; that is no attack
    violations = [r for r in read_jsonl(out / "inspector-d2.jsonl") if r["type"] == "frame_violation"]
    assert {r["sender"] for r in violations} == {"d2h3"}
    assert {r["why"].split()[0] for r in violations} == {"0", "round"}  # no tensors; round 4,000,000,000
    tagged = max(r["hosts"]["d1h2"]["dropped_packets"] for r in read_jsonl(out / "controller-d1.jsonl")
                 if r["type"] == "counters")
    assert tagged > 0  # its 802.1Q frames were dropped at its port and counted
    polls = [r for r in read_jsonl(out / "controller-d1.jsonl") if r["type"] == "counters"]
    assert any(not now["all_rules"] and now["hosts"][n]["flows_active"] < before["hosts"][n]["flows_active"]
               for before, now in zip(polls, polls[1:]) for n in now["hosts"])  # an expiry the switch reported,
    # counted between the polls that take every rule (d1h4's connect flood leaves hundreds)

    stalled = {s["service"] for s in summary["stalls"]}
    assert {"ovs-vswitchd", "controller d2", "inspector d3"} <= stalled
    assert all(f["stall_named"] and f["survived"] for f in summary["faults"])
    assert "ovs-vswitchd stalled" in result.stdout

    rows = [r for r in read_jsonl(out / "events.jsonl")]  # the run's own ground truth is intact
    assert {n for r in rows if r["type"] == "attack_plan" for n in r["malicious"]} == ATTACKERS
    final = [r for n in summary["dfl"]["nodes_completed"] if n not in ATTACKERS
             for r in read_jsonl(out / f"agent-{n}.jsonl") if r.get("type") == "round" and r["round"] >= 17]
    assert final and all(set(r["missing"]) <= ATTACKERS for r in final)  # honest models all arrive again
