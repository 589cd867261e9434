"""``report.md`` and its PNG plots, rebuilt from a run folder's saved results alone.

The series are pure functions of the saved files (:func:`load_run`, :func:`accuracy_series`,
:func:`timeline`, :func:`score_series`); matplotlib only draws them, headless, and is imported
when a plot is made.
"""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from common.events import Event, of_kind, read_events
from common.jsonl import read_jsonl
from sdfl.scoring import round_ends

PLOTS = {
    "accuracy": "accuracy.png",
    "timeline": "detection_timeline.png",
    "control": "interdomain_bytes.png",
    "scores": "anomaly_scores.png",
}


@dataclass
class Run:
    """What a report needs from a run folder."""

    folder: Path
    summary: dict
    rows: list[dict]
    round_ends: list[float]
    controller: list[dict] = field(default_factory=list)

    @property
    def rounds(self) -> int:
        return self.summary["scenario"]["dfl"]["rounds"]

    @property
    def malicious(self) -> list[str]:
        return self.summary["attacks"]["malicious_nodes"]

    @property
    def nodes(self) -> list[str]:
        return sorted({r["node"] for r in self.rows} | set(self.malicious))


def load_run(folder: Path) -> Run:
    """The saved results of a run; a clear error if the folder holds none."""
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise ValueError(f"{folder} holds no summary.json: not a run folder (or the run wrote nothing yet)")
    try:
        summary = json.loads(summary_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{summary_path} is not valid JSON: {error}") from error
    rows = []
    if (folder / "rounds.csv").is_file():
        with open(folder / "rounds.csv", newline="", encoding="utf-8") as f:
            rows = [{**r, "round": int(r["round"]), "accuracy": float(r["accuracy"])} for r in csv.DictReader(f)]
    agent_records = [r for path in sorted(folder.glob("agent-*.jsonl")) for r in read_events(path, Event.ROUND)]
    rounds = summary["scenario"]["dfl"]["rounds"]
    controller = [r for path in sorted(folder.glob("controller-d*.jsonl")) for r in read_jsonl(path)]
    return Run(folder, summary, rows, round_ends(agent_records, rounds), controller)


def accuracy_series(run: Run) -> dict[str, list[float | None]]:
    """Per round: the honest nodes' mean, min and max accuracy, and the attackers' mean."""
    series: dict[str, list[float | None]] = {"honest_mean": [], "honest_min": [], "honest_max": [],
                                             "attackers_mean": []}
    malicious = set(run.malicious)
    for round_ in range(1, run.rounds + 1):
        honest = [r["accuracy"] for r in run.rows if r["round"] == round_ and r["node"] not in malicious]
        attackers = [r["accuracy"] for r in run.rows if r["round"] == round_ and r["node"] in malicious]
        series["honest_mean"].append(statistics.fmean(honest) if honest else None)
        series["honest_min"].append(min(honest) if honest else None)
        series["honest_max"].append(max(honest) if honest else None)
        series["attackers_mean"].append(statistics.fmean(attackers) if attackers else None)
    return series


def round_of(run: Run, when: float) -> int:
    """The round during which ``when`` fell (1-based; after the last round's end: the last)."""
    for round_, end in enumerate(run.round_ends, start=1):
        if when <= end:
            return round_
    return run.rounds


def timeline(run: Run) -> dict[str, dict[str, list[int]]]:
    """Per node: the rounds it attacked (by kind) and the rounds it spent banned."""
    nodes: dict[str, dict[str, list[int]]] = {n: {"attacking": [], "banned": []} for n in run.nodes}
    for attack in run.summary["attacks"].get("plan", []):
        for node in attack["nodes"]:
            nodes.setdefault(node, {"attacking": [], "banned": []})["attacking"] += attack["rounds"]
    events = sorted((r["time"], r["type"], r["node"]) for r in of_kind(run.controller, Event.BAN, Event.UNBAN))
    banned_since: dict[str, int] = {}
    for when, kind, node in events:
        round_ = round_of(run, when)
        if kind == Event.BAN and node not in banned_since:
            banned_since[node] = round_
        elif kind == "unban" and node in banned_since:
            nodes.setdefault(node, {"attacking": [], "banned": []})["banned"] += range(banned_since.pop(node), round_)
    for node, since in banned_since.items():
        nodes.setdefault(node, {"attacking": [], "banned": []})["banned"] += range(since, run.rounds + 1)
    return {n: {k: sorted(set(v)) for k, v in entry.items()} for n, entry in sorted(nodes.items())}


def score_series(run: Run, stream: str) -> tuple[dict[str, list[tuple[float, float]]], float | None]:
    """Per node, (seconds since the first score, score) of one stream, and the last calibrated
    threshold (None if the stream never finished its warm-up)."""
    records = [r for r in of_kind(run.controller, Event.SCORES) if r["stream"] == stream]
    if not records:
        return {}, None
    start = min(r["time"] for r in records)
    series: dict[str, list[tuple[float, float]]] = {}
    for record in sorted(records, key=lambda r: r["time"]):
        x = record["round"] if stream == "update" else record["time"] - start
        for node, score in record["scores"].items():
            series.setdefault(node, []).append((x, score))
    thresholds = [r["threshold"] for r in records if r.get("threshold") is not None]
    return series, (thresholds[-1] if thresholds else None)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int = 110) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def _integer_rounds(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_accuracy(run: Run, path: Path) -> None:
    plt = _pyplot()
    series = accuracy_series(run)
    rounds = list(range(1, run.rounds + 1))
    fig, ax = plt.subplots(figsize=(7, 4))
    low = [v if v is not None else float("nan") for v in series["honest_min"]]
    high = [v if v is not None else float("nan") for v in series["honest_max"]]
    ax.fill_between(rounds, low, high, alpha=0.2, color="tab:blue", label="honest nodes, min-max")
    ax.plot(rounds, [v if v is not None else float("nan") for v in series["honest_mean"]], "o-",
            color="tab:blue", label="honest nodes, mean")
    if any(v is not None for v in series["attackers_mean"]):
        ax.plot(rounds, [v if v is not None else float("nan") for v in series["attackers_mean"]], "x--",
                color="tab:red", label="attackers' own models, mean")
    attacked = sorted({r for a in run.summary["attacks"].get("plan", []) for r in a["rounds"]})
    if attacked:
        ax.axvspan(attacked[0] - 0.5, attacked[-1] + 0.5, color="tab:red", alpha=0.06, label="attack rounds")
    ax.set(xlabel="round", ylabel="test accuracy", ylim=(0, 1), title=f"{run.folder.name}: accuracy per round")
    _integer_rounds(ax)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)


