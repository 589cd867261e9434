"""Sweeps: cells from a sweep file, resumption, failures recorded, the comparison report (no root:
a fake run stands in for the testbed)."""

import csv
import os
import json

import pytest

from sdfl.report import comparison, significance, write_report
from sdfl.scenario import ScenarioError
from sdfl.sweep import load_sweep, run_sweep

SWEEP = """
scenario = "base.toml"
[set]
dfl.rounds = 3
[axes.attack]
none = { attacks = [] }
sign-flip = {}
[axes.defense]
none = { defense.fuhst = false }
fuhst = { defense.fuhst = true }
[axes.seed]
0 = { seed = 0 }
1 = { seed = 1 }
2 = { seed = 2 }
"""
BASE = """
name = "base"
[[attacks]]
kind = "sign-flip"
fraction = 0.25
start_round = 2
"""


def sweep_file(tmp_path, text=SWEEP):
    (tmp_path / "base.toml").write_text(BASE)
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def fake_run(calls, fail=()):
    """Accuracy 0.9 defended, 0.5 attacked and undefended; F1 0.8 when FU-HST is on."""
    def run(scenario, folder):
        calls.append(folder.name)
        if folder.name in fail:
            raise RuntimeError("controller of domain 1 exited")
        attacked = bool(scenario["attacks"]) and not scenario["defense"]["fuhst"]
        accuracy = 0.5 + 0.01 * scenario["seed"] if attacked else 0.9 + 0.01 * scenario["seed"]
        summary = {"complete": True, "dfl": {"honest_accuracy_final": accuracy,
                                             "honest_accuracy_by_round": [0.3, 0.6, accuracy]}}
        if scenario["defense"]["fuhst"]:
            summary["detection"] = {"f1": 0.8, "precision": 1.0, "recall": 0.67, "false_ban_rate": 0.0,
                                    "honest_nodes_ever_banned": []}
            summary["overhead"] = {"interdomain_control_bytes_per_round": 5.7}
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").write_text(json.dumps(summary))
        return summary
    return run


def test_a_sweep_file_expands_to_the_cross_product_with_each_cells_scenario(tmp_path):
    cells = load_sweep(sweep_file(tmp_path))
    assert len(cells) == 12
    first, last = cells[0], cells[-1]
    assert first.name == "attack=none_defense=none_seed=0" and first.scenario["attacks"] == []
    assert last.name == "attack=sign-flip_defense=fuhst_seed=2"
    assert last.scenario["defense"]["fuhst"] and last.scenario["seed"] == 2 and last.scenario["dfl"]["rounds"] == 3
    assert last.scenario["attacks"][0]["kind"] == "sign-flip"  # the base scenario's attack


@pytest.mark.parametrize("text, message", [
    ("scenario = 'base.toml'\n[axes.defense]\nfuhst = { defense.fusht = true }", "axes.defense.fuhst: unknown key"),
    ("scenario = 'base.toml'", "needs at least one axis"),
    ("scenario = 'missing.toml'\n[axes.seed]\n0 = { seed = 0 }", "missing.toml: no such scenario file"),
    ("[axes.seed]\n0 = { seed = 0 }", "'scenario' must name the base scenario file"),
    ("scenario = 'base.toml'\naxis = 1", "unknown key(s) axis"),
    ("scenario = 'base.toml\n", "not valid TOML"),
])
def test_a_malformed_sweep_file_is_refused_with_the_place_named(tmp_path, text, message):
    with pytest.raises(ScenarioError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_sweep(sweep_file(tmp_path, text))


def test_an_interrupted_sweep_resumes_without_rerunning_finished_cells(tmp_path):
    cells = load_sweep(sweep_file(tmp_path))
    out = tmp_path / "out"
    calls = []
    run_sweep(cells[:5], out, fake_run(calls), progress=lambda line: None)  # "interrupted" after 5 cells
    (out / "runs" / cells[4].name / "summary.json").write_text('{"complete": false}')  # killed mid-run
    calls.clear()
    rows = run_sweep(cells, out, fake_run(calls), progress=lambda line: None)
    assert calls == [c.name for c in cells[4:]]  # the partial cell again, then the rest; none of the first four
    with open(out / "results.csv") as f:
        saved = list(csv.DictReader(f))
    assert len(saved) == len(rows) == 12 and all(r["complete"] == "True" for r in saved)
    assert saved[0]["attack"] == "none" and saved[0]["folder"] == f"runs/{cells[0].name}"


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path):
    cells = load_sweep(sweep_file(tmp_path))
    calls = []
    rows = run_sweep(cells, tmp_path / "out", fake_run(calls, fail={cells[1].name}), progress=lambda line: None)
    assert len(calls) == 12
    assert rows[1]["complete"] is False and "controller of domain 1 exited" in rows[1]["error"]
    assert "RuntimeError" in (tmp_path / "out" / "runs" / cells[1].name / "sweep_error.txt").read_text()


