"""One compromised domain among four, in the real stack (ring and mesh): its controller's foreign
bans, accusations, "unbans", forged link state, forgeries, replays, withheld and equivocating
decisions cross the real coordination sockets, and every honest domain refuses, rejects or
holds each as it must, logs why, and keeps routing and banning as before."""

from __future__ import annotations

import json

import pytest

from common.jsonl import read_jsonl
from sdfl_runs import run_scenario

pytestmark = pytest.mark.mininet

SCENARIO = """
name = "byzantine-e2e"
[network]
domains = 4
hosts_per_domain = 2
domain_graph = "{graph}"
[dfl]
rounds = 12
peers = "domain-full+paired"
[defense]
fuhst = true
[[attacks]]
kind = "udp-flood"
nodes = ["d1h2"]
target = "d2h1"
start_round = 5
stop_round = 7
rate_pps = 2000
payload_bytes = 1000
[[attacks]]
kind = "byzantine-domain"
domain = 4
start_round = 8
stop_round = 10
"""


@pytest.mark.parametrize("graph", ["ring", "mesh"])
def test_a_byzantine_domain_among_four_changes_nothing_at_the_honest_domains(tmp_path, graph):
    _, out = run_scenario(SCENARIO.format(graph=graph), tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    [byzantine] = summary["byzantine"]
    assert set(byzantine["acts"]) == {"ban-honest", "accuse-honest", "unban-foreign", "link-down", "forge", "replay",
                                      "withhold", "equivocate"}
    assert byzantine["unanswered"] == []  # each act met its refusal, rejection or relay at domains 1-3
    assert byzantine["dropped_by_byzantine"] == [] and byzantine["home_bans_lifted"] == []
    assert byzantine["forged_route_changes"] == []
    teardown = min(r["time"] for r in read_jsonl(out / "events.jsonl") if r["type"] == "teardown")
    for domain in (1, 2, 3):
        records = read_jsonl(out / f"controller-d{domain}.jsonl")
        assert not [r for r in records if r["type"] == "link_down" and r["time"] < teardown]  # no route changed
        refused = [r for r in records if r["type"] in ("decision_refused", "notice_rejected")]
        assert refused and all(r["why"] for r in refused)  # each with its reason
        bans = {r["node"]: r["origin"] for r in records if r["type"] == "ban"}
        assert bans.get("d1h2") == 1  # the honest domain's flooder: banned at home, dropped everywhere
    assert 0 < summary["detection"]["honest_domains"]["honest_accuracy_final"] <= 1  # the honest domains' own
    assert summary["ledger"]["verified"] is True  # sdfl ledger verify: every chain and signature
    assert {e["origin"] for e in summary["ledger"]["equivocations"]} == {4}  # the proof, across the files
