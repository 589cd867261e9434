"""The insertion attack end to end in the real stack: an agent that writes its honest frame
ahead of each poisoned one, on segments its receivers' kernels drop (a wrong TCP checksum), is
named by its domain's inspection for the two versions it sent, and banned, and no honest node
is. (That a receiver's kernel drops the decoy and takes the poisoned bytes is shown on real
kernels in ``tests/test_inspection.py``.)"""

from __future__ import annotations

import json

import pytest

from common.jsonl import read_jsonl
from sdfl_runs import DEFENDED_2X3, run_scenario

pytestmark = pytest.mark.mininet

SCENARIO = 'name = "insertion-e2e"' + DEFENDED_2X3 + """
[[attacks]]
kind = "insertion"
nodes = ["d1h2"]
start_round = 5
scale = 4.0
"""


def test_an_insertion_attacker_is_named_for_its_two_versions_and_banned(tmp_path):
    _, out = run_scenario(SCENARIO, tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    violations = [r for r in read_jsonl(out / "inspector-d1.jsonl") if r["type"] == "frame_violation"]
    assert violations and {r["sender"] for r in violations} == {"d1h2"}
    assert all("two different versions" in r["why"] for r in violations)
    bans = {r["node"]: r for r in read_jsonl(out / "controller-d1.jsonl") if r["type"] == "ban"}
    assert bans["d1h2"]["stream"] == "update" and bans["d1h2"]["round"] >= 5  # not before it attacked
    assert summary["detection"]["honest_nodes_ever_banned"] == []
    assert "no decoy written" not in (out / "agent-d1h2.log").read_text()  # every decoy went out