def test_the_sweep_report_compares_defenses_with_significance_tests(tmp_path):
    cells = load_sweep(sweep_file(tmp_path))
    out = tmp_path / "out"
    run_sweep(cells, out, fake_run([]), progress=lambda line: None)
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    table = {tuple(labels.values()): figures for labels, figures in comparison(rows)}
    assert table[("sign-flip", "none")]["honest accuracy"] == "0.510 ± 0.010"
    assert table[("sign-flip", "fuhst")]["F1"] == "0.800 ± 0.000" and table[("none", "none")]["runs"] == "3/3"
    [attacked] = [t for t in significance(rows) if t["attack"] == "sign-flip" and t["comparison"].startswith("acc")]
    assert attacked["comparison"] == "accuracy: fuhst vs none" and attacked["mean difference"] == pytest.approx(0.4)
    assert attacked["Mann-Whitney U p"] == pytest.approx(0.1) and attacked["KS p"] == pytest.approx(0.1)
    report = write_report(out).read_text()
    assert "| sign-flip | fuhst | 3/3 |" in report and "Mann-Whitney U p" in report
    assert (out / "sweep_accuracy.png").read_bytes().startswith(b"\x89PNG")


def run_in_own_process(scenario, folder):
    """A picklable cell (what --jobs needs): the process it ran in, and fake_run's figures."""
    summary = fake_run([])(scenario, folder)
    summary["pid"] = os.getpid()
    summary["torch_threads"] = os.environ.get("OMP_NUM_THREADS")
    (folder / "summary.json").write_text(json.dumps(summary))
    return summary


def test_jobs_run_cells_at_once_each_in_a_fresh_process_with_the_serial_results(tmp_path):
    cells = load_sweep(sweep_file(tmp_path))
    serial = run_sweep(cells, tmp_path / "serial", run_in_own_process, progress=lambda line: None)
    parallel = run_sweep(cells, tmp_path / "parallel", run_in_own_process, progress=lambda line: None, jobs=3)
    strip = [{k: v for k, v in row.items() if k != "wall_s"} for row in serial]
    assert [{k: v for k, v in row.items() if k != "wall_s"} for row in parallel] == strip  # same rows, cell order
    pids = {json.loads((tmp_path / "parallel" / "runs" / c.name / "summary.json").read_text())["pid"] for c in cells}
    assert len(pids) == len(cells) and os.getpid() not in pids  # a process of its own for every cell
    threads = {json.loads((tmp_path / "parallel" / "runs" / c.name / "summary.json").read_text())["torch_threads"]
               for c in cells}
    assert threads == {str(max(1, (os.cpu_count() or 1) // 3))}  # the cores shared out, not a thread per core each


def test_the_default_jobs_are_the_cores_as_far_as_memory_allows():
    from sdfl.sweep import default_jobs

    jobs, why = default_jobs(simulate=False)
    assert 1 <= jobs <= (os.cpu_count() or 1) and "cores" in why and "GiB" in why
