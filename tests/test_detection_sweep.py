"""The in-process detection sweep: the testbed's nodes and FU-HST core without a network."""

import importlib.util
from pathlib import Path

from sdfl.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("detection_sweep", ROOT / "benchmarks" / "detection_sweep.py")
detection_sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(detection_sweep)


def test_a_cell_bans_a_sign_flipper_everywhere_and_scores_it_like_a_run(tmp_path):
    scenario = load_scenario(ROOT / "scenarios" / "paper.toml", [
        "network.domains=2", "dfl.rounds=10", "attacks.0.fraction=0.15"])
    row = detection_sweep.run_cell(scenario)
    [attacker] = row["malicious"].split()
    assert row["time_to_ban_rounds"] is not None and row["f1"] > 0  # it was caught
    assert row["notice_bytes_per_round"] > 0  # and the other domain was told
    assert 0.0 <= row["honest_accuracy"] <= 1.0 and row["cpu_s"] > 0
