"""``sdfl sweep``: the cross product of a sweep file's axes, one testbed run per cell, resumable.

A sweep file names a base scenario (relative to the sweep file), settings for every cell, and
axes; each axis value is a partial scenario merged on top of the base, in axis order, so a
cell's scenario is checked exactly as a scenario file is::

    scenario = "paper.toml"
    [set]
    dfl.rounds = 12
    [axes.attack]
    none = { attacks = [] }
    sign-flip = {}                      # the base scenario's attack
    [axes.defense]
    none = { defense.fuhst = false }
    fuhst = { defense.fuhst = true }
    [axes.seed]
    0 = { seed = 0 }

Each cell runs into ``OUT/runs/<axis=value_...>``; a cell whose folder holds a complete
summary.json is not run again, so an interrupted sweep resumes where it stopped.
``OUT/results.csv`` is rewritten after every cell, one row per finished cell.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sdfl.pace import pace
from sdfl.scenario import ScenarioError, load_scenario, read_toml

METRICS = ("complete", "honest_accuracy", "backdoor_success", "f1", "precision", "recall", "false_ban_rate", "honest_nodes_ever_banned",
           "control_bytes_per_round", "detector_cpu_fraction", "defense_cpu_fraction", "time_to_mitigate_s", "wall_s",
           "error")


@dataclass(frozen=True)
class Cell:
    labels: tuple[tuple[str, str], ...]  # (axis, value) in axis order
    scenario: dict

    @property
    def name(self) -> str:
        def safe(text: str) -> str:
            return re.sub(r"[^A-Za-z0-9.+-]", "-", text)

        return "_".join(f"{safe(axis)}={safe(value)}" for axis, value in self.labels)


def load_sweep(path: Path) -> list[Cell]:
    """Every cell of the sweep file; a clear error naming the file, axis or value at fault."""
    path = Path(path)
    spec = read_toml(path, "sweep")
    unknown = set(spec) - {"scenario", "set", "axes"}
    if unknown:
        raise ScenarioError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (known: scenario, set, axes)")
    if not isinstance(spec.get("scenario"), str):
        raise ScenarioError(f"{path}: 'scenario' must name the base scenario file, e.g. scenario = \"paper.toml\"")
    base = path.parent / spec["scenario"]
    settings = spec.get("set", {})
    axes = spec.get("axes")
    if not isinstance(settings, dict):
        raise ScenarioError(f"{path}: 'set' must be a table of scenario settings")
    if not isinstance(axes, dict) or not axes:
        raise ScenarioError(f"{path}: needs at least one axis, e.g. [axes.seed] with 0 = {{ seed = 0 }}")
    for axis, values in axes.items():
        if not isinstance(values, dict) or not values:
            raise ScenarioError(f"{path}: axes.{axis} must be a table of named values")
        for value, table in values.items():
            if not isinstance(table, dict):
                raise ScenarioError(f"{path}: axes.{axis}.{value} must be a table of scenario settings")
    cells = []
    for choice in itertools.product(*([(axis, value) for value in values] for axis, values in axes.items())):
        layers = [(settings, f"{path}: set")] + [(axes[axis][value], f"{path}: axes.{axis}.{value}")
                                                 for axis, value in choice]
        cells.append(Cell(tuple(choice), load_scenario(base, layers=layers)))
    return cells


def cell_row(cell: Cell, summary: dict | None, wall_s: float | None, error: str = "") -> dict:
    """One results.csv row: the cell's labels and the headline figures of its summary."""
    row = dict(cell.labels)
    row["folder"] = f"runs/{cell.name}"
    if summary is None:
        return {**row, **dict.fromkeys(METRICS, ""), "complete": False, "error": error}
    detection = summary.get("detection") or {}
    overhead = summary.get("overhead") or {}
    traffic = summary.get("traffic") or {}
    return {**row, "complete": summary.get("complete", False),
            "honest_accuracy": summary["dfl"]["honest_accuracy_final"],
            "backdoor_success": "" if summary["dfl"].get("backdoor_success_final") is None
            else summary["dfl"]["backdoor_success_final"],
            "f1": detection.get("f1", ""), "precision": detection.get("precision", ""),
            "recall": detection.get("recall", ""), "false_ban_rate": detection.get("false_ban_rate", ""),
            "honest_nodes_ever_banned": " ".join(detection.get("honest_nodes_ever_banned", [])),
            "control_bytes_per_round": overhead.get("interdomain_control_bytes_per_round", ""),
            "detector_cpu_fraction": overhead.get("detector_cpu_fraction", ""),
            "defense_cpu_fraction": overhead.get("defense_cpu_fraction", ""),
            "time_to_mitigate_s": traffic.get("time_to_mitigate_s_median") or "",
            "wall_s": "" if wall_s is None else round(wall_s, 1), "error": error}


def finished(folder: Path) -> dict | None:
    """The summary of a cell that completed, else None (missing, partial or unreadable)."""
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return summary if summary.get("complete") else None


def run_sweep(cells: list[Cell], out: Path, run: Callable[[dict, Path], dict],
              progress: Callable[[str], None] = print) -> list[dict]:
    """Run every unfinished cell with ``run(scenario, folder)``; a cell that fails is recorded
    with its error and the sweep goes on (Ctrl-C stops it: the next sweep resumes)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    to_run = [cell for cell in cells if finished(out / "runs" / cell.name) is None]
    began, ran = time.monotonic(), 0
    for index, cell in enumerate(cells, start=1):
        folder = out / "runs" / cell.name
        summary = finished(folder)
        wall_path = folder / "sweep_cell.json"
        if summary is not None:
            wall = json.loads(wall_path.read_text())["wall_s"] if wall_path.is_file() else None
            progress(f"[{index}/{len(cells)}] {cell.name}: done before, not run again")
            rows.append(cell_row(cell, summary, wall))
            continue
        progress(f"[{index}/{len(cells)}] {cell.name} ({ran} of {len(to_run)} to run done: "
                 f"{pace(ran, len(to_run), time.monotonic() - began)})")
        cell_began = time.monotonic()
        try:
            summary = run(cell.scenario, folder)
            error = "" if summary.get("complete") else "incomplete: some agents did not finish"
        except (RuntimeError, ValueError, OSError) as failure:
            summary, error = None, f"{type(failure).__name__}: {failure}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "sweep_error.txt").write_text(traceback.format_exc())
            progress(f"    failed: {error} (traceback: {folder / 'sweep_error.txt'})")
        wall = time.monotonic() - cell_began
        ran += 1
        if summary is not None:
            wall_path.write_text(json.dumps({"labels": dict(cell.labels), "wall_s": wall}) + "\n")
        rows.append(cell_row(cell, summary, wall, error))
        write_results(out / "results.csv", rows)
    write_results(out / "results.csv", rows)
    return rows


def write_results(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