def plot_timeline(run: Run, path: Path) -> None:
    plt = _pyplot()
    entries = timeline(run)
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.32 * len(entries)))
    for y, (node, entry) in enumerate(entries.items()):
        ax.broken_barh([(r - 0.5, 1) for r in entry["attacking"]], (y - 0.35, 0.3), color="tab:red")
        ax.broken_barh([(r - 0.5, 1) for r in entry["banned"]], (y + 0.05, 0.3), color="black")
    ax.set_yticks(range(len(entries)), list(entries))
    ax.invert_yaxis()
    ax.set(xlabel="round", xlim=(0.5, run.rounds + 0.5), title="attacking (red, upper) vs banned (black, lower)")
    _integer_rounds(ax)
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def plot_control_bytes(run: Run, path: Path) -> None:
    plt = _pyplot()
    by_round = run.summary.get("overhead", {}).get("interdomain_control_bytes_by_round") or [0] * run.rounds
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(range(1, len(by_round) + 1), by_round, color="tab:green")
    ax.set(xlabel="round", ylabel="bytes", xlim=(0.5, len(by_round) + 0.5),
           title=f"inter-domain control bytes per round (total {sum(by_round)})")
    _integer_rounds(ax)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def plot_scores(run: Run, path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(7, 6))
    malicious = set(run.malicious)
    for ax, stream, xlabel in ((axes[0], "flow", "seconds since the first poll"), (axes[1], "update", "round")):
        series, threshold = score_series(run, stream)
        for node, points in sorted(series.items()):
            xs, ys = zip(*points)
            ax.plot(xs, ys, "-" if stream == "flow" else "o-", lw=1.6 if node in malicious else 0.8, ms=3,
                    color=None if node in malicious else "0.6", label=node if node in malicious else None)
        if threshold is not None:
            ax.axhline(threshold, color="black", ls=":", lw=1, label="calibrated threshold (last)")
        ax.set(xlabel=xlabel, ylabel="HST anomaly score", ylim=(-0.03, 1),  # honest hosts often score 0
               title=f"{stream} stream: attackers in colour, honest hosts grey")
        if stream == "update":
            _integer_rounds(ax)
        ax.grid(alpha=0.3)
        if series:
            ax.legend(loc="upper left", fontsize=7, ncol=3)
    _save(fig, path)


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(run: Run) -> str:
    """The report's text: headline figures, the bans and why, and the plots."""
    summary = run.summary
    lines = [f"# Run report: {run.folder.name}", "", *_caveats(summary), *_headline(run)]
    if summary.get("detection") is not None:
        lines += _bans(summary["detection"])
    lines += _faults_and_stalls(summary) + _resources(summary.get("resources")) + ["", "## Plots", ""]
    for name, title in (("accuracy", "Accuracy per round"), ("timeline", "Detection timeline"),
                        ("control", "Inter-domain control bytes per round"), ("scores", "Anomaly scores")):
        if (run.folder / PLOTS[name]).is_file():
            lines += [f"### {title}", "", f"![{title}]({PLOTS[name]})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _caveats(summary: dict) -> list[str]:
    """What a reader must know before the figures: an incomplete or a simulated run."""
    lines = []
    if not summary.get("complete", True):
        partial = summary.get("partial")
        saved = f" (killed or stopped after round {partial['rounds_reported']})" if partial else ""
        lines += [f"**Incomplete run**{saved}: some nodes did not finish every round; figures cover what was "
                  "saved.", ""]
    if summary.get("simulated"):
        left_out = summary["attacks"].get("not_simulated") or []
        lines += ["**Simulated** (`sdfl simulate`): one process, no network; the update stream's defense only"
                  + (f"; not simulated: {', '.join(left_out)}" if left_out else "") + ".", ""]
    return lines


def _headline(run: Run) -> list[str]:
    summary = run.summary
    dfl, detection, overhead = summary["dfl"], summary.get("detection"), summary.get("overhead", {})
    scenario = summary["scenario"]
    network = scenario["network"]
    lines = [f"{network['domains']} domains x {network['hosts_per_domain']} hosts, "
             f"{scenario['dfl']['rounds']} rounds, aggregator `{scenario['dfl']['aggregator']}`, "
             f"seed {scenario['seed']}; attackers: {', '.join(run.malicious) or 'none'}.", "",
             "| figure | value |", "|---|---|",
             f"| honest accuracy, final round | {_fmt(dfl['honest_accuracy_final'])} |",
             f"| median round time (s) | {_fmt(dfl['round_time_s_median'], 2)} |",
             f"| model bytes sent | {dfl['model_bytes_total']:,} |"]
    if dfl.get("backdoor_success_final") is not None:
        lines.append(f"| backdoor success rate, final round (honest models) | {_fmt(dfl['backdoor_success_final'])} |")
    controller = summary.get("network", {}).get("controller")
    if controller:
        lines.append(f"| controllers | {controller['framework']} {controller['version']}, Python "
                     f"{controller['python_version']}, eventlet {controller['eventlet']} |")
    if detection is not None:
        traffic = summary.get("traffic", {})
        control_per_round = overhead.get("interdomain_control_bytes_per_round")
        lines += [f"| detection F1 / precision / recall | {_fmt(detection['f1'])} / {_fmt(detection['precision'])} / "
                  f"{_fmt(detection['recall'])} |",
                  f"| false-ban rate | {_fmt(detection['false_ban_rate'])} |",
                  f"| honest nodes ever banned | {', '.join(detection['honest_nodes_ever_banned']) or 'none'} |",
                  f"| time to ban (rounds, median) | {_fmt(detection['time_to_ban_rounds_median'])} |",
                  f"| inter-domain control bytes per round | {_fmt(control_per_round, 1)} |",
                  f"| detector CPU / agents' CPU | {_fmt(overhead.get('detector_cpu_fraction'), 4)} |",
                  f"| defense CPU (inspection + detector) / agents' CPU | "
                  f"{_fmt(overhead.get('defense_cpu_fraction'), 4)} |",
                  f"| flood/scan time to mitigate (s, median) | {_fmt(traffic.get('time_to_mitigate_s_median'), 2)} |"]
        inspection = summary.get("inspection")
        if inspection:
            lines.append(f"| model frames read off the mirrors / streams read on past bytes the mirror lost / "
                         f"packets its sockets dropped | {inspection['frames']:,} / {inspection['gaps']} / "
                         f"{inspection['dropped']} |")
    return lines


def _bans(detection: dict) -> list[str]:
    lines = ["", "## Bans", ""]
    if not detection["bans"]:
        return lines + ["Nobody was banned."]
    return lines + ["| node | domain | round | why |", "|---|---|---|---|"] + [
        f"| {b['node']} | {b['domain']} | {b['round']} | {b['reason']} |" for b in detection["bans"]]


def _faults_and_stalls(summary: dict) -> list[str]:
    lines = []
    if summary.get("faults"):
        lines += ["", "## Faults", "", "| fault | target | round | duration (s) | survived | what happened |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {f['kind']} | {f['target']} | {f['at_round']} | {f['duration_s']:g} | "
                  f"{'yes' if f['survived'] else '**no**'} | {_fault_note(f)} |" for f in summary["faults"]]
    silent = summary.get("dfl", {}).get("rounds_without_frames")
    if summary.get("stalls") or silent:
        lines += ["", "## Stalls", ""]
        lines += [f"- {s['service']} gave no sign of life for {s['seconds']:.1f} s"
                  f"{' (still stalled at the end)' if s['still_stalled'] else ''}" for s in summary.get("stalls", [])]
        if silent:
            lines.append(f"- rounds in which no model moved: {', '.join(map(str, silent))}")
    return lines


def _resources(resources: dict | None) -> list[str]:
    if not resources:
        return []
    cpu = ", ".join(f"{role} {seconds:.1f}" for role, seconds in resources["cpu_s_by_role"].items())
    return ["", "## Resources", "",
            f"Peak memory of the run's processes {resources['peak_pss_mb_total']:,.0f} MB (PSS) "
            f"(machine: {resources['machine_peak_used_mb']:,.0f} of {resources['machine_memory_mb']:,.0f} MB "
            f"in use at peak, {resources['cpu_cores']} cores); CPU seconds by role: {cpu}."]


def _fault_note(fault: dict) -> str:
    slowest = fault.get("slowest_round_during_s")
    during = f"slowest round meanwhile {slowest:.1f} s" if slowest is not None else ""
    note = {"kill-agent": lambda: f"rejoined in round {fault.get('rejoined_round')}",
            "stall-agent": lambda: "",
            "kill-controller": lambda: f"bans before {fault.get('banned_before') or 'none'}, "
                                       f"after restart {fault.get('banned_after_restart') or 'none'}",
            "cut-link": lambda: f"domains rerouted: {fault.get('domains_rerouted')}"}.get(
                fault["kind"],
                lambda: "the stall was named" if fault.get("stall_named") else "**the stall went unnoticed**")()
    return "; ".join(x for x in (note, during) if x)


def write_run_report(folder: Path) -> Path:
    """Plots and report.md into the run folder; returns the report's path."""
    run = load_run(folder)
    plot_accuracy(run, folder / PLOTS["accuracy"])
    if run.summary.get("detection") is not None:
        plot_timeline(run, folder / PLOTS["timeline"])
        plot_control_bytes(run, folder / PLOTS["control"])
        plot_scores(run, folder / PLOTS["scores"])
    path = folder / "report.md"
    path.write_text(markdown(run))
    return path


def read_results(folder: Path) -> list[dict]:
    path = folder / "results.csv"
    if not path.is_file():
        raise ValueError(f"{folder} holds neither summary.json nor results.csv: not a run or sweep folder")
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _numbers(rows: list[dict], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) not in ("", None)]


