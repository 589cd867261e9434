"""Two `sdfl run`s started at once on one machine: each in its own slot (switch names, dpids,
controller ports), both complete with the results one alone gives, and nothing is left behind."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.mininet

SCENARIO = """
name = "concurrent"
[network]
domains = 2
hosts_per_domain = 2
domain_graph = "line"
[dfl]
rounds = 5
[defense]
fuhst = true
"""


def test_two_runs_started_at_once_both_complete_in_their_own_slots(tmp_path):
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO)
    runs = {name: subprocess.Popen([sys.executable, "-m", "sdfl", "run", str(scenario), "--out", str(tmp_path / name)],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for name in ("a", "b")}
    outputs = {name: run.communicate(timeout=600)[0] for name, run in runs.items()}
    assert all(run.returncode == 0 for run in runs.values()), outputs
    summaries = {name: json.loads((tmp_path / name / "summary.json").read_text()) for name in runs}
    assert all(s["complete"] for s in summaries.values())
    switches = {name: {s["name"] for d in json.loads((tmp_path / name / "network.json").read_text())["domains"]
                       for s in d["switches"]} for name in runs}
    assert sorted(map(sorted, switches.values())) == [["d1s1", "d2s1"], ["r1d1s1", "r1d2s1"]]
    accuracy = [s["dfl"]["honest_accuracy_final"] for s in summaries.values()]
    assert accuracy[0] == pytest.approx(accuracy[1], abs=0.02)  # one seed, one result, whichever slot
    assert all(s["ledger"]["verified"] for s in summaries.values())
