"""Attacks in the real stack: a scheduled flood leaves its host and stops; poisoners are ground truth."""

from __future__ import annotations

import json
import statistics

import pytest

from common.jsonl import read_jsonl
from sdfl_runs import run_scenario

pytestmark = pytest.mark.mininet

SCENARIO = """
name = "attacked"
[network]
domains = 2
hosts_per_domain = 3
domain_graph = "line"
[dfl]
rounds = 7
round_period_s = 2.0
[[attacks]]
kind = "udp-flood"
nodes = ["d1h3"]
target = "d2h2"
start_round = 3
stop_round = 4
rate_pps = 2000
payload_bytes = 1000
[[attacks]]
kind = "sign-flip"
nodes = ["d2h3"]
start_round = 2
scale = 4.0
"""


def test_a_scheduled_flood_leaves_the_attacker_and_stops_and_every_act_is_ground_truth(tmp_path):
    result, out = run_scenario(SCENARIO, tmp_path, timeout=600)
    assert "round 3: d1h3 starts a udp-flood towards d2h2" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["attacks"]["malicious_nodes"] == ["d1h3", "d2h3"]
    assert summary["dfl"]["honest_nodes_reporting_final"] == 4  # attackers are never honest

    events = read_jsonl(out / "events.jsonl")
    plan = next(e for e in events if e["type"] == "attack_plan")
    assert plan["malicious"] == ["d1h3", "d2h3"]
    acts = [e for e in events if e["type"] == "attack"]
    flood = [e for e in acts if e["kind"] == "udp-flood"]
    assert [(e["node"], e["round"], e["target"]) for e in flood] == [("d1h3", 3, "d2h2"), ("d1h3", 4, "d2h2")]
    assert all(e["start"] < e["stop"] for e in acts)
    assert sorted((e["node"], e["round"]) for e in acts if e["kind"] == "sign-flip") == [
        ("d2h3", r) for r in range(2, 8)]

    # One sender process ran across both rounds and ended with its window.
    [sent] = read_jsonl(out / "traffic.jsonl")
    assert sent["packets"] > 1000 and sent["src_ip"] == "10.1.0.3"
    assert flood[0]["start"] <= sent["started"] and sent["stopped"] <= flood[-1]["stop"] + 6

    # The controller of domain 1 counted the flood at the attacker's edge port ...
    counters = [(c["requested_at"], c["hosts"]["d1h3"]["bytes"])
                for c in read_jsonl(out / "controller-d1.jsonl") if c["type"] == "counters"]
    assert counters[-1][1] >= 0.9 * sent["bytes"]
    host_bytes = summary["network"]["host_ipv4_bytes"]
    honest = statistics.median(v for k, v in host_bytes.items() if k not in ("d1h3", "d2h3"))
    assert host_bytes["d1h3"] > 10 * honest
    # ... and after the stop (plus the switch's stats settling) the attacker sends DFL traffic only.
    after = [(t, b) for t, b in counters if t > sent["stopped"] + 1.5]
    assert len(after) >= 2
    rate_after = (after[-1][1] - after[0][1]) / (after[-1][0] - after[0][0])
    flood_rate = sent["bytes"] / (sent["stopped"] - sent["started"])
    assert rate_after < 0.05 * flood_rate
