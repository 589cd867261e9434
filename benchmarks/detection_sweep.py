"""FU-HST's update stream across seeds, domain counts, attacker fractions and attacks, fast.

Each cell runs a scenario's DFL in one process (``sdfl simulate``, :mod:`sdfl.simulate`): the
testbed's own nodes, shards, poisoners and wire frames, and per domain the inspection
service's round reports (:func:`controllers.inspector.round_report`) feeding the controllers'
:class:`controllers.defense.DomainDefense`, whose ban notices reach every other domain's
defense through the binary coordination format. What it leaves out is the network: no flow
stream, no timing, and a ban cuts a node off from the next round on. The testbed itself
(``sdfl run``) measures the full stack; this sweep asks whether the detection holds across
settings too many for real runs on two cores.

    .venv/bin/python benchmarks/detection_sweep.py --out runs/detection-sweep.csv
    .venv/bin/python benchmarks/detection_sweep.py --seeds 0 --domains 3 --attacks sign-flip:4
"""

from __future__ import annotations

import argparse
import csv
import itertools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attacks.plan import normalize_entry  # noqa: E402
from sdfl.scenario import load_scenario  # noqa: E402
from sdfl.simulate import simulate_run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def run_cell(scenario: dict, oracle: bool = False) -> dict:
    """One simulated run (``sdfl simulate``): honest accuracy and detection scored as ``sdfl
    run`` scores them. ``oracle``: no detector; every attacker is cut off just before its first
    attack, the best any ban can do (what remains of the gap to the clean run is its lost data)."""
    began = time.process_time()
    summary = simulate_run(scenario, progress=lambda line: None, oracle=oracle)
    row = {"honest_accuracy": summary["dfl"]["honest_accuracy_of_final_models"],
           "malicious": " ".join(summary["attacks"]["malicious_nodes"]), "cpu_s": round(time.process_time() - began, 1)}
    if "detection" in summary:
        detection = summary["detection"]
        row.update({"f1": detection["f1"], "false_ban_rate": detection["false_ban_rate"],
                    "honest_banned": " ".join(detection["honest_nodes_ever_banned"]),
                    "time_to_ban_rounds": detection["time_to_ban_rounds_median"],
                    "notice_bytes_per_round": summary["overhead"]["interdomain_control_bytes_per_round"]})
    return row


def attack_entry(spec: str, fraction: float, start_round: int) -> list[dict]:
    """``sign-flip:4`` -> one [[attacks]] entry (kind, then its main parameter); ``none`` -> []."""
    if spec == "none":
        return []
    kind, _, value = spec.partition(":")
    entry = {"kind": kind, "fraction": fraction, "start_round": start_round}
    if value:
        entry[{"sign-flip": "scale", "gaussian": "sigma", "ipm": "epsilon"}[kind]] = float(value)
    return [entry]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", type=Path, default=ROOT / "scenarios" / "paper.toml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--domains", type=int, nargs="+", default=[2, 3, 4, 5])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25])
    parser.add_argument("--attacks", nargs="+", default=["sign-flip:0.5", "sign-flip:1", "sign-flip:4"])
    parser.add_argument("--defenses", nargs="+", default=["fuhst"], help="fuhst, threshold, none")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="scenario override for every cell, as in sdfl run")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "detection-sweep.csv")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # as the agents do: tiny models, and two sweeps side by side do not thrash
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows, clean, oracle = [], {}, {}
    cells = list(itertools.product(args.domains, args.seeds, args.fractions, args.attacks, args.defenses))
    for domains, seed, fraction, attack, defense in cells:
        base = load_scenario(args.scenario, [*args.overrides, f"seed={seed}", f"network.domains={domains}"])
        start = base["attacks"][0]["start_round"] if base["attacks"] else 5
        if (domains, seed) not in clean:
            clean[(domains, seed)] = run_cell({**base, "attacks": [], "defense": {**base["defense"], "fuhst": False}})
        scenario = {**base, "attacks": [normalize_entry(e, "attacks") for e in attack_entry(attack, fraction, start)],
                    "defense": {**base["defense"], "fuhst": defense != "none",
                                "detector": defense if defense != "none" else "fuhst"}}
        if scenario["attacks"] and (domains, seed, fraction) not in oracle:
            oracle[(domains, seed, fraction)] = run_cell(scenario, oracle=True)
        row = {"domains": domains, "seed": seed, "fraction": fraction, "attack": attack, "defense": defense,
               **run_cell(scenario), "clean_accuracy": clean[(domains, seed)]["honest_accuracy"]}
        row["accuracy_gap"] = row["clean_accuracy"] - row["honest_accuracy"]
        if scenario["attacks"]:
            row["oracle_accuracy"] = oracle[(domains, seed, fraction)]["honest_accuracy"]
            row["gap_beyond_oracle"] = row["oracle_accuracy"] - row["honest_accuracy"]
        rows.append(row)
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
        with args.out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
            writer.writeheader()
            writer.writerows(rows)
    for defense in args.defenses:
        chosen = [r for r in rows if r["defense"] == defense and r["attack"] != "none"]
        if chosen and "f1" in chosen[0]:
            print(f"{defense}: {len(chosen)} cells, F1 min {min(r['f1'] for r in chosen):.3f} "
                  f"median {statistics.median(r['f1'] for r in chosen):.3f}, false-ban max "
                  f"{max(r['false_ban_rate'] for r in chosen):.3f}, accuracy gap max "
                  f"{max(r['accuracy_gap'] for r in chosen):.3f} (beyond the oracle's: max "
                  f"{max(r['gap_beyond_oracle'] for r in chosen):.3f})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
