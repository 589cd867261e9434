"""Reports rebuilt from a run folder's saved files alone (a synthetic run: no root, no network)."""

import csv
import json
import subprocess
import sys

import pytest

from sdfl.report import PLOTS, accuracy_series, load_run, score_series, timeline, write_run_report

NODES = ["d1h1", "d1h2", "d2h1", "d2h2"]
ROUNDS = 6


def make_run(folder, ban_at=10.45, unban_at=None):
    """d1h1 sign-flips from round 3 and is banned at ``ban_at`` (rounds end at 10.1, 10.2, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    summary = {
        "complete": True,
        "scenario": {"seed": 0, "dfl": {"rounds": ROUNDS, "aggregator": "fedavg"},
                     "network": {"domains": 2, "hosts_per_domain": 2}},
        "dfl": {"honest_accuracy_final": 0.9, "round_time_s_median": 0.1, "model_bytes_total": 1000},
        "attacks": {"malicious_nodes": ["d1h1"],
                    "plan": [{"kind": "sign-flip", "nodes": ["d1h1"], "rounds": [3, 4, 5, 6]}]},
        "detection": {"f1": 0.857, "precision": 1.0, "recall": 0.75, "false_ban_rate": 0.0,
                      "honest_nodes_ever_banned": [], "time_to_ban_rounds_median": 2,
                      "bans": [{"node": "d1h1", "domain": 1, "round": 5, "time": ban_at,
                                "reason": "update stream, score 0.9, evidence 3.0 in 2 verdicts"}]},
        "overhead": {"interdomain_control_bytes_per_round": 3.2,
                     "interdomain_control_bytes_by_round": [0, 0, 0, 0, 19, 0], "detector_cpu_fraction": 0.01},
        "traffic": {"time_to_mitigate_s_median": None},
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    with open(folder / "rounds.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["node", "round", "accuracy"])
        writer.writeheader()
        for node in NODES:
            for round_ in range(1, ROUNDS + 1):
                bonus = 0.05 if node == "d2h2" else 0.0
                writer.writerow({"node": node, "round": round_, "accuracy": 0.1 * round_ + bonus})
    for node in NODES:
        with open(folder / f"agent-{node}.jsonl", "w") as f:
            for round_ in range(1, ROUNDS + 1):
                f.write(json.dumps({"type": "round", "node": node, "round": round_, "time": 10 + round_ / 10}) + "\n")
    controller = [{"type": "scores", "stream": "flow", "time": 10.0 + t / 10, "round": None, "threshold": 0.5,
                   "warming_up": False, "scores": {"d1h1": 0.2 + t / 10, "d1h2": 0.1}} for t in range(4)]
    controller += [{"type": "scores", "stream": "update", "time": 10.3, "round": 3, "threshold": 0.4,
                    "warming_up": False, "scores": {"d1h1": 0.9, "d1h2": 0.1}},
                   {"type": "ban", "time": ban_at, "node": "d1h1", "domain": 1}]
    if unban_at is not None:
        controller.append({"type": "unban", "time": unban_at, "node": "d1h1", "domain": 1})
    with open(folder / "controller-d1.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in controller)
    return folder


def test_series_come_from_the_saved_files(tmp_path):
    run = load_run(make_run(tmp_path / "run", unban_at=10.55))
    accuracy = accuracy_series(run)
    assert accuracy["honest_mean"][0] == pytest.approx((0.1 + 0.1 + 0.15) / 3)  # attackers are not honest
    assert accuracy["attackers_mean"][5] == pytest.approx(0.6)
    entries = timeline(run)
    assert entries["d1h1"] == {"attacking": [3, 4, 5, 6], "banned": [5]}  # banned in round 5, unbanned in 6
    assert entries["d2h1"] == {"attacking": [], "banned": []}
    flow, threshold = score_series(run, "flow")
    assert threshold == 0.5 and [x for x, _ in flow["d1h1"]] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    update, _ = score_series(run, "update")
    assert update["d1h1"] == [(3, 0.9)]


def test_a_ban_never_lifted_lasts_to_the_last_round(tmp_path):
    assert timeline(load_run(make_run(tmp_path / "run")))["d1h1"]["banned"] == [5, 6]


def test_the_report_names_the_figures_and_links_readable_plots(tmp_path):
    folder = make_run(tmp_path / "run")
    report = write_run_report(folder).read_text()
    assert "| detection F1 / precision / recall | 0.857 / 1.000 / 0.750 |" in report
    assert "| d1h1 | 1 | 5 | update stream, score 0.9, evidence 3.0 in 2 verdicts |" in report
    for name in PLOTS.values():
        assert f"]({name})" in report
        data = (folder / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5_000


def test_sdfl_report_rebuilds_a_report_and_names_a_folder_without_results(tmp_path):
    folder = make_run(tmp_path / "run")
    done = subprocess.run([sys.executable, "-m", "sdfl", "report", str(folder)], capture_output=True, text=True)
    assert done.returncode == 0 and (folder / "report.md").is_file()
    empty = subprocess.run([sys.executable, "-m", "sdfl", "report", str(tmp_path)], capture_output=True, text=True)
    assert empty.returncode == 2 and "holds neither summary.json nor results.csv" in empty.stderr
    (folder / "summary.json").write_text("{ truncated")
    broken = subprocess.run([sys.executable, "-m", "sdfl", "report", str(folder)], capture_output=True, text=True)
    assert broken.returncode == 2 and "not valid JSON" in broken.stderr


def test_what_the_mirrors_lost_is_summed_from_each_inspections_last_heartbeat_and_reported(tmp_path):
    from sdfl.runner import inspection_summary

    folder = make_run(tmp_path / "run")
    for domain, beats in ((1, [(100, 40, 0, 0), (250, 96, 2, 0)]), (2, [(240, 90, 1, 3)])):
        with open(folder / f"inspector-d{domain}.jsonl", "w") as f:
            f.write(json.dumps({"type": "inspector_started", "time": 1.0, "domain": domain}) + "\n")
            for segments, frames, gaps, dropped in beats:
                f.write(json.dumps({"type": "heartbeat", "time": 2.0, "round": 3, "segments": segments,
                                    "frames": frames, "gaps": gaps, "dropped": dropped, "unparsed": 0,
                                    "violations": 0, "ignored": 0}) + "\n")
    inspection = inspection_summary(folder, 2)
    assert (inspection["frames"], inspection["gaps"], inspection["dropped"]) == (186, 3, 3)
    assert inspection["by_domain"]["1"]["segments"] == 250
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({**summary, "inspection": inspection}))
    assert "| 186 / 3 / 3 |" in write_run_report(folder).read_text()
