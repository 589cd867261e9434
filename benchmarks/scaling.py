"""How the testbed's costs grow with the network: real runs from 2x3 to 8x12 hosts (root, OVS).

For each size, ``--repeats`` runs of ``sdfl run`` (each figure their median) of paper.toml's
setting (25 % sign flippers, FU-HST on) with short rounds, and from its summary: bring-up (the
network, then the agents launched and ready), median round time, peak memory per agent, the
defense's CPU per round (inspection and detector), inter-domain control bytes per round and the
model bytes a round moves (the work the peer graph gives a round: paper.toml's graph joins every
host to its whole domain, so it grows faster than the agents; ``--set dfl.peers=random-k --set
dfl.peers_k=2`` bounds each node's degree). Each cost is fitted as ``a * nodes^b`` (least
squares in log-log); the exponent ``b`` is the growth (1 = linear). Sizes whose median round
hits the round deadline (the machine out of cores) are plotted, not fitted. ``--refit`` fits
and plots again from a saved ``scaling.csv`` without running.

    .venv/bin/python benchmarks/scaling.py --out runs/scaling
    .venv/bin/python benchmarks/scaling.py --sizes 2x3 3x4 --rounds 6 --repeats 1 --out runs/scaling-small
    .venv/bin/python benchmarks/scaling.py --set dfl.peers=random-k --set dfl.peers_k=2 --out runs/scaling-bounded
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
COSTS = {"bring_up_s": "bring-up: network and agents (s)", "round_time_s": "median round time (s)",
         "agent_pss_mb": "peak memory per agent (PSS, MB)",
         "defense_cpu_s_per_round": "defense CPU per round (s)",
         "control_bytes_per_round": "inter-domain control bytes per round",
         "model_mb_per_round": "model bytes a round moves (MB)"}


def size(text: str) -> tuple[int, int]:
    domains, _, hosts = text.partition("x")
    if not (domains.isdigit() and hosts.isdigit()) or int(domains) < 1 or int(hosts) < 1:
        raise argparse.ArgumentTypeError(f"a size is DOMAINSxHOSTS, e.g. 3x4; got {text!r}")
    return int(domains), int(hosts)


def growth(nodes: list[int], values: list[float]) -> tuple[float, float] | None:
    """``(a, b)`` of ``value = a * nodes^b`` fitted in log-log; None with fewer than two positive points."""
    points = [(n, v) for n, v in zip(nodes, values) if v > 0]
    if len(points) < 2:
        return None
    slope, intercept = np.polyfit(np.log([n for n, _ in points]), np.log([v for _, v in points]), 1)
    return float(np.exp(intercept)), float(slope)


def measure(domains: int, hosts: int, rounds: int, run_dir: Path, overrides: list[str]) -> dict:
    from sdfl.runner import run_experiment
    from sdfl.scenario import load_scenario

    scenario = load_scenario(ROOT / "scenarios" / "paper.toml",
                             [f"network.domains={domains}", f"network.hosts_per_domain={hosts}",
                              f"dfl.rounds={rounds}", "dfl.round_period_s=1.0", "defense.warmup_rounds=3",
                              "attacks.0.start_round=4", *overrides])
    began = time.monotonic()
    summary = run_experiment(scenario, run_dir, progress=lambda line: None)
    overhead = summary.get("overhead", {})
    agents_pss = summary.get("resources", {}).get("peak_pss_mb_by_role", {}).get("agent", 0.0)
    return {"domains": domains, "hosts_per_domain": hosts, "nodes": domains * hosts,
            "bring_up_s": summary["network"]["bring_up_s"] + (summary["network"].get("agents_ready_s") or 0.0),
            "round_time_s": summary["dfl"]["round_time_s_median"],
            "agent_pss_mb": agents_pss / (domains * hosts),
            "defense_cpu_s_per_round": (overhead.get("detector_cpu_s", 0.0) + overhead.get("inspection_cpu_s", 0.0))
            / rounds,
            "control_bytes_per_round": overhead.get("interdomain_control_bytes_per_round", 0.0),
            "model_mb_per_round": summary["dfl"]["model_bytes_total"] / rounds / 1e6,
            "honest_accuracy": summary["dfl"]["honest_accuracy_final"], "complete": summary["complete"],
            "wall_s": round(time.monotonic() - began, 1)}


def plot(rows: list[dict], fits: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = [r["nodes"] for r in rows]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, key in zip(axes.flat, fits):
        label = COSTS[key]
        ax.plot(nodes, [r[key] for r in rows], "o", label="measured")
        if fits.get(key):
            a, b = fits[key]
            grid = np.linspace(min(nodes), max(nodes), 50)
            ax.plot(grid, a * grid ** b, "-", label=f"fit: {a:.3g} x nodes^{b:.2f}")
        for row in rows:
            ax.annotate(f"{row['domains']}x{row['hosts_per_domain']}", (row["nodes"], row[key]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
        ax.set(xlabel="DFL nodes", title=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.flat[len(fits):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=size, nargs="+",
                        default=[size(s) for s in ("2x3", "3x4", "4x6", "6x8", "8x12")])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="runs per size; each figure is their median")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "scaling")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a further scenario override for every size, e.g. dfl.peers=random-k")
    parser.add_argument("--refit", action="store_true",
                        help="no runs: fit and plot again from OUT/scaling.csv")
    args = parser.parse_args(argv)
    rows = read_rows(args.out / "scaling.csv") if args.refit else run_sizes(args)
    # A size whose median round hits the round deadline measures the machine running out of
    # cores, not the testbed's growth: it is plotted, not fitted.
    timeout = load_round_timeout()
    fitted = [r for r in rows if r["round_time_s"] < SATURATED_SHARE * timeout]
    for row in rows:
        if row not in fitted:
            print(f"{row['domains']}x{row['hosts_per_domain']}: median round {row['round_time_s']:.1f} s, at the "
                  f"{timeout:.0f} s deadline: not fitted")
    measured = [key for key in COSTS if all(key in r for r in rows)]  # a CSV of an older run may lack one
    fits = {key: growth([r["nodes"] for r in fitted], [r[key] for r in fitted]) for key in measured}
    for key, fit in fits.items():
        print(f"{COSTS[key]}: " + (f"{fit[0]:.3g} x nodes^{fit[1]:.2f}" if fit else "too few points to fit"))
    (args.out / "growth.json").write_text(json.dumps({k: {"a": f[0], "exponent": f[1]} if f else None
                                                      for k, f in fits.items()}, indent=2) + "\n")
    if rows:
        plot(rows, fits, args.out / "scaling.png")
    print(f"wrote {args.out / 'scaling.csv'}, growth.json, scaling.png")
    return 0


SATURATED_SHARE = 0.9


def load_round_timeout() -> float:
    from sdfl.scenario import load_scenario

    return load_scenario(ROOT / "scenarios" / "paper.toml")["dfl"]["round_timeout_s"]


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: (v if k == "complete" else float(v) if "." in v else int(v)) for k, v in r.items()}
                for r in csv.DictReader(f)]


def median_row(runs: list[dict]) -> dict:
    """One size's row from its repeated runs: each measured figure's median (one run on a
    shared 2-core machine can catch a slow moment), complete only if every run completed."""
    row = {key: float(np.median([r[key] for r in runs])) if isinstance(value, float) else value
           for key, value in runs[0].items()}
    row["complete"] = all(r["complete"] for r in runs)
    row["repeats"] = len(runs)
    return row


def run_sizes(args) -> list[dict]:
    from sdfl.cli import prepare_emulation

    prepare_emulation()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for domains, hosts in args.sizes:
        try:
            runs = [measure(domains, hosts, args.rounds, args.out / f"{domains}x{hosts}" / f"run{i}", args.overrides)
                    for i in range(args.repeats)]
        except (RuntimeError, ValueError, OSError) as error:
            print(f"{domains}x{hosts}: failed ({error}); the machine goes no further", flush=True)
            break
        rows.append(median_row(runs))
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items()), flush=True)
        with open(args.out / "scaling.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return rows


if __name__ == "__main__":
    sys.exit(main())