def _mean_spread(values: list[float]) -> str:
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {spread:.3f}"


def comparison(rows: list[dict], replicate: str = "seed") -> list[tuple[dict, dict]]:
    """Per combination of every axis but ``replicate``: mean ± standard deviation of the headline
    figures over the replicates."""
    axes = list(rows[0])[:list(rows[0]).index("folder")] if rows else []
    grouping = [a for a in axes if a != replicate]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[a] for a in grouping), []).append(row)
    backdoors = bool(_numbers(rows, "backdoor_success"))
    table = []
    for key, members in groups.items():
        done = [m for m in members if m["complete"] == "True"]
        table.append((dict(zip(grouping, key)), {
            "runs": f"{len(done)}/{len(members)}",
            "honest accuracy": _mean_spread(_numbers(done, "honest_accuracy")),
            **({"backdoor success": _mean_spread(_numbers(done, "backdoor_success"))} if backdoors else {}),
            "F1": _mean_spread(_numbers(done, "f1")),
            "false-ban rate": _mean_spread(_numbers(done, "false_ban_rate")),
            "control B/round": _mean_spread(_numbers(done, "control_bytes_per_round")),
        }))
    return table


def significance(rows: list[dict], compare: str = "defense", baseline: str = "none", replicate: str = "seed",
                 detectors: tuple[str, str] = ("fuhst", "threshold")) -> list[dict]:
    """Mann-Whitney U and Kolmogorov-Smirnov tests (two-sided) over the replicates: each
    defended setting's honest accuracy against the undefended one's, and the first detector's F1
    against the second's, within each combination of the other axes."""
    from scipy.stats import ks_2samp, mannwhitneyu

    axes = list(rows[0])[:list(rows[0]).index("folder")] if rows else []
    if compare not in axes:
        return []
    others = [a for a in axes if a not in (compare, replicate)]
    done = [r for r in rows if r["complete"] == "True"]
    tests = []

    def test(context: dict, what: str, a: list[float], b: list[float]) -> None:
        if len(a) < 2 or len(b) < 2:
            return
        tests.append({**context, "comparison": what, "n": f"{len(a)} vs {len(b)}",
                      "mean difference": statistics.fmean(a) - statistics.fmean(b),
                      "Mann-Whitney U p": float(mannwhitneyu(a, b, alternative="two-sided").pvalue),
                      "KS p": float(ks_2samp(a, b).pvalue)})

    for key in sorted({tuple(r[a] for a in others) for r in done}):
        context = dict(zip(others, key))
        here = [r for r in done if all(r[a] == v for a, v in context.items())]
        values = sorted({r[compare] for r in here})
        undefended = _numbers([r for r in here if r[compare] == baseline], "honest_accuracy")
        for value in values:
            if value != baseline:
                test(context, f"accuracy: {value} vs {baseline}",
                     _numbers([r for r in here if r[compare] == value], "honest_accuracy"), undefended)
        first, second = detectors
        test(context, f"F1: {first} vs {second}", _numbers([r for r in here if r[compare] == first], "f1"),
             _numbers([r for r in here if r[compare] == second], "f1"))
    return tests


