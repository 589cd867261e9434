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
``OUT/results.csv`` is rewritten after every cell, one row per finished cell, in cell order.
With ``jobs`` > 1 that many cells run at once, each in a process of its own (testbed runs on
one machine each take a slot of their own: :func:`sdfl.records.claim_slot`). With a Ray
cluster's address (``pip install .[cluster]``) every cell is a Ray task holding one
:data:`RAY_SLOT` resource, which each machine's worker offers as many times as it may run cells
at once; the task runs the cell in a folder of its own and sends it back, packed, into the
sweep's folder.
"""

from __future__ import annotations

import csv
import itertools
import json
import multiprocessing
import os
import re
import time
import traceback
from collections.abc import Callable
import shutil
import tarfile
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from io import BytesIO
from dataclasses import dataclass
from pathlib import Path

from sdfl.pace import pace
from sdfl.scenario import ScenarioError, load_scenario, read_toml

METRICS = ("complete", "honest_accuracy", "backdoor_success", "f1", "precision", "recall", "false_ban_rate",
           "honest_nodes_ever_banned",
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


CELL_MEMORY_GIB = {False: 1.5, True: 0.8}
"""Peak memory of one paper-sized cell, testbed (agents forked from one torch launcher, the
controllers, inspection services, OVS) and simulated, rounded up from measured runs."""


def default_jobs(simulate: bool) -> tuple[int, str]:
    """How many cells this machine runs at once: one per core, as far as memory allows; and why."""
    cores = os.cpu_count() or 1
    available_gib = _available_memory_gib()
    jobs = max(1, min(cores, int(available_gib // CELL_MEMORY_GIB[simulate])))
    return jobs, (f"{cores} cores, {available_gib:.1f} GiB available at about {CELL_MEMORY_GIB[simulate]} GiB "
                  "a cell")


def _available_memory_gib() -> float:
    with open("/proc/meminfo", encoding="ascii") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) / 2**20


def run_cell(run: Callable[[dict, Path], dict], scenario: dict, folder: Path) -> tuple[dict | None, float, str]:
    """One cell: (summary or None, wall seconds, error). A failure is kept in the cell's folder
    (``sweep_error.txt``) and returned, so the sweep goes on (Ctrl-C stops it)."""
    began = time.monotonic()
    try:
        summary = run(scenario, folder)
        error = "" if summary.get("complete") else "incomplete: some agents did not finish"
    except (RuntimeError, ValueError, OSError) as failure:
        summary, error = None, f"{type(failure).__name__}: {failure}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sweep_error.txt").write_text(traceback.format_exc())
    wall = time.monotonic() - began
    if summary is not None:
        (folder / "sweep_cell.json").write_text(json.dumps({"wall_s": wall}) + "\n")
    return summary, wall, error


RAY_SLOT = "sdfl_slot"
"""The Ray resource a cell holds: ``ray start ... --resources '{"sdfl_slot": N}'`` lets a machine
run N cells at once (N runs share its Open vSwitch, each in a slot of its own)."""


def run_cell_packed(run: Callable[[dict, Path], dict], scenario: dict, name: str) -> tuple:
    """A Ray task: the cell run in a scratch folder of the worker's machine, returned with the
    folder packed (tar.gz bytes), the scratch folder removed."""
    scratch = Path(tempfile.mkdtemp(prefix="sdfl-cell-"))
    try:
        summary, wall, error = run_cell(run, scenario, scratch / name)
        packed = BytesIO()
        with tarfile.open(fileobj=packed, mode="w:gz") as tar:
            if (scratch / name).exists():
                tar.add(scratch / name, arcname=name)
        return summary, wall, error, packed.getvalue()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def unpack_cell(packed: bytes, runs: Path, name: str) -> None:
    """A cell's folder, as a worker packed it, in place of ``runs/name``: only plain files and
    folders under ``name/`` (Python 3.11.2's tarfile has no extraction filter yet)."""
    with tarfile.open(fileobj=BytesIO(packed), mode="r:gz") as tar:
        members = tar.getmembers()
        for member in members:
            parts = Path(member.name).parts
            if (not (member.isfile() or member.isdir()) or not parts or parts[0] != name or ".." in parts
                    or Path(member.name).is_absolute()):
                raise ValueError(f"cell {name}: the worker's archive holds {member.name!r}, not a file of the cell")
        shutil.rmtree(runs / name, ignore_errors=True)
        runs.mkdir(parents=True, exist_ok=True)
        tar.extractall(runs, members=members)


def _on_ray(address: str, cells: list[Cell], out: Path, run: Callable[[dict, Path], dict], progress):
    """Each cell as a Ray task on the cluster at ``address``: yields (cell, summary, wall, error)
    as they finish, each cell's folder unpacked into ``out/runs`` first."""
    import ray

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        slots = ray.cluster_resources().get(RAY_SLOT, 0)
        if slots < 1:
            raise RuntimeError(f"the Ray cluster at {address} offers no {RAY_SLOT!r} resource: start each "
                               f"machine's worker with ray start ... --resources '{{\"{RAY_SLOT}\": N}}'")
        progress(f"Ray cluster at {address}: {len(ray.nodes())} nodes, {slots:g} cell slots")
        task = ray.remote(resources={RAY_SLOT: 1}, num_cpus=0, max_retries=0)(run_cell_packed)
        pending = {task.remote(run, cell.scenario, cell.name): cell for cell in cells}
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ready)
            summary, wall, error, packed = ray.get(ready)
            unpack_cell(packed, out / "runs", cell.name)
            yield cell, summary, wall, error
    finally:
        ray.shutdown()


