"""FU-HST end to end in the real stack: a sign flipper, a sender of unreadable frames and a
flooder are detected by their own domain's controller from what the network shows (mirrored model
frames, flow counters), cut off by drop rules at home and followed by the other domain, and their
victims are left alone."""

from __future__ import annotations

import json

import pytest

from common.jsonl import read_jsonl
from sdfl_runs import DEFENDED_2X3, run_scenario

pytestmark = pytest.mark.mininet

SCENARIO = 'name = "fuhst-e2e"' + DEFENDED_2X3 + """
[[attacks]]
kind = "sign-flip"
nodes = ["d1h2"]
start_round = 5
scale = 4.0
[[attacks]]
kind = "garbage"
nodes = ["d2h2"]
start_round = 6
[[attacks]]
kind = "udp-flood"
nodes = ["d2h3"]
target = "d1h3"
start_round = 5
stop_round = 8
rate_pps = 2000
payload_bytes = 1000
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    _, out = run_scenario(SCENARIO, tmp_path_factory.mktemp("fuhst"))
    return out, json.loads((out / "summary.json").read_text())


def bans(out, domain):
    return {r["node"]: r for r in read_jsonl(out / f"controller-d{domain}.jsonl") if r.get("type") == "ban"}


def last_counters(out, domain):
    return [r for r in read_jsonl(out / f"controller-d{domain}.jsonl") if r["type"] == "counters"][-1]


def test_a_sign_flipper_is_banned_by_its_domain_from_its_mirrored_updates_and_followed_everywhere(run):
    out, summary = run
    home, remote = bans(out, 1), bans(out, 2)
    assert home["d1h2"]["stream"] == "update" and home["d1h2"]["origin"] == 1
    assert home["d1h2"]["round"] >= 5  # not before it attacked
    assert remote["d1h2"]["origin"] == 1  # domain 2 followed the notice
    assert last_counters(out, 1)["hosts"]["d1h2"]["banned_packets"] > 0  # its port's drop rule stopped traffic
    banned_at = home["d1h2"]["time"]
    later = [r for r in read_jsonl(out / "agent-d1h1.jsonl") if r.get("type") == "round" and r["time"] > banned_at + 1]
    assert later and all("d1h2" not in r["received_from"] for r in later)  # honest nodes stop getting its model
    overhead = summary["overhead"]
    assert overhead["interdomain_control_bytes_per_round"] > 0
    by_round = overhead["interdomain_control_bytes_by_round"]  # the report's bar chart
    assert len(by_round) == 10 and sum(by_round) == overhead["interdomain_control_bytes_total"]
    heads = sum(r["bytes"] for d in (1, 2) for r in read_jsonl(out / f"controller-d{d}.jsonl")
                if r["type"] == "notice_sent" and r["kind"] == "heads")
    assert heads > 0 and by_round[0] == heads and sum(by_round[1:4]) == 0  # before the attack: start-up only


def test_a_flooder_is_banned_by_the_flow_stream_and_its_victim_is_not(run):
    out, summary = run
    home, remote = bans(out, 2), bans(out, 1)
    assert home["d2h3"]["stream"] == "flow" and remote["d2h3"]["origin"] == 2
    assert "d1h3" not in home and "d1h3" not in remote  # the victim answered the flood: not an attacker
    flow_bans = {n for d in (1, 2) for n, r in bans(out, d).items() if r["stream"] == "flow"}
    assert flow_bans == {"d2h3"}
    assert last_counters(out, 2)["hosts"]["d2h3"]["banned_packets"] > 1000  # the flood, stopped at its port
    assert summary["traffic"]["time_to_mitigate_s"]  # measured (how fast: the results, not this test)


def test_a_sender_of_frames_no_decoder_reads_is_banned_on_its_mirrored_streams(run):
    out, summary = run
    home, remote = bans(out, 2), bans(out, 1)
    # At once, in a report numbered by the last round the inspection completed (5 or later).
    assert home["d2h2"]["stream"] == "update" and home["d2h2"]["round"] >= 5 and remote["d2h2"]["origin"] == 2
    violations = [r for r in read_jsonl(out / "inspector-d2.jsonl") if r["type"] == "frame_violation"]
    assert violations and {r["sender"] for r in violations} == {"d2h2"}
    assert all(r["why"].startswith("sent bytes that are no model frame") and "NaN or Inf" in r["why"]
               for r in violations)
    assert summary["detection"]["honest_nodes_ever_banned"] == []