def plot_sweep_accuracy(folder: Path, rows: list[dict], path: Path, panel: str = "attack",
                        line: str = "defense") -> None:
    """Honest accuracy per round, mean over replicates: one panel per ``panel`` value, one line per
    ``line`` value (clean = the panel whose value is "none")."""
    plt = _pyplot()
    done = [r for r in rows if r["complete"] == "True"]
    panels = list(dict.fromkeys(r.get(panel, "") for r in done))
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.2 * max(1, len(panels)), 3.6), squeeze=False)
    for ax, panel_value in zip(axes[0], panels):
        for line_value in dict.fromkeys(r.get(line, "") for r in done):
            curves = [json.loads((folder / r["folder"] / "summary.json").read_text())["dfl"]
                      ["honest_accuracy_by_round"]
                      for r in done if r.get(panel, "") == panel_value and r.get(line, "") == line_value]
            if curves:
                mean = [statistics.fmean(v for v in column if v is not None) if any(v is not None for v in column)
                        else float("nan") for column in zip(*curves)]
                ax.plot(range(1, len(mean) + 1), mean, marker=".", label=line_value)
        ax.set(title=f"{panel} = {panel_value}", xlabel="round", ylim=(0, 1))
        _integer_rounds(ax)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("honest accuracy (mean over seeds)")
    axes[0][-1].legend(title=line, fontsize=8, loc="lower right")
    _save(fig, path, dpi=100)


