"""``sdfl simulate``: the scenario's federation and its update-stream defense in one process,
with the result files of a run."""

import csv
import json

from common.jsonl import read_jsonl
from sdfl.cli import DEFAULT_SCENARIO, main
from sdfl.scenario import load_scenario
from sdfl.simulate import simulate_run


def test_the_paper_scenario_simulated_learns_and_bans_its_flippers_only(tmp_path):
    scenario = load_scenario(DEFAULT_SCENARIO, ["dfl.rounds=8"])
    summary = simulate_run(scenario, tmp_path, progress=lambda line: None)
    malicious = set(summary["attacks"]["malicious_nodes"])
    assert len(malicious) == 3 and summary["complete"] and summary["simulated"]
    assert {b["node"] for b in summary["detection"]["bans"]} == malicious
    assert summary["detection"]["honest_nodes_ever_banned"] == []
    assert summary["dfl"]["honest_accuracy_final"] > 0.8
    assert json.loads((tmp_path / "summary.json").read_text())["dfl"]["honest_accuracy_final"] == \
        summary["dfl"]["honest_accuracy_final"]
    with open(tmp_path / "rounds.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["round"] for r in rows} == {str(r) for r in range(1, 9)}
    assert all(set(r["missing"].split()) <= malicious for r in rows if r["node"] not in malicious)
    # Each domain's update features, as a run's inspector-dN.jsonl: the accusation bar's evidence.
    remote = [(r["round"], node, f["off_home"]) for d in (1, 2, 3)
              for r in read_jsonl(tmp_path / f"inspector-d{d}.jsonl") if r["type"] == "update_features"
              for node, f in r["remote"].items()]
    bar = scenario["defense"]["accuse_bar"]
    assert {node for round_, node, score in remote if score >= bar} == malicious  # judged a round late
    assert all(score < bar for round_, node, score in remote if node not in malicious or round_ < 5)
    # And what each domain decided, as a run's controller-dN.jsonl: every score, every ban with its why.
    decided = {d: read_jsonl(tmp_path / f"controller-d{d}.jsonl") for d in (1, 2, 3)}
    own_bans = {r["node"] for records in decided.values() for r in records
                if r["type"] == "ban" and r["origin"] == r["domain"]}
    assert own_bans == malicious
    assert all(any(r["type"] == "scores" and r["round"] == 6 for r in records) for records in decided.values())


def test_the_command_writes_a_report_and_names_what_it_cannot_simulate(tmp_path, capsys):
    assert main(["simulate", str(DEFAULT_SCENARIO.parent / "flood.toml"), "--set", "dfl.rounds=6",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "not simulated (they need the network)" in out and "report:" in out
    assert "**Simulated**" in (tmp_path / "report.md").read_text()


def test_the_same_seed_simulates_the_same_run(tmp_path):
    scenario = load_scenario(DEFAULT_SCENARIO, ["dfl.rounds=6"])
    first = simulate_run(scenario, progress=lambda line: None)
    second = simulate_run(scenario, progress=lambda line: None)
    assert first["dfl"]["honest_accuracy_by_round"] == second["dfl"]["honest_accuracy_by_round"]


def backdoor_scenario(tmp_path, *overrides):
    """paper.toml's network and federation with a backdoor instead of its sign flippers."""
    path = tmp_path / "backdoor.toml"
    path.write_text(DEFAULT_SCENARIO.read_text().split("[[attacks]]")[0]
                    + '[[attacks]]\nkind = "backdoor"\nfraction = 0.25\nstart_round = 3\ntarget_class = 3\n')
    return load_scenario(path, ["dfl.rounds=8", "defense.fuhst=false", *overrides])


def test_a_backdoor_run_scores_how_often_honest_models_obey_the_trigger(tmp_path):
    summary = simulate_run(backdoor_scenario(tmp_path), tmp_path, progress=lambda line: None)
    obeyed = summary["dfl"]["backdoor_success_by_round"]
    assert len(obeyed) == 8 and max(obeyed[:2]) < 0.5 < obeyed[-1]  # the trigger means little until taught
    assert summary["dfl"]["backdoor_success_final"] == obeyed[-1]
    with open(tmp_path / "rounds.csv", newline="") as f:
        assert all(r["backdoor_success"] != "" for r in csv.DictReader(f))


def test_a_backdoor_target_outside_the_datasets_classes_is_refused(tmp_path):
    import pytest

    from sdfl.scenario import ScenarioError

    with pytest.raises(ScenarioError, match="target_class 10 is not a class of digits"):
        simulate_run(backdoor_scenario(tmp_path, "attacks.0.target_class=10"), progress=lambda line: None)


def test_garbage_senders_are_banned_on_their_first_unreadable_frames_and_no_one_else(tmp_path):
    """Frames no decoder reads (here weights of Inf) are no model to judge, yet evidence: the home
    inspection reads each whole stream and holds it against its sender."""
    path = tmp_path / "garbage.toml"
    path.write_text(DEFAULT_SCENARIO.read_text().split("[[attacks]]")[0]
                    + '[[attacks]]\nkind = "garbage"\nfraction = 0.25\nstart_round = 5\n')
    summary = simulate_run(load_scenario(path, ["dfl.rounds=7"]), progress=lambda line: None)
    malicious = set(summary["attacks"]["malicious_nodes"])
    bans = summary["detection"]["bans"]
    # Round 5 waits its missing models out, so the reports that ban come in round 6.
    assert {b["node"] for b in bans} == malicious and summary["detection"]["time_to_ban_rounds_median"] <= 1
    assert summary["detection"]["honest_nodes_ever_banned"] == []