def _share_cores(threads: int) -> None:
    """A cell process's share of the cores for torch's threads, set before torch is imported:
    two simulated cells with torch's default (a thread per core each) took 47 s on 2 cores,
    with one thread each 5.7 s."""
    os.environ["OMP_NUM_THREADS"] = str(threads)


def run_sweep(cells: list[Cell], out: Path, run: Callable[[dict, Path], dict],
              progress: Callable[[str], None] = print, jobs: int = 1, ray_address: str | None = None) -> list[dict]:
    """Run every unfinished cell with ``run(scenario, folder)``, ``jobs`` at once or on the Ray
    cluster at ``ray_address`` (``run`` must then be picklable: a module-level function or a
    partial of one); a cell that fails is recorded with its error and the sweep goes on (Ctrl-C
    stops it: the next sweep resumes)."""
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    to_run = []
    for index, cell in enumerate(cells, start=1):
        folder = out / "runs" / cell.name
        summary = finished(folder)
        if summary is None:
            to_run.append(cell)
            continue
        wall_path = folder / "sweep_cell.json"
        wall = json.loads(wall_path.read_text())["wall_s"] if wall_path.is_file() else None
        progress(f"[{index}/{len(cells)}] {cell.name}: done before, not run again")
        rows[cell.name] = cell_row(cell, summary, wall)
    began = time.monotonic()

    def done(cell: Cell, summary: dict | None, wall: float, error: str) -> None:
        rows[cell.name] = cell_row(cell, summary, wall, error)
        ran = sum(1 for c in to_run if c.name in rows)
        progress(f"[{ran}/{len(to_run)} run] {cell.name}: " + (f"failed: {error} (traceback: "
                 f"{out / 'runs' / cell.name / 'sweep_error.txt'})" if summary is None else f"{wall:.0f} s")
                 + f"; {pace(ran, len(to_run), time.monotonic() - began)}")
        write_results(out / "results.csv", [rows[c.name] for c in cells if c.name in rows])

    if ray_address:
        for cell, summary, wall, error in _on_ray(ray_address, to_run, out, run, progress):
            done(cell, summary, wall, error)
    elif jobs <= 1:
        for cell in to_run:
            progress(f"running {cell.name}")
            done(cell, *run_cell(run, cell.scenario, out / "runs" / cell.name))
    else:
        # One fresh process per cell: a run's network, launcher and signal handlers are its own.
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1,
                                 initializer=_share_cores, initargs=(max(1, (os.cpu_count() or 1) // jobs),)) as pool:
            running = {pool.submit(run_cell, run, cell.scenario, out / "runs" / cell.name): cell for cell in to_run}
            for future in as_completed(running):
                done(running[future], *future.result())
    ordered = [rows[c.name] for c in cells if c.name in rows]
    write_results(out / "results.csv", ordered)
    return ordered


def write_results(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