def sweep_markdown(folder: Path, rows: list[dict], tests: list[dict], plotted: bool) -> str:
    lines = [f"# Sweep report: {folder.name}", "",
             f"{len(rows)} cells, {sum(r['complete'] == 'True' for r in rows)} complete; wall time "
             f"{sum(_numbers(rows, 'wall_s')) / 60:.1f} min. Mean ± standard deviation over seeds.", ""]
    table = comparison(rows)
    if table:
        headers = list(table[0][0]) + list(table[0][1])
        lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join([*labels.values(), *figures.values()]) + " |" for labels, figures in table]
    lines += ["", "## Significance (two-sided, over seeds)", ""]
    if tests:
        headers = list(tests[0])
        lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in t.values()) + " |"
                  for t in tests]
        lines += ["", "With 3 seeds per side an exact two-sided Mann-Whitney p cannot go below 0.1 (scipy's "
                  "approximation under ties can): more seeds for significance at 0.05."]
    else:
        lines.append("No test: the sweep needs a `defense` axis with `none` and at least two seeds per side.")
    if plotted:
        lines += ["", "## Accuracy per round", "", "![accuracy per round](sweep_accuracy.png)"]
    return "\n".join(lines) + "\n"


def write_sweep_report(folder: Path) -> Path:
    rows = read_results(folder)
    tests = significance(rows) if rows else []
    plotted = bool(rows) and "attack" in rows[0] and "defense" in rows[0]
    if plotted:
        plot_sweep_accuracy(folder, rows, folder / "sweep_accuracy.png")
    path = folder / "report.md"
    path.write_text(sweep_markdown(folder, rows, tests, plotted))
    return path


def write_report(folder: Path) -> Path:
    """A run folder's report, or a sweep folder's comparison."""
    return write_run_report(folder) if (folder / "summary.json").is_file() else write_sweep_report(folder)
